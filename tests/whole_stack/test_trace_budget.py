"""One ordinary user at full speed cannot erase everyone's audit trail.

Jaeger's memory store evicts whole traces, oldest first, past `max_traces`. A user who could
make a trace per connect and per refused message (about 100 a second) would push every other
user's traces out within minutes. These tests start the stack with a small store, record user
A's message trace, then let user B churn connections and send refused messages as fast as the
frame limits allow, through the dashboard and straight to OMNI2: A's trace must still be in
Jaeger afterwards, B must have been told why it was refused, and B must have left a bounded
number of traces (counted), its refusals past the budget counted on one span."""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from omni_trace.stack import Stack
from omni_trace.stack.client import open_chat
from omni_trace.traces import has_spans_named
from omni_trace.traces.jaeger import JaegerClient, TraceSpan
from otel.names import Attr, Service, SpanName
from services.common.protocol import CloseCode
from services.common.tokens import issue_token
from tests.db import Admin
from tests.whole_stack.conftest import client_provider, new_user, running_stack

pytestmark = [pytest.mark.stack, pytest.mark.slow]

MAX_TRACES = 400  # before the fix one user fills this in a few seconds
FLOOD_S = 15.0
# What the defaults let one ordinary user make in FLOOD_S (README, Security: "One user
# cannot erase everyone's audit trail"): connects 30 at once then 20 a minute, traced
# refusals 10 at once then 10 a minute, messages 30 a minute (the `user` role), those in
# flight when the rate limit refused, and the counted refusals' own spans.
ADMITTED = 30 + 20 * FLOOD_S / 60
TRACED_REFUSALS = 10 + 10 * FLOOD_S / 60
MESSAGES = 30
# Messages already relayed when the first refusal says the user is held: at most the pending
# cap of each of the three talking connections, each refused with a trace of its own.
IN_FLIGHT = 3 * 16
COUNTED = FLOOD_S / 5 + 2  # the counted refusals' spans, one per user every 5 s
BOUND = ADMITTED + TRACED_REFUSALS + MESSAGES + IN_FLIGHT + COUNTED + 5
SERVER_SERVICES = (Service.DASHBOARD, Service.TRAEFIK, Service.AUTH, Service.OMNI2)
RATE_REASON = "too many connections: at most"


@dataclass
class Flood:
    """What one attacker's connections were told."""

    closes: Counter[tuple[int, str]] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    welcomes: int = 0
    sent: int = 0

    def closed(self, err: ConnectionClosed) -> None:
        if err.rcvd is not None:
            self.closes[(err.rcvd.code, err.rcvd.reason)] += 1

    def refused_for_rate(self) -> int:
        return sum(
            n
            for (code, reason), n in self.closes.items()
            if code == CloseCode.TOO_MANY_CONNECTIONS and reason.startswith(RATE_REASON)
        )


async def _flood(url: str, headers: dict[str, str], seconds: float) -> Flood:
    """Two tasks that connect and close as fast as they are answered, and three connections
    that send messages at the frame rate (18 a second, under the 20 that would close them)
    and open again whenever they are closed."""
    flood = Flood()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds

    async def churn() -> None:
        while loop.time() < deadline:
            try:
                async with connect(url, additional_headers=headers, open_timeout=5) as ws:
                    json.loads(await asyncio.wait_for(ws.recv(), 5))
                    flood.welcomes += 1
            except ConnectionClosed as err:
                flood.closed(err)
            except (OSError, InvalidStatus, TimeoutError):
                await asyncio.sleep(0.05)

    async def talk() -> None:
        while loop.time() < deadline:
            try:
                async with connect(url, additional_headers=headers, open_timeout=5) as ws:
                    json.loads(await asyncio.wait_for(ws.recv(), 5))
                    flood.welcomes += 1

                    async def read() -> None:
                        async for text in ws:
                            frame = json.loads(text)
                            if frame.get("type") == "error":
                                flood.errors[str(frame.get("code"))] += 1

                    reader = asyncio.create_task(read())
                    try:
                        while loop.time() < deadline and not reader.done():
                            await ws.send(json.dumps({"type": "message", "text": "spam"}))
                            flood.sent += 1
                            await asyncio.sleep(1 / 18)
                    finally:
                        reader.cancel()
                        await asyncio.gather(reader, return_exceptions=True)
            except ConnectionClosed as err:
                flood.closed(err)
            except (OSError, InvalidStatus, TimeoutError):
                await asyncio.sleep(0.05)

    await asyncio.gather(churn(), churn(), talk(), talk(), talk())
    return flood


@pytest.fixture(scope="module")
def small_jaeger(tmp_path_factory: pytest.TempPathFactory, jwt_secret: str) -> Iterator[Stack]:
    with running_stack(
        tmp_path_factory.mktemp("small-jaeger"), jwt_secret, jaeger_max_traces=MAX_TRACES
    ) as stack:
        yield stack


@pytest.fixture(scope="module")
def jaeger(small_jaeger: Stack) -> Iterator[JaegerClient]:
    with JaegerClient(small_jaeger.info.jaeger_query_url) as client:
        yield client


async def _victims_trace(stack: Stack, jaeger: JaegerClient, token: str) -> str:
    """User A's message, answered and in Jaeger with OMNI2's chat.turn."""
    with client_provider(stack) as provider:
        async with open_chat(stack.info.dashboard_ws_url, token, tracer_provider=provider) as chat:
            reply = await chat.send("remember this message")
        assert reply.ok, reply.frame
        provider.force_flush()
    trace_id = str(reply.frame["trace_id"])
    jaeger.wait_for_trace(
        trace_id, has_spans_named((Service.OMNI2, SpanName.TURN)), what="A's chat.turn"
    )
    return trace_id


