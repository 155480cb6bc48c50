"""One chat connection at OMNI2: turns in order, each traced as `chat.turn`.

A turn: checks (user, rate limit, usage), the conversation's history from the database, the
agent loop (model calls and tool calls, streamed as token frames), then the message's rows
(user and assistant message, usage, flow events, all with the trace id) and `done`.
"""

from __future__ import annotations

import contextlib
import json
import logging
from dataclasses import dataclass, field
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, format_trace_id
from sqlalchemy.exc import SQLAlchemyError
from starlette.websockets import WebSocket, WebSocketDisconnect

from otel.names import Attr, Event, Flow, LinkRole, SpanName
from otel.propagation import extract_frame
from services.common.protocol import (
    ClientMessage,
    ClientPing,
    FrameError,
    blocked_frame,
    close_reason,
    done_frame,
    error_frame,
    parse_client_frame,
    token_frame,
    warning_frame,
)
from services.omni2.agent import Agent, AgentResult, ClientGone
from services.omni2.checks import CheckRun, Denied, check_message
from services.omni2.db.repository import FlowRecord, TurnRecord, UserContext
from services.omni2.model import ChatMessage, ChatModel, ModelError, ToolSpec
from services.omni2.settings import Omni2Settings
from services.omni2.store import Store
from services.omni2.tools import McpToolbox, ToolsUnavailable

log = logging.getLogger(__name__)
tracer = trace.get_tracer(__name__)


class SessionClosed(Exception):
    """We closed the connection (the user was blocked)."""


