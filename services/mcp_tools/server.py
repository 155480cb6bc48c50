"""The MCP server (Python `mcp` SDK, streamable HTTP): `database_query` and `list_tables`.

The SDK traces each request as a SERVER span (`tools/call <tool>`) continuing the context OMNI2
put in `params._meta`; our middleware adds the conversation and user OMNI2 sent beside it.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Mapping
from typing import Any

import anyio
from mcp.server.mcpserver import MCPServer
from mcp.shared.exceptions import MCPError
from mcp_types import INVALID_PARAMS
from opentelemetry import baggage, trace
from opentelemetry.baggage.propagation import W3CBaggagePropagator
from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse

from otel.metrics import chat_metrics
from otel.names import Attr, McpMeta
from otel.semconv import MCP_METHODS
from services.mcp_tools.auth import RequireCredential, trusted_caller
from services.mcp_tools.sample_db import ensure_sample_db
from services.mcp_tools.settings import McpToolsSettings
from services.mcp_tools.sql_tool import QueryLimits, QueryRunner, describe

_FROM_META = ((McpMeta.CONVERSATION_ID, Attr.CONVERSATION_ID), (McpMeta.USER_ID, Attr.USER_ID))
_MAX_ID = 128
_BAGGAGE = W3CBaggagePropagator()


async def _meta_attributes(ctx: Any, call_next: Any) -> Any:
    """Put the conversation and user OMNI2 sent on the SDK's server span: from `_meta`
    (tools/call) or from the W3C baggage in `_meta` (every request). No other baggage key is
    read, and values are size-capped.

    Identity is a claim of the caller, so it is read only from OMNI2 (a request that carried
    the credential, see auth.py). Over HTTP every other request is refused before it gets
    here; the check stays so that a route added without the credential cannot forge users."""
    if not trusted_caller(ctx.request):
        return await call_next(ctx)
    meta = ctx.meta if isinstance(ctx.meta, Mapping) else {}
    carried = _BAGGAGE.extract({"baggage": meta["baggage"]}) if "baggage" in meta else None
    span = trace.get_current_span()
    for key, attr in _FROM_META:
        value = meta.get(key) or (baggage.get_baggage(attr, carried) if carried else None)
        if isinstance(value, str) and value:
            span.set_attribute(attr, value[:_MAX_ID])
    return await call_next(ctx)


_PROTOCOL_VERSION = re.compile(r"\d{4}-\d{2}-\d{2}")


class _MeasureOperations:
    """mcp.server.operation.duration: each request or notification, received to answered,
    with the error type the SDK's span gets (JSON-RPC code, `tool_error`, exception class).
    The tool name is recorded only for the tools this server has."""

    def __init__(self, tools: frozenset[str]) -> None:
        self.tools = tools

    async def __call__(self, ctx: Any, call_next: Any) -> Any:
        started = time.perf_counter()
        error: str | None = None
        try:
            result = await call_next(ctx)
        except MCPError as err:
            error = str(err.error.code)
            raise
        except ValidationError:
            error = str(INVALID_PARAMS)
            raise
        except Exception as err:
            error = type(err).__qualname__
            raise
        else:
            if _is_tool_error(result):
                error = "tool_error"
            return result
        finally:
            # Known methods only: a client cannot mint series.
            method = ctx.method if ctx.method in MCP_METHODS else "_OTHER"
            name = ctx.params.get("name") if isinstance(ctx.params, Mapping) else None
            version = ctx.protocol_version
            chat_metrics().mcp_server(
                method,
                name if method == "tools/call" and name in self.tools else None,
                time.perf_counter() - started,
                error_type=error,
                protocol_version=version
                if isinstance(version, str) and _PROTOCOL_VERSION.fullmatch(version)
                else None,
            )


def _is_tool_error(result: Any) -> bool:
    if isinstance(result, Mapping):
        return result.get("isError") is True
    return getattr(result, "is_error", False) is True


def create_server(settings: McpToolsSettings) -> MCPServer[Any]:
    db = ensure_sample_db(settings.sample_db.resolve())
    queries = QueryRunner(db, QueryLimits.from_settings(settings))
    server: MCPServer[Any] = MCPServer(
        "omni2-tools", instructions="Read-only SQL over a sample shop database."
    )
    server.middleware.append(_meta_attributes)
    server.middleware.append(_MeasureOperations(frozenset({"database_query", "list_tables"})))

    @server.tool()
    async def database_query(sql: str) -> str:
        """Run one read-only SQL query (SQLite) over the sample shop database.

        Tables: products(id, name, category, price), customers(id, name, country),
        orders(id, customer_id, product_id, quantity, ordered_on). Returns JSON rows.
        """
        result = await queries.run(sql)
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


def create_app(settings: McpToolsSettings) -> RequireCredential:
    """The HTTP server: refuses to be built without a credential (MissingCredential)."""
    token = settings.required_auth_token()
    app: Starlette = create_server(settings).streamable_http_app(host=settings.host)
    return RequireCredential(app, token)
