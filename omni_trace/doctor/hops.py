"""Which hop a closed connection names: the hop `CLOSE_MEANINGS` gives the close code, made
precise by the probe's spans (which service recorded the close) and the health checks.

Pure: reads spans and checks, sends nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

from omni_trace.doctor.report import Check
from omni_trace.traces.jaeger import TraceSpan
from otel.names import Attr, Service, SpanName
from services.common.protocol import CLOSE_MEANINGS, CloseCode


@dataclass(frozen=True)
class Closed:
    """How the stack ended the probe's connection."""

    code: int | None  # None: no close frame at all
    reason: str
    mid_connection: bool  # after the welcome frame (a token expiring, a frame refused)


def _span(spans: list[TraceSpan], service: str, name: str) -> TraceSpan | None:
    return next((s for s in spans if s.service == service and s.name == name), None)


def closing_service(spans: list[TraceSpan], code: int | None) -> str | None:
    """The service that sent `code`: its connect span records the close it refused with."""
    for service in (Service.OMNI2, Service.DASHBOARD):  # deepest first: the dashboard passes on
        span = _span(spans, service, SpanName.CONNECT)
        if span is not None and span.attributes.get(Attr.CLOSE_CODE) == code:
            return service
    return None


def sender_recorded(spans: list[TraceSpan], code: int | None) -> bool:
    """Whether the spans already show who sent `code`. The dashboard's connect span names it
    when the dashboard refused by itself (before or at the gateway). Once its upstream
    connect got through, its span only records OMNI2's code passed on, and OMNI2's span may
    still be on its way to Jaeger."""
    closer = closing_service(spans, code)
    if closer == Service.DASHBOARD:
        upstream = _span(spans, Service.DASHBOARD, SpanName.UPSTREAM_CONNECT)
        return upstream is None or upstream.status == "ERROR"
    return closer is not None


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
    closer = closing_service(spans, code)
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
