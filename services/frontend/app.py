"""Serves the browser layer: the chat page (`/`), the WebSocket test page, and /config.json.

Only static files: the page itself talks to the dashboard and exports its own spans, so this
server takes no part in a chat and emits no spans.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from html import escape
from typing import Any
from urllib.parse import urlsplit

from fastapi import FastAPI, Request, Response
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

from otel.instrumentation import instrument, telemetry_config
from services.frontend.settings import FrontendSettings

BUILD_HINT = "scripts/bootstrap (or: cd frontend && npm ci && npm run build)"
_OWN_PATHS = frozenset({"/config.json", "/healthz"})


def page_config(settings: FrontendSettings) -> dict[str, Any]:
    """What the page reads from /config.json (frontend/src/config.ts PageConfig)."""
    jaeger = settings.jaeger_query_url.rstrip("/")
    return {
        "dashboard_url": settings.dashboard_url.rstrip("/"),
        "chat_ws_url": settings.chat_ws_url,
        "otlp_traces_url": settings.otlp_traces_url or None,
        "jaeger_query_url": jaeger,
        # {trace_id} stays for the page to fill in.
        "trace_url_template": settings.trace_url_template.replace("{jaeger_query_url}", jaeger),
        "reconnect": {
            "initial_ms": settings.reconnect_initial_ms,
            "max_ms": max(settings.reconnect_max_ms, settings.reconnect_initial_ms),
        },
    }


def origin(url: str) -> str:
    """`scheme://host[:port]` of a URL: what a CSP source names."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}"


def content_security_policy(settings: FrontendSettings) -> str:
    """The pages run only their own scripts and styles, and connect only where /config.json
    sends them: the dashboard (login, WebSocket) and the public OTLP path. A script injected
    into the page could neither load more nor send what it read anywhere else."""
    urls = [settings.dashboard_url, settings.chat_ws_url, settings.otlp_traces_url or ""]
    connect = " ".join(["'self'", *dict.fromkeys(origin(u) for u in urls if u)])
    return (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        f"connect-src {connect}; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    )


def security_headers(settings: FrontendSettings) -> dict[str, str]:
    return {
        "Content-Security-Policy": content_security_policy(settings),
        "X-Frame-Options": "DENY",
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
    }


def bundle_ready(settings: FrontendSettings) -> bool:
    return all((settings.dist_dir / name).is_file() for name in ("index.html", "widget.js"))


def missing_bundle_page(settings: FrontendSettings) -> HTMLResponse:
    body = (
        "<!doctype html><title>chat page not built</title>"
        "<h1>The chat page is not built</h1>"
        f"<p>No bundle in <code>{escape(str(settings.dist_dir))}</code>. Build it with "
        f"<code>{escape(BUILD_HINT)}</code>, then reload.</p>"
    )
    return HTMLResponse(body, status_code=503)


def create_app(settings: FrontendSettings) -> FastAPI:
    app = FastAPI(
        title="chat-frontend",
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        telemetry=telemetry_config(),
    )
    config = page_config(settings)
    headers = security_headers(settings)

    @app.middleware("http")
    async def require_bundle(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        # Checked per request, so a build that finishes while the server runs is picked up.
        if request.url.path not in _OWN_PATHS and not bundle_ready(settings):
            response: Response = missing_bundle_page(settings)
        else:
            response = await call_next(request)
        # Pages and bundles change with each build: let the browser revalidate every time.
        response.headers.setdefault("Cache-Control", "no-cache")
        response.headers.update(headers)
        return response

    @app.get("/healthz")
    async def healthz() -> dict[str, object]:
        return {"status": "ok", "bundle": bundle_ready(settings)}

    @app.get("/config.json")
    async def config_json() -> dict[str, Any]:
        return config

    app.mount("/", StaticFiles(directory=settings.dist_dir, html=True, check_dir=False))
    instrument(app, static=True)
    return app
