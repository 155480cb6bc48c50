"""Only OMNI2 may call the tools: every request but /healthz carries the credential OMNI2
holds (`Authorization: Bearer <MCP_TOOLS_AUTH_TOKEN>`), or gets 401 before the MCP SDK sees
it, so nothing runs and no span is written for it.

With one credential there is one caller: a request that passes is OMNI2's, and only such a
request may name a user or conversation in `_meta` (see `trusted_caller`).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from collections.abc import Collection
from typing import Any

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

log = logging.getLogger(__name__)

CALLER = "omni2"  # the one caller the credential stands for
_STATE_KEY = "mcp_tools.caller"  # where an accepted request records its caller
UNAUTHORIZED = -32001  # JSON-RPC: an implementation-defined server error
_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="mcp-tools"'}


def refusal_body(reason: str) -> dict[str, Any]:
    """A JSON-RPC error (what MCP clients read from a non-2xx answer), its reason readable
    by anyone else too."""
    return {
        "jsonrpc": "2.0",
        "id": None,
        "error": {"code": UNAUTHORIZED, "message": f"unauthorized: {reason}"},
    }


class RequireCredential:
    """ASGI middleware: 401 with a JSON reason unless the bearer token matches."""

    def __init__(
        self, app: ASGIApp, token: str, open_paths: Collection[str] = ("/healthz",)
    ) -> None:
        self.app = app
        # Compared as digests: equal length whatever is sent, in constant time.
        self._digest = hashlib.sha256(token.encode()).digest()
        self.open_paths = frozenset(open_paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan" or (
            scope["type"] == "http" and scope["path"] in self.open_paths
        ):
            await self.app(scope, receive, send)
            return
        problem = self._check(scope)
        if problem is not None:
            client = scope.get("client") or ("?", 0)
            path = scope["path"][:200]  # the caller's text: quoted, so it cannot forge lines
            log.warning("refused %s %r from %s: %s", scope["type"], path, client[0], problem)
            if scope["type"] != "http":  # no WebSocket route here: refuse before accept
                await send({"type": "websocket.close", "code": 1008, "reason": problem})
                return
            response = JSONResponse(refusal_body(problem), status_code=401, headers=_CHALLENGE)
            await response(scope, receive, send)
            return
        scope.setdefault("state", {})[_STATE_KEY] = CALLER
        await self.app(scope, receive, send)

    def _check(self, scope: Scope) -> str | None:
        """None when the request carries the credential, else why not."""
        values = [v for k, v in scope.get("headers", ()) if k == b"authorization"]
        if not values:
            return "missing credential: send Authorization: Bearer <the MCP tools credential>"
        scheme, _, token = values[0].partition(b" ")
        given = hashlib.sha256(token.strip()).digest()
        if len(values) > 1 or scheme.lower() != b"bearer" or not token.strip():
            return "malformed credential: one Authorization: Bearer header expected"
        if not hmac.compare_digest(given, self._digest):
            return "invalid credential"
        return None


def trusted_caller(request: Any) -> bool:
    """Whether the request that carried an MCP message came from OMNI2.

    `request` is the HTTP request the SDK attaches to each message (`ctx.request`); None means
    the in-memory transport, whose caller is code in this very process.
    """
    if request is None:
        return True
    state = getattr(request, "scope", {}).get("state") or {}
    return bool(state.get(_STATE_KEY) == CALLER)
