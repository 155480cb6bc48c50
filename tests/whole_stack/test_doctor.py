"""`omni-trace doctor` pinpoints the broken hop: stopped Traefik, OMNI2, auth; a bad token; a
refused user; and, over the whole close-code table, the hop each code points at."""

from __future__ import annotations

import argparse
import dataclasses
import signal
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from omni_trace.cli import _doctor_token
from omni_trace.doctor import probe
from omni_trace.doctor.hops import Closed, close_hop
from omni_trace.doctor.probe import diagnose
from omni_trace.stack import Stack, StackInfo
from omni_trace.traces.jaeger import TraceSpan
from otel.names import Attr, Service, SpanName
from services.common.protocol import CLOSE_MEANINGS, CloseCode
from services.common.tokens import issue_token
from tests.whole_stack.conftest import running_stack

# Starts stacks of its own (or runs for long): not in `scripts/test --quick`.
pytestmark = pytest.mark.slow

GATEWAY_CODES = {CloseCode.GATEWAY_UNREACHABLE, CloseCode.GATEWAY_TIMEOUT}


# The doctor returns as soon as the probe's spans are in Jaeger; on a loaded machine (the
# suite on 4 workers, two cores) Traefik's 5 s batches can arrive after its default 8 s.
SPANS_S = 20.0


@pytest.fixture(scope="module")
def own_stack(tmp_path_factory: pytest.TempPathFactory, jwt_secret: str) -> Iterator[Stack]:
    with running_stack(tmp_path_factory.mktemp("doctor"), jwt_secret) as stack:
        yield stack


@pytest.mark.stack
def test_healthy_chain(own_stack: Stack) -> None:
    result = diagnose(own_stack.info, user="alice", password="alice-demo", settle_s=SPANS_S)
    assert result.healthy, result.render()
    assert len(result.trace_ids) == 2  # the probe's session and message traces
    assert "answered" in result.verdict


@pytest.mark.stack
@pytest.mark.parametrize(
    ("service", "hop", "words"),
    [
        ("traefik", "dashboard -> traefik", "connection refused"),
        ("omni2", "traefik -> omni2", "omni2 connection refused"),
        ("auth", "traefik -> auth", "auth connection refused"),
    ],
)
def test_stopped_layer_is_named(own_stack: Stack, service: str, hop: str, words: str) -> None:
    own_stack.stop_service(service)
    try:
        result = diagnose(own_stack.info, user="alice", password="alice-demo", settle_s=6)
    finally:
        own_stack.start_service(service)
    assert result.hop == hop, result.render()
    assert words in result.verdict, result.render()
    assert f"[FAIL] {'traefik route' if service == 'traefik' else service}" in result.render()


@pytest.mark.stack
def test_bad_token_is_named_with_its_reason(own_stack: Stack) -> None:
    result = diagnose(own_stack.info, user="alice", password="", token="not-a-jwt")
    assert result.hop == "traefik -> auth", result.render()
    assert "authentication failed: token invalid" in result.verdict


@pytest.mark.stack
def test_blocked_user_is_refused_by_omni2(own_stack: Stack) -> None:
    result = diagnose(own_stack.info, user="mallory", password="mallory-demo", settle_s=SPANS_S)
    assert result.hop == "omni2", result.render()
    assert "omni2 refused: user blocked: abusive prompts" in result.verdict, result.render()
    # Named from the trace: OMNI2's connect span carries the code the dashboard passed on.
    assert f"omni2's chat.connect span records close {CloseCode.USER_BLOCKED}" in result.verdict


@pytest.mark.stack
def test_unknown_user_is_refused_by_omni2(own_stack: Stack) -> None:
    ghost = f"ghost-{uuid.uuid4().hex[:8]}"
    token = issue_token(ghost, own_stack.jwt_secret)  # valid, for a user OMNI2 does not know
    result = diagnose(own_stack.info, user=ghost, password="", token=token, settle_s=SPANS_S)
    assert result.hop == "omni2", result.render()
    assert f"omni2 refused: unknown user '{ghost}'" in result.verdict, result.render()
    assert f"omni2's chat.connect span records close {CloseCode.USER_UNKNOWN}" in result.verdict
    assert token not in result.render()


@pytest.mark.stack
def test_hung_backend_is_named(own_stack: Stack) -> None:
    own_stack.signal_service("omni2", signal.SIGSTOP)
    try:
        result = diagnose(own_stack.info, user="alice", password="alice-demo", settle_s=2)
    finally:
        own_stack.signal_service("omni2", signal.SIGCONT)
    assert result.hop == "traefik -> omni2", result.render()
    assert "no answer" in result.verdict, result.render()


