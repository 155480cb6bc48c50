"""A local OpenAI-compatible server that replays recorded provider exchanges, so OMNI2 runs its
real OpenAI provider (wire protocol, errors, tool calls) end to end without a network."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

RECORDINGS = Path(__file__).parent / "services" / "omni2" / "recordings"
KEY = "sk-test-omni2-0000000000000000"  # the key the recorded 401 names
MODEL = "gpt-4o-mini"


class FakeOpenAI:
    """Answers POST /v1/chat/completions with the queued recordings, in order."""

    def __init__(self) -> None:
        self.queue: list[str] = []
        self.requests: list[dict[str, Any]] = []
        self.auth: list[str | None] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                fake.requests.append(json.loads(body))
                fake.auth.append(self.headers.get("authorization"))
                text = (RECORDINGS / f"{fake.queue.pop(0)}.http").read_text()
                head, _, payload = text.partition("\n\n")
                status, *headers = head.splitlines()
                self.send_response(int(status.split()[1]))
                for header in headers:
                    name, _, value = header.partition(": ")
                    self.send_header(name, value)
                data = payload.encode()
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def omni2_env(self) -> dict[str, str]:
        """OMNI2's settings for its OpenAI provider, talking to this server."""
        return {
            "OMNI2_MODEL_PROVIDER": "openai",
            "OMNI2_MODEL_NAME": MODEL,
            "OMNI2_OPENAI_BASE_URL": self.url,
            "OMNI2_OPENAI_API_KEY": KEY,
        }

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
