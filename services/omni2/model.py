"""The model behind OMNI2, behind one small interface.

A `ChatModel` streams `TextChunk`s and ends with one `Finished` carrying usage and, when the
model wants tools, the `ToolCall`s to run (finish reason "tool_calls"). The agent loop
(agent.py) runs the tools and calls the model again with their results. The offline model is
the default because these machines have no network; real providers live in providers.py.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

Role = Literal["system", "user", "assistant", "tool"]


@dataclass(frozen=True)
class ToolCall:
    id: str
    name: str
    arguments: dict[str, Any]


@dataclass(frozen=True)
class ChatMessage:
    role: Role
    content: str
    tool_calls: tuple[ToolCall, ...] = ()  # assistant: the tools it asked for
    tool_call_id: str | None = None  # tool: which call this result answers
    tool_name: str | None = None  # tool: the tool that produced it
    is_error: bool = False  # tool: the call failed (the model is told so)


@dataclass(frozen=True)
class ToolSpec:
    """A tool the model may call (from the MCP server's catalogue)."""

    name: str
    description: str
    input_schema: dict[str, Any] = field(default_factory=lambda: {"type": "object"})


@dataclass(frozen=True)
class TextChunk:
    text: str


@dataclass(frozen=True)
class Finished:
    input_tokens: int
    output_tokens: int
    finish_reason: str = "stop"
    tool_calls: tuple[ToolCall, ...] = ()
    response_model: str | None = None
    response_id: str | None = None


ModelEvent = TextChunk | Finished


class ModelError(Exception):
    """The model call failed; the message is safe to show to the user (no secrets)."""

    def __init__(self, message: str, error_type: str = "model_error") -> None:
        super().__init__(message)
        self.error_type = error_type


class ChatModel(Protocol):
    provider: str
    name: str

    def stream(
        self, messages: Sequence[ChatMessage], tools: Sequence[ToolSpec] = ()
    ) -> AsyncIterator[ModelEvent]: ...


def count_tokens(text: str) -> int:
    """Rough whitespace token count: the offline model's unit of usage."""
    return len(text.split())


# Prompts that make the offline model call a tool (when the user's role allows it).
_TOOL_TRIGGERS: list[tuple[re.Pattern[str], str, dict[str, Any]]] = [
    (
        re.compile(r"\b(broken|bad|failing)\b.*\b(query|sql)\b", re.I),
        "database_query",
        {"sql": "SELECT * FROM no_such_table"},
    ),
    (re.compile(r"\b(tables?|schema)\b", re.I), "list_tables", {}),
    (
        re.compile(r"\b(query|database|sql|orders?|products?)\b", re.I),
        "database_query",
        {
            "sql": "SELECT category, COUNT(*) AS products, ROUND(AVG(price), 2) AS avg_price "
            "FROM products GROUP BY category ORDER BY category"
        },
    ),
]


class OfflineModel:
    """Deterministic model: the same conversation always gets the same reply, word by word.

    It asks for a tool when the user's latest message calls for one (see _TOOL_TRIGGERS) and
    the tool is offered, then answers with what the tool returned.
    """

    provider = "offline"

    def __init__(self, name: str = "omni2-offline-1", token_delay_s: float = 0.0) -> None:
        self.name = name
        self._delay = token_delay_s
        self._calls = 0

    def _tool_call(
        self, messages: Sequence[ChatMessage], tools: Sequence[ToolSpec]
    ) -> ToolCall | None:
        last_user = max((i for i, m in enumerate(messages) if m.role == "user"), default=-1)
        if last_user < 0 or any(m.role == "tool" for m in messages[last_user:]):
            return None  # tools already ran for this message: answer now
        offered = {t.name for t in tools}
        for pattern, tool, arguments in _TOOL_TRIGGERS:
            if pattern.search(messages[last_user].content):
                if tool not in offered:
                    return None
                self._calls += 1
                return ToolCall(f"call_{self._calls:06d}", tool, dict(arguments))
        return None

    def reply_text(self, messages: Sequence[ChatMessage]) -> str:
        last_user = max((i for i, m in enumerate(messages) if m.role == "user"), default=-1)
        last = messages[last_user].content if last_user >= 0 else ""
        earlier = sum(1 for m in messages[: max(last_user, 0)] if m.role == "user")
        memory = (
            f"We have talked about {earlier} earlier message{'s' if earlier != 1 else ''}."
            if earlier
            else "This is the start of our conversation."
        )
        text = f"You said: {last.strip().rstrip('.!?')}. {memory} "
        results = [m for m in messages[last_user + 1 :] if m.role == "tool"]
        for result in results:
            summary = _summarize(result.content)
            if result.is_error:
                text += f"The {result.tool_name} tool failed: {summary} "
            else:
                text += f"The {result.tool_name} tool returned: {summary} "
        return text + "I am OMNI2's offline model, answering without a network."

    async def stream(
        self, messages: Sequence[ChatMessage], tools: Sequence[ToolSpec] = ()
    ) -> AsyncIterator[ModelEvent]:
        prompt = sum(count_tokens(m.content) for m in messages)
        call = self._tool_call(messages, tools)
        if call is not None:
            if self._delay:
                await asyncio.sleep(self._delay)
            yield Finished(
                input_tokens=prompt,
                output_tokens=count_tokens(json.dumps(call.arguments)) + 1,
                finish_reason="tool_calls",
                tool_calls=(call,),
                response_model=self.name,
            )
            return
        text = self.reply_text(messages)
        words = text.split(" ")
        for i, word in enumerate(words):
            if self._delay:
                await asyncio.sleep(self._delay)
            yield TextChunk(word if i == len(words) - 1 else word + " ")
        yield Finished(
            input_tokens=prompt, output_tokens=count_tokens(text), response_model=self.name
        )


def _summarize(content: str, limit: int = 160) -> str:
    flat = " ".join(content.split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."
