"""`omni-trace doctor`: the seed's troubleshooting section as a command.

It checks each layer, logs in, sends a probe message through the whole chain, and reads the
probe's traces to say where the chain breaks: connection refused at which hop,
authentication failed and why, or which layer went quiet.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx
from opentelemetry.sdk.trace import TracerProvider

from omni_trace.client import ChatError, ChatRefused, login, open_chat
from omni_trace.jaeger import JaegerClient, JaegerError, TraceSpan
from omni_trace.stack import StackInfo
from otel.names import Attr, Service, SpanName
from otel.setup import create_tracer_provider
from services.common.protocol import CloseCode

Progress = Callable[[str], None]


@dataclass
class Check:
    name: str
    ok: bool
    detail: str


@dataclass
class Diagnosis:
    checks: list[Check] = field(default_factory=list)
    hop: str | None = None  # where the chain breaks, e.g. "dashboard -> traefik"
    verdict: str = ""
    trace_ids: list[str] = field(default_factory=list)

    @property
    def healthy(self) -> bool:
        return self.hop is None

    def render(self) -> str:
        lines = [f"  [{'ok' if c.ok else 'FAIL':>4}] {c.name}: {c.detail}" for c in self.checks]
        lines.append("")
        lines.append(
            ("chain is whole: " if self.healthy else f"chain breaks at {self.hop}: ") + self.verdict
        )
        lines += [f"  trace {t}" for t in self.trace_ids]
        return "\n".join(lines)


def _probe_http(name: str, url: str, expect: int = 200) -> Check:
    try:
        status = httpx.get(url, timeout=3).status_code
    except httpx.ConnectError:
        return Check(name, False, f"connection refused ({url})")
    except httpx.TimeoutException:
        return Check(name, False, f"no answer within 3 s: hung? ({url})")
    except httpx.HTTPError as err:
        return Check(name, False, f"{type(err).__name__} ({url})")
    if status == expect:
        return Check(name, True, f"answers {status} ({url})")
    return Check(name, False, f"answers {status}, expected {expect} ({url})")


def _layer_checks(info: StackInfo) -> dict[str, Check]:
    return {
        "dashboard": _probe_http("dashboard", f"{info.dashboard_url}/healthz"),
        # Through the real route: 401 proves the router and ForwardAuth -> auth work.
        "traefik": _probe_http("traefik route /ws/chat", f"{info.traefik_url}/ws/chat", 401),
        "auth": _probe_http("auth service", f"{info.auth_url}/healthz"),
        "omni2": _probe_http("omni2", f"{info.omni2_url}/healthz"),
        "jaeger": _probe_http("jaeger query API", f"{info.jaeger_query_url}/api/services"),
    }


@dataclass
class _Probe:
    session_trace_id: str | None = None
    message_trace_id: str | None = None
    conversation_id: str | None = None
    refused: ChatRefused | None = None
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
    except ChatRefused as refused:
        probe.refused = refused
        probe.session_trace_id = refused.session_trace_id
    except TimeoutError:
        probe.error = f"no answer within {wait_s:.0f} s"
    except ChatError as err:
        probe.error = str(err)
    return probe


def _fetch(jaeger: JaegerClient, trace_id: str | None, settle_s: float) -> list[TraceSpan]:
    """The probe's spans; Traefik exports in batches, so give it a moment."""
    if trace_id is None:
        return []
    deadline = time.monotonic() + settle_s
    spans: list[TraceSpan] = []
    while time.monotonic() < deadline:
        try:
            spans = jaeger.get_trace(trace_id)
        except JaegerError:
            return []
        if {s.service for s in spans} >= {Service.TRAEFIK, Service.DASHBOARD}:
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


