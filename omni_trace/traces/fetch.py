"""Fetching a message's trace and its session trace from Jaeger, once the chain is whole."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from opentelemetry.sdk.trace import TracerProvider

from omni_trace.traces.assertions import Trace
from omni_trace.traces.chain import session_closed_and_whole, wait_for_chain
from omni_trace.traces.jaeger import JaegerClient, TraceSpan, TraceTimeout
from omni_trace.traces.spec import ChainSpec


class SessionIncomplete(UserWarning):
    """A session trace waited for its whole timeout: a span it needs never arrived (a client
    that does not export its spans, a connection still open), and each such wait is slow."""


def _why_not_whole(spans: list[TraceSpan]) -> str:
    ids = {s.span_id for s in spans}
    missing = sorted({s.parent_span_id for s in spans if s.parent_span_id} - ids)
    if missing:
        return f"parent spans never arrived: {', '.join(missing)}"
    if not spans:
        return "no span arrived"
    return "a gateway's entry span has not arrived (is the connection still open?)"


class Reply(Protocol):
    """Anything that names the trace of a reply (a `done` or `error` frame's `trace_id`)."""

    @property
    def trace_id(self) -> str: ...


@dataclass
class TraceFetcher:
    jaeger: JaegerClient
    provider: TracerProvider | None = None  # the test's own chat client, flushed before reading
    spec: ChainSpec | None = None

    def message(
        self, reply: Reply | str, timeout: float = 20.0, *, connection_closed: bool = True
    ) -> tuple[Trace, Trace]:
        """The message trace of a reply and its linked session trace, once the chain is whole
        (or after `timeout`, as far as it got). With `connection_closed`, also wait for the
        session trace to be whole (a gateway such as Traefik exports its entry span only when
        the connection ends)."""
        if self.provider is not None:
            self.provider.force_flush()
        trace_id = reply if isinstance(reply, str) else reply.trace_id
        report = wait_for_chain(self.jaeger, trace_id, timeout, spec=self.spec)
        session = Trace([])
        if report.session_trace_ids:
            session = self.session(report.session_trace_ids[0], timeout, closed=connection_closed)
        return Trace(self.jaeger.get_trace(trace_id), related=[session]), session

    def session(self, trace_id: str, timeout: float = 20.0, *, closed: bool = True) -> Trace:
        """The session trace; with `closed`, once it is whole, else as far as it got after
        `timeout`, with a SessionIncomplete warning that says what it waited for."""
        if closed:
            try:
                self.jaeger.wait_for_trace(
                    trace_id,
                    lambda spans: session_closed_and_whole(spans, self.spec),
                    what="the whole session",
                    timeout=timeout,
                )
            except TraceTimeout as timed_out:
                warnings.warn(
                    SessionIncomplete(
                        f"session trace {trace_id} not whole after {timeout:g} s: "
                        f"{_why_not_whole(timed_out.spans)}"
                    ),
                    stacklevel=3,
                )
        return Trace(self.jaeger.get_trace(trace_id))

    def wait(
        self,
        trace_id: str,
        until: Callable[[list[TraceSpan]], bool],
        *,
        what: str,
        timeout: float = 20.0,
    ) -> Trace:
        """The trace once `until(spans)` holds (see `has_spans_named`); after `timeout`, a
        TraceAssertionError naming `what` with the trace as far as it got."""
        if self.provider is not None:
            self.provider.force_flush()
        try:
            return Trace(self.jaeger.wait_for_trace(trace_id, until, what=what, timeout=timeout))
        except TraceTimeout as err:
            Trace(err.spans).fail(str(err))

    def trace(self, trace_id: str) -> Trace:
        return Trace(self.jaeger.get_trace(trace_id))