def _traces_between(jaeger: JaegerClient, start_us: int, end_us: int) -> set[str]:
    """Every trace with a span of a server layer in the window, once the exporters are done
    (the count stops growing)."""
    found: set[str] = set()
    for _ in range(20):
        now = set()
        for service in SERVER_SERVICES:
            now |= set(
                jaeger.find_trace_ids(
                    service, start_us=start_us, end_us=end_us, limit=MAX_TRACES - 1
                )
            )
        if now == found:
            return found
        found = now
        time.sleep(1)
    return found


def _spans_named(jaeger: JaegerClient, trace_ids: set[str], name: str) -> list[TraceSpan]:
    return [s for t in trace_ids for s in jaeger.get_trace(t) if s.name == name]


async def _attack(
    stack: Stack, jaeger: JaegerClient, jwt_secret: str, url: str, headers_of: str
) -> tuple[Flood, set[str], str, str]:
    admin = Admin(stack.info.omni2_database_url)
    victim = issue_token(new_user(admin), jwt_secret)
    victim_trace = await _victims_trace(stack, jaeger, victim)
    attacker = new_user(admin)  # an ordinary user: role `user`, the default limits
    token = issue_token(attacker, jwt_secret)
    headers = (
        {"Authorization": f"Bearer {token}", "x-user-id": attacker} if headers_of == "omni2" else {}
    )
    target = url if headers_of == "omni2" else f"{url}?token={token}"
    start_us = time.time_ns() // 1000
    flood = await _flood(target, headers, FLOOD_S)
    await asyncio.sleep(2)  # the last connections' ends reach the services
    traces = _traces_between(jaeger, start_us, time.time_ns() // 1000 + 1_000_000)
    return flood, traces, victim_trace, attacker


def _assert_bounded(
    jaeger: JaegerClient, flood: Flood, traces: set[str], victim_trace: str
) -> None:
    # The victim's trace is still there, whole.
    spans = jaeger.get_trace(victim_trace)
    assert any(s.service == Service.OMNI2 and s.name == SpanName.TURN for s in spans), (
        f"A's trace was evicted by B's flood ({len(traces)} traces since, "
        f"{flood.welcomes} connections, {flood.sent} messages)"
    )
    # The attacker was told why, and kept trying.
    assert flood.refused_for_rate() > 0, flood.closes
    assert flood.errors["rate_limited"] > 0, flood.errors
    # What it left: bounded by the limits, not by its speed.
    assert len(traces) <= BOUND, (
        f"{len(traces)} traces in {FLOOD_S:g} s (bound {BOUND:.0f}): "
        f"{flood.welcomes} connections, {sum(flood.closes.values())} refused, "
        f"{flood.sent} messages; traces by their first server span: {_kinds(jaeger, traces)}"
    )


def _kinds(jaeger: JaegerClient, trace_ids: set[str]) -> Counter[str]:
    """What each trace is, by its earliest server span (and its error type)."""
    kinds: Counter[str] = Counter()
    for trace_id in trace_ids:
        spans = [s for s in jaeger.get_trace(trace_id) if s.service in SERVER_SERVICES]
        if spans:
            first = min(spans, key=lambda s: s.start_ns)
            kinds[f"{first.service} {first.name} {first.attributes.get(Attr.ERROR_TYPE, '')}"] += 1
    return kinds


async def test_one_user_churning_through_the_dashboard_cannot_evict_another_users_trace(
    small_jaeger: Stack, jaeger: JaegerClient, jwt_secret: str
) -> None:
    stack = small_jaeger
    flood, traces, victim_trace, attacker = await _attack(
        stack, jaeger, jwt_secret, stack.info.dashboard_ws_url, "dashboard"
    )
    _assert_bounded(jaeger, flood, traces, victim_trace)
    refused = sum(flood.closes.values()) + flood.errors["rate_limited"]
    assert refused > 2 * BOUND, f"the flood was too slow to prove anything: {refused} refusals"
    # The refusals past the budget are counted, on a few spans, not a trace each.
    counted = _spans_named(jaeger, traces, SpanName.REFUSED)
    connects = sum(int(s.attributes.get(Attr.CONNECTS_REFUSED, 0)) for s in counted)
    messages = sum(int(s.attributes.get(Attr.MESSAGES_REFUSED, 0)) for s in counted)
    assert connects > 0 and messages > 0, [s.attributes for s in counted]
    assert all(s.attributes.get(Attr.USER_ID) == attacker for s in counted)


async def test_one_user_churning_straight_at_omni2_cannot_evict_another_users_trace(
    small_jaeger: Stack, jaeger: JaegerClient, jwt_secret: str
) -> None:
    stack = small_jaeger
    flood, traces, victim_trace, attacker = await _attack(
        stack, jaeger, jwt_secret, stack.info.omni2_ws_url, "omni2"
    )
    _assert_bounded(jaeger, flood, traces, victim_trace)
    counted = _spans_named(jaeger, traces, SpanName.REFUSED)
    assert sum(int(s.attributes.get(Attr.CONNECTS_REFUSED, 0)) for s in counted) > 0
    assert all(s.attributes.get(Attr.USER_ID) == attacker for s in counted)
