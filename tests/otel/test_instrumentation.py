"""HTTP server spans from opentelemetry-instrumentation-fastapi, once per request (FastAPI's
own telemetry off), under the caller's context, with only documented attributes; health
checks, WebSocket routes and the chat page's static files untraced."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI, WebSocket
from fastapi.testclient import TestClient
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from otel.instrumentation import instrument, telemetry_config
from otel.names import ATTRIBUTES
from services.frontend.app import create_app as create_frontend
from tests.services.frontend.test_app import _bundle, _settings

PARENT_TRACE = "0af7651916cd43dd8448eb211c80319c"
PARENT_SPAN = "b7ad6b7169203331"


def _app() -> FastAPI:
    app = FastAPI(telemetry=telemetry_config())

    @app.get("/items/{item}")
    async def item(item: str) -> dict[str, str]:
        return {"item": item}

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.websocket("/ws/chat")
    async def chat(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.send_text(await websocket.receive_text())
        await websocket.close()

    instrument(app, websocket_paths=("/ws/chat",))
    return app


def test_one_server_span_per_request_under_the_callers_context(
    spans: InMemorySpanExporter,
) -> None:
    client = TestClient(_app())
    traceparent = f"00-{PARENT_TRACE}-{PARENT_SPAN}-01"
    assert client.get("/items/7?token=x", headers={"traceparent": traceparent}).status_code == 200
    (span,) = spans.get_finished_spans()
    assert span.name == "GET /items/{item}" and span.kind == SpanKind.SERVER
    assert f"{span.context.trace_id:032x}" == PARENT_TRACE
    assert span.parent is not None and f"{span.parent.span_id:016x}" == PARENT_SPAN
    assert span.attributes is not None
    assert span.attributes["http.route"] == "/items/{item}"
    assert span.attributes["http.request.method"] == "GET"  # the stable conventions
    assert set(span.attributes) <= set(ATTRIBUTES), set(span.attributes) - set(ATTRIBUTES)


def test_health_checks_and_websockets_are_not_traced(spans: InMemorySpanExporter) -> None:
    client = TestClient(_app())
    assert client.get("/healthz").status_code == 200
    with client.websocket_connect("/ws/chat") as ws:
        ws.send_text("hello")
        assert ws.receive_text() == "hello"
    assert spans.get_finished_spans() == ()


def test_the_chat_pages_config_is_traced_and_its_files_are_not(
    tmp_path: Path, spans: InMemorySpanExporter
) -> None:
    client = TestClient(create_frontend(_settings(_bundle(tmp_path))))
    for path in ("/", "/index.html", "/widget.js", "/healthz"):
        assert client.get(path).status_code == 200, path
    assert spans.get_finished_spans() == ()
    assert client.get("/config.json").status_code == 200
    (span,) = spans.get_finished_spans()
    assert span.name == "GET /config.json"
