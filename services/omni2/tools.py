"""OMNI2's MCP client: the tool catalogue and tool calls, only the tools a role allows.

The MCP SDK traces each request as a CLIENT span (`tools/call <tool>`, `mcp.method.name`) and
puts the trace context in `params._meta`; we add the conversation and user beside it, so the
mcp-tools server's spans join the message trace with the same attributes.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client
from mcp.shared.exceptions import MCPError
from opentelemetry import baggage, context

from otel.names import Attr, McpMeta
from services.omni2.model import ToolCall, ToolSpec

log = logging.getLogger(__name__)

MAX_RESULT_CHARS = 4000  # what a tool result may add to the model's context


class ToolsUnavailable(Exception):
    """The MCP server cannot be reached; the message fails with an `error` frame."""


@dataclass(frozen=True)
class ToolResult:
    content: str
    is_error: bool
    error_type: str | None = None


class McpToolbox:
    """Tools of one MCP server (streamable HTTP). The catalogue is cached for `ttl_s`."""

    def __init__(self, url: str | Any | None, timeout_s: float = 10.0, ttl_s: float = 60.0) -> None:
        self.url = url  # a URL, or (in tests) an MCPServer object served in-process
        self.timeout_s = timeout_s
        self.ttl_s = ttl_s
        self._catalogue: list[ToolSpec] | None = None
        self._fetched_at = 0.0
        self._http: httpx2.AsyncClient | None = None  # shared: no TLS/pool setup per call

    @property
    def configured(self) -> bool:
        return bool(self.url)

    def _client(self) -> Client:
        assert self.url
        if not isinstance(self.url, str):
            return Client(self.url, read_timeout_seconds=self.timeout_s)
        if self._http is None:
            self._http = create_mcp_http_client(timeout=httpx2.Timeout(self.timeout_s))
        return Client(
            streamable_http_client(self.url, http_client=self._http),
            read_timeout_seconds=self.timeout_s,
        )

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    async def catalogue(self, conversation_id: str, user_id: str) -> list[ToolSpec]:
        """Every tool the server offers (cached); raises ToolsUnavailable."""
        if not self.url:
            return []
        fresh = time.monotonic() - self._fetched_at < self.ttl_s
        if self._catalogue is not None and fresh:
            return self._catalogue
        try:
            with _baggage(conversation_id, user_id):
                async with self._client() as client:
                    listed = await client.list_tools()
        except Exception as err:  # connection errors arrive wrapped in exception groups
            raise ToolsUnavailable(f"MCP server unreachable: {_describe(err)}") from err
        self._catalogue = [
            ToolSpec(t.name, t.description or "", dict(t.input_schema or {"type": "object"}))
            for t in listed.tools
        ]
        self._fetched_at = time.monotonic()
        return self._catalogue

    async def call(self, call: ToolCall, conversation_id: str, user_id: str) -> ToolResult:
        """Run one tool on the MCP server. A failing tool is a result with is_error (for the
        model); an unreachable server raises ToolsUnavailable."""
        meta: Any = {McpMeta.CONVERSATION_ID: conversation_id, McpMeta.USER_ID: user_id}
        try:
            with _baggage(conversation_id, user_id):
                async with self._client() as client:
                    result = await client.call_tool(call.name, call.arguments, meta=meta)
        except MCPError as err:
            return ToolResult(f"tool call failed: {err}", True, f"mcp_{err.error.code}")
        except Exception as err:
            self._catalogue = None  # ask again next time
            raise ToolsUnavailable(f"MCP server unreachable: {_describe(err)}") from err
        text = "\n".join(
            str(getattr(part, "text", "")) for part in result.content if hasattr(part, "text")
        )
        if len(text) > MAX_RESULT_CHARS:
            text = text[: MAX_RESULT_CHARS - 3] + "..."
        return ToolResult(text, bool(result.is_error), "tool_error" if result.is_error else None)


@contextmanager
def _baggage(conversation_id: str, user_id: str) -> Iterator[None]:
    """Conversation and user as W3C baggage for the MCP requests of this block: the SDK
    injects the current context into each request's `_meta`, the handshake's too, and the
    mcp-tools server turns these two keys (and nothing else) into span attributes."""
    ctx = baggage.set_baggage(Attr.CONVERSATION_ID, conversation_id)
    ctx = baggage.set_baggage(Attr.USER_ID, user_id, context=ctx)
    token = context.attach(ctx)
    try:
        yield
    finally:
        context.detach(token)


def _describe(err: BaseException) -> str:
    """The innermost cause of an error, also inside exception groups."""
    while isinstance(err, BaseExceptionGroup) and err.exceptions:
        err = err.exceptions[0]
    while err.__cause__ is not None and not str(err):
        err = err.__cause__
    text = str(err) or type(err).__name__
    return text[:200]
