"""One chat connection at OMNI2: turns in order, each traced as `chat.turn`."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, format_trace_id
from starlette.websockets import WebSocket, WebSocketDisconnect

from otel.names import Attr, LinkRole, SpanName
from otel.propagation import extract_frame
from services.common.protocol import (
    ClientMessage,
    ClientPing,
    FrameError,
    done_frame,
    error_frame,
    parse_client_frame,
    token_frame,
)
from services.omni2.model import ChatMessage, ChatModel, Finished, ModelError, TextChunk

log = logging.getLogger(__name__)
tracer = trace.get_tracer(__name__)


class ClientGone(Exception):
    """The client closed while we were answering."""


@dataclass
class Reply:
    text: str = ""
    chunks: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    finish_reason: str = "stop"


@dataclass
class ChatSession:
    websocket: WebSocket
    model: ChatModel
    user_id: str
    conversation_id: str
    gateway: SpanContext | None  # the Traefik span this connection came through
    history_turns: int
    history: list[ChatMessage] = field(default_factory=list)

    async def run(self) -> None:
        """Serve frames until the client goes away."""
        while True:
            message = await self.websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
            try:
                await self.handle(message.get("text"), message.get("bytes"))
            except ClientGone:
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
        with tracer.start_as_current_span(
            SpanName.TURN,
            context=extract_frame(frame.raw),
            kind=SpanKind.SERVER,
            links=self._links(),
            attributes=self._attributes() | {Attr.MESSAGE_CHARS: len(frame.text)},
        ) as span:
            trace_id = _trace_id(span)
            prompt = [*self.history[-2 * self.history_turns :], ChatMessage("user", frame.text)]
            try:
                reply = await self._generate(prompt)
            except ModelError as err:
                span.set_attribute(Attr.ERROR_TYPE, "model_error")
                span.set_status(Status(StatusCode.ERROR, str(err)))
                await self._send(error_frame(f"model failed: {err}", trace_id, "model_error"))
                return
            self.history += [prompt[-1], ChatMessage("assistant", reply.text)]
            result = {
                "tokens_used": reply.input_tokens + reply.output_tokens,
                "tokens_input": reply.input_tokens,
                "tokens_output": reply.output_tokens,
                "tools_used": [],
                "tool_calls": 0,
                "conversation_id": self.conversation_id,
            }
            span.set_attributes(
                {Attr.REPLY_CHARS: len(reply.text), Attr.TOKEN_FRAMES: reply.chunks}
            )
            await self._send(done_frame(result, trace_id))

    async def _generate(self, prompt: list[ChatMessage]) -> Reply:
        """Stream the model's answer to the client as token frames, inside `chat <model>`."""
        reply = Reply()
        with tracer.start_as_current_span(
            SpanName.model_call(self.model.name),
            kind=SpanKind.CLIENT,
            attributes={
                Attr.GEN_AI_OPERATION: "chat",
                Attr.GEN_AI_PROVIDER: self.model.provider,
                Attr.GEN_AI_REQUEST_MODEL: self.model.name,
                Attr.CONVERSATION_ID: self.conversation_id,
            },
        ) as span:
            started = time.perf_counter()
            async for event in self.model.stream(prompt):
                if isinstance(event, TextChunk):
                    if reply.chunks == 0:
                        span.set_attribute(Attr.TIME_TO_FIRST_CHUNK, time.perf_counter() - started)
                    reply.chunks += 1
                    reply.text += event.text
                    await self._send(token_frame(event.text))
                elif isinstance(event, Finished):
                    reply.input_tokens = event.input_tokens
                    reply.output_tokens = event.output_tokens
                    reply.finish_reason = event.finish_reason
            span.set_attributes(
                {
                    Attr.GEN_AI_RESPONSE_MODEL: self.model.name,
                    Attr.GEN_AI_INPUT_TOKENS: reply.input_tokens,
                    Attr.GEN_AI_OUTPUT_TOKENS: reply.output_tokens,
                    Attr.GEN_AI_FINISH_REASONS: [reply.finish_reason],
                }
            )
        return reply

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
