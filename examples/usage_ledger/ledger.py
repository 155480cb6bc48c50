"""A legacy usage ledger, traced with jaeger-client (the Jaeger tracer from before
OpenTelemetry), receiving OMNI2's usage webhook. Its span joins the message trace: OMNI2 sends
`uber-trace-id` (OTEL_PROPAGATORS=tracecontext,baggage,jaeger), this service continues it with
jaeger-client and reports over UDP to the Jaeger `jaeger` receiver (thrift compact).

    pip install jaeger-client==4.8.0 six            # six: jaeger-client needs it on Python 3.11
    LEDGER_PORT=8780 JAEGER_AGENT=127.0.0.1:6831 python examples/usage_ledger/ledger.py
    OMNI2_USAGE_WEBHOOK_URL=http://127.0.0.1:8780/usage \\
    OTEL_PROPAGATORS=tracecontext,baggage,jaeger  (for OMNI2)

Deliberately old-style: the standard library's HTTP server and the OpenTracing API, as a
service nobody has migrated yet would be. It keeps usage per user in memory (GET /usage).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import threading
from collections import defaultdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from jaeger_client import Config
from opentracing.propagation import Format

SERVICE = os.environ.get("LEDGER_SERVICE_NAME", "usage-ledger")
MAX_BODY = 16 * 1024


def _tracer() -> Any:
    host, _, port = os.environ.get("JAEGER_AGENT", "127.0.0.1:6831").rpartition(":")
    config = Config(
        config={
            "sampler": {"type": "const", "param": 1},
            "local_agent": {"reporting_host": host, "reporting_port": int(port)},
            # OpenTelemetry's trace ids are 128 bits; keep them whole.
            "generate_128bit_trace_id": True,
            "reporter_flush_interval": 0.2,
            "logging": False,
        },
        service_name=SERVICE,
        validate=True,
    )
    return config.initialize_tracer()


tracer = _tracer()
totals: dict[str, dict[str, float]] = defaultdict(lambda: {"messages": 0, "tokens": 0, "cost": 0})
lock = threading.Lock()


class Ledger(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        if self.path != "/usage":
            return self._answer(404, {"error": "POST /usage"})
        length = int(self.headers.get("content-length") or 0)
        if not 0 < length <= MAX_BODY:
            return self._answer(413, {"error": f"a body of 1..{MAX_BODY} bytes"})
        headers = {k.lower(): v for k, v in self.headers.items()}
        parent = tracer.extract(Format.HTTP_HEADERS, headers)
        with tracer.start_active_span("record usage", child_of=parent) as scope:
            span = scope.span
            span.set_tag("span.kind", "server")
            try:
                usage = json.loads(self.rfile.read(length))
                user = str(usage["user_id"])
                tokens = int(usage.get("tokens_used", 0))
                cost = float(usage.get("cost", 0))
            except (ValueError, KeyError, TypeError) as err:
                span.set_tag("error", True)
                span.log_kv({"event": "error", "message": f"bad usage: {err}"})
                return self._answer(400, {"error": f"bad usage: {err}"})
            with lock:
                row = totals[user]
                row["messages"] += 1
                row["tokens"] += tokens
                row["cost"] += cost
            span.set_tag("user.id", user)
            span.set_tag("gen_ai.conversation.id", str(usage.get("conversation_id", "")))
            span.set_tag("ledger.tokens", tokens)
            self._answer(200, {"recorded": True})

    def do_GET(self) -> None:
        if self.path == "/healthz":
            return self._answer(200, {"status": "ok"})
        if self.path == "/usage":
            with lock:
                return self._answer(200, dict(totals))
        self._answer(404, {"error": "GET /usage or /healthz"})

    def _answer(self, status: int, body: object) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        logging.info("%s %s", self.address_string(), format % args)


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s usage-ledger %(message)s")
    server = ThreadingHTTPServer(
        (os.environ.get("LEDGER_HOST", "127.0.0.1"), int(os.environ.get("LEDGER_PORT", "8780"))),
        Ledger,
    )
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    logging.info("listening on %s:%d", *server.server_address[:2])
    try:
        server.serve_forever()
    finally:
        tracer.close()  # flush the reporter's last spans


if __name__ == "__main__":
    main()
