"""OpenAI-compatible chat completions, streamed (SSE), with tool calls.

POST {base}/chat/completions with `stream: true` and `stream_options.include_usage`; works
with OpenAI, vLLM's and Ollama's OpenAI-compatible servers. Chunks carry `choices[0].delta`
(content, or tool_calls by index with argument fragments) and `finish_reason`; the last chunk
carries `usage`; the stream ends with `data: [DONE]`.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from typing import Any

import httpx

from services.omni2.model import (
    ChatMessage,
    Finished,
    ModelError,
    ModelEvent,
    TextChunk,
    ToolSpec,
)
from services.omni2.providers.http import StreamingHttpModel, tool_calls
from services.omni2.providers.sse import sse_events


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


class OpenAICompatibleModel(StreamingHttpModel):
    provider = "openai"
    default_base_url = "https://api.openai.com/v1"
    path = "/chat/completions"

    def headers(self, key: str | None) -> dict[str, str]:
        headers = {"content-type": "application/json", "accept": "text/event-stream"}
        if key:  # local servers (vLLM, Ollama) need none
            headers["authorization"] = f"Bearer {key}"
        return headers

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

    async def events(self, response: httpx.Response) -> AsyncIterator[ModelEvent]:
        input_tokens = output_tokens = 0
        model, response_id, finish = self.name, None, None
        calls: dict[int, dict[str, Any]] = {}
        done = False
        async for sse in sse_events(response):
            if sse.data.strip() == "[DONE]":
                done = True
                break
            chunk = sse.json()
            if "error" in chunk:
                error = chunk["error"] if isinstance(chunk["error"], dict) else {}
                raise ModelError(
                    f"openai stream error: {error.get('message', chunk['error'])}"[:300],
                    "provider_error",
                )
            model = chunk.get("model") or model
            response_id = chunk.get("id") or response_id
            usage = chunk.get("usage")
            if usage:
                input_tokens = int(usage.get("prompt_tokens") or 0)
                output_tokens = int(usage.get("completion_tokens") or 0)
            for choice in chunk.get("choices") or []:
                delta = choice.get("delta") or {}
                if delta.get("content"):
                    yield TextChunk(delta["content"])
                for call in delta.get("tool_calls") or []:
                    slot = calls.setdefault(
                        int(call.get("index", 0)), {"id": "", "name": "", "args": ""}
                    )
                    function = call.get("function") or {}
                    slot["id"] = call.get("id") or slot["id"]
                    slot["name"] = function.get("name") or slot["name"]
                    slot["args"] += function.get("arguments") or ""
                finish = choice.get("finish_reason") or finish
        if not done and finish is None:
            raise ModelError("openai stream ended early", "incomplete")
        yield Finished(
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            finish_reason=finish or "stop",
            tool_calls=tool_calls(
                {i: (c["id"], c["name"], c["args"]) for i, c in calls.items()}, self.provider
            ),
            response_model=model,
            response_id=response_id,
        )
