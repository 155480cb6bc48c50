"""The chat page's security headers: its CSP connects only where /config.json sends it."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient

from services.frontend.app import create_app
from tests.services.frontend.test_app import _bundle, _settings


def _connect_src(csp: str) -> list[str]:
    (directive,) = (d for d in csp.split("; ") if d.startswith("connect-src "))
    return directive.split()[1:]


def test_every_answer_forbids_framing_and_foreign_scripts(tmp_path: Path) -> None:
    client = TestClient(create_app(_settings(_bundle(tmp_path))))
    for path in ("/", "/test_ws_chat.html", "/widget.js", "/config.json", "/no-such-file"):
        headers = client.get(path).headers
        assert headers["x-frame-options"] == "DENY", path
        assert headers["x-content-type-options"] == "nosniff"
        assert headers["referrer-policy"] == "no-referrer"
        csp = headers["content-security-policy"]
        assert "frame-ancestors 'none'" in csp and "script-src 'self';" in csp
        assert _connect_src(csp) == [
            "'self'",
            "http://127.0.0.1:9001",
            "ws://127.0.0.1:9001",
            "http://127.0.0.1:9002",
        ]
    # Without a bundle the page that says how to build one has them too.
    missing = TestClient(create_app(_settings(tmp_path / "none"))).get("/")
    assert missing.status_code == 503 and missing.headers["x-frame-options"] == "DENY"


def test_connect_src_follows_the_settings(tmp_path: Path) -> None:
    settings = _settings(
        _bundle(tmp_path),
        dashboard_url="https://chat.example.com/",
        chat_ws_url="wss://chat.example.com/ws/chat?x=1",
        otlp_traces_url="",
    )
    csp = TestClient(create_app(settings)).get("/").headers["content-security-policy"]
    # Tracing off: no OTLP endpoint to reach.
    assert _connect_src(csp) == ["'self'", "https://chat.example.com", "wss://chat.example.com"]
