"""Anthropic's Messages API, streamed (SSE), with tool use.

POST {base}/v1/messages with `stream: true`; events message_start (usage.input_tokens),
content_block_start/delta/stop (text_delta, or tool_use with input_json_delta), message_delta
(stop_reason, usage.output_tokens), message_stop, error.
"""

from __future__ import annotations

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

API_VERSION = "2023-06-01"
_FINISH = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "tool_use": "tool_calls",
    "max_tokens": "length",
}


def to_anthropic(messages: Sequence[ChatMessage]) -> tuple[str, list[dict[str, Any]]]:
    """(system prompt, messages) in the Messages API's shape."""
    system = "\n\n".join(m.content for m in messages if m.role == "system")
    out: list[dict[str, Any]] = []
    for m in messages:
        if m.role == "system":
            continue
        if m.role == "tool":
            block = {
                "type": "tool_result",
                "tool_use_id": m.tool_call_id,
                "content": m.content,
                "is_error": m.is_error,
            }
            # Tool results travel in a user turn; consecutive results share one.
            if out and out[-1]["role"] == "user" and isinstance(out[-1]["content"], list):
                out[-1]["content"].append(block)
            else:
                out.append({"role": "user", "content": [block]})
        elif m.role == "assistant" and m.tool_calls:
            content: list[dict[str, Any]] = (
                [{"type": "text", "text": m.content}] if m.content else []
            )
            content += [
                {"type": "tool_use", "id": c.id, "name": c.name, "input": c.arguments}
                for c in m.tool_calls
            ]
            out.append({"role": "assistant", "content": content})
        else:
            out.append({"role": m.role, "content": m.content})
    return system, out


class AnthropicModel(StreamingHttpModel):
    provider = "anthropic"
    default_base_url = "https://api.anthropic.com"
    path = "/v1/messages"

    def headers(self, key: str | None) -> dict[str, str]:
        if key is None:
            raise ModelError(
                "anthropic: no API key configured (OMNI2_ANTHROPIC_API_KEY)", "provider_auth"
            )
        return {
            "x-api-key": key,
            "anthropic-version": API_VERSION,
            "content-type": "application/json",
            "accept": "text/event-stream",
        }

    def request(self, messages: Sequence[ChatMessage], tools: Sequence[ToolSpec]) -> dict[str, Any]:
        system, converted = to_anthropic(messages)
        body: dict[str, Any] = {
            "model": self.name,
            "max_tokens": self._max_tokens,
            "messages": converted,
            "stream": True,
        }
        if system:
            body["system"] = system
        if tools:
            body["tools"] = [
                {"name": t.name, "description": t.description, "input_schema": t.input_schema}
                for t in tools
            ]
        return body

    async def events(self, response: httpx.Response) -> AsyncIterator[ModelEvent]:
        input_tokens = output_tokens = 0
        model, message_id, stop = self.name, None, "stop"
        tools: dict[int, dict[str, Any]] = {}
        finished = False
        async for sse in sse_events(response):
            data = sse.json()
            kind = data.get("type", sse.event)
            if kind == "message_start":
                message = data.get("message") or {}
                model = message.get("model") or model
                message_id = message.get("id")
                usage = message.get("usage") or {}
                input_tokens = int(usage.get("input_tokens") or 0)
                input_tokens += int(usage.get("cache_read_input_tokens") or 0)
                input_tokens += int(usage.get("cache_creation_input_tokens") or 0)
                output_tokens = int(usage.get("output_tokens") or 0)
            elif kind == "content_block_start":
                block = data.get("content_block") or {}
                if block.get("type") == "tool_use":
                    tools[int(data["index"])] = {
                        "id": block["id"],
                        "name": block["name"],
                        "json": "",
                    }
                elif block.get("type") == "text" and block.get("text"):
                    yield TextChunk(block["text"])
            elif kind == "content_block_delta":
                delta = data.get("delta") or {}
                if delta.get("type") == "text_delta" and delta.get("text"):
                    yield TextChunk(delta["text"])
                elif delta.get("type") == "input_json_delta":
                    tools[int(data["index"])]["json"] += delta.get("partial_json", "")
            elif kind == "message_delta":
                stop = (data.get("delta") or {}).get("stop_reason") or stop
                usage = data.get("usage") or {}
                output_tokens = int(usage.get("output_tokens") or output_tokens)
            elif kind == "message_stop":
                finished = True
            elif kind == "error":
                error = data.get("error") or {}
                etype = str(error.get("type") or "error")
                raise ModelError(
                    f"anthropic stream error ({etype}): {error.get('message', '')}"[:300],
                    "provider_overloaded" if etype == "overloaded_error" else "provider_error",
                )
        if not finished:
            raise ModelError("anthropic stream ended early", "incomplete")
        yield Finished(
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            finish_reason=_FINISH.get(stop, stop),
            tool_calls=tool_calls(
                {i: (t["id"], t["name"], t["json"]) for i, t in tools.items()}, self.provider
            ),
            response_model=model,
            response_id=message_id,
        )
