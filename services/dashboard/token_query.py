"""The token rides in the WebSocket URL's query string (a browser cannot set headers on a
WebSocket). `TokenFromQuery` takes it out of the ASGI scope before anything can log the URL:
uvicorn's "WebSocket /ws/chat?..." line, spans, tracebacks. Parameter names are compared
decoded and case-folded, so `?tok%65n=` or `?TOKEN=` is the token too, and removed too.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl, urlencode

from starlette.types import ASGIApp, Receive, Scope, Send

from otel.redaction import is_secret_param

TOKEN_SCOPE_KEY = "omni.token"
_TOKEN = "token"


def take_token(query: bytes) -> tuple[str | None, bytes]:
    """(the token, the query without any secret parameter)."""
    token: str | None = None
    kept: list[tuple[str, str]] = []
    for name, value in parse_qsl(query.decode("latin-1"), keep_blank_values=True):
        if not is_secret_param(name):
            kept.append((name, value))
        elif token is None and name.strip().lower() == _TOKEN and value:
            token = value
    return token, urlencode(kept).encode("latin-1")


def scope_token(scope: Scope | dict[str, Any]) -> str | None:
    token = scope.get(TOKEN_SCOPE_KEY)
    return token if isinstance(token, str) else None


class TokenFromQuery:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            # In place: uvicorn logs from this same scope object when the socket is accepted.
            token, scope["query_string"] = take_token(scope.get("query_string", b""))
            scope[TOKEN_SCOPE_KEY] = token
        await self.app(scope, receive, send)