def _span(spans: list[TraceSpan], service: str, name: str) -> TraceSpan | None:
    return next((s for s in spans if s.service == service and s.name == name), None)


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
    result = Diagnosis()
    progress("checking each layer ...")
    layers = _layer_checks(info)
    result.checks += layers.values()

    def broken(hop: str, verdict: str) -> Diagnosis:
        result.hop, result.verdict = hop, verdict
        return result

    if not layers["dashboard"].ok:
        return broken("client -> dashboard", f"dashboard {layers['dashboard'].detail}")
    if token is None:
        progress(f"logging in as {user} ...")
        try:
            token = asyncio.run(login(info.dashboard_url, user, password))
            result.checks.append(Check("login", True, f"JWT issued for {user}"))
        except ChatError as err:
            result.checks.append(Check("login", False, str(err)))
            return broken("client -> dashboard (login)", str(err))

    progress("sending a probe message through the chain ...")
    provider = create_tracer_provider(Service.CHAT_CLIENT, otlp_endpoint=info.otlp_http_endpoint)
    try:
        probe = asyncio.run(_send_probe(info, token, provider, timeout))
    finally:
        provider.force_flush(3000)
        provider.shutdown()
    result.trace_ids = [t for t in (probe.session_trace_id, probe.message_trace_id) if t]

    jaeger_ok = layers["jaeger"].ok
    session: list[TraceSpan] = []
    message: list[TraceSpan] = []
    if jaeger_ok:
        progress("reading the probe's traces from Jaeger ...")
        with JaegerClient(info.jaeger_query_url) as jaeger:
            session = _fetch(jaeger, probe.session_trace_id, settle_s)
            message_id = probe.message_trace_id or _probe_message_id(jaeger, probe)
            message = _fetch(jaeger, message_id, 2.0)
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

    if probe.refused is not None:
        return _refusal(result, probe.refused, layers, session)
    if probe.error is not None:
        if probe.session_trace_id is None:
            return broken("client -> dashboard", probe.error)
        # The deepest layer that recorded the probe message is the last one that worked.
        layers_seen = {s.service for s in message}
        if Service.OMNI2 in layers_seen:
            hop, quiet = "omni2", "omni2 took the message but did not finish its answer"
        elif Service.DASHBOARD in layers_seen:
            hop, quiet = "dashboard -> omni2", "the dashboard relayed it; omni2 went quiet"
        else:
            hop, quiet = "client -> dashboard", "the dashboard never relayed it"
        return broken(hop, f"no response: {probe.error}; {quiet}")
    if probe.reply_error is not None:
        return broken("omni2", f"the message got an error: {probe.reply_error}")
    result.verdict = (
        f"client -> dashboard -> traefik -> auth -> omni2 answered in {probe.reply_ms:.0f} ms"
    )
    return result


def _refusal(
    result: Diagnosis, refused: ChatRefused, layers: dict[str, Check], session: list[TraceSpan]
) -> Diagnosis:
    def broken(hop: str, verdict: str) -> Diagnosis:
        result.hop, result.verdict = hop, verdict
        return result

    if refused.code == CloseCode.UNAUTHENTICATED:
        verify = _span(session, Service.AUTH, SpanName.AUTH_VERIFY)
        why = (verify.attributes.get(Attr.AUTH_FAILURE) if verify else None) or refused.reason
        where = "traefik -> auth" if verify or "missing" not in refused.reason else "dashboard"
        return broken(where, f"authentication failed: {why}")
    if refused.code == CloseCode.FORBIDDEN:
        return broken("traefik -> omni2", f"omni2 refused the connection: {refused.reason}")
    # Unreachable or 5xx: ask the traces first, then the health checks.
    auth_request = _span(session, Service.TRAEFIK, "AuthRequest")
    reverse_proxy = _span(session, Service.TRAEFIK, "ReverseProxy")
    upstream = _span(session, Service.DASHBOARD, SpanName.UPSTREAM_CONNECT)
    if not layers["traefik"].ok and "refused" in layers["traefik"].detail:
        return broken("dashboard -> traefik", f"connection refused: {layers['traefik'].detail}")
    if upstream is not None and upstream.attributes.get(Attr.ERROR_TYPE) in (
        "ConnectionRefusedError",
        "OSError",
    ):
        return broken("dashboard -> traefik", "connection refused (from the dashboard's span)")
    if (auth_request is not None and auth_request.status == "ERROR") or not layers["auth"].ok:
        return broken("traefik -> auth", f"ForwardAuth failed: auth {layers['auth'].detail}")
    if (reverse_proxy is not None and reverse_proxy.status == "ERROR") or not layers["omni2"].ok:
        return broken("traefik -> omni2", f"backend unreachable: omni2 {layers['omni2'].detail}")
    return broken("dashboard -> traefik", f"refused with code {refused.code}: {refused.reason}")
