"""The MCP server (Python `mcp` SDK, streamable HTTP): `database_query` and `list_tables`.

The SDK traces each request as a SERVER span (`tools/call <tool>`) continuing the context OMNI2
put in `params._meta`; our middleware adds the conversation and user OMNI2 sent beside it.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import anyio
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from opentelemetry import baggage, trace
from opentelemetry.baggage.propagation import W3CBaggagePropagator
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse

from otel.names import Attr, McpMeta
from services.mcp_tools.sample_db import ensure_sample_db
from services.mcp_tools.settings import McpToolsSettings

# Read-only: only these SQLite authorizer actions pass; writes, ATTACH and PRAGMA are denied.
QUERY_TIMEOUT_S = 2.0
_ALLOWED_ACTIONS = {
    sqlite3.SQLITE_SELECT,
    sqlite3.SQLITE_READ,
    sqlite3.SQLITE_FUNCTION,
    getattr(sqlite3, "SQLITE_RECURSIVE", 33),  # WITH RECURSIVE (a read too)
}


def _authorize(action: int, *_args: Any) -> int:
    return sqlite3.SQLITE_OK if action in _ALLOWED_ACTIONS else sqlite3.SQLITE_DENY


def run_query(db: Path, sql: str, max_rows: int) -> dict[str, Any]:
    """Run one read-only statement; raises ToolError with a reason the model can read."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    deadline = time.monotonic() + QUERY_TIMEOUT_S
    try:
        conn.set_authorizer(_authorize)
        # A runaway query (say, an endless recursive CTE) is interrupted at the deadline.
        conn.set_progress_handler(lambda: int(time.monotonic() > deadline), 10_000)
        try:
            cursor = conn.execute(sql)
            rows = cursor.fetchmany(max_rows + 1)
        except sqlite3.Error as err:
            if str(err) == "interrupted":
                raise ToolError(f"query took longer than {QUERY_TIMEOUT_S:g} s") from err
            raise ToolError(f"query failed: {err}") from err
        columns = [d[0] for d in cursor.description or ()]
        return {
            "columns": columns,
            "rows": [list(r) for r in rows[:max_rows]],
            "truncated": len(rows) > max_rows,
        }
    finally:
        conn.close()


def describe(db: Path) -> dict[str, list[str]]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        tables = [
            r[0]
            for r in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name"
            )
        ]
        return {t: [c[1] for c in conn.execute(f"PRAGMA table_info({t!r})")] for t in tables}
    finally:
        conn.close()


_FROM_META = ((McpMeta.CONVERSATION_ID, Attr.CONVERSATION_ID), (McpMeta.USER_ID, Attr.USER_ID))
_MAX_ID = 128
_BAGGAGE = W3CBaggagePropagator()


async def _meta_attributes(ctx: Any, call_next: Any) -> Any:
    """Put the conversation and user OMNI2 sent on the SDK's server span: from `_meta`
    (tools/call) or from the W3C baggage in `_meta` (every request). No other baggage key is
    read, and values are size-capped."""
    meta = ctx.meta if isinstance(ctx.meta, Mapping) else {}
    carried = _BAGGAGE.extract({"baggage": meta["baggage"]}) if "baggage" in meta else None
    span = trace.get_current_span()
    for key, attr in _FROM_META:
        value = meta.get(key) or (baggage.get_baggage(attr, carried) if carried else None)
        if isinstance(value, str) and value:
            span.set_attribute(attr, value[:_MAX_ID])
    return await call_next(ctx)


def create_server(settings: McpToolsSettings) -> MCPServer[Any]:
    db = ensure_sample_db(settings.sample_db.resolve())
    server: MCPServer[Any] = MCPServer(
        "omni2-tools", instructions="Read-only SQL over a sample shop database."
    )
    server.middleware.append(_meta_attributes)

    @server.tool()
    async def database_query(sql: str) -> str:
        """Run one read-only SQL query (SQLite) over the sample shop database.

        Tables: products(id, name, category, price), customers(id, name, country),
        orders(id, customer_id, product_id, quantity, ordered_on). Returns JSON rows.
        """
        result = await anyio.to_thread.run_sync(run_query, db, sql, settings.max_rows)
        trace.get_current_span().set_attribute(Attr.ROWS, len(result["rows"]))
        return json.dumps(result)

    @server.tool()
    async def list_tables() -> str:
        """List the sample database's tables and their columns, as JSON."""
        return json.dumps(await anyio.to_thread.run_sync(describe, db))

    @server.custom_route("/healthz", methods=["GET"])
    async def healthz(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok", "tools": ["database_query", "list_tables"]})

    return server


def create_app(settings: McpToolsSettings) -> Starlette:
    return create_server(settings).streamable_http_app(host=settings.host)
