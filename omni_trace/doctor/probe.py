"""Probing a running stack: check each layer, log in, send a probe message through the whole
chain, and read the probe's traces to say where the chain breaks: connection refused at which
hop, authentication failed and why, or which layer went quiet.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass

from opentelemetry.sdk.trace import TracerProvider

from omni_trace.doctor.checks import layer_checks
from omni_trace.doctor.hops import Closed, close_hop, sender_recorded
from omni_trace.doctor.report import Check, Diagnosis, Progress
from omni_trace.stack.client import ChatError, ChatRefused, login, open_chat
from omni_trace.stack.info import StackInfo
from omni_trace.traces.jaeger import JaegerClient, JaegerError, TraceSpan
from otel.names import Attr, Service
from otel.setup import create_tracer_provider


@dataclass
class _Probe:
    session_trace_id: str | None = None
    message_trace_id: str | None = None
    conversation_id: str | None = None
    closed: Closed | None = None
    error: str | None = None
    reply_error: str | None = None
    reply_ms: float | None = None


async def _send_probe(
    info: StackInfo, token: str, provider: TracerProvider, wait_s: float
) -> _Probe:
    probe = _Probe()
    try:
        async with open_chat(
            info.dashboard_ws_url, token, tracer_provider=provider, open_timeout=wait_s
        ) as chat:
            probe.session_trace_id = chat.session_trace_id
            probe.conversation_id = chat.conversation_id
            reply = await asyncio.wait_for(chat.send("doctor probe: are you there?"), wait_s)
            probe.message_trace_id = reply.trace_id
            probe.reply_ms = reply.duration_s * 1000
            if not reply.ok:
                probe.reply_error = reply.error
                if reply.frame.get("type") == "blocked":
                    # The close that follows a `blocked` frame carries the code that says why.
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(chat.connection.wait_closed(), 2)
                code = chat.connection.close_code
                if code is not None:
                    reason = chat.connection.close_reason or ""
                    probe.closed = Closed(None if code == 1006 else code, reason, True)
    except ChatRefused as refused:
        probe.closed = Closed(refused.code, refused.reason, False)
        probe.session_trace_id = refused.session_trace_id
    except TimeoutError:
        probe.error = f"no answer within {wait_s:.0f} s"
    except ChatError as err:
        probe.error = str(err)
    return probe


def _through_gateway(spans: list[TraceSpan]) -> bool:
    return {s.service for s in spans} >= {Service.TRAEFIK, Service.DASHBOARD}


def _fetch(
    jaeger: JaegerClient,
    trace_id: str | None,
    settle_s: float,
    ready: Callable[[list[TraceSpan]], bool] = _through_gateway,
) -> list[TraceSpan]:
    """The probe's spans; each service exports in batches, so give them a moment."""
    if trace_id is None:
        return []
    deadline = time.monotonic() + settle_s
    spans: list[TraceSpan] = []
    while time.monotonic() < deadline:
        try:
            spans = jaeger.get_trace(trace_id)
        except JaegerError:
            return []
        if ready(spans):
            break
        time.sleep(0.3)
    return spans


def _probe_message_id(jaeger: JaegerClient, probe: _Probe) -> str | None:
    """An unanswered probe's message trace, found through its conversation id."""
    if probe.conversation_id is None:
        return None
    try:
        ids = jaeger.find_trace_ids(
            Service.CHAT_CLIENT, {Attr.CONVERSATION_ID: probe.conversation_id}, limit=5
        )
    except JaegerError:
        return None
    return ids[0] if ids else None


def diagnose(
    info: StackInfo,
    *,
    user: str,
    password: str,
    token: str | None = None,
    timeout: float = 10.0,
    settle_s: float = 8.0,
    progress: Progress = lambda _: None,
) -> Diagnosis:
    """Check each layer, log in (unless given a token), send a probe message and read its
    traces; the first hop that fails is where the chain breaks."""
    result = Diagnosis()
    progress("checking each layer ...")
    layers = layer_checks(info)
    result.checks += layers.values()
    if not layers["dashboard"].ok:
        result.hop, result.verdict = (
            "client -> dashboard",
            f"dashboard {layers['dashboard'].detail}",
        )
        return result
    if token is None:
        progress(f"logging in as {user} ...")
        token = _login(info, user, password, result)
        if token is None:
            return result
    else:
        result.checks.append(Check("login", True, "skipped: probing with the given token"))

    progress("sending a probe message through the chain ...")
    probe = _run_probe(info, token, timeout)
    result.trace_ids = [t for t in (probe.session_trace_id, probe.message_trace_id) if t]
    session, message = _read_traces(info, probe, layers["jaeger"].ok, settle_s, result, progress)
    result.hop, result.verdict = _verdict(probe, session, message, layers)
    return result


