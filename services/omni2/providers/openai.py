"""OpenAI-compatible chat completions through the official `openai` SDK, streamed, with tool
calls; works with OpenAI, vLLM's and Ollama's OpenAI-compatible servers (OMNI2_OPENAI_BASE_URL).
Chunks carry `choices[0].delta` (content, or tool_calls by index with argument fragments) and
`finish_reason`; the last chunk carries `usage` (stream_options.include_usage).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from typing import Any

import openai

from services.omni2.model import (
    ChatMessage,
    Finished,
    ModelError,
    ModelEvent,
    TextChunk,
    ToolSpec,
)
from services.omni2.providers.http import SdkModel, body_of, tool_calls


def to_openai(messages: Sequence[ChatMessage]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for m in messages:
        if m.role == "tool":
            content = f"ERROR: {m.content}" if m.is_error else m.content
            out.append({"role": "tool", "tool_call_id": m.tool_call_id, "content": content})
        elif m.role == "assistant" and m.tool_calls:
            out.append(
                {
                    "role": "assistant",
                    "content": m.content or None,
                    "tool_calls": [
                        {
                            "id": c.id,
                            "type": "function",
                            "function": {"name": c.name, "arguments": json.dumps(c.arguments)},
                        }
                        for c in m.tool_calls
                    ],
                }
            )
        else:
            out.append({"role": m.role, "content": m.content})
    return out


class OpenAICompatibleModel(SdkModel):
    provider = "openai"
    default_base_url = "https://api.openai.com/v1"

    def _sdk(self) -> openai.AsyncOpenAI:
        # Local servers (vLLM, Ollama) need no key; the SDK insists on one.
        return openai.AsyncOpenAI(
            api_key=self._key or "unused",
            base_url=self.base_url,
            http_client=self._http,
            max_retries=0,
            timeout=self._timeout,
        )

    def request(self, messages: Sequence[ChatMessage], tools: Sequence[ToolSpec]) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.name,
            "messages": to_openai(messages),
            "max_tokens": self._max_tokens,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if tools:
            body["tools"] = [
                {
                    "type": "function",
                    "function": {
                        "name": t.name,
                        "description": t.description,
                        "parameters": t.input_schema,
                    },
                }
                for t in tools
            ]
        return body

    async def stream(
        self, messages: Sequence[ChatMessage], tools: Sequence[ToolSpec] = ()
    ) -> AsyncIterator[ModelEvent]:
        try:
            async for event in self._events(self.request(messages, tools)):
                yield event
        except openai.APIStatusError as err:
            raise self.status_error(err.status_code, body_of(err)) from None
        except openai.APIConnectionError as err:
            raise self.transport_error(err, isinstance(err, openai.APITimeoutError)) from None
        except openai.APIError as err:  # an error object in the stream
            raise ModelError(
                f"openai stream error: {err.message}"[:300], "provider_error"
            ) from None

    async def _events(self, request: dict[str, Any]) -> AsyncIterator[ModelEvent]:
        input_tokens = output_tokens = 0
        model, response_id, finish = self.name, None, None
        calls: dict[int, dict[str, Any]] = {}
        stream = await self._sdk().chat.completions.create(**request)
        async for chunk in stream:
            model = chunk.model or model
            response_id = chunk.id or response_id
            if chunk.usage is not None:
                input_tokens = int(chunk.usage.prompt_tokens or 0)
                output_tokens = int(chunk.usage.completion_tokens or 0)
            for choice in chunk.choices or []:
                delta = choice.delta
                if delta is not None and delta.content:
                    yield TextChunk(delta.content)
                for call in (delta.tool_calls if delta is not None else None) or []:
                    slot = calls.setdefault(
                        int(call.index or 0), {"id": "", "name": "", "args": ""}
                    )
                    slot["id"] = call.id or slot["id"]
                    if call.function is not None:
                        slot["name"] = call.function.name or slot["name"]
                        slot["args"] += call.function.arguments or ""
                finish = choice.finish_reason or finish
        if finish is None:
            raise ModelError("openai stream ended early", "incomplete")
        yield Finished(
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            finish_reason=finish,
            tool_calls=tool_calls(
                {i: (c["id"], c["name"], c["args"]) for i, c in calls.items()}, self.provider
            ),
            response_model=model,
            response_id=response_id,
        )
