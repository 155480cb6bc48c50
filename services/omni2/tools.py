"""OMNI2's MCP client: the tool catalogue and tool calls, only the tools a role allows.

The MCP SDK traces each request as a CLIENT span (`tools/call <tool>`, `mcp.method.name`) and
puts the trace context in `params._meta`; we add the conversation and user beside it, so the
mcp-tools server's spans join the message trace with the same attributes.
"""

from __future__ import annotations

import asyncio
import contextlib
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
from mcp_types import CONNECTION_CLOSED
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


class _Connection:
    """One MCP client session kept open between tool calls, owned by a task of its own:
    the SDK's transport runs in an anyio task group, which the task that entered it must also
    leave. Requests may come from any task."""

    def __init__(self, make_client: Any) -> None:
        self.client: Client | None = None
        self.error: BaseException | None = None
        self.ready = asyncio.Event()
        self._stop = asyncio.Event()
        self._task = asyncio.create_task(self._run(make_client))

    async def _run(self, make_client: Any) -> None:
        try:
            async with make_client() as client:
                self.client = client
                self.ready.set()
                await self._stop.wait()
        except Exception as err:  # connection errors arrive wrapped in exception groups
            self.error = err
        finally:
            self.client = None
            self.ready.set()

    async def close(self) -> None:
        self._stop.set()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._task, 5)


class McpToolbox:
    """Tools of one MCP server (streamable HTTP), over one session kept open and reopened
    when it fails. The catalogue is cached for `ttl_s`."""

    def __init__(self, url: str | Any | None, timeout_s: float = 10.0, ttl_s: float = 60.0) -> None:
        self.url = url  # a URL, or (in tests) an MCPServer object served in-process
        self.timeout_s = timeout_s
        self.ttl_s = ttl_s
        self._catalogue: list[ToolSpec] | None = None
        self._fetched_at = 0.0
        self._http: httpx2.AsyncClient | None = None  # shared: no TLS/pool setup per session
        self._connection: _Connection | None = None
        self._lock: asyncio.Lock | None = None

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

    async def _session(self) -> Client:
        """The open session, connecting first if there is none (the handshake's spans join
        the trace of the message that needed it)."""
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            connection = self._connection
            if connection is None or (connection.ready.is_set() and connection.client is None):
                connection = self._connection = _Connection(self._client)
            try:
                await asyncio.wait_for(connection.ready.wait(), self.timeout_s)
            except TimeoutError:
                await self._reset()
                raise ToolsUnavailable("MCP server unreachable: connection timed out") from None
            if connection.client is None:
                self._connection = None
                cause = connection.error or RuntimeError("closed")
                raise ToolsUnavailable(f"MCP server unreachable: {_describe(cause)}") from cause
            return connection.client

    async def _reset(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            await connection.close()

    async def _request(self, send: Any) -> Any:
        """Run `send(client)` on the session; a broken session is reopened once."""
        for attempt in (1, 2):
            client = await self._session()
            try:
                return await send(client)
            except MCPError as err:
                if err.error.code != CONNECTION_CLOSED or attempt == 2:
                    raise
            except Exception as err:
                if attempt == 2:
                    raise ToolsUnavailable(f"MCP server unreachable: {_describe(err)}") from err
            log.info("MCP session broke; reconnecting")
            await self._reset()
        raise AssertionError("unreachable")

    async def aclose(self) -> None:
        await self._reset()
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
                listed = await self._request(lambda client: client.list_tools())
        except MCPError as err:
            raise ToolsUnavailable(f"MCP server failed to list its tools: {err}") from err
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
                result = await self._request(
                    lambda client: client.call_tool(call.name, call.arguments, meta=meta)
                )
        except MCPError as err:
            if err.error.code == CONNECTION_CLOSED:
                raise ToolsUnavailable(f"MCP server unreachable: {err}") from err
            return ToolResult(f"tool call failed: {err}", True, f"mcp_{err.error.code}")
        except ToolsUnavailable:
            self._catalogue = None  # ask again next time
            raise
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
