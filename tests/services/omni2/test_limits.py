"""Limits that hold across parallel connections, on SQLite and PostgreSQL: the rate and daily
limits are checked and recorded in one transaction, connections per user are counted, and
a connection ends when its token does."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
from fastapi.testclient import TestClient
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.websockets import WebSocketDisconnect

from otel.names import Attr, Event, Flow, SpanName
from services.common.protocol import CloseCode
from services.common.tokens import issue_token
from services.db import Database
from services.db.repository import flow as flow_repo
from services.db.repository import usage as usage_repo
from services.db.repository import users as users_repo
from services.db.seed import seed_demo
from services.omni2.checks import CheckRun, Denied, UsagePolicy, check_message
from tests.db import Admin
from tests.services.omni2.conftest import SECRET, converse, gateway_headers

POLICY = UsagePolicy(warning_ratio=0.8, reserve_tokens=2000, reserve_cost=0.006)


async def _parallel_checks(url: str, user: str, n: int, **limits: int) -> list[str]:
    """`n` message checks of `user` at once, each in its own transaction and connection;
    "ok" or the refusal's error type for each."""
    db = Database(url)
    await db.create_tables()
    await seed_demo(db)
    async with db.session() as session:
        await users_repo.add_user(session, user, "user")
        await session.flush()
        await users_repo.set_limits(session, user, **limits)  # type: ignore[arg-type]
    start = asyncio.Event()

    async def one() -> str:
        await start.wait()
        try:
            async with db.session() as session:
                await check_message(session, CheckRun({}), user, POLICY)
        except Denied as denied:
            return denied.error_type
        return "ok"

    tasks = [asyncio.create_task(one()) for _ in range(n)]
    await asyncio.sleep(0)
    start.set()
    try:
        return await asyncio.gather(*tasks)
    finally:
        await db.dispose()


def test_parallel_messages_reserve_the_daily_limit_once(database_url: str, admin: Admin) -> None:
    results = asyncio.run(
        _parallel_checks(database_url, "dora", 20, daily_tokens=120, rate_per_minute=None)
    )
    # One reservation covers what is left of 120 tokens: the others wait for its answer.
    assert sorted(results) == ["ok"] + ["usage_reserved"] * 19
    day = admin(lambda s: usage_repo.day_usage(s, "dora", usage_repo.today()))
    assert (day.tokens, day.reserved_tokens) == (0, 2000)


def test_parallel_messages_pass_the_rate_limit_only_as_often_as_it_allows(
    database_url: str, admin: Admin
) -> None:
    results = asyncio.run(
        _parallel_checks(database_url, "rita", 12, rate_per_minute=4, daily_tokens=None)
    )
    assert sorted(results) == ["ok"] * 4 + ["rate_limited"] * 8
    # Refused messages leave nothing behind: not in the window, no reservation.
    day = admin(lambda s: usage_repo.day_usage(s, "rita", usage_repo.today()))
    assert day.reserved_tokens == 4 * 2000


def test_a_saved_answer_settles_its_reservation(
    make_client: Callable[..., TestClient], admin: Admin, spans: InMemorySpanExporter
) -> None:
    client = make_client()
    with client.websocket_connect("/ws/chat", headers=gateway_headers("tim")) as ws:
        ws.receive_json()
        done = converse(ws, "hello")[1][-1]
    used = done["result"]["tokens_used"]
    day = admin(lambda s: usage_repo.day_usage(s, "tim", usage_repo.today()))
    assert (day.tokens, day.reserved_tokens, day.reserved_cost) == (used, 0, pytest.approx(0))
    assert day.cost == pytest.approx(done["result"]["cost"], abs=1e-6)
    (checks,) = [
        s
        for s in spans.get_finished_spans()
        if s.name == SpanName.CHECKS and f"{s.context.trace_id:032x}" == done["trace_id"]
    ]
    usage = next(e for e in checks.events if e.name == Event.check("usage"))
    assert usage.attributes is not None
    assert (usage.attributes[Attr.LIMIT], usage.attributes[Attr.LIMIT_RESERVED]) == (120, 0)


