"""The model behind OMNI2, behind one small interface.

A `ChatModel` streams `TextChunk`s and ends with one `Finished` carrying usage. The offline
model is the default because these machines have no network; real providers plug in here.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

Role = Literal["system", "user", "assistant"]


@dataclass(frozen=True)
class ChatMessage:
    role: Role
    content: str


@dataclass(frozen=True)
class TextChunk:
    text: str


@dataclass(frozen=True)
class Finished:
    input_tokens: int
    output_tokens: int
    finish_reason: str = "stop"


ModelEvent = TextChunk | Finished


class ModelError(Exception):
    """The model call failed; the message is safe to show to the user."""


class ChatModel(Protocol):
    provider: str
    name: str

    def stream(self, messages: Sequence[ChatMessage]) -> AsyncIterator[ModelEvent]: ...


def count_tokens(text: str) -> int:
    """Rough whitespace token count: the offline model's unit of usage."""
    return len(text.split())


class OfflineModel:
    """Deterministic model: the same conversation always gets the same reply, word by word."""

    provider = "offline"

    def __init__(self, name: str = "omni2-offline-1", token_delay_s: float = 0.0) -> None:
        self.name = name
        self._delay = token_delay_s

    def reply_text(self, messages: Sequence[ChatMessage]) -> str:
        user_turns = [m.content for m in messages if m.role == "user"]
        last = user_turns[-1] if user_turns else ""
        earlier = len(user_turns) - 1
        memory = (
            f"We have talked about {earlier} earlier message{'s' if earlier != 1 else ''}."
            if earlier
            else "This is the start of our conversation."
        )
        return (
            f"You said: {last.strip().rstrip('.!?')}. {memory} "
            "I am OMNI2's offline model, answering without a network."
        )

    async def stream(self, messages: Sequence[ChatMessage]) -> AsyncIterator[ModelEvent]:
        text = self.reply_text(messages)
        words = text.split(" ")
        for i, word in enumerate(words):
            if self._delay:
                await asyncio.sleep(self._delay)
            yield TextChunk(word if i == len(words) - 1 else word + " ")
        prompt = sum(count_tokens(m.content) for m in messages)
        yield Finished(input_tokens=prompt, output_tokens=count_tokens(text))


def create_model(provider: str, name: str, token_delay_ms: float) -> ChatModel:
    if provider == "offline":
        return OfflineModel(name=name, token_delay_s=token_delay_ms / 1000)
    raise ValueError(f"unknown model provider {provider!r} (available: offline)")
