"""Server-sent events from an httpx streaming response, and HTTP errors as ModelError."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx

from services.omni2.model import ModelError


@dataclass(frozen=True)
class SseEvent:
    event: str  # "message" when the stream names none
    data: str

    def json(self) -> Any:
        try:
            return json.loads(self.data)
        except ValueError as err:
            raise ModelError("provider sent malformed JSON in its stream", "bad_response") from err


async def sse_events(response: httpx.Response) -> AsyncIterator[SseEvent]:
    event, data = "message", list[str]()
    async for line in response.aiter_lines():
        if not line:
            if data:
                yield SseEvent(event, "\n".join(data))
            event, data = "message", []
        elif line.startswith(":"):
            continue  # comment / keep-alive
        else:
            field, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if field == "event":
                event = value
            elif field == "data":
                data.append(value)
    if data:
        yield SseEvent(event, "\n".join(data))


async def raise_for_status(response: httpx.Response, provider: str, secret: str | None) -> None:
    """A non-200 answer as ModelError with the provider's own message (never the key)."""
    if response.status_code == 200:
        return
    body = (await response.aread()).decode(errors="replace")
    message = ""
    try:
        error = json.loads(body).get("error")
        if isinstance(error, dict):
            message = str(error.get("message") or error.get("type") or "")
        elif isinstance(error, str):
            message = error
    except (ValueError, AttributeError):
        message = body[:200]
    if secret:
        message = message.replace(secret, "***")
    kind = {
        401: "provider_auth",
        403: "provider_auth",
        404: "provider_not_found",
        429: "provider_rate_limited",
        529: "provider_overloaded",
    }.get(response.status_code, "provider_error")
    if response.status_code >= 500 and kind == "provider_error":
        kind = "provider_unavailable"
    text = f"{provider} returned HTTP {response.status_code}"
    raise ModelError(f"{text}: {message[:300]}" if message else text, kind)


def transport_error(provider: str, err: httpx.HTTPError) -> ModelError:
    kind = "provider_timeout" if isinstance(err, httpx.TimeoutException) else "provider_unreachable"
    return ModelError(f"{provider} unreachable: {type(err).__name__}", kind)
