"""`omni-trace doctor`: the seed's troubleshooting section as a command.

It checks each layer, logs in, sends a probe message through the whole chain, and reads the
probe's traces to say where the chain breaks: connection refused at which hop,
authentication failed and why, or which layer went quiet.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import httpx
from opentelemetry.sdk.trace import TracerProvider

from omni_trace.stack.client import ChatError, ChatRefused, login, open_chat
from omni_trace.stack.runner import StackInfo
from omni_trace.traces.jaeger import JaegerClient, JaegerError, TraceSpan
from otel.names import Attr, Service, SpanName
from otel.setup import create_tracer_provider
from services.common.protocol import CLOSE_MEANINGS, CloseCode

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
        # Clients without a dashboard: the public entry point, through the gateway's route.
        **(
            {
                "traefik-public": _probe_http(
                    "traefik public entry /ws/chat",
                    f"{info.traefik_public_url}/ws/chat",
                    401,
                )
            }
            if info.traefik_public_url
            else {}
        ),
        "auth": _probe_http("auth service", f"{info.auth_url}/healthz"),
        "omni2": _probe_http("omni2", f"{info.omni2_url}/healthz"),
        "jaeger": _probe_http("jaeger query API", f"{info.jaeger_query_url}/api/services"),
        # The other OMNI2 replicas, each dashboard process behind Traefik's front entry
        # point, and the Kafka trace pipeline's parts.
        **{
            f"omni2-{n}": _probe_http(f"omni2 replica {n}", f"{url}/healthz")
            for n, url in enumerate(info.omni2_replicas[1:], 2)
        },
        **{
            f"dashboard-{n}": _probe_http(f"dashboard replica {n}", f"{url}/healthz")
            for n, url in enumerate(info.dashboard_replicas, 1)
            if len(info.dashboard_replicas) > 1
        },
        **{name: _probe_http(name, url) for name, url in info.jaeger_parts.items()},
        **_otlp_checks(info),
        **_scale_checks(info),
    }


def _otlp_checks(info: StackInfo) -> dict[str, Check]:
    """Both telemetry paths: the public one answers a GET with its receiver's 405 (up, and
    no credential asked); the internal one with 401 (up, and a credential asked: a 405 there
    means anyone could send spans as omni2). With the Kafka pipeline both go through the
    balancer to the collectors. An external Jaeger has one OTLP endpoint: only it is checked."""
    checks = {
        "otlp-public": _probe_http(
            "OTLP public path (browsers)", f"{info.otlp_http_endpoint}/v1/traces", 405
        )
    }
    internal = info.otlp_internal_endpoint
    if internal and internal != info.otlp_http_endpoint:
        check = _probe_http("OTLP internal path (credential)", f"{internal}/v1/traces", 401)
        if not check.ok and "answers 405" in check.detail:
            check.detail = f"takes spans without the credential ({internal}/v1/traces)"
        checks["otlp-internal"] = check
    return checks


def _scale_checks(info: StackInfo) -> dict[str, Check]:
    """What answers no HTTP health check: the Kafka broker and PostgreSQL (a TCP connect),
    and the balancer in front of the collectors (the collectors' own answer through it: 401
    on its internal entry point, which asks for the credential)."""
    checks = {}
    if info.kafka_brokers:
        checks["kafka"] = _probe_tcp("kafka broker", info.kafka_brokers)
        checks["otlp-balancer"] = _probe_http(
            "OTLP balancer -> collectors",
            f"{info.otlp_internal_endpoint or info.otlp_http_endpoint}/v1/traces",
            401 if info.otlp_internal_endpoint else 405,
        )
    database = _postgres_address(info.omni2_database_url)
    if database is not None:
        checks["postgres"] = _probe_tcp("postgresql", database)
    return checks


def _postgres_address(database_url: str) -> str | None:
    """host:port of a PostgreSQL URL (never its password), None for any other database."""
    parts = urlsplit(database_url)
    if not parts.scheme.startswith("postgresql") or not parts.hostname:
        return None
    return f"{parts.hostname}:{parts.port or 5432}"


def _probe_tcp(name: str, address: str) -> Check:
    host, _, port = address.rpartition(":")
    try:
        socket.create_connection((host, int(port)), timeout=3).close()
    except (OSError, ValueError) as err:
        return Check(name, False, f"no TCP connection to {address}: {err}")
    return Check(name, True, f"accepts TCP connections ({address})")


@dataclass(frozen=True)
class Closed:
    """How the stack ended the probe's connection."""

    code: int | None  # None: no close frame at all
    reason: str
    mid_connection: bool  # after the welcome frame (a token expiring, a frame refused)


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
    else:
        result.checks.append(Check("login", True, "skipped: probing with the given token"))

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
            closed = probe.closed
            if closed is not None and not closed.mid_connection:
                # A refusal: wait for the span of the service that sent the close code too.
                session = _fetch(
                    jaeger,
                    probe.session_trace_id,
                    settle_s,
                    lambda spans: (
                        _through_gateway(spans) and _closer(spans, closed.code) is not None
                    ),
                )
            else:
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

    if probe.closed is not None:
        result.hop, result.verdict = close_hop(probe.closed, session + message, layers)
        return result
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


