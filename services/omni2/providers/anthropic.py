"""Anthropic's Messages API through the official `anthropic` SDK, streamed, with tool use.

Events: message_start (usage.input_tokens), content_block_start/delta/stop (text_delta, or
tool_use with input_json_delta), message_delta (stop_reason, usage.output_tokens),
message_stop; an `error` event mid-stream is raised by the SDK as a status error of the 200
answer.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any

import anthropic

from services.omni2.model import (
    ChatMessage,
    Finished,
    ModelError,
    ModelEvent,
    TextChunk,
    ToolSpec,
)
from services.omni2.providers.http import SdkModel, body_of, tool_calls

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


class AnthropicModel(SdkModel):
    provider = "anthropic"
    default_base_url = "https://api.anthropic.com"

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

    async def stream(
        self, messages: Sequence[ChatMessage], tools: Sequence[ToolSpec] = ()
    ) -> AsyncIterator[ModelEvent]:
        if self._key is None:
            raise ModelError(
                "anthropic: no API key configured (OMNI2_ANTHROPIC_API_KEY)", "provider_auth"
            )
        sdk = anthropic.AsyncAnthropic(
            api_key=self._key,
            base_url=self.base_url,
            http_client=self._http,
            max_retries=0,
            timeout=self._timeout,
            # Our `chat <model>` span is the call's span and the httpx instrumentation makes the
            # request's: the SDK's own span would record the call a second time.
            open_telemetry={"traces": False, "propagation": False},
        )
        try:
            async for event in self._events(sdk, self.request(messages, tools)):
                yield event
        except anthropic.APIStatusError as err:
            # An `error` event arrives in a 200 answer: the stream failed, not the request.
            in_stream = err.status_code == 200
            raise self.status_error(err.status_code, body_of(err), in_stream=in_stream) from None
        except anthropic.APIConnectionError as err:
            raise self.transport_error(err, isinstance(err, anthropic.APITimeoutError)) from None

    async def _events(
        self, sdk: anthropic.AsyncAnthropic, request: dict[str, Any]
    ) -> AsyncIterator[ModelEvent]:
        input_tokens = output_tokens = 0
        model, message_id, stop = self.name, None, "stop"
        tools: dict[int, dict[str, Any]] = {}
        finished = False
        stream = await sdk.messages.create(**request)
        async for event in stream:
            if event.type == "message_start":
                message = event.message
                model = message.model or model
                message_id = message.id
                usage = message.usage
                input_tokens = int(usage.input_tokens or 0)
                input_tokens += int(usage.cache_read_input_tokens or 0)
                input_tokens += int(usage.cache_creation_input_tokens or 0)
                output_tokens = int(usage.output_tokens or 0)
            elif event.type == "content_block_start":
                block = event.content_block
                if block.type == "tool_use":
                    tools[event.index] = {"id": block.id, "name": block.name, "json": ""}
                elif block.type == "text" and block.text:
                    yield TextChunk(block.text)
            elif event.type == "content_block_delta":
                delta = event.delta
                if delta.type == "text_delta" and delta.text:
                    yield TextChunk(delta.text)
                elif delta.type == "input_json_delta":
                    tools[event.index]["json"] += delta.partial_json
            elif event.type == "message_delta":
                stop = event.delta.stop_reason or stop
                if event.usage is not None and event.usage.output_tokens:
                    output_tokens = int(event.usage.output_tokens)
            elif event.type == "message_stop":
                finished = True
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
