"""What the model providers share: the official SDK of each provider (both on httpx2) on a
client whose requests get CLIENT spans from opentelemetry-instrumentation-httpx under the
`chat <model>` span, errors as ModelError (never with the key), and tool calls assembled from
streamed fragments.

The SDKs retry by default; here a model call is one request (max_retries=0): the agent loop
and the user decide what to do about a failure, and a trace shows exactly one try.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from typing import Any

import httpx2
from pydantic import SecretStr

from otel.instrumentation import instrument_http_client
from services.omni2.model import ChatMessage, ModelError, ModelEvent, ToolCall, ToolSpec


class SdkModel:
    """Base of the providers: subclasses make their SDK client and read its stream."""

    provider: str
    default_base_url: str

    def __init__(
        self,
        name: str,
        api_key: SecretStr | None,
        *,
        base_url: str | None = None,
        max_tokens: int = 1024,
        timeout_s: float = 60.0,
        client: httpx2.AsyncClient | None = None,
    ) -> None:
        self.name = name
        self._key = api_key.get_secret_value() if api_key is not None else None
        self.base_url = (base_url or self.default_base_url).rstrip("/")
        self.endpoint = httpx2.URL(self.base_url)  # server.address / server.port of its spans
        self._max_tokens = max_tokens
        self._http = client or httpx2.AsyncClient(timeout=timeout_s)
        # The provider's HTTP request as a CLIENT span under `chat <model>`.
        instrument_http_client(self._http)
        self._timeout = timeout_s

    def stream(
        self, messages: Sequence[ChatMessage], tools: Sequence[ToolSpec] = ()
    ) -> AsyncIterator[ModelEvent]:
        raise NotImplementedError

    def status_error(self, status: int, body: object, *, in_stream: bool = False) -> ModelError:
        """A provider's error answer as ModelError with its own message (never the key)."""
        # Anthropic's SDK keeps the whole body ({"error": {...}}); OpenAI's, the error itself.
        error = body.get("error", body) if isinstance(body, dict) else None
        message, etype = "", ""
        if isinstance(error, dict):
            message = str(error.get("message") or error.get("type") or "")
            etype = str(error.get("type") or "")
        elif isinstance(error, str):
            message = error
        elif isinstance(body, str):
            message = body[:200]
        if self._key:
            message = message.replace(self._key, "***")
        if in_stream:
            kind = "provider_overloaded" if etype == "overloaded_error" else "provider_error"
            return ModelError(f"{self.provider} stream error ({etype}): {message}"[:300], kind)
        kind = {
            401: "provider_auth",
            403: "provider_auth",
            404: "provider_not_found",
            429: "provider_rate_limited",
            529: "provider_overloaded",
        }.get(status, "provider_error")
        if status >= 500 and kind == "provider_error":
            kind = "provider_unavailable"
        text = f"{self.provider} returned HTTP {status}"
        return ModelError(f"{text}: {message[:300]}" if message else text, kind)

    def transport_error(self, err: Exception, timeout: bool) -> ModelError:
        kind = "provider_timeout" if timeout else "provider_unreachable"
        return ModelError(f"{self.provider} unreachable: {type(err).__name__}", kind)


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


def body_of(err: Any) -> object:
    """An SDK error's body: the parsed JSON when there was some, else the response text."""
    body = getattr(err, "body", None)
    if body is not None:
        return body
    response = getattr(err, "response", None)
    return response.text if isinstance(response, httpx2.Response) else str(err)
