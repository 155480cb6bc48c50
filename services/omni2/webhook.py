"""The usage webhook: after each answered message, OMNI2 tells another service what it used
(a billing or ledger system, often an older one). Off unless OMNI2_USAGE_WEBHOOK_URL is set.

The call runs beside the chat, never in its way: the reply has been sent before it starts, it
has a short timeout, at most `max_pending` calls are in flight (past that a call is dropped
and logged), and a dead webhook costs a warning per failure. Its CLIENT span is a child of the
message's turn and the request carries that context in every propagator configured
(OTEL_PROPAGATORS; with `jaeger`, the `uber-trace-id` header a jaeger-client service reads),
so the receiving service's span joins the message trace.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import httpx
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import SpanKind, Status, StatusCode

from otel.names import Attr, SpanName
from otel.propagation import inject_headers
from otel.redaction import peer_attributes, redact_text

log = logging.getLogger(__name__)
tracer = trace.get_tracer(__name__)


class UsageWebhook:
    def __init__(
        self,
        url: str | None,
        timeout_s: float = 2.0,
        max_pending: int = 64,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        self.url = url
        self._timeout = timeout_s
        self._max_pending = max_pending
        self._pending: set[asyncio.Task[None]] = set()
        self._http = client
        self.dropped = 0

    @property
    def configured(self) -> bool:
        return bool(self.url)

    def post(self, usage: dict[str, Any], parent: Context) -> None:
        """Send `usage` in the background, as a child of `parent` (the turn)."""
        if not self.url:
            return
        if len(self._pending) >= self._max_pending:
            self.dropped += 1
            log.warning(
                "usage webhook: %d calls in flight, dropped this one (%d so far)",
                len(self._pending),
                self.dropped,
            )
            return
        task = asyncio.create_task(self._post(self.url, usage, parent))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _post(self, url: str, usage: dict[str, Any], parent: Context) -> None:
        with tracer.start_as_current_span(
            SpanName.USAGE_WEBHOOK,
            context=parent,
            kind=SpanKind.CLIENT,
            record_exception=False,
            set_status_on_exception=False,
            attributes=peer_attributes(url),
        ) as span:
            headers: dict[str, str] = {}
            inject_headers(headers, span)
            try:
                response = await self._client().post(url, json=usage, headers=headers)
            except httpx.HTTPError as err:
                detail = redact_text(f"{type(err).__name__}: {err}")
                span.set_attribute(Attr.ERROR_TYPE, type(err).__name__)
                span.set_status(Status(StatusCode.ERROR, detail))
                log.warning("usage webhook failed: %s", detail)
                return
            span.set_attribute(Attr.HTTP_STATUS, response.status_code)
            if response.status_code >= 400:
                span.set_attribute(Attr.ERROR_TYPE, str(response.status_code))
                span.set_status(Status(StatusCode.ERROR, f"HTTP {response.status_code}"))
                log.warning("usage webhook answered HTTP %d", response.status_code)

    def _client(self) -> httpx.AsyncClient:
        if self._http is None:
            self._http = httpx.AsyncClient(timeout=self._timeout)
        return self._http

    async def aclose(self) -> None:
        """Let calls in flight finish (each is bounded by the timeout), then close."""
        if self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)
        if self._http is not None:
            await self._http.aclose()