# -- the hop of every close code, from the table and the spans (no stack needed) -------------


def span(service: str, name: str, parent: str | None = None, **attributes: object) -> TraceSpan:
    return TraceSpan(
        trace_id="t" * 32,
        span_id=f"{service}-{name}",
        parent_span_id=parent,
        name=name,
        service=service,
        kind="SERVER",
        start_ns=0,
        end_ns=1,
        attributes=dict(attributes),
    )


@pytest.mark.parametrize("mid_connection", [False, True], ids=["at-connect", "mid-connection"])
@pytest.mark.parametrize("code", sorted(CLOSE_MEANINGS))
def test_every_close_code_names_a_hop(code: int, mid_connection: bool) -> None:
    hop, verdict = close_hop(Closed(code, "why", mid_connection), [])
    assert hop, code
    assert (hop == "dashboard -> traefik") == (code in GATEWAY_CODES), (code, hop)
    assert verdict and "why" in verdict, verdict


def dashboard_refused(code: int, reason: str, *, tried_upstream: bool) -> list[TraceSpan]:
    spans = [span(Service.DASHBOARD, SpanName.CONNECT, **{Attr.CLOSE_CODE: code})]
    if tried_upstream:
        spans.append(span(Service.DASHBOARD, SpanName.UPSTREAM_CONNECT, "d"))
    return spans


def omni2_refused(code: int) -> list[TraceSpan]:
    return [
        span(Service.DASHBOARD, SpanName.CONNECT),
        span(Service.DASHBOARD, SpanName.UPSTREAM_CONNECT),
        span(Service.TRAEFIK, "ReverseProxy"),
        span(Service.OMNI2, SpanName.CONNECT, **{Attr.CLOSE_CODE: code}),
    ]


@pytest.mark.parametrize(
    ("closed", "spans", "hop"),
    [
        (Closed(4404, "unknown user 'x'", False), omni2_refused(4404), "omni2"),
        (Closed(4423, "user blocked: spam", False), omni2_refused(4423), "omni2"),
        (Closed(4423, "user blocked: spam", True), [], "omni2"),
        (Closed(4429, "5 open", False), omni2_refused(4429), "omni2"),
        (Closed(1011, "database unavailable", False), omni2_refused(1011), "omni2"),
        (Closed(1011, "", False), [], "omni2"),
        # 4403: the dashboard's origin check, OMNI2's gateway/inactive checks, or ForwardAuth.
        (
            Closed(4403, "origin not allowed", False),
            dashboard_refused(4403, "origin not allowed", tried_upstream=False),
            "client -> dashboard",
        ),
        (Closed(4403, "origin not allowed", False), [], "client -> dashboard"),
        (Closed(4403, "account inactive", False), omni2_refused(4403), "omni2"),
        (Closed(4403, "connection did not come through the gateway", False), [], "omni2"),
        (Closed(4403, "account inactive", True), [], "omni2"),
        (
            Closed(4403, "forbidden: 403", False),
            dashboard_refused(4403, "forbidden", tried_upstream=True),
            "traefik -> auth",
        ),
        # 4401: the auth service at connect, the dashboard without a token, OMNI2 mid-connection.
        (
            Closed(4401, "authentication failed: token invalid", False),
            [
                *dashboard_refused(4401, "", tried_upstream=True),
                span(Service.AUTH, SpanName.AUTH_VERIFY, **{Attr.AUTH_FAILURE: "token invalid"}),
            ],
            "traefik -> auth",
        ),
        (Closed(4401, "authentication failed: token expired", False), [], "traefik -> auth"),
        (Closed(4401, "token expired", True), [], "omni2"),
        (
            Closed(4401, "missing token", False),
            dashboard_refused(4401, "missing token", tried_upstream=False),
            "client -> dashboard",
        ),
        (Closed(4502, "chat gateway unreachable", False), [], "dashboard -> traefik"),
        (Closed(4504, "did not answer in time", False), [], "dashboard -> traefik"),
        (
            Closed(4502, "gateway answered HTTP 502", False),
            [span(Service.TRAEFIK, "ReverseProxy")],
            "dashboard -> traefik",
        ),
        (Closed(1008, "frame rate exceeded", True), [], "client -> dashboard"),
        (Closed(1009, "frame too big", True), [], "client -> dashboard"),
        (Closed(None, "", False), [], "client -> dashboard"),
    ],
    ids=lambda value: str(value.code) if isinstance(value, Closed) else None,
)
def test_the_spans_say_who_closed(closed: Closed, spans: list[TraceSpan], hop: str) -> None:
    found, verdict = close_hop(closed, spans)
    assert found == hop, verdict
    if closed.reason:
        assert closed.reason in verdict