def _closer(spans: list[TraceSpan], code: int | None) -> str | None:
    """The service that sent `code`: its connect span records the close it refused with."""
    for service in (Service.OMNI2, Service.DASHBOARD):  # deepest first: the dashboard passes on
        span = _span(spans, service, SpanName.CONNECT)
        if span is not None and span.attributes.get(Attr.CLOSE_CODE) == code:
            return service
    return None


def _said(code: int | None, reason: str) -> str:
    """The label of the code, then the reason, as the chat page shows them."""
    meaning = CLOSE_MEANINGS.get(code) if code is not None else None
    label = meaning.label if meaning else f"close code {code}"
    if not reason:
        return label
    return reason if reason.lower().startswith(label) else f"{label}: {reason}"


def close_hop(
    closed: Closed, spans: list[TraceSpan], layers: dict[str, Check] | None = None
) -> tuple[str, str]:
    """(hop, verdict) for a connection the stack closed: the hop CLOSE_MEANINGS names for the
    code, made precise by the spans (which service's connect span carries the close code,
    whether the dashboard got as far as its upstream connect) and by when it happened."""
    code, reason = closed.code, closed.reason
    said = _said(code, reason)
    closer = _closer(spans, code)
    upstream = _span(spans, Service.DASHBOARD, SpanName.UPSTREAM_CONNECT)
    evidence = f" ({closer}'s {SpanName.CONNECT} span records close {code})" if closer else ""
    when = "closed the connection after the welcome" if closed.mid_connection else "refused"
    # The dashboard refused before it even tried the gateway: the client's request was at fault.
    refused_at_dashboard = closer == Service.DASHBOARD and upstream is None
    if code is None:
        return "client -> dashboard", f"the connection dropped without a close frame: {reason}"
    if code == CloseCode.UNAUTHENTICATED:
        if closed.mid_connection or closer == Service.OMNI2:
            # The token expired under an open connection, or OMNI2 cannot verify a token the
            # gateway let through (the two hold different secrets).
            return "omni2", f"omni2 {when}: {said}{evidence}"
        if refused_at_dashboard or "missing" in reason:
            return "client -> dashboard", f"the dashboard refused: {said}{evidence}"
        verify = _span(spans, Service.AUTH, SpanName.AUTH_VERIFY)
        why = (verify.attributes.get(Attr.AUTH_FAILURE) if verify else None) or reason
        return "traefik -> auth", f"authentication failed: {why}"
    if code == CloseCode.FORBIDDEN:
        if closer == Service.OMNI2:
            return "omni2", f"omni2 {when}: {said}{evidence}"
        if refused_at_dashboard or (closer is None and "origin" in reason.lower()):
            return "client -> dashboard", f"the dashboard refused: {said}{evidence}"
        if closer == Service.DASHBOARD:  # the gateway answered the upgrade with 403
            return "traefik -> auth", f"the gateway refused: {said}{evidence}"
    meaning = CLOSE_MEANINGS.get(code)
    if meaning is not None and meaning.hop == "dashboard -> traefik":
        return _gateway_hop(code, said, spans, layers)
    if closer == Service.OMNI2:
        return "omni2", f"omni2 {when}: {said}{evidence}"
    if refused_at_dashboard:
        return "client -> dashboard", f"the dashboard refused: {said}{evidence}"
    hop = meaning.hop if meaning is not None else "server"
    who = hop.rsplit(" -> ", 1)[-1]
    return hop, f"{who} {when}: {said} (close code {code})"


def _gateway_hop(
    code: int, said: str, spans: list[TraceSpan], layers: dict[str, Check] | None
) -> tuple[str, str]:
    """The dashboard could not get through Traefik: ask the traces first, then the health checks."""
    healthy = Check("", True, "")
    traefik, auth, omni2 = (
        (layers or {}).get(name, healthy) for name in ("traefik", "auth", "omni2")
    )
    auth_request = _span(spans, Service.TRAEFIK, "AuthRequest")
    reverse_proxy = _span(spans, Service.TRAEFIK, "ReverseProxy")
    upstream = _span(spans, Service.DASHBOARD, SpanName.UPSTREAM_CONNECT)
    if not traefik.ok and "refused" in traefik.detail:
        return "dashboard -> traefik", f"connection refused: {traefik.detail}"
    if upstream is not None and upstream.attributes.get(Attr.ERROR_TYPE) in (
        "ConnectionRefusedError",
        "OSError",
    ):
        return "dashboard -> traefik", "connection refused (from the dashboard's span)"
    if (auth_request is not None and auth_request.status == "ERROR") or not auth.ok:
        return "traefik -> auth", f"ForwardAuth failed: auth {auth.detail or said}"
    if (reverse_proxy is not None and reverse_proxy.status == "ERROR") or not omni2.ok:
        return "traefik -> omni2", f"backend unreachable: omni2 {omni2.detail or said}"
    return "dashboard -> traefik", f"{said} (close code {code})"
