"""Faults of the scale-out profile, each on the real parts and each while chats go on: an
OMNI2 replica killed mid-answer, the Kafka broker killed and started again, an ingester
killed, a collector killed, a record no ingester can read, the storage restarted. The chat
goes on or fails with a reason within 2 s, and no span that a layer took is lost: every
message's chain reaches Jaeger whole.

One stack for the module (Kafka pipeline, two OMNI2 replicas on PostgreSQL, two collectors
behind the OTLP balancer, two ingesters); each test brings back what it killed, and tags its
traffic with its own user and ids."""

from __future__ import annotations

import re
import secrets
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from opentelemetry.sdk.trace import TracerProvider
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from omni_trace.stack import Stack
from omni_trace.stack.client import ChatReply, TokenCallback, open_chat
from omni_trace.stack.kafka import PARTITIONS, TOPIC, cached_libs, classpath, java_binary
from omni_trace.traces import (
    AuditQuery,
    JaegerClient,
    Trace,
    TraceFetcher,
    assert_message_chain,
    run_audit,
)
from otel.names import Service, SpanName
from services.common.protocol import CloseCode
from services.common.tokens import issue_token
from services.db.models import ConnectionSlot
from tests.db import Admin
from tests.whole_stack.conftest import new_user, running_stack

pytestmark = [pytest.mark.stack, pytest.mark.slow]

SECRET = secrets.token_urlsafe(32)
# Slow enough that a fault can land while a replica streams an answer (about 20 tokens,
# 1.2 s): the replica, the ingester and the collector are killed mid-answer.
SLOW_MODEL = {"OMNI2_MODEL_TOKEN_DELAY_MS": "60"}
# Each message's spans that every layer emits: counted in the collectors' span metrics.
MESSAGE_SPANS = (
    (Service.CHAT_CLIENT, SpanName.MESSAGE),
    (Service.DASHBOARD, SpanName.RELAY),
    (Service.OMNI2, SpanName.TURN),
)


@pytest.fixture(scope="module")
def own_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack(
        tmp_path_factory.mktemp("scale-faults"),
        SECRET,
        service_env={"omni2": SLOW_MODEL, "omni2-2": SLOW_MODEL},
        viewers=False,
        scale=True,
    ) as stack:
        info = stack.info
        assert info.trace_pipeline == "kafka" and len(info.omni2_replicas) == 2
        assert info.omni2_database_url.startswith("postgresql")
        yield stack


@dataclass(frozen=True)
class Sent:
    """One message on a connection of its own: the reply and the connection's session trace."""

    reply: ChatReply
    session_trace_id: str
    conversation_id: str

    @property
    def trace_ids(self) -> tuple[str, str]:
        return self.reply.trace_id, self.session_trace_id


def _token(stack: Stack) -> tuple[str, str]:
    user = new_user(Admin(stack.info.omni2_database_url))
    return user, issue_token(user, SECRET)


async def _send(
    stack: Stack,
    provider: TracerProvider,
    token: str,
    text: str,
    on_token: TokenCallback | None = None,
) -> Sent:
    """One message on a connection of its own (closed after, so its session trace ends)."""
    async with open_chat(stack.info.dashboard_ws_url, token, tracer_provider=provider) as chat:
        reply = await chat.send(text, on_token=on_token)
    assert reply.ok, reply.frame
    return Sent(reply, chat.session_trace_id, str(chat.conversation_id))


def _all_whole(traces: TraceFetcher, sent: list[Sent], timeout: float) -> int:
    """Every message's chain whole in Jaeger (its message and session trace): their spans."""
    spans = 0
    for message in sent:
        trace, session = traces.message(message.reply, timeout=timeout)
        assert_message_chain(trace, session)
        spans += len(trace) + len(session)
    return spans


def _at_token(n: int, action: Callable[[], None], done_at: list[float]) -> TokenCallback:
    """A token callback that runs `action` once, on the n-th token: a fault mid-answer."""
    seen: list[str] = []

    def on_token(token: str) -> None:
        seen.append(token)
        if len(seen) == n and not done_at:
            action()
            done_at.append(time.monotonic())

    return on_token


