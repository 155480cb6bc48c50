"""What the HTTP model providers share: one streamed POST per model call, errors as
ModelError (never with the key), and tool calls assembled from streamed JSON fragments."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from typing import Any

import httpx
from pydantic import SecretStr

from services.omni2.model import ChatMessage, ModelError, ModelEvent, ToolCall, ToolSpec
from services.omni2.providers.sse import raise_for_status, transport_error


class StreamingHttpModel:
    """Base of the providers: subclasses say how to build the request and read the stream."""

    provider: str
    default_base_url: str
    path: str  # appended to the base URL

    def __init__(
        self,
        name: str,
        api_key: SecretStr | None,
        *,
        base_url: str | None = None,
        max_tokens: int = 1024,
        timeout_s: float = 60.0,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        self.name = name
        self._key = api_key
        self._url = (base_url or self.default_base_url).rstrip("/") + self.path
        self.endpoint = httpx.URL(self._url)  # server.address / server.port of its spans
        self._max_tokens = max_tokens
        self._client = client or httpx.AsyncClient(timeout=timeout_s)

    def headers(self, key: str | None) -> dict[str, str]:
        raise NotImplementedError

    def request(self, messages: Sequence[ChatMessage], tools: Sequence[ToolSpec]) -> dict[str, Any]:
        raise NotImplementedError

    def events(self, response: httpx.Response) -> AsyncIterator[ModelEvent]:
        raise NotImplementedError

    async def stream(
        self, messages: Sequence[ChatMessage], tools: Sequence[ToolSpec] = ()
    ) -> AsyncIterator[ModelEvent]:
        key = self._key.get_secret_value() if self._key is not None else None
        headers = self.headers(key)
        body = self.request(messages, tools)
        try:
            async with self._client.stream(
                "POST", self._url, json=body, headers=headers
            ) as response:
                await raise_for_status(response, self.provider, key)
                async for event in self.events(response):
                    yield event
        except httpx.HTTPError as err:
            raise transport_error(self.provider, err) from err


def tool_calls(slots: dict[int, tuple[str, str, str]], provider: str) -> tuple[ToolCall, ...]:
    """ToolCalls from (id, name, JSON arguments text) per streamed index, in index order."""
    calls = []
    for index in sorted(slots):
        call_id, name, arguments = slots[index]
        try:
            parsed = json.loads(arguments) if arguments else {}
        except ValueError as err:
            raise ModelError(f"{provider} sent malformed tool arguments", "bad_response") from err
        calls.append(ToolCall(call_id, name, parsed))
    return tuple(calls)