def test_a_failed_reverse_proxy_points_past_traefik() -> None:
    failed = span(Service.TRAEFIK, "ReverseProxy")
    failed = dataclasses.replace(failed, status="ERROR")
    hop, verdict = close_hop(Closed(4502, "gateway answered HTTP 502", False), [failed])
    assert hop == "traefik -> omni2", verdict


# Where the doctor would read traces; ArrivingSpans answers instead.
NO_STACK = StackInfo(
    **dict.fromkeys(
        ["dashboard_url", "dashboard_ws_url", "traefik_url", "traefik_ws_url", "auth_url"], ""
    ),
    **dict.fromkeys(["omni2_url", "omni2_ws_url", "otlp_http_endpoint", "logs_dir"], ""),
    traefik_access_log="",
    jaeger_query_url="http://jaeger.invalid",
)


class ArrivingSpans:
    """Jaeger as the doctor reads it on a loaded machine: each read of the trace returns the
    next batch, the last one from then on."""

    def __init__(self, *batches: list[TraceSpan]) -> None:
        self.batches, self.reads = list(batches), 0

    def __call__(self, url: str) -> ArrivingSpans:  # stands in for JaegerClient(url)
        return self

    def __enter__(self) -> ArrivingSpans:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def get_trace(self, trace_id: str) -> list[TraceSpan]:
        self.reads += 1
        return self.batches[min(self.reads, len(self.batches)) - 1]


def test_the_doctor_waits_for_omni2s_span_when_the_dashboard_only_passed_the_code_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The dashboard's connect span records OMNI2's 4423 as it passes it on, and can reach
    # Jaeger before OMNI2's span: the verdict must still come from OMNI2's.
    blocked = CloseCode.USER_BLOCKED
    passed_on = [
        span(Service.DASHBOARD, SpanName.CONNECT, **{Attr.CLOSE_CODE: blocked}),
        span(Service.DASHBOARD, SpanName.UPSTREAM_CONNECT),
        span(Service.TRAEFIK, "ReverseProxy"),
    ]
    jaeger = ArrivingSpans(passed_on, [*passed_on, *omni2_refused(blocked)[-1:]])
    monkeypatch.setattr(probe, "JaegerClient", jaeger)
    closed = Closed(blocked, "user blocked: spam", False)
    found = probe._Probe(session_trace_id="t" * 32, closed=closed)
    session, _ = probe._probe_traces(NO_STACK, found, settle_s=5)

    hop, verdict = close_hop(closed, session)
    assert hop == "omni2", verdict
    assert f"omni2's chat.connect span records close {blocked}" in verdict, verdict
    assert jaeger.reads >= 2


def test_the_doctor_does_not_wait_for_omni2_when_the_dashboard_refused_itself(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    refused = [
        *dashboard_refused(CloseCode.FORBIDDEN, "forbidden", tried_upstream=True),
        span(Service.TRAEFIK, "AuthRequest"),
    ]
    refused[1] = dataclasses.replace(refused[1], status="ERROR")  # the gateway said 403
    jaeger = ArrivingSpans(refused)
    monkeypatch.setattr(probe, "JaegerClient", jaeger)
    found = probe._Probe(
        session_trace_id="t" * 32, closed=Closed(CloseCode.FORBIDDEN, "forbidden: 403", False)
    )
    probe._probe_traces(NO_STACK, found, settle_s=5)

    assert jaeger.reads == 1


def test_doctor_takes_a_token_from_a_file_stdin_or_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def args(**kw: object) -> argparse.Namespace:
        return argparse.Namespace(**({"token": None, "token_file": None} | kw))

    monkeypatch.delenv("OMNI_TRACE_TOKEN", raising=False)
    assert _doctor_token(args()) is None
    path = tmp_path / "jwt"
    path.write_text("eyJ.file.token\n")
    assert _doctor_token(args(token_file=str(path))) == "eyJ.file.token"
    monkeypatch.setenv("OMNI_TRACE_TOKEN", "eyJ.env.token")
    assert _doctor_token(args()) == "eyJ.env.token"
    assert _doctor_token(args(token="eyJ.flag.token")) == "eyJ.flag.token"