def _wait_until(condition: Callable[[], bool], what: str, timeout: float) -> float:
    """Poll a named condition; the seconds it took."""
    started = time.monotonic()
    while not condition():
        assert time.monotonic() - started < timeout, f"not within {timeout:.0f} s: {what}"
        time.sleep(0.5)
    return time.monotonic() - started


# -- the collectors' span metrics ------------------------------------------------------------

_CALLS = re.compile(r"^traces_span_metrics_calls_total\{(?P<labels>[^}]*)\} (?P<value>\S+)$")


def _collector_metrics(stack: Stack) -> dict[str, str]:
    """Each collector's Prometheus exporter (the span metrics of the spans it took)."""
    host, ports = stack.settings.host, stack.ports
    return {
        "jaeger-collector-1": f"http://{host}:{ports.jaeger_metrics}/metrics",
        "jaeger-collector-2": f"http://{host}:{ports.collector2_metrics}/metrics",
    }


def _span_calls(url: str) -> dict[tuple[str, str], float]:
    """How many spans of each (service, name) of MESSAGE_SPANS a collector has taken."""
    text = httpx.get(url, timeout=10).text
    counts = dict.fromkeys(MESSAGE_SPANS, 0.0)
    for line in text.splitlines():
        found = _CALLS.match(line)
        if not found:
            continue
        labels = dict(re.findall(r'(\w+)="([^"]*)"', found["labels"]))
        key = (labels.get("service_name", ""), labels.get("span_name", ""))
        if key in counts:
            counts[key] += float(found["value"])
    return counts


def _taken_since(
    stack: Stack, before: dict[str, dict[tuple[str, str], float]], collectors: list[str]
) -> dict[tuple[str, str], float]:
    """Spans of each kind that `collectors` took since `before` (a reading of _span_calls)."""
    urls = _collector_metrics(stack)
    taken = dict.fromkeys(MESSAGE_SPANS, 0.0)
    for name in collectors:
        now = _span_calls(urls[name])
        for key in MESSAGE_SPANS:
            taken[key] += now[key] - before[name][key]
    return taken


def _settled_counts(stack: Stack, collectors: list[str]) -> dict[str, dict[tuple[str, str], float]]:
    """The collectors' counts once the spans of earlier tests are in them: unchanged for longer
    than the span metrics' flush interval (5 s), so that a late flush is not counted later."""
    urls = _collector_metrics(stack)
    counts = {name: _span_calls(urls[name]) for name in collectors}
    steady_since = time.monotonic()
    deadline = steady_since + 60
    while time.monotonic() - steady_since < 6:
        assert time.monotonic() < deadline, f"the collectors' span counts never settled: {counts}"
        time.sleep(1)
        now = {name: _span_calls(urls[name]) for name in collectors}
        if now != counts:
            counts, steady_since = now, time.monotonic()
    return counts


# -- Kafka partitions ------------------------------------------------------------------------


def _partition(trace_id: str) -> int:
    """The topic partition of a trace's spans: the collectors key each record with the trace
    id in hex and partition as Sarama does (FNV-1a 32 of the key, as a signed int, modulo the
    partition count, made positive)."""
    hashed = 0x811C9DC5
    for byte in trace_id.encode():
        hashed = ((hashed ^ byte) * 0x01000193) & 0xFFFFFFFF
    signed = hashed - (1 << 32) if hashed >= 1 << 31 else hashed
    return abs(signed) % PARTITIONS


def _partitions_holding(stack: Stack, trace_id: str) -> set[int]:
    """The partitions whose log on the broker's disk holds records keyed with `trace_id` (the
    records are not compressed, so the key is there as written)."""
    data = stack.run_dir / "kafka"
    return {
        n
        for n in range(PARTITIONS)
        if any(trace_id.encode() in log.read_bytes() for log in _logs(data, n))
    }


def _logs(data: Path, partition: int) -> list[Path]:
    return sorted((data / f"{TOPIC}-{partition}").glob("*.log"))


# -- an OMNI2 replica ------------------------------------------------------------------------


def _replica_holding(stack: Stack, user: str) -> str:
    """The OMNI2 replica that holds the user's one open connection (its shared slot)."""

    async def replicas(session: AsyncSession) -> list[str]:
        found = await session.scalars(
            select(ConnectionSlot.replica).where(ConnectionSlot.user_id == user)
        )
        return list(found)

    (replica,) = Admin(stack.info.omni2_database_url)(replicas)
    return replica