def test_answers_in_flight_refuse_with_their_own_code(
    make_client: Callable[..., TestClient], admin: Admin, spans: InMemorySpanExporter
) -> None:
    """A message whose allowance is reserved by another connection's answer gets a clear
    error, and the connection stays usable."""
    client = make_client()

    async def reserve(session: AsyncSession) -> None:
        await usage_repo.reserve_usage(
            session,
            "tim",
            usage_repo.today(),
            tokens=2000,
            cost=0.0,
            token_limit=120,
            cost_limit=None,
        )

    admin(reserve)
    with client.websocket_connect("/ws/chat", headers=gateway_headers("tim")) as ws:
        ws.receive_json()
        refused = converse(ws, "hello")[1][-1]
        ws.send_json({"type": "ping"})
        assert ws.receive_json() == {"type": "pong"}
    assert refused["type"] == "error" and refused["code"] == "usage_reserved"
    assert refused["error"].startswith("Daily limit reached with answers in progress")
    events = admin(lambda s: flow_repo.flow_events(s, trace_id=refused["trace_id"]))
    assert [(e.name, e.status, e.detail.get("error_type")) for e in events] == [
        ("user", "ok", None),
        ("rate_limit", "ok", None),
        ("usage", "denied", "usage_reserved"),
    ]
    # The one checks span says which check denied and why; the usage event has its numbers.
    (checks,) = [
        s
        for s in spans.get_finished_spans()
        if s.name == SpanName.CHECKS and f"{s.context.trace_id:032x}" == refused["trace_id"]
    ]
    (turn,) = [s for s in spans.get_finished_spans() if s.context == checks.parent]
    assert turn.name == SpanName.TURN
    assert checks.attributes is not None
    assert checks.attributes[Attr.CHECK_RESULT] == "deny"
    assert checks.attributes[Attr.CHECK_NAME] == "usage"
    assert checks.attributes[Attr.ERROR_TYPE] == "usage_reserved"
    assert checks.status.status_code is StatusCode.ERROR
    assert checks.status.description == refused["error"]
    assert [e.name for e in checks.events] == [
        Event.check("user"),
        Event.check("rate_limit"),
        Event.check("usage"),
    ]
    usage = checks.events[-1].attributes
    assert usage is not None
    assert (usage[Attr.CHECK_RESULT], usage[Attr.ERROR_TYPE]) == ("deny", "usage_reserved")
    assert (usage[Attr.LIMIT], usage[Attr.LIMIT_USED], usage[Attr.LIMIT_RESERVED]) == (120, 0, 2000)
    assert {e.span_id for e in events} == {f"{checks.context.span_id:016x}"}


def test_a_failed_answer_releases_its_reservation(
    make_client: Callable[..., TestClient], admin: Admin
) -> None:
    from tests.services.omni2.test_tools import FlakyModel

    client = make_client(model=FlakyModel())
    with client.websocket_connect("/ws/chat", headers=gateway_headers("tim")) as ws:
        ws.receive_json()
        failed = converse(ws, "hello")[1][-1]
    assert failed["type"] == "error"
    day = admin(lambda s: usage_repo.day_usage(s, "tim", usage_repo.today()))
    assert (day.tokens, day.reserved_tokens) == (0, 0)


def _refused(client: TestClient, headers: dict[str, str]) -> WebSocketDisconnect:
    with (
        client.websocket_connect("/ws/chat", headers=headers) as ws,
        pytest.raises(WebSocketDisconnect) as closed,
    ):
        ws.receive_json()
    return closed.value


def test_connections_per_user_are_limited_and_freed_on_close(
    make_client: Callable[..., TestClient], admin: Admin, spans: InMemorySpanExporter
) -> None:
    client = make_client(max_connections_per_user=2)
    admin(lambda s: users_repo.set_limits(s, "bob", max_connections=3))  # the user's own limit wins
    with (
        client.websocket_connect("/ws/chat", headers=gateway_headers("alice")) as first,
        client.websocket_connect("/ws/chat", headers=gateway_headers("alice")) as second,
        client.websocket_connect("/ws/chat", headers=gateway_headers("bob")) as third_of_bob,
    ):
        for ws in (first, second, third_of_bob):
            assert ws.receive_json()["type"] == "welcome"
        spans.clear()
        closed = _refused(client, gateway_headers("alice"))
        assert closed.code == CloseCode.TOO_MANY_CONNECTIONS
        assert closed.reason == "too many connections: 2 already open for this user"
        assert converse(second, "still here")[1][-1]["type"] == "done"
    with client.websocket_connect("/ws/chat", headers=gateway_headers("alice")) as again:
        assert again.receive_json()["type"] == "welcome", "closed connections free their slots"

    finished = spans.get_finished_spans()
    connect = next(
        s
        for s in finished
        if s.name == SpanName.CONNECT
        and s.attributes
        and s.attributes.get(Attr.ERROR_TYPE) == "too_many_connections"
    )
    assert connect.attributes is not None
    assert connect.attributes[Attr.CLOSE_CODE] == CloseCode.TOO_MANY_CONNECTIONS
    (checks,) = [
        s
        for s in finished
        if s.name == SpanName.CHECKS and s.parent and s.parent.span_id == connect.context.span_id
    ]
    assert checks.attributes is not None
    assert checks.attributes[Attr.CHECK_RESULT] == "deny"
    assert checks.attributes[Attr.CHECK_NAME] == "connections"
    assert checks.attributes[Attr.ERROR_TYPE] == "too_many_connections"
    assert checks.status.status_code is StatusCode.ERROR
    assert checks.status.description == "too many connections: 2 already open for this user"
    user, connections = checks.events
    assert user.name == Event.check("user") and user.attributes is not None
    assert user.attributes[Attr.CHECK_RESULT] == "pass"
    assert connections.name == Event.check("connections") and connections.attributes is not None
    assert connections.attributes[Attr.CHECK_RESULT] == "deny"
    assert connections.attributes[Attr.ERROR_TYPE] == "too_many_connections"
    assert (connections.attributes[Attr.LIMIT], connections.attributes[Attr.LIMIT_USED]) == (2, 2)
    events = admin(lambda s: flow_repo.flow_events(s, trace_id=f"{connect.context.trace_id:032x}"))
    assert [(e.kind, e.name, e.status) for e in events] == [
        (Flow.CHECK, "user", "ok"),
        (Flow.CHECK, "connections", "denied"),
        (Flow.CONNECT, "refused", "denied"),
    ]
    assert events[0].span_id == events[1].span_id == f"{checks.context.span_id:016x}"