@dataclass
class ChatSession:
    websocket: WebSocket
    model: ChatModel
    store: Store
    toolbox: McpToolbox
    settings: Omni2Settings
    user: UserContext
    conversation_id: str
    gateway: SpanContext | None  # the Traefik span this connection came through
    # The turn being answered, until its first token frame is sent (for the first_token event).
    _awaiting_first_token: trace.Span | None = field(default=None, init=False)

    @property
    def user_id(self) -> str:
        return self.user.user_id

    async def run(self) -> None:
        """Serve frames until the client goes away (or we close the connection)."""
        while True:
            message = await self.websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
            try:
                await self.handle(message.get("text"), message.get("bytes"))
            except (ClientGone, SessionClosed):
                return

    async def handle(self, text: str | None, data: bytes | None) -> None:
        try:
            frame = parse_client_frame(text, data)
        except FrameError as err:
            await self._reject(text, err)
            return
        if isinstance(frame, ClientPing):
            await self._send({"type": "pong"})
            return
        assert isinstance(frame, ClientMessage)
        await self._turn(frame)

    def _links(self) -> list[Link]:
        if self.gateway is None:
            return []
        return [Link(self.gateway, {Attr.LINK_ROLE: LinkRole.GATEWAY})]

    def _attributes(self) -> dict[str, Any]:
        return {Attr.CONVERSATION_ID: self.conversation_id, Attr.USER_ID: self.user_id}

    async def _reject(self, text: str | None, err: FrameError) -> None:
        """A malformed frame still gets a traced answer, and the connection stays open."""
        parent = _frame_context(text)
        with tracer.start_as_current_span(
            SpanName.TURN,
            context=parent,
            kind=SpanKind.SERVER,
            links=self._links(),
            attributes=self._attributes(),
        ) as span:
            span.set_attribute(Attr.ERROR_TYPE, err.error_type)
            span.set_status(Status(StatusCode.ERROR, str(err)))
            await self._send(error_frame(str(err), _trace_id(span), err.error_type))

    async def _turn(self, frame: ClientMessage) -> None:
        attributes = self._attributes()
        with tracer.start_as_current_span(
            SpanName.TURN,
            context=extract_frame(frame.raw),
            kind=SpanKind.SERVER,
            links=self._links(),
            attributes=attributes | {Attr.MESSAGE_CHARS: len(frame.text)},
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            self._awaiting_first_token = span
            trace_id = _trace_id(span)
            record = TurnRecord(self.conversation_id, self.user_id, trace_id)
            checks = CheckRun(attributes)
            try:
                async with self.store.db.session() as session:
                    allowance = await check_message(
                        session, checks, self.user_id, self.settings.usage_warning_ratio
                    )
            except Denied as denied:
                record.flow = checks.flow
                await self.store.save_turn(record, attributes)
                await self._deny(span, denied, trace_id)
                return
            except (SQLAlchemyError, OSError) as err:
                # Without the database no check can pass: refuse, and say why.
                log.error("checks failed, database unavailable: %s", err)
                span.set_attribute(Attr.ERROR_TYPE, "database_unavailable")
                span.set_status(Status(StatusCode.ERROR, "database unavailable"))
                await self._send(
                    error_frame(
                        "Service unavailable: OMNI2 cannot reach its database",
                        trace_id,
                        "database_unavailable",
                    )
                )
                return
            self.user = allowance.user
            record.user_text = frame.text
            record.flow = checks.flow
            for warning in allowance.warnings:
                await self._send(warning_frame(warning))
            result = AgentResult(flow=record.flow)
            try:
                reply = await self._answer(frame.text, attributes, result)
            except (ModelError, ToolsUnavailable) as err:
                error_type = err.error_type if isinstance(err, ModelError) else "mcp_unavailable"
                message = f"model failed: {err}" if isinstance(err, ModelError) else str(err)
                self._usage(record, result)
                record.flow.append(
                    FlowRecord(Flow.ERROR, error_type, "error", detail={"error": str(err)})
                )
                span.set_attribute(Attr.ERROR_TYPE, error_type)
                span.set_status(Status(StatusCode.ERROR, message))
                await self.store.save_turn(record, attributes)
                await self._send(error_frame(message, trace_id, error_type))
                return
            except ClientGone:
                self._usage(record, result)
                record.flow.append(FlowRecord(Flow.ERROR, "client_gone", "error"))
                await self.store.save_turn(record, attributes)
                raise
            except Exception as err:  # a bug or an unexpected failure: say so, keep the chat
                log.exception("message of trace %s failed", trace_id)
                self._usage(record, result)
                record.flow.append(
                    FlowRecord(Flow.ERROR, "internal_error", "error", detail={"error": repr(err)})
                )
                span.set_attribute(Attr.ERROR_TYPE, type(err).__name__)
                span.set_status(Status(StatusCode.ERROR, "internal error"))
                await self.store.save_turn(record, attributes)
                await self._send(
                    error_frame("internal error while answering", trace_id, "internal_error")
                )
                return
            record.assistant_text = reply.text
            self._usage(record, reply)
            span.set_attributes(
                {
                    Attr.REPLY_CHARS: len(reply.text),
                    Attr.TOKEN_FRAMES: reply.chunks,
                    Attr.AGENT_ITERATIONS: reply.iterations,
                    Attr.TOOL_CALLS: reply.tool_calls,
                    Attr.USAGE_COST: record.cost,
                }
            )
            await self.store.save_turn(record, attributes)
            result_frame = {
                "tokens_used": reply.input_tokens + reply.output_tokens,
                "tokens_input": reply.input_tokens,
                "tokens_output": reply.output_tokens,
                "tools_used": reply.tools_used,
                "tool_calls": reply.tool_calls,
                "cost": round(record.cost, 6),
                "finish_reason": reply.finish_reason,
                "conversation_id": self.conversation_id,
            }
            await self._send(done_frame(result_frame, trace_id))

    async def _answer(
        self, text: str, attributes: dict[str, Any], result: AgentResult
    ) -> AgentResult:
        history = await self.store.history(
            self.conversation_id, 2 * self.settings.history_turns, attributes
        )
        tools = await self._tools(result)
        agent = Agent(self.model, self.toolbox, self.settings.max_agent_iterations, attributes)
        trace.get_current_span().set_attribute(
            Attr.AGENT_MAX_ITERATIONS, self.settings.max_agent_iterations
        )
        system = [ChatMessage("system", self.settings.system_prompt)]
        prompt = [*system, *history, ChatMessage("user", text)]
        return await agent.run(prompt, tools, self.user, self._send_token, result)

    async def _tools(self, result: AgentResult) -> list[ToolSpec]:
        """The tools this user's role may use; when the MCP server cannot list them, a `warning`
        frame says so and the model answers without tools."""
        if not self.toolbox.configured or not self.user.may("tools"):
            return []
        try:
            catalogue = await self.toolbox.catalogue(self.conversation_id, self.user_id)
        except ToolsUnavailable as err:
            log.warning("no tools for this message: %s", err)
            await self._send(warning_frame(f"tools unavailable: {err}", "tools_unavailable"))
            result.flow.append(
                FlowRecord(
                    Flow.TOOL_CALL, SpanName.MCP_LIST_TOOLS, "error", detail={"error": str(err)}
                )
            )
            return []
        return [t for t in catalogue if self.user.may_use_tool(t.name)]

    def _usage(self, record: TurnRecord, result: AgentResult) -> None:
        record.provider = self.model.provider
        record.model = self.model.name
        record.tokens_input = result.input_tokens
        record.tokens_output = result.output_tokens
        record.cost = (
            result.input_tokens * self.settings.price_input_per_mtok
            + result.output_tokens * self.settings.price_output_per_mtok
        ) / 1_000_000

    async def _deny(self, span: trace.Span, denied: Denied, trace_id: str) -> None:
        span.set_attribute(Attr.ERROR_TYPE, denied.error_type)
        span.set_status(Status(StatusCode.ERROR, denied.message))
        if denied.frame == "blocked":
            await self._send(blocked_frame(denied.message, trace_id))
        else:
            await self._send(error_frame(denied.message, trace_id, denied.error_type))
        if denied.close is not None:
            span.set_attributes(
                {Attr.CLOSE_CODE: int(denied.close), Attr.CLOSE_REASON: denied.message}
            )
            with contextlib.suppress(RuntimeError, OSError):
                await self.websocket.close(code=denied.close, reason=close_reason(denied.message))
            raise SessionClosed

    async def _send_token(self, text: str) -> None:
        if self._awaiting_first_token is not None:
            # Same event as the client's and the dashboard's: time to first token per layer.
            self._awaiting_first_token.add_event(Event.FIRST_TOKEN)
            self._awaiting_first_token = None
        await self._send(token_frame(text))

    async def _send(self, frame: dict[str, Any]) -> None:
        try:
            await self.websocket.send_text(json.dumps(frame))
        except (WebSocketDisconnect, RuntimeError, OSError) as err:
            span = trace.get_current_span()
            span.set_attribute(Attr.ERROR_TYPE, "client_gone")
            span.set_status(Status(StatusCode.ERROR, "client closed before the reply was sent"))
            raise ClientGone from err


def _trace_id(span: trace.Span) -> str:
    return format_trace_id(span.get_span_context().trace_id)


def _frame_context(text: str | None) -> Any:
    """Best-effort context from a frame we could not accept (malformed context is ignored)."""
    try:
        frame = json.loads(text) if text is not None else None
    except ValueError:
        frame = None
    return extract_frame(frame if isinstance(frame, dict) else {})
