"""The agent loop of one message: call the model, run the tools it asks for, call it again.

Each model call is a `chat <model>` span (GenAI attributes), each tool call an
`execute_tool <name>` span whose MCP client span (and the server's) hang below it. The loop
stops when the model answers without tools, or at `max_iterations` model calls.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from opentelemetry.trace import SpanKind

from otel.metrics import chat_metrics
from otel.names import Attr, Flow, SpanName
from otel.redaction import redact_text
from services.db.repository.flow import FlowRecord
from services.db.repository.users import UserContext
from services.omni2.model import (
    ChatMessage,
    ChatModel,
    Finished,
    ModelError,
    TextChunk,
    ToolCall,
    ToolSpec,
)
from services.omni2.steps import traced_step
from services.omni2.tools import McpToolbox, ToolResult, ToolsUnavailable

SendToken = Callable[[str], Awaitable[None]]


class ClientGone(Exception):
    """The client closed while we were answering (raised by SendToken)."""


@dataclass
class AgentResult:
    text: str = ""
    chunks: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    finish_reason: str = "stop"
    iterations: int = 0
    tools_used: list[str] = field(default_factory=list)
    tool_calls: int = 0
    flow: list[FlowRecord] = field(default_factory=list)


@dataclass
class Agent:
    model: ChatModel
    toolbox: McpToolbox
    max_iterations: int
    attributes: dict[str, Any]  # conversation and user, on every span
    chunk_metrics: bool = True  # time per output chunk, recorded for each chunk

    async def run(
        self,
        messages: list[ChatMessage],
        tools: Sequence[ToolSpec],
        user: UserContext,
        send_token: SendToken,
        result: AgentResult,
    ) -> AgentResult:
        """Fill `result` as it goes (so a failure still reports usage and flow so far)."""
        conversation = list(messages)
        for _ in range(self.max_iterations):
            result.iterations += 1
            said_before = len(result.text)
            finished = await self._call_model(conversation, tools, send_token, result)
            if finished.finish_reason != "tool_calls" or not finished.tool_calls:
                result.finish_reason = finished.finish_reason
                return result
            # The model's words before its tool calls belong to its turn in the conversation.
            said = result.text[said_before:]
            conversation.append(ChatMessage("assistant", said, tool_calls=finished.tool_calls))
            for call in finished.tool_calls:
                outcome = await self._execute_tool(call, user, result)
                conversation.append(
                    ChatMessage(
                        "tool",
                        outcome.content,
                        tool_call_id=call.id,
                        tool_name=call.name,
                        is_error=outcome.is_error,
                    )
                )
        result.finish_reason = "max_iterations"
        result.flow.append(
            FlowRecord(
                Flow.ERROR,
                "max_iterations",
                "error",
                detail={"max_iterations": self.max_iterations},
            )
        )
        return result

    async def _call_model(
        self,
        conversation: list[ChatMessage],
        tools: Sequence[ToolSpec],
        send_token: SendToken,
        result: AgentResult,
    ) -> Finished:
        model = self.model
        with traced_step(
            result.flow,
            Flow.MODEL_CALL,
            model.name,
            SpanName.model_call(model.name),
            span_kind=SpanKind.CLIENT,
            attributes=self.attributes
            | {
                Attr.GEN_AI_OPERATION: "chat",
                Attr.GEN_AI_PROVIDER: model.provider,
                Attr.GEN_AI_REQUEST_MODEL: model.name,
            },
            failure="model call failed",
            not_failures=(ClientGone,),  # chat.py records a client that left
        ) as step:
            span = step.span
            endpoint = getattr(model, "endpoint", None)  # providers reached over HTTP
            server = None
            if endpoint is not None:
                server = (endpoint.host, endpoint.port or 443)
                span.set_attributes({Attr.SERVER_ADDRESS: server[0], Attr.SERVER_PORT: server[1]})
            measured = chat_metrics().model_call(
                model.provider, model.name, server, each_chunk=self.chunk_metrics
            )
            finished: Finished | None = None
            chunks = 0
            try:
                async for event in model.stream(conversation, tools):
                    if isinstance(event, TextChunk):
                        since_request = measured.chunk()
                        if chunks == 0:
                            span.set_attribute(Attr.TIME_TO_FIRST_CHUNK, since_request)
                        chunks += 1
                        result.chunks += 1
                        result.text += event.text
                        await send_token(event.text)
                    elif isinstance(event, Finished):
                        finished = event
                if finished is None:
                    raise ModelError("the model stream ended without finishing", "incomplete")
            except ModelError as err:
                # The provider's text stays here and on the span (redacted); the user gets a
                # fixed reason (chat.py).
                step.fail(err.error_type, str(err), error=redact_text(str(err)))
                measured.failed(err.error_type)
                raise
            measured.finished(
                response_model=finished.response_model or model.name,
                input_tokens=finished.input_tokens,
                output_tokens=finished.output_tokens,
                user_id=self._user_id,
            )
            result.input_tokens += finished.input_tokens
            result.output_tokens += finished.output_tokens
            span.set_attributes(
                {
                    Attr.GEN_AI_RESPONSE_MODEL: finished.response_model or model.name,
                    Attr.GEN_AI_INPUT_TOKENS: finished.input_tokens,
                    Attr.GEN_AI_OUTPUT_TOKENS: finished.output_tokens,
                    Attr.GEN_AI_FINISH_REASONS: [finished.finish_reason],
                }
            )
            if finished.response_id:
                span.set_attribute(Attr.GEN_AI_RESPONSE_ID, finished.response_id)
            step.record.detail = {
                "finish_reason": finished.finish_reason,
                "input_tokens": finished.input_tokens,
                "output_tokens": finished.output_tokens,
                "tool_calls": [c.name for c in finished.tool_calls],
            }
            return finished

    async def _execute_tool(
        self, call: ToolCall, user: UserContext, result: AgentResult
    ) -> ToolResult:
        result.tool_calls += 1
        if call.name not in result.tools_used:
            result.tools_used.append(call.name)
        with traced_step(
            result.flow,
            Flow.TOOL_CALL,
            call.name,
            SpanName.execute_tool(call.name),
            attributes=self.attributes
            | {
                Attr.GEN_AI_OPERATION: "execute_tool",
                Attr.GEN_AI_TOOL_NAME: call.name,
                Attr.GEN_AI_TOOL_CALL_ID: call.id,
                Attr.GEN_AI_TOOL_TYPE: "extension",
            },
            detail={"call_id": call.id},
            failure="tool call failed",
            not_failures=(ClientGone,),
        ) as step:
            try:
                if not user.may_use_tool(call.name):
                    outcome = ToolResult(
                        f"tool {call.name!r} is not allowed for role {user.role!r}",
                        True,
                        "tool_not_allowed",
                    )
                else:
                    outcome = await self.toolbox.call(call, user_id=user.user_id, **self._ids())
            except ToolsUnavailable as err:
                step.span.set_attribute(Attr.TOOL_STATUS, "error")
                step.fail("mcp_unavailable", str(err), error=redact_text(str(err)))
                raise
            step.span.set_attribute(Attr.TOOL_STATUS, "error" if outcome.is_error else "ok")
            if outcome.is_error:
                error_type = outcome.error_type or "tool_error"
                step.fail(error_type, outcome.content[:200], error=outcome.content[:500])
            return outcome

    @property
    def _user_id(self) -> str:
        return str(self.attributes.get(Attr.USER_ID, ""))

    def _ids(self) -> dict[str, str]:
        return {"conversation_id": str(self.attributes.get(Attr.CONVERSATION_ID, ""))}