def _instance(trace: Trace) -> str:
    turn = trace.one(f"{Service.OMNI2}:{SpanName.TURN}")
    return str(turn.resource.get("service.instance.id"))


async def test_a_replica_killed_mid_answer(
    own_stack: Stack, provider: TracerProvider, traces: TraceFetcher, jaeger: JaegerClient
) -> None:
    user, token = _token(own_stack)
    tag = uuid.uuid4().hex[:8]
    url = own_stack.info.dashboard_ws_url
    killed_at: list[float] = []
    async with open_chat(url, token, tracer_provider=provider) as chat:
        before = await chat.send(f"{tag} answered before the fault")
        assert before.ok, before.frame
        replica = _replica_holding(own_stack, user)
        # A process killed loses the spans it has not exported yet (up to the batch delay,
        # OTEL_BSP_SCHEDULE_DELAY, 200 ms here): the answer before the fault is in Jaeger first.
        message, session = traces.message(before, timeout=60, connection_closed=False)
        assert_message_chain(message, session)
        assert _instance(message) == replica, "the turn's span names the replica that holds it"
        kill = _at_token(1, lambda: own_stack.kill_service(replica), killed_at)
        cut = await chat.send(f"{tag} this answer is cut off", on_token=kill)
        closed_at = time.monotonic()
        code, reason = chat.connection.close_code, chat.connection.close_reason
    try:
        assert killed_at, "the answer streamed no token"
        # The client learns it at once, with the gateway's code and a reason.
        assert cut.frame["type"] == "error" and not cut.ok, cut.frame
        assert code == CloseCode.GATEWAY_UNREACHABLE and reason, (code, reason)
        assert closed_at - killed_at[0] < 2.0, f"told after {closed_at - killed_at[0]:.2f} s"
        # Reconnecting lands on the other replica at once (Traefik retries a dead one that
        # its health check, every 2 s, has not taken out yet).
        after = await _send(own_stack, provider, token, f"{tag} answered after the fault")
        message, session = traces.message(after.reply, timeout=60)
        assert_message_chain(message, session)
        survivor = _instance(message)
        assert survivor != replica and survivor in {"omni2", "omni2-2"}, (survivor, replica)
        query = AuditQuery(conversation_id=after.conversation_id)
        (report,) = run_audit(jaeger, query, settle_s=5)
        assert report.trace_id == after.reply.trace_id and not report.broken, report.status
        # The cut message: the killed replica never exported its turn; the dashboard's relay
        # span records the lost answer instead of calling it whole.
        cut_trace = traces.wait(
            cut.trace_id,
            lambda spans: any(s.name == SpanName.RELAY and s.end_ns for s in spans),
            what="the dashboard's relay span of the cut message",
            timeout=60,
        )
        relay = cut_trace.one(f"{Service.DASHBOARD}:{SpanName.RELAY}")
        cut_trace.expect(relay.status == "ERROR", "the relay span records the lost answer")
    finally:
        own_stack.start_service(replica)


async def test_the_broker_killed_and_back_loses_no_span(
    own_stack: Stack, provider: TracerProvider, traces: TraceFetcher, jaeger: JaegerClient
) -> None:
    _, token = _token(own_stack)
    tag = uuid.uuid4().hex[:8]
    collectors = ["jaeger-collector-1", "jaeger-collector-2"]
    counted = _settled_counts(own_stack, collectors)
    k = 5
    own_stack.kill_service("kafka")
    try:
        # The chat does not depend on the trace pipeline: answered while the broker is away.
        started = time.monotonic()
        during = [
            await _send(own_stack, provider, token, f"{tag} broker away {i}") for i in range(k)
        ]
        chat_s = time.monotonic() - started
        slowest = max(m.reply.duration_s for m in during)
        assert slowest < 5, f"an answer took {slowest:.1f} s without the broker"
        provider.force_flush()
        # The collectors took every message's spans (their span metrics count them, every
        # 5 s) and hold them: none has reached Jaeger.
        held_s = _wait_until(
            lambda: all(n >= k for n in _taken_since(own_stack, counted, collectors).values()),
            f"the collectors took the spans of the {k} messages",
            timeout=60,
        )
        for message in during:
            assert not jaeger.get_trace(message.reply.trace_id), "a span went round the broker"
    finally:
        own_stack.start_service("kafka")
    back = time.monotonic()
    # Counted: every message answered meanwhile reaches Jaeger whole once the broker is back.
    spans = _all_whole(traces, during, timeout=120)
    print(
        f"broker away: {k} answers in {chat_s:.1f} s, held after {held_s:.1f} s; "
        f"{2 * k} traces ({spans} spans) whole {time.monotonic() - back:.1f} s after its return"
    )