def test_a_connection_closes_with_4401_when_its_token_expires(
    make_client: Callable[..., TestClient], admin: Admin, spans: InMemorySpanExporter
) -> None:
    client = make_client()
    headers = {
        "x-user-id": "alice",
        "authorization": f"Bearer {issue_token('alice', SECRET, ttl_seconds=2)}",
    }
    with client.websocket_connect("/ws/chat", headers=headers) as ws:
        welcome = ws.receive_json()
        assert converse(ws, "hello")[1][-1]["type"] == "done"
        with pytest.raises(WebSocketDisconnect) as closed:
            ws.receive_json()
    assert (closed.value.code, closed.value.reason) == (CloseCode.UNAUTHENTICATED, "token expired")

    finished = spans.get_finished_spans()
    (connect,) = [s for s in finished if s.name == SpanName.CONNECT]
    (close,) = [s for s in finished if s.name == SpanName.CLOSE]
    assert close.parent is not None and close.parent.span_id == connect.context.span_id
    assert close.attributes is not None
    assert close.attributes[Attr.CLOSE_CODE] == CloseCode.UNAUTHENTICATED
    events = admin(lambda s: flow_repo.flow_events(s, conversation_id=welcome["conversation_id"]))
    (expired,) = [e for e in events if e.kind == Flow.CLOSE]
    assert (expired.name, expired.trace_id) == ("token_expired", f"{connect.context.trace_id:032x}")
    assert expired.span_id == f"{close.context.span_id:016x}"


def test_malformed_frames_leave_flow_events_in_the_session_trace(
    make_client: Callable[..., TestClient], admin: Admin, spans: InMemorySpanExporter
) -> None:
    client = make_client()
    with client.websocket_connect("/ws/chat", headers=gateway_headers("alice")) as ws:
        welcome = ws.receive_json()
        ws.send_text("not json")
        ws.send_json({"type": "shout"})
        answers = [ws.receive_json(), ws.receive_json()]
    (connect,) = [s for s in spans.get_finished_spans() if s.name == SpanName.CONNECT]
    session = f"{connect.context.trace_id:032x}"
    assert [(a["code"], a["trace_id"]) for a in answers] == [
        ("invalid_json", session),
        ("unknown_type", session),
    ]
    events = admin(lambda s: flow_repo.flow_events(s, conversation_id=welcome["conversation_id"]))
    frames = [e for e in events if e.kind == Flow.FRAME]
    assert [(e.name, e.status, e.trace_id) for e in frames] == [
        ("invalid_json", "denied", session),
        ("unknown_type", "denied", session),
    ]
    rejects = {
        f"{s.context.span_id:016x}" for s in spans.get_finished_spans() if s.name == SpanName.REJECT
    }
    assert {e.span_id for e in frames} == rejects
    assert all(e.duration_ms is not None for e in frames)


def test_reservations_left_by_a_stopped_omni2_are_released_at_start(
    make_client: Callable[..., TestClient], admin: Admin
) -> None:
    make_client()  # the tables exist

    async def reserve(session: AsyncSession) -> None:
        await usage_repo.reserve_usage(
            session,
            "tim",
            usage_repo.today(),
            tokens=2000,
            cost=0.5,
            token_limit=120,
            cost_limit=None,
        )

    admin(reserve)
    client = make_client()  # a new OMNI2 process on the same database
    with client.websocket_connect("/ws/chat", headers=gateway_headers("tim")) as ws:
        ws.receive_json()
        assert converse(ws, "hello")[1][-1]["type"] == "done"
