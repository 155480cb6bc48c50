"""`omni-trace bench`: what tracing costs, measured side by side in one run.

Two stacks, one after the other (never two at once), on free ports: tracing on, then tracing
off in every layer (the Python services with OTEL_SDK_DISABLED, Traefik without its tracing
block). Each runs the same phases, with the offline model's token pause at 0 by default so
the pipeline itself is measured:

- burst: K connections opened within a few seconds, each sending one message and held open
  until all are answered: time to first token and message latency (p50, p99), messages
  lost, how busy the machine's cores were (the stack and this load generator), peak memory
  per process and per held connection, and (tracing on) whether a sample of the chains is
  whole in Jaeger;
- steady: C clients sending M messages each, back to back: turns per second and CPU per
  answered turn of every stack process;
- hops: one client, tool-free messages and handshakes through the dashboard, through Traefik
  with the bearer token, and straight to OMNI2 with the gateway's headers (p50 each);
- spans per message by service (tool-free and tool-calling) and how long after `done` a
  message is queryable in Jaeger (tracing on).

Only ratios measured in the same run are meaningful on a shared machine; nothing here asserts
a time. The report is printed as a table, or as JSON with --json.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import resource
import subprocess
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import NoOpTracerProvider
from opentelemetry.trace import TracerProvider as ApiTracerProvider
from pydantic import SecretStr

from omni_trace.stack.client import ChatConnection, ChatError, open_chat
from omni_trace.stack.environment import allowed_environment, inherited
from omni_trace.stack.paths import REPO_ROOT
from omni_trace.stack.ports import Ports
from omni_trace.stack.runner import Stack, StackError
from omni_trace.stack.settings import StackSettings
from omni_trace.stack.users import ADMIN
from omni_trace.traces.chain import wait_for_chain
from omni_trace.traces.jaeger import JaegerClient, has_services
from otel.names import Service, SpanName
from otel.setup import create_tracer_provider
from services.common.provenance import DASHBOARD_KEY_HEADER

Progress = Callable[[str], None]

MESSAGE_TIMEOUT_S = 60.0  # a message without an answer by then counts as lost
TOOL_FREE = "Hello, what can you do?"
TOOL_CALLING = "How many products per category are in the database?"
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")


@dataclass(frozen=True)
class BenchConfig:
    burst: int = 500  # connections of the burst, one message each
    # The burst's connections open within this time. 10 s is the load of the issue's first
    # measurement; at 5 s this 2-core machine is saturated (the report's "busy" line shows
    # it) and queueing multiplies any cost, tracing's included (docs/performance.md).
    burst_spread_s: float = 10.0
    clients: int = 16  # steady load: clients ...
    messages: int = 50  # ... sending this many messages each
    hop_messages: int = 200  # per path, for the per-message hop cost
    hop_connects: int = 50  # per path, for the handshake cost
    history_rows: int = 100_000  # long history: messages stored for one user beforehand ...
    history_messages: int = 300  # ... then this many sent by that user, fresh vs long history
    chains_checked: int = 20  # burst messages whose chain is checked in Jaeger
    token_delay_ms: float = 0.0  # the offline model's pause between tokens
    database_url: str | None = None  # OMNI2's database (default: SQLite in the run dir)
    rounds: int = 2  # on, off, on, off, ...: ratios are the medians of the rounds' ratios


QUICK = BenchConfig(
    rounds=1,
    burst=40,
    burst_spread_s=1.0,
    clients=4,
    messages=10,
    hop_messages=30,
    hop_connects=10,
    history_rows=2_000,
    # 20 turns a block: OMNI2 spends ~3-4 ms a turn and /proc counts CPU in 10 ms ticks,
    # so a block of 3 turns could read 0.
    history_messages=120,
    chains_checked=5,
)


# -- measuring processes ------------------------------------------------------------------


@dataclass(frozen=True)
class ProcessSample:
    cpu_s: float  # user + system time since the process started
    rss_mb: float
    peak_rss_mb: float


def sample_process(pid: int) -> ProcessSample | None:
    """CPU time and memory of a process from /proc (None once it is gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()  # the name may hold spaces: split after it
    cpu = (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS
    memory = {
        line.split(":")[0]: int(line.split()[1]) / 1024
        for line in status.splitlines()
        if line.startswith(("VmRSS:", "VmHWM:"))
    }
    return ProcessSample(cpu, memory.get("VmRSS", 0.0), memory.get("VmHWM", 0.0))


def sample_stack(stack: Stack) -> dict[str, ProcessSample]:
    samples = {name: sample_process(pid) for name, pid in stack.pids().items()}
    return {name: s for name, s in samples.items() if s is not None}


def _own_cpu_s() -> float:
    times = os.times()
    return times.user + times.system


def cpu_spent(
    before: dict[str, ProcessSample], after: dict[str, ProcessSample]
) -> dict[str, float]:
    """CPU seconds each process spent between two samples."""
    return {name: after[name].cpu_s - before[name].cpu_s for name in after if name in before}


# -- results --------------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (0..100) by linear interpolation; None without values."""
    if not values:
        return None
    ordered = sorted(values)
    k = (len(ordered) - 1) * q / 100
    low = int(k)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (k - low)


def _ms(seconds: Sequence[float]) -> dict[str, float | None]:
    ms = [s * 1000 for s in seconds]
    return {"p50": percentile(ms, 50), "p99": percentile(ms, 99)}


@dataclass
class Sample:
    ok: bool
    ttft_s: float | None = None
    latency_s: float | None = None
    trace_id: str = ""
    error: str = ""
    done_at: float = 0.0  # perf_counter() when the answer (or the failure) arrived


@dataclass
class RunReport:
    tracing: bool
    start_s: float = 0.0
    burst: dict[str, Any] = field(default_factory=dict)
    steady: dict[str, Any] = field(default_factory=dict)
    hops: dict[str, Any] = field(default_factory=dict)
    history: dict[str, Any] = field(default_factory=dict)
    spans: dict[str, Any] = field(default_factory=dict)
    exported_by: list[str] = field(default_factory=list)  # services Jaeger heard from


# -- the load -----------------------------------------------------------------------------------


class BenchUsers:
    """Users of a role without limits, so the bench measures the pipeline, not refusals;
    each connection of the burst gets its own (OMNI2 allows a few connections per user).
    Made by OMNI2's own admin command, which also gives each a token."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.ids: list[str] = []
        self.tokens: list[str] = []

    def _admin(self, *args: str) -> str:
        env = {
            **inherited(allowed_environment("omni2")),  # OMNI2's own, as the runner gives it
            "OMNI2_DATABASE_URL": self.stack.info.omni2_database_url,
            "OMNI_JWT_SECRET": self.stack.jwt_secret,
        }
        run = subprocess.run(
            [*ADMIN, *args], env=env, cwd=REPO_ROOT, capture_output=True, text=True, check=False
        )
        if run.returncode != 0:
            raise StackError(f"OMNI2's admin command {args[0]} failed: {run.stderr.strip()}")
        return run.stdout

    def create(self, count: int) -> None:
        users = json.loads(self._admin("load-users", str(count)))["users"]
        self.ids += [u["id"] for u in users]
        self.tokens += [u["token"] for u in users]

    def store_history(self, user_id: str, rows: int) -> None:
        """`rows` earlier messages of the user (with their usage), in a past conversation."""
        self._admin("store-history", user_id, str(rows))

    def token(self, index: int) -> tuple[str, str]:
        return self.ids[index % len(self.ids)], self.tokens[index % len(self.tokens)]


async def _message(chat: ChatConnection, text: str) -> Sample:
    try:
        reply = await asyncio.wait_for(chat.send(text), MESSAGE_TIMEOUT_S)
    except TimeoutError:
        return Sample(False, error=f"no answer within {MESSAGE_TIMEOUT_S:g} s")
    except (ChatError, OSError) as err:
        return Sample(False, error=str(err))
    return Sample(
        reply.ok,
        reply.time_to_first_token_s,
        reply.duration_s,
        str(reply.frame.get("trace_id") or reply.trace_id),
        "" if reply.ok else str(reply.frame.get("error", "")),
        time.perf_counter(),
    )


@dataclass
class Phase:
    """What every phase of one stack's run works with."""

    stack: Stack
    users: BenchUsers
    provider: ApiTracerProvider
    cfg: BenchConfig
    label: str
    progress: Progress

    def say(self, text: str) -> None:
        self.progress(f"[{self.label}] {text}")

    async def chat(self, user: int, texts: Sequence[str]) -> list[Sample]:
        """Bench user number `user` sends `texts` one after the other on one connection."""
        _, token = self.users.token(user)
        async with open_chat(
            self.stack.info.dashboard_ws_url, token, tracer_provider=self.provider
        ) as chat:
            return [await _message(chat, text) for text in texts]


async def burst(run: Phase) -> tuple[list[Sample], dict[str, float]]:
    """K connections opened within the spread, each sends one message once connected; all are
    held until every one is answered. Returns the samples and the RSS (MB) of each process
    with every connection held."""
    stack, cfg = run.stack, run.cfg
    all_answered = asyncio.Event()
    remaining = cfg.burst
    held: dict[str, float] = {}

    async def one(index: int) -> Sample:
        nonlocal remaining
        await asyncio.sleep(cfg.burst_spread_s * index / max(cfg.burst, 1))
        _, token = run.users.token(index)
        try:
            async with open_chat(
                stack.info.dashboard_ws_url, token, tracer_provider=run.provider, open_timeout=30
            ) as chat:
                sample = await _message(chat, TOOL_FREE)
                remaining -= 1
                if remaining == 0:
                    held.update({n: s.rss_mb for n, s in sample_stack(stack).items()})
                    all_answered.set()
                await all_answered.wait()
                return sample
        except (ChatError, OSError) as err:
            remaining -= 1
            if remaining == 0:
                all_answered.set()
            return Sample(False, error=str(err))

    samples = await asyncio.gather(*(one(i) for i in range(cfg.burst)))
    return list(samples), held


async def steady(run: Phase) -> tuple[list[Sample], float]:
    """C clients, M messages each, back to back. Returns the samples and the wall time."""
    texts = [TOOL_FREE] * run.cfg.messages
    started = time.perf_counter()
    results = await asyncio.gather(*(run.chat(i, texts) for i in range(run.cfg.clients)))
    return [s for r in results for s in r], time.perf_counter() - started


async def hops(run: Phase) -> dict[str, Any]:
    """p50 message round trip and handshake through each entry: dashboard, Traefik, OMNI2."""
    stack, provider, cfg = run.stack, run.provider, run.cfg
    user, token = run.users.token(0)
    # What the dashboard sends Traefik (its key lets it in), and what Traefik then sends OMNI2.
    bearer = {"Authorization": f"Bearer {token}", DASHBOARD_KEY_HEADER: stack.dashboard_key}
    paths: dict[str, tuple[str, str | None, dict[str, str] | None]] = {
        "dashboard": (stack.info.dashboard_ws_url, token, None),
        "traefik": (stack.info.traefik_ws_url, None, bearer),
        "omni2": (stack.info.omni2_ws_url, None, bearer | {"x-user-id": user}),
    }
    # Interleaved, path after path for every sample, so a noisy moment of a shared machine
    # falls on all three paths alike.
    connects: dict[str, list[float]] = {name: [] for name in paths}
    for _ in range(cfg.hop_connects):
        for name, (url, query_token, headers) in paths.items():
            started = time.perf_counter()
            async with open_chat(url, query_token, tracer_provider=provider, headers=headers):
                connects[name].append(time.perf_counter() - started)
    round_trips: dict[str, list[float]] = {name: [] for name in paths}
    async with contextlib.AsyncExitStack() as stack_:
        chats = {
            name: await stack_.enter_async_context(
                open_chat(url, query_token, tracer_provider=provider, headers=headers)
            )
            for name, (url, query_token, headers) in paths.items()
        }
        for _ in range(cfg.hop_messages):
            for name, chat in chats.items():
                sample = await _message(chat, TOOL_FREE)
                if sample.latency_s is not None:
                    round_trips[name].append(sample.latency_s)
    message_ms = {name: percentile([t * 1000 for t in v], 50) for name, v in round_trips.items()}
    handshake_ms = {name: percentile([t * 1000 for t in v], 50) for name, v in connects.items()}

    def hop(values: dict[str, float | None], outer: str, inner: str) -> float | None:
        a, b = values[outer], values[inner]
        return None if a is None or b is None else a - b

    message_hops = {
        "dashboard": hop(message_ms, "dashboard", "traefik"),
        "traefik": hop(message_ms, "traefik", "omni2"),
    }
    handshake_hops = {
        "dashboard": hop(handshake_ms, "dashboard", "traefik"),
        "traefik": hop(handshake_ms, "traefik", "omni2"),
    }
    return {
        "message_round_trip_ms": message_ms,
        "handshake_ms": handshake_ms,
        "message_hop_ms": message_hops,
        "handshake_hop_ms": handshake_hops,
        "dashboard_over_traefik": {
            "message": _ratio(message_hops["dashboard"], message_hops["traefik"]),
            "handshake": _ratio(handshake_hops["dashboard"], handshake_hops["traefik"]),
        },
    }


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or b <= 0 else a / b


# -- one stack ------------------------------------------------------------------------------------


@contextmanager
def client_tracing(stack: Stack, tracing: bool) -> Iterator[ApiTracerProvider]:
    """The bench client is the chat-client layer: traced like a real client when the stack
    is, and not at all when it is not."""
    if not tracing:
        yield NoOpTracerProvider()
        return
    provider = create_tracer_provider(
        Service.CHAT_CLIENT, otlp_endpoint=stack.info.otlp_http_endpoint
    )
    try:
        yield provider
    finally:
        provider.shutdown()


def _run(coro: Awaitable[Any]) -> Any:
    return asyncio.run(coro)  # type: ignore[arg-type]


def _replicas(service: str, count: int) -> list[str]:
    """The stack's names of a service's replicas: `omni2`, `omni2-2`, ..."""
    return [service, *(f"{service}-{n}" for n in range(2, count + 1))]


def bench_stack(settings: StackSettings, run_dir: Path, tracing: bool = True) -> Stack:
    """A stack the bench can load: free ports, no viewers (see Stack), and the frame and
    connect limits of every dashboard and OMNI2 replica lifted."""
    # The bench sends faster than a person: the per-connection frame limit (a protection
    # with tests of its own) would refuse the load it is here to measure. OMNI2 holds the
    # same limit on each of its connections (the bench's Traefik and OMNI2 hops meet it
    # without a dashboard in front). Each service reads only its own prefix.
    lifted = {
        f"{service}_{name}": value
        for service in ("DASHBOARD", "OMNI2")
        for name, value in (
            ("FRAMES_PER_SECOND", "1e6"),
            ("FRAME_BURST", "1000000"),
            # The hop phase reconnects as one user far faster than a person would.
            ("CONNECTS_PER_MINUTE", "1e9"),
            ("CONNECT_BURST", "1000000"),
        )
    }
    services = [
        *_replicas("dashboard", settings.dashboard_replicas),
        *_replicas("omni2", settings.omni2_replicas),
    ]
    return Stack(
        run_dir,
        Ports.free(),
        settings,
        service_env={name: lifted for name in services},
        progress=lambda _: None,
        tracing=tracing,
        viewers=False,
    )


def run_stack(tracing: bool, cfg: BenchConfig, run_dir: Path, progress: Progress) -> RunReport:
    report = RunReport(tracing)
    # Without --database-url, OMNI_TRACE_DATABASE_URL (StackSettings reads it) or SQLite.
    settings = StackSettings(model_token_delay_ms=cfg.token_delay_ms)
    if cfg.database_url:
        settings = settings.model_copy(update={"database_url": SecretStr(cfg.database_url)})
    label = "tracing on" if tracing else "tracing off"
    stack = bench_stack(settings, run_dir, tracing)
    progress(f"[{label}] starting the stack ...")
    started = time.perf_counter()
    with stack:
        report.start_s = time.perf_counter() - started
        progress(f"[{label}] stack up in {report.start_s:.1f} s")
        users = BenchUsers(stack)
        # One user per burst connection (OMNI2 allows a few connections per user), and two
        # more, the last, for the long-history phase alone.
        users.create(max(cfg.burst, cfg.clients, 2) + 2)
        with client_tracing(stack, tracing) as provider:
            run = Phase(stack, users, provider, cfg, label, progress)
            # One message first, so first-use costs (imports, pools) are not measured.
            _run(run.chat(0, [TOOL_FREE]))
            report.burst = burst_phase(run)
            report.steady = steady_phase(run)
            run.say(f"hops: {cfg.hop_messages} messages and {cfg.hop_connects} handshakes per path")
            report.hops = _run(hops(run))
            report.history = _history_phase(run)
            if tracing and isinstance(provider, TracerProvider):
                provider.force_flush()
                report.spans = _span_phase(run, provider)
                report.burst["chains"] = _check_chains(stack, report.burst.pop("_trace_ids"), cfg)
            else:
                report.burst.pop("_trace_ids")
        # Tracing off must mean off in every layer: then Jaeger has heard from no one.
        time.sleep(0.5)
        with JaegerClient(stack.info.jaeger_query_url) as jaeger:
            report.exported_by = sorted(jaeger.services())
        dead = stack.dead_services()
        if dead:
            raise RuntimeError(f"[{label}] services died during the bench: {', '.join(dead)}")
    return report


def burst_phase(run: Phase) -> dict[str, Any]:
    cfg = run.cfg
    run.say(f"burst: {cfg.burst} connections within {cfg.burst_spread_s:g} s ...")
    before, mine, started = sample_stack(run.stack), _own_cpu_s(), time.perf_counter()
    samples, held = _run(burst(run))
    after = sample_stack(run.stack)
    # A saturated machine queues work, and queueing multiplies any extra cost: say how busy
    # the cores were, counting this process too (it plays the clients).
    busy_s = sum(cpu_spent(before, after).values()) + _own_cpu_s() - mine
    busy = busy_s / ((time.perf_counter() - started) * (os.cpu_count() or 1))
    ok = [s for s in samples if s.ok]
    per_connection = {
        name: (held[name] - before[name].rss_mb) * 1024 / cfg.burst
        for name in ("dashboard", "omni2")
        if name in held and name in before
    }
    return {
        "connections": cfg.burst,
        "answered": len(ok),
        "lost": len(samples) - len(ok),
        "errors": sorted({s.error for s in samples if not s.ok})[:5],
        "ttft_ms": _ms([s.ttft_s for s in ok if s.ttft_s is not None]),
        "latency_ms": _ms([s.latency_s for s in ok if s.latency_s is not None]),
        "cores_busy_pct": round(100 * busy, 1),
        "peak_rss_mb": {name: round(s.peak_rss_mb, 1) for name, s in after.items()},
        "held_kb_per_connection": {k: round(v, 1) for k, v in per_connection.items()},
        "_trace_ids": [s.trace_id for s in ok],
    }


def steady_phase(run: Phase) -> dict[str, Any]:
    run.say(f"steady: {run.cfg.clients} clients x {run.cfg.messages} messages ...")
    before = sample_stack(run.stack)
    samples, wall = _run(steady(run))
    spent = cpu_spent(before, sample_stack(run.stack))
    turns = sum(s.ok for s in samples)
    per_turn = {name: cpu * 1000 / max(turns, 1) for name, cpu in spent.items()}
    return {
        "turns": turns,
        "lost": len(samples) - turns,
        "seconds": round(wall, 3),
        "turns_per_s": turns / wall if wall > 0 else None,
        "cpu_ms_per_turn": sum(per_turn.values()),
        "cpu_ms_per_turn_by_process": {k: round(v, 3) for k, v in sorted(per_turn.items())},
        "latency_ms": _ms([s.latency_s for s in samples if s.latency_s is not None]),
    }


def _history_phase(run: Phase) -> dict[str, Any]:
    """Does a turn cost more once the user has a long history? One user gets `history_rows`
    stored messages; then that user and a user without history send messages in alternating
    blocks, so both are measured over the same stretch of the machine's noise. OMNI2's CPU per
    turn of each (and, first, of the fresh database)."""
    cfg = run.cfg
    blocks = 6
    per_block = max(cfg.history_messages // blocks, 1)
    run.say(
        f"long history: {cfg.history_rows:,} messages stored for one user, then "
        f"{blocks} blocks of {per_block} messages, alternating with a user without history ..."
    )
    # The last two bench users: no other phase sends as them.
    fresh_user, long_user = len(run.users.ids) - 2, len(run.users.ids) - 1

    def omni2_cpu(user: int) -> tuple[float, int]:
        before = sample_stack(run.stack)
        turns = sum(s.ok for s in _run(run.chat(user, [TOOL_FREE] * per_block)))
        return cpu_spent(before, sample_stack(run.stack)).get("omni2", 0.0), turns

    first, first_turns = omni2_cpu(long_user)  # before its history is stored
    run.users.store_history(run.users.ids[long_user], cfg.history_rows)
    cpu = {fresh_user: 0.0, long_user: 0.0}
    turns = {fresh_user: 0, long_user: 0}
    for block in range(blocks):
        user = (fresh_user, long_user)[block % 2]
        spent, answered = omni2_cpu(user)
        cpu[user] += spent
        turns[user] += answered

    def ms(user: int) -> float | None:
        return cpu[user] * 1000 / turns[user] if turns[user] else None

    fresh, long = ms(fresh_user), ms(long_user)
    return {
        "stored_messages": cfg.history_rows,
        "omni2_cpu_ms_per_turn_fresh_database": first * 1000 / first_turns if first_turns else None,
        "omni2_cpu_ms_per_turn_fresh": fresh,
        "omni2_cpu_ms_per_turn_long_history": long,
        "long_over_fresh": _ratio(long, fresh),
    }


def _span_phase(run: Phase, provider: TracerProvider) -> dict[str, Any]:
    """Spans per message by service, and the delay from `done` until Jaeger has the turn."""
    run.say("spans per message and the delay until a message is queryable ...")
    result: dict[str, Any] = {}
    with JaegerClient(run.stack.info.jaeger_query_url) as jaeger:
        for kind, text in (("tool_free", TOOL_FREE), ("tool_calling", TOOL_CALLING)):
            (sample,) = _run(run.chat(1, [text]))
            provider.force_flush()
            spans = jaeger.wait_for_trace(
                sample.trace_id,
                lambda s: any(x.service == Service.OMNI2 and x.name == SpanName.TURN for x in s),
                what="OMNI2's chat.turn",
                interval=0.02,
            )
            queryable_ms = (time.perf_counter() - sample.done_at) * 1000
            # Every layer's spans: wait until each service that took part has exported.
            layers = {Service.CHAT_CLIENT, Service.DASHBOARD, Service.OMNI2}
            if kind == "tool_calling":
                layers.add(Service.MCP_TOOLS)
            spans = jaeger.wait_for_trace(
                sample.trace_id,
                has_services(*layers),
                what="the message's spans",
            )
            by_service: dict[str, int] = {}
            for span in spans:
                by_service[span.service] = by_service.get(span.service, 0) + 1
            result[kind] = {
                "total": len(spans),
                "by_service": dict(sorted(by_service.items())),
                "queryable_after_done_ms": round(queryable_ms, 1),
            }
    return result


def _check_chains(stack: Stack, trace_ids: list[str], cfg: BenchConfig) -> dict[str, Any]:
    """Are the sampled chains whole (client > dashboard > omni2, Traefik through links)?"""
    chosen = random.sample(trace_ids, min(cfg.chains_checked, len(trace_ids)))
    broken: list[str] = []
    with JaegerClient(stack.info.jaeger_query_url) as jaeger:
        for trace_id in chosen:
            # Traefik exports every 5 s: the links into the session trace need that long.
            report = wait_for_chain(jaeger, trace_id, timeout=20)
            if not report.whole:
                broken.append(f"{trace_id}: {report.status}")
    return {"checked": len(chosen), "whole": len(chosen) - len(broken), "broken": broken[:5]}


# -- the whole bench ------------------------------------------------------------------------------


def raise_fd_limit() -> None:
    """A burst holds thousands of sockets across the bench and the stack's processes."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def run_bench(cfg: BenchConfig, run_dir: Path, progress: Progress) -> dict[str, Any]:
    """Rounds of (tracing on, tracing off), one stack at a time. A shared machine's noise
    moves a single run's ratios by tens of percent; the medians of several rounds, with
    their range, say more."""
    raise_fd_limit()
    rounds = []
    for n in range(1, cfg.rounds + 1):
        if cfg.rounds > 1:
            progress(f"round {n} of {cfg.rounds}")
        on = asdict(run_stack(True, cfg, run_dir / f"round{n}" / "on", progress))
        off = asdict(run_stack(False, cfg, run_dir / f"round{n}" / "off", progress))
        rounds.append({"on": on, "off": off, "ratios": ratios(on, off)})
    per_ratio = {
        name: [r["ratios"][name] for r in rounds if r["ratios"][name] is not None]
        for name in RATIOS
    }
    return {
        "config": asdict(cfg),
        "on": merge_runs([r["on"] for r in rounds]),
        "off": merge_runs([r["off"] for r in rounds]),
        "ratios": {name: percentile(values, 50) for name, values in per_ratio.items()},
        "ratio_range": {
            name: [min(values), max(values)] if values else None
            for name, values in per_ratio.items()
        },
        "rounds": rounds,
    }


# Counts add up over rounds; every other number is the rounds' median.
_SUMMED = frozenset({"lost", "answered", "turns", "checked", "whole", "connections"})


def merge_runs(runs: list[Any], key: str = "") -> Any:
    """One report from the rounds' reports of one kind (tracing on, or off)."""
    first = runs[0]
    if isinstance(first, dict):
        keys = dict.fromkeys(k for run in runs for k in run)
        return {k: merge_runs([run[k] for run in runs if k in run], k) for k in keys}
    if isinstance(first, bool) or not isinstance(first, int | float):
        if isinstance(first, list):
            return list(dict.fromkeys(item for run in runs for item in run))
        return first
    numbers = [v for v in runs if isinstance(v, int | float)]
    return sum(numbers) if key in _SUMMED else percentile(numbers, 50)


# The measures the targets are written in, as tracing on / off.
RATIOS = {
    "burst_ttft_p50": "burst.ttft_ms.p50",
    "burst_ttft_p99": "burst.ttft_ms.p99",
    "burst_latency_p50": "burst.latency_ms.p50",
    "burst_latency_p99": "burst.latency_ms.p99",
    "steady_turns_per_s": "steady.turns_per_s",
    "steady_cpu_per_turn": "steady.cpu_ms_per_turn",
}


def _at(run: dict[str, Any], path: str) -> Any:
    """A value of a run's report by its dotted path (None where there is none)."""
    value: Any = run
    for key in path.split("."):
        value = value.get(key) if isinstance(value, dict) else None
    return value


def ratios(on: dict[str, Any], off: dict[str, Any]) -> dict[str, float | None]:
    return {name: _ratio(_at(on, path), _at(off, path)) for name, path in RATIOS.items()}


# Cost per turn must not grow with stored history (tracing on, long history / fresh).
HISTORY_GROWTH_LIMIT = 1.1

# Targets of DESIGN.md section 6 / issue 9: (ratio or value, comparison, limit).
TARGETS: tuple[tuple[str, str, float], ...] = (
    ("burst_ttft_p50", "<=", 1.25),
    ("burst_ttft_p99", "<=", 1.25),
    ("burst_latency_p50", "<=", 1.25),
    ("burst_latency_p99", "<=", 1.25),
    ("steady_turns_per_s", ">=", 0.95),
    ("steady_cpu_per_turn", "<=", 1.10),
)


def _fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def render(report: dict[str, Any]) -> str:
    on, off, r = report["on"], report["off"], report["ratios"]
    rows: list[tuple[str, Any, Any, Any]] = []

    def row(label: str, path: str, ratio: str | None = None, computed: bool = False) -> None:
        a, b = _at(on, path), _at(off, path)
        rows.append((label, a, b, r.get(ratio) if ratio else (_ratio(a, b) if computed else None)))

    row("warm stack start (s)", "start_s")
    row("burst: connections", "burst.connections")
    row("burst: cores busy, stack and clients (%)", "burst.cores_busy_pct")
    row("burst: messages lost", "burst.lost")
    row("burst: time to first token p50 (ms)", "burst.ttft_ms.p50", "burst_ttft_p50")
    row("burst: time to first token p99 (ms)", "burst.ttft_ms.p99", "burst_ttft_p99")
    row("burst: message latency p50 (ms)", "burst.latency_ms.p50", "burst_latency_p50")
    row("burst: message latency p99 (ms)", "burst.latency_ms.p99", "burst_latency_p99")
    row("steady: turns per second", "steady.turns_per_s", "steady_turns_per_s")
    row("steady: CPU per turn, all processes (ms)", "steady.cpu_ms_per_turn", "steady_cpu_per_turn")
    row("steady: messages lost", "steady.lost")
    for name in sorted(on["steady"]["cpu_ms_per_turn_by_process"]):
        row(f"  CPU per turn: {name} (ms)", f"steady.cpu_ms_per_turn_by_process.{name}", None, True)
    for name in ("dashboard", "omni2"):
        row(f"memory per held connection: {name} (KiB)", f"burst.held_kb_per_connection.{name}")
    for name in sorted(on["burst"]["peak_rss_mb"]):
        row(f"peak RSS: {name} (MiB)", f"burst.peak_rss_mb.{name}")
    for path in ("dashboard", "traefik", "omni2"):
        row(f"round trip via {path} p50 (ms)", f"hops.message_round_trip_ms.{path}")
    for path in ("dashboard", "traefik", "omni2"):
        row(f"handshake via {path} p50 (ms)", f"hops.handshake_ms.{path}")
    for kind in ("message", "handshake"):
        row(f"dashboard hop / Traefik hop ({kind})", f"hops.dashboard_over_traefik.{kind}")
    row("OMNI2 CPU per turn, fresh database (ms)", "history.omni2_cpu_ms_per_turn_fresh_database")
    row("OMNI2 CPU per turn, user without history (ms)", "history.omni2_cpu_ms_per_turn_fresh")
    row(
        "OMNI2 CPU per turn, user with long history (ms)",
        "history.omni2_cpu_ms_per_turn_long_history",
    )
    row("long history / without", "history.long_over_fresh")

    width = max(len(label) for label, *_ in rows)
    rounds = report["config"].get("rounds", 1)
    lines = ["", "omni-trace bench: tracing on vs off, measured one after the other in this run"]
    if rounds > 1:
        lines.append(f"({rounds} rounds; counts are totals, other numbers and ratios medians)")
    lines += ["", f"{'':<{width}}  {'on':>10}  {'off':>10}  {'on/off':>7}"]
    for label, a, b, ratio in rows:
        lines.append(f"{label:<{width}}  {_fmt(a):>10}  {_fmt(b):>10}  {_fmt(ratio, 2):>7}")
    lines.append("")
    for kind, spans in (on.get("spans") or {}).items():
        services = ", ".join(f"{k} {v}" for k, v in spans["by_service"].items())
        lines.append(
            f"spans per {kind.replace('_', '-')} message: {spans['total']} ({services}); "
            f"queryable {spans['queryable_after_done_ms']:.0f} ms after done"
        )
    chains = on["burst"].get("chains")
    if chains:
        lines.append(f"chains whole in Jaeger: {chains['whole']} of {chains['checked']} sampled")
        lines += [f"  broken: {b}" for b in chains["broken"]]
    lines.append(f"services exporting with tracing off: {', '.join(off['exported_by']) or 'none'}")
    lines.append("")
    for name, op, limit in TARGETS:
        value = r.get(name)
        met = value is not None and (value <= limit if op == "<=" else value >= limit)
        spread = report.get("ratio_range", {}).get(name)
        between = f" (rounds {spread[0]:.2f}..{spread[1]:.2f})" if spread else ""
        verdict = "met" if met else "NOT met"
        lines.append(f"target {name} {op} {limit}: {_fmt(value, 3)}{between} {verdict}")
    growth = _at(on, "history.long_over_fresh")
    met = growth is not None and growth <= HISTORY_GROWTH_LIMIT
    lines.append(
        f"target OMNI2 CPU per turn, long history / fresh <= {HISTORY_GROWTH_LIMIT}: "
        f"{_fmt(growth, 3)} {'met' if met else 'NOT met'}"
    )
    return "\n".join(lines)


def to_json(report: dict[str, Any]) -> str:
    return json.dumps(report, indent=2, default=str)
