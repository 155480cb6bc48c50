"""A local OTLP/HTTP endpoint that keeps what it was sent."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest


class Collector(BaseHTTPRequestHandler):
    bodies: list[tuple[str, bytes]] = []
    authorization: list[str | None] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.bodies.append((self.path, body))
        self.authorization.append(self.headers.get("Authorization"))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def collector() -> Iterator[str]:
    """The traces URL of a collector; what it receives is in `Collector.bodies`."""
    server = HTTPServer(("127.0.0.1", 0), Collector)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    Collector.bodies.clear()
    Collector.authorization.clear()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1/traces"
    server.shutdown()