def _read_traces(
    info: StackInfo,
    probe: _Probe,
    jaeger_ok: bool,
    settle_s: float,
    result: Diagnosis,
    progress: Progress,
) -> tuple[list[TraceSpan], list[TraceSpan]]:
    """The probe's session and message spans (none when Jaeger is down), and a check that
    says which layers they show."""
    session: list[TraceSpan] = []
    message: list[TraceSpan] = []
    if jaeger_ok:
        progress("reading the probe's traces from Jaeger ...")
        session, message = _probe_traces(info, probe, settle_s)
    seen = sorted({s.service for s in session + message})
    result.checks.append(
        Check(
            "traces",
            jaeger_ok and bool(seen),
            f"layers seen in the probe's traces: {', '.join(seen) or 'none'}"
            if jaeger_ok
            else "Jaeger unreachable: diagnosing from health checks only",
        )
    )
    return session, message


def _login(info: StackInfo, user: str, password: str, result: Diagnosis) -> str | None:
    """The probe's JWT; None (and the chain broken at login) when the dashboard refuses."""
    try:
        token = asyncio.run(login(info.dashboard_url, user, password))
    except ChatError as err:
        result.checks.append(Check("login", False, str(err)))
        result.hop, result.verdict = "client -> dashboard (login)", str(err)
        return None
    result.checks.append(Check("login", True, f"JWT issued for {user}"))
    return token


def _run_probe(info: StackInfo, token: str, timeout: float) -> _Probe:
    """Send the probe as a traced chat client, its spans flushed before Jaeger is read."""
    provider = create_tracer_provider(Service.CHAT_CLIENT, otlp_endpoint=info.otlp_http_endpoint)
    try:
        return asyncio.run(_send_probe(info, token, provider, timeout))
    finally:
        provider.force_flush(3000)
        provider.shutdown()


def _probe_traces(
    info: StackInfo, probe: _Probe, settle_s: float
) -> tuple[list[TraceSpan], list[TraceSpan]]:
    """The probe's session and message traces, as far as Jaeger has them."""
    with JaegerClient(info.jaeger_query_url) as jaeger:
        closed = probe.closed
        if closed is not None and not closed.mid_connection:
            # A refusal: wait for the span of the service that sent the close code too.
            session = _fetch(
                jaeger,
                probe.session_trace_id,
                settle_s,
                lambda spans: _through_gateway(spans) and sender_recorded(spans, closed.code),
            )
        else:
            session = _fetch(jaeger, probe.session_trace_id, settle_s)
        message_id = probe.message_trace_id or _probe_message_id(jaeger, probe)
        return session, _fetch(jaeger, message_id, 2.0)


def _verdict(
    probe: _Probe, session: list[TraceSpan], message: list[TraceSpan], layers: dict[str, Check]
) -> tuple[str | None, str]:
    """(hop, verdict): where the probe's chain broke, or None and how long the answer took."""
    if probe.closed is not None:
        return close_hop(probe.closed, session + message, layers)
    if probe.error is not None:
        if probe.session_trace_id is None:
            return "client -> dashboard", probe.error
        # The deepest layer that recorded the probe message is the last one that worked.
        layers_seen = {s.service for s in message}
        if Service.OMNI2 in layers_seen:
            hop, quiet = "omni2", "omni2 took the message but did not finish its answer"
        elif Service.DASHBOARD in layers_seen:
            hop, quiet = "dashboard -> omni2", "the dashboard relayed it; omni2 went quiet"
        else:
            hop, quiet = "client -> dashboard", "the dashboard never relayed it"
        return hop, f"no response: {probe.error}; {quiet}"
    if probe.reply_error is not None:
        return "omni2", f"the message got an error: {probe.reply_error}"
    return None, (
        f"client -> dashboard -> traefik -> auth -> omni2 answered in {probe.reply_ms:.0f} ms"
    )
