"""The frontend service: /config.json tells the page about the stack; a missing bundle says how
to build it."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient

from services.frontend.app import create_app
from services.frontend.settings import FrontendSettings


def _settings(dist: Path, **over: object) -> FrontendSettings:
    values: dict[str, object] = {
        "dist_dir": dist,
        "dashboard_url": "http://127.0.0.1:9001/",
        "chat_ws_url": "ws://127.0.0.1:9001/ws/chat",
        "otlp_traces_url": "http://127.0.0.1:9002/v1/traces",
        "jaeger_query_url": "http://127.0.0.1:9003/",
    }
    return FrontendSettings(**(values | over))  # type: ignore[arg-type]


def _bundle(tmp_path: Path) -> Path:
    dist = tmp_path / "dist"
    dist.mkdir()
    (dist / "index.html").write_text("<!doctype html><title>chat</title>")
    (dist / "widget.js").write_text("console.log('chat')")
    (dist / "test_ws_chat.html").write_text("<!doctype html><title>test</title>")
    return dist


def test_config_json_describes_the_stack(tmp_path: Path) -> None:
    client = TestClient(create_app(_settings(_bundle(tmp_path), reconnect_max_ms=4000)))
    config = client.get("/config.json").json()
    assert config == {
        "dashboard_url": "http://127.0.0.1:9001",
        "chat_ws_url": "ws://127.0.0.1:9001/ws/chat",
        "otlp_traces_url": "http://127.0.0.1:9002/v1/traces",
        "jaeger_query_url": "http://127.0.0.1:9003",
        "trace_url_template": "http://127.0.0.1:9003/trace/{trace_id}",
        "reconnect": {"initial_ms": 500, "max_ms": 4000},
    }


def test_empty_otlp_url_switches_browser_tracing_off(tmp_path: Path) -> None:
    client = TestClient(create_app(_settings(_bundle(tmp_path), otlp_traces_url="")))
    assert client.get("/config.json").json()["otlp_traces_url"] is None


def test_serves_both_pages(tmp_path: Path) -> None:
    client = TestClient(create_app(_settings(_bundle(tmp_path))))
    index = client.get("/")
    assert index.status_code == 200 and "<title>chat</title>" in index.text
    assert client.get("/test_ws_chat.html").status_code == 200
    assert client.get("/widget.js").headers["content-type"].startswith("text/javascript")
    assert client.get("/nope.js").status_code == 404


def test_missing_bundle_tells_how_to_build_it(tmp_path: Path) -> None:
    client = TestClient(create_app(_settings(tmp_path / "missing")))
    page = client.get("/")
    assert page.status_code == 503
    assert "npm run build" in page.text and "scripts/bootstrap" in page.text
    # The service itself is up: readiness and config do not depend on the bundle.
    assert client.get("/healthz").json() == {"status": "ok", "bundle": False}
    assert client.get("/config.json").status_code == 200