async def test_an_ingester_killed_mid_traffic_hands_its_partitions_over(
    own_stack: Stack, provider: TracerProvider, traces: TraceFetcher
) -> None:
    _, token = _token(own_stack)
    tag = uuid.uuid4().hex[:8]
    before = [await _send(own_stack, provider, token, f"{tag} before {i}") for i in range(2)]
    killed_at: list[float] = []
    # Halfway through an answer (its 10th token of about 20): its spans reach Kafka after the
    # kill, and the ingesters have stored what the earlier ones left. (One killed while its
    # batch processor holds records it marked already would lose them: the storage test
    # shows that hold.)
    kill = _at_token(10, lambda: own_stack.kill_service("jaeger-ingester-1"), killed_at)
    try:
        after = [await _send(own_stack, provider, token, f"{tag} while it dies", on_token=kill)]
        assert killed_at, "the answer ended before its 10th token"
        # Until the traces sent after the kill fall on every partition: the dead ingester's
        # share included, whichever it was.
        while {_partition(t) for m in after for t in m.trace_ids} != set(range(PARTITIONS)):
            assert len(after) < 30, "30 messages and a partition never came up"
            after.append(await _send(own_stack, provider, token, f"{tag} after {len(after)}"))
        # The group gives the dead one's partitions to the other once its session times out
        # (10 s): from its last committed offset on.
        spans = _all_whole(traces, before + after, timeout=120)
        whole_s = time.monotonic() - killed_at[0]
        for message in after:
            for trace_id in message.trace_ids:
                # (Checked on the broker's disk: the partition named is the one written.)
                assert _partition(trace_id) in _partitions_holding(own_stack, trace_id), trace_id
    finally:
        own_stack.start_service("jaeger-ingester-1")
    print(
        f"ingester killed: {len(before) + len(after)} messages ({spans} spans) whole, "
        f"{len(after)} after the kill over all {PARTITIONS} partitions, "
        f"all whole {whole_s:.1f} s after it"
    )


async def test_a_collector_killed_mid_traffic_loses_no_span(
    own_stack: Stack, provider: TracerProvider, traces: TraceFetcher
) -> None:
    endpoint = urlsplit(own_stack.info.otlp_http_endpoint)
    if endpoint.port == own_stack.ports.collector1_otlp_http:
        pytest.skip("the services still send straight to collector 1: no balancer fails over")
    _, token = _token(own_stack)
    tag = uuid.uuid4().hex[:8]
    counted = _settled_counts(own_stack, ["jaeger-collector-2"])
    before = [await _send(own_stack, provider, token, f"{tag} before {i}") for i in range(2)]
    killed_at: list[float] = []
    # Halfway through an answer: the answer's own spans end after the kill, and the spans
    # ended before it were sent on to Kafka already. (A kill within milliseconds of taking
    # an export loses it: the collector holds it only in memory until Kafka has it.)
    kill = _at_token(10, lambda: own_stack.kill_service("jaeger-collector-1"), killed_at)
    try:
        after = [await _send(own_stack, provider, token, f"{tag} while it dies", on_token=kill)]
        assert killed_at, "the answer ended before its 10th token"
        after += [await _send(own_stack, provider, token, f"{tag} after {i}") for i in range(3)]
        spans = _all_whole(traces, before + after, timeout=90)
        # What was sent after the kill went through the other collector.
        _wait_until(
            lambda: all(
                n >= len(after)
                for n in _taken_since(own_stack, counted, ["jaeger-collector-2"]).values()
            ),
            f"collector 2 took the spans of the {len(after)} messages since the kill",
            timeout=30,
        )
    finally:
        own_stack.start_service("jaeger-collector-1")
    print(f"collector killed: {len(before) + len(after)} messages ({spans} spans) whole")


