"""OMNI2's MCP client: the tool catalogue and tool calls, only the tools a role allows.

The MCP SDK traces each request as a CLIENT span (`tools/call <tool>`, `mcp.method.name`) and
puts the trace context in `params._meta`; we add the conversation and user beside it, so the
mcp-tools server's spans join the message trace with the same attributes.

The session is opened and the catalogue read when OMNI2 starts (`start`, trace `mcp.connect`),
and the catalogue is refreshed in the background: a message only waits for MCP work it needs
(a tool call, or a reconnect after the server went away), and that work has its spans.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import httpx2

# The SDK imports jsonschema on the first tool result it validates: ~50-200 ms inside the first
# tool call's `execute_tool` span, after its `tools/call` span. Imported here, it costs at start.
import jsonschema  # noqa: F401
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client
from mcp.shared.exceptions import MCPError
from mcp_types import CONNECTION_CLOSED
from opentelemetry import baggage, context, trace
from opentelemetry.trace import SpanKind, Status, StatusCode
from pydantic import SecretStr

from otel.metrics import chat_metrics
from otel.names import Attr, McpMeta, SpanName
from services.omni2.model import ToolCall, ToolSpec
from services.omni2.settings import Omni2Settings

log = logging.getLogger(__name__)
tracer = trace.get_tracer(__name__)

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
    when it fails. The catalogue is read again in the background once older than `ttl_s`."""

    def __init__(
        self,
        url: str | Any | None,
        timeout_s: float = 10.0,
        ttl_s: float = 60.0,
        auth_token: SecretStr | None = None,
    ) -> None:
        self.url = url  # a URL, or (in tests) an MCPServer object served in-process
        self.timeout_s = timeout_s
        self._auth_token = auth_token
        self.ttl_s = ttl_s
        self._catalogue: list[ToolSpec] | None = None
        self._fetched_at = 0.0
        self._http: httpx2.AsyncClient | None = None  # shared: no TLS/pool setup per session
        self._connection: _Connection | None = None
        self._lock: asyncio.Lock | None = None
        self._warm_up: asyncio.Task[None] | None = None  # start()'s connect
        self._refresh: asyncio.Task[None] | None = None  # a stale catalogue being read again

    @classmethod
    def from_settings(cls, settings: Omni2Settings) -> McpToolbox:
        if settings.mcp_url and not settings.mcp_auth_token:
            raise ValueError(
                "OMNI2_MCP_URL is set but OMNI2_MCP_AUTH_TOKEN is not: the MCP tool server "
                "answers only callers with its credential (MCP_TOOLS_AUTH_TOKEN there)"
            )
        return cls(settings.mcp_url, settings.mcp_timeout_s, auth_token=settings.mcp_auth_token)

    @property
    def configured(self) -> bool:
        return bool(self.url)

    def start(self) -> None:
        """Open the session and read the catalogue now, in the background and in a trace of
        its own (`mcp.connect`): the HTTP client's setup, the handshake and `tools/list` are
        then charged to no message. When the server is not up yet, the first message that
        needs tools connects (its trace shows it)."""
        if self.url and self._warm_up is None:
            self._warm_up = asyncio.create_task(self._connect_at_start())

    async def _connect_at_start(self) -> None:
        with tracer.start_as_current_span(
            SpanName.MCP_CONNECT, context=context.Context(), kind=SpanKind.INTERNAL
        ) as span:
            try:
                tools = await self._fetch_catalogue()
            except ToolsUnavailable as err:
                log.warning("MCP tools not ready at start (the first message asks again): %s", err)
                span.set_attribute(Attr.ERROR_TYPE, "mcp_unavailable")
                span.set_status(Status(StatusCode.ERROR, str(err)))
                return
            log.info("MCP session open, %d tools: %s", len(tools), ", ".join(t.name for t in tools))

    def _client(self) -> Client:
        assert self.url
        if not isinstance(self.url, str):
            return Client(self.url, read_timeout_seconds=self.timeout_s)
        if self._http is None:
            # Every request carries the credential only OMNI2 holds; the client's headers
            # never reach a span (the SDK records method and target only).
            headers = {}
            if self._auth_token is not None:
                headers["Authorization"] = f"Bearer {self._auth_token.get_secret_value()}"
            self._http = create_mcp_http_client(
                headers=headers, timeout=httpx2.Timeout(self.timeout_s)
            )
        return Client(
            streamable_http_client(self.url, http_client=self._http),
            read_timeout_seconds=self.timeout_s,
        )

    async def _session(self) -> Client:
        """The open session, connecting first if there is none (the handshake's spans join
        the trace that needed it: `mcp.connect` at start, else the message's)."""
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

    async def _request(self, method: str, send: Any, tool: str | None = None) -> Any:
        """Run `send(client)` (an MCP `method` request) on the session; a broken session is
        reopened once. Each request sent is one mcp.client.operation.duration measurement."""
        for attempt in (1, 2):
            client = await self._session()
            started = time.perf_counter()
            try:
                answer = await send(client)
            except MCPError as err:
                self._measured(method, tool, started, str(err.error.code))
                if err.error.code != CONNECTION_CLOSED or attempt == 2:
                    raise
            except Exception as err:
                self._measured(method, tool, started, type(err).__qualname__)
                if attempt == 2:
                    raise ToolsUnavailable(f"MCP server unreachable: {_describe(err)}") from err
            else:
                failed = getattr(answer, "is_error", False) is True  # a CallToolResult
                self._measured(method, tool, started, "tool_error" if failed else None)
                return answer
            log.info("MCP session broke; reconnecting")
            await self._reset()
        raise AssertionError("unreachable")

    def _measured(self, method: str, tool: str | None, started: float, error: str | None) -> None:
        chat_metrics().mcp_client(
            method,
            tool,
            time.perf_counter() - started,
            error_type=error,
            server=self._server,
        )

    @functools.cached_property
    def _server(self) -> tuple[str, int] | None:
        """server.address and server.port of the MCP server (None in-process)."""
        if not isinstance(self.url, str):
            return None
        url = httpx2.URL(self.url)
        return (url.host, url.port or (443 if url.scheme == "https" else 80))

    async def aclose(self) -> None:
        for task in (self._warm_up, self._refresh):
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        await self._reset()
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    async def catalogue(self, conversation_id: str, user_id: str) -> list[ToolSpec]:
        """Every tool the server offers; raises ToolsUnavailable. A stale catalogue is still
        used while a background task reads it again, so only a message that finds none (the
        server was down so far) waits for `tools/list`."""
        if not self.url:
            return []
        if self._catalogue is None and self._warm_up is not None and not self._warm_up.done():
            await asyncio.shield(self._warm_up)  # the connect under way at start
        if self._catalogue is not None:
            if time.monotonic() - self._fetched_at >= self.ttl_s:
                self._refresh_in_background()
            return self._catalogue
        with _baggage(conversation_id, user_id):
            return await self._fetch_catalogue()

    def _refresh_in_background(self) -> None:
        if self._refresh is None or self._refresh.done():
            # A trace of its own (a `tools/list` root span), not the message's.
            self._refresh = asyncio.create_task(
                self._refresh_catalogue(), context=contextvars.Context()
            )

    async def _refresh_catalogue(self) -> None:
        try:
            await self._fetch_catalogue()
        except ToolsUnavailable as err:
            log.warning("cannot refresh the MCP tool catalogue: %s", err)

    async def _fetch_catalogue(self) -> list[ToolSpec]:
        try:
            listed = await self._request("tools/list", lambda client: client.list_tools())
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
                    "tools/call",
                    lambda client: client.call_tool(call.name, call.arguments, meta=meta),
                    call.name,
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