# One record that no ingester can decode (not OTLP protobuf: its first byte has wire type 6),
# written to a given partition with the broker's own client.
UNREADABLE_PRODUCER = """
import java.util.Properties;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.serialization.ByteArraySerializer;

public class Unreadable {
    public static void main(String[] args) throws Exception {
        Properties props = new Properties();
        props.put("bootstrap.servers", args[0]);
        ByteArraySerializer bytes = new ByteArraySerializer();
        try (KafkaProducer<byte[], byte[]> producer = new KafkaProducer<>(props, bytes, bytes)) {
            ProducerRecord<byte[], byte[]> record = new ProducerRecord<>(
                args[1], Integer.parseInt(args[2]), "unreadable".getBytes(),
                "not a protobuf".getBytes());
            producer.send(record).get();
        }
    }
}
"""


def _produce_unreadable(stack: Stack, partition: int, workdir: Path) -> None:
    source = workdir / "Unreadable.java"
    source.write_text(UNREADABLE_PRODUCER)
    command = [java_binary(), "-cp", classpath(cached_libs()), str(source)]
    command += [stack.info.kafka_brokers, TOPIC, str(partition)]
    run = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert run.returncode == 0, run.stdout + run.stderr


def _ingester_logs(stack: Stack) -> str:
    logs = Path(stack.info.logs_dir)
    return "".join((logs / f"jaeger-ingester-{n}.log").read_text(errors="replace") for n in (1, 2))


async def test_a_record_no_ingester_can_read_does_not_stop_its_partition(
    own_stack: Stack, provider: TracerProvider, traces: TraceFetcher, tmp_path: Path
) -> None:
    """A record that can never be stored is skipped (and logged), not retried forever: an
    ingester that stopped at it would hold its partition, a quarter of all traces, for good."""
    _, token = _token(own_stack)
    tag = uuid.uuid4().hex[:8]
    partition = secrets.randbelow(PARTITIONS)
    refusals = _ingester_logs(own_stack).count("failed to unmarshal message")
    _produce_unreadable(own_stack, partition, tmp_path)
    _wait_until(
        lambda: _ingester_logs(own_stack).count("failed to unmarshal message") > refusals,
        "an ingester read the unreadable record and refused it",
        timeout=60,
    )
    sent = [await _send(own_stack, provider, token, f"{tag} after the unreadable record")]
    while all(_partition(m.reply.trace_id) != partition for m in sent):
        assert len(sent) < 30, f"30 messages and none on partition {partition}"
        sent.append(await _send(own_stack, provider, token, f"{tag} after it {len(sent)}"))
    _all_whole(traces, sent, timeout=60)


async def test_the_storage_restarted_loses_no_span(
    own_stack: Stack, provider: TracerProvider, traces: TraceFetcher
) -> None:
    """The ingesters keep what they read while the storage is away (the records wait in
    Kafka until it takes them), so its restart loses nothing."""
    _, token = _token(own_stack)
    tag = uuid.uuid4().hex[:8]
    collectors = ["jaeger-collector-1", "jaeger-collector-2"]
    counted = _settled_counts(own_stack, collectors)
    failed = _ingester_logs(own_stack).count("Exporting failed")
    k = 4
    own_stack.stop_service("jaeger-storage")
    try:
        during = [
            await _send(own_stack, provider, token, f"{tag} storage away {i}") for i in range(k)
        ]
        provider.force_flush()
        # Every message's spans are in Kafka (the ingesters read them at once), and the
        # ingesters tried to store them.
        _wait_until(
            lambda: all(n >= k for n in _taken_since(own_stack, counted, collectors).values()),
            f"the collectors took the spans of the {k} messages",
            timeout=60,
        )
        _wait_until(
            lambda: _ingester_logs(own_stack).count("Exporting failed") > failed,
            "an ingester tried to store spans and could not",
            timeout=60,
        )
    finally:
        own_stack.start_service("jaeger-storage")
    _all_whole(traces, during, timeout=60)
