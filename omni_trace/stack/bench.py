"""`omni-trace bench`: what tracing costs, measured side by side in one run.

Each round starts three stacks on free ports and keeps them up together: tracing on, tracing
off in every layer (the Python services with OTEL_SDK_DISABLED, Traefik without its tracing
block), and tracing on as `omni-trace up` runs it (with the flow view and Prometheus, which
the other two leave out). Only one is loaded at a time, and the phases alternate between
them, so a shared machine's noise falls on all alike. The offline model's token pause is 0 by
default so the pipeline itself is measured:

- burst: K connections opened within a few seconds (10 s, then the same within 5 s), each
  sending one message and held open until all are answered: every latency sample is kept,
  and the rounds' samples are pooled for the percentiles (p50, p95, p99, p99.9) of time to
  first token and message latency; messages lost; how busy the machine's cores were and the
  CPU each connection cost (so the rate the cores could serve); peak memory per process and
  per held connection; (tracing on) whether a sample of the chains is whole in Jaeger, and
  the slowest messages' spans, to say where each waited;
- steady: C clients on open connections, M messages each, sent in blocks that alternate
  between the stacks: turns per second and CPU per answered turn of every stack process (the
  flow view's as CPU per message it judged, since it judges each once, after it settles);
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
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import NoOpTracerProvider
from opentelemetry.trace import TracerProvider as ApiTracerProvider
from pydantic import SecretStr

from omni_trace.flowview.data import SETTLE_S
from omni_trace.stack import span_costs
from omni_trace.stack.client import ChatConnection, ChatError, open_chat
from omni_trace.stack.environment import allowed_environment, inherited
from omni_trace.stack.paths import REPO_ROOT
from omni_trace.stack.ports import Ports
from omni_trace.stack.runner import Stack, StackError
from omni_trace.stack.settings import StackSettings
from omni_trace.stack.users import ADMIN
from omni_trace.traces.chain import wait_for_chain
from omni_trace.traces.jaeger import JaegerClient, JaegerError, has_services
from otel.names import Service, SpanName
from otel.setup import create_tracer_provider
from services.common.provenance import DASHBOARD_KEY_HEADER

Progress = Callable[[str], None]

SLOWEST = 3  # the slowest messages of a burst whose spans the report shows
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
    # The same burst again within this time (None: not run). The p99 targets allow 1.5 at
    # 5 s, where two cores are close to busy, and 1.25 at 10 s.
    tight_burst_spread_s: float | None = 5.0
    clients: int = 16  # steady load: clients ...
    messages: int = 50  # ... sending this many messages each
    steady_blocks: int = 5  # ... in this many blocks per stack, alternating between stacks
    as_up: bool = True  # also a stack as `omni-trace up` runs it (flow view, Prometheus)
    hop_messages: int = 200  # per path, for the per-message hop cost
    hop_connects: int = 50  # per path, for the handshake cost
    history_rows: int = 100_000  # long history: messages stored for one user beforehand ...
    history_messages: int = 300  # ... then this many sent by that user, fresh vs long history
    chains_checked: int = 20  # burst messages whose chain is checked in Jaeger
    token_delay_ms: float = 0.0  # the offline model's pause between tokens
    database_url: str | None = None  # OMNI2's database (default: SQLite in the run dir)
    rounds: int = 2  # rounds of the stacks side by side; steady ratios are the rounds' medians

    @property
    def burst_spreads(self) -> tuple[float, ...]:
        tight = self.tight_burst_spread_s
        return (self.burst_spread_s,) if tight is None else (self.burst_spread_s, tight)


QUICK = BenchConfig(
    rounds=1,
    burst=40,
    burst_spread_s=1.0,
    tight_burst_spread_s=None,
    clients=4,
    messages=10,
    steady_blocks=2,
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


PERCENTILES = {"p50": 50.0, "p95": 95.0, "p99": 99.0, "p999": 99.9}


def _ms(seconds: Sequence[float]) -> dict[str, float | None]:
    return percentiles_ms([s * 1000 for s in seconds])


def percentiles_ms(ms: Sequence[float]) -> dict[str, float | None]:
    return {name: percentile(ms, q) for name, q in PERCENTILES.items()}


@dataclass
class Sample:
    ok: bool
    ttft_s: float | None = None
    latency_s: float | None = None
    trace_id: str = ""
    error: str = ""
    done_at: float = 0.0  # perf_counter() when the answer (or the failure) arrived


@dataclass(frozen=True)
class Mode:
    """One of a round's stacks."""

    name: str
    tracing: bool
    viewers: bool  # the flow view and Prometheus, as `omni-trace up` runs them
    label: str


MODES = {
    "on": Mode("on", True, False, "tracing on"),
    "off": Mode("off", False, False, "tracing off"),
    "up": Mode("up", True, True, "as omni-trace up"),
}


@dataclass
class RunReport:
    tracing: bool
    mode: str = "on"
    start_s: float = 0.0
    bursts: dict[str, dict[str, Any]] = field(default_factory=dict)  # by spread: "10s", "5s"
    steady: dict[str, Any] = field(default_factory=dict)
    hops: dict[str, Any] = field(default_factory=dict)
    history: dict[str, Any] = field(default_factory=dict)
    spans: dict[str, Any] = field(default_factory=dict)
    exported_by: list[str] = field(default_factory=list)  # services Jaeger heard from


def spread_key(spread_s: float) -> str:
    return f"{spread_s:g}s"


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


async def burst(run: Phase, spread_s: float) -> tuple[list[Sample], dict[str, float]]:
    """K connections opened within `spread_s`, each sends one message once connected; all are
    held until every one is answered. Returns the samples and the RSS (MB) of each process
    with every connection held."""
    stack, cfg = run.stack, run.cfg
    all_answered = asyncio.Event()
    remaining = cfg.burst
    held: dict[str, float] = {}

    async def one(index: int) -> Sample:
        nonlocal remaining
        await asyncio.sleep(spread_s * index / max(cfg.burst, 1))
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


def bench_stack(
    settings: StackSettings, run_dir: Path, tracing: bool = True, *, viewers: bool = False
) -> Stack:
    """A stack the bench can load: free ports, no viewers unless asked (see Stack), and the
    frame and connect limits of every dashboard and OMNI2 replica lifted."""
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
        viewers=viewers,
    )


def _settings(cfg: BenchConfig) -> StackSettings:
    # Without --database-url, OMNI_TRACE_DATABASE_URL (StackSettings reads it) or SQLite.
    settings = StackSettings(model_token_delay_ms=cfg.token_delay_ms)
    if cfg.database_url:
        settings = settings.model_copy(update={"database_url": SecretStr(cfg.database_url)})
    return settings


def _start(
    mode: Mode, cfg: BenchConfig, run_dir: Path, progress: Progress, held: contextlib.ExitStack
) -> tuple[RunReport, Phase]:
    """One of the round's stacks, started and held by `held`, with its users and a first
    message sent (so first-use costs, imports and pools, are not measured)."""
    report = RunReport(mode.tracing, mode.name)
    stack = bench_stack(_settings(cfg), run_dir / mode.name, mode.tracing, viewers=mode.viewers)
    progress(f"[{mode.label}] starting the stack ...")
    started = time.perf_counter()
    held.enter_context(stack)
    report.start_s = time.perf_counter() - started
    progress(f"[{mode.label}] stack up in {report.start_s:.1f} s")
    users = BenchUsers(stack)
    # One user per burst connection (OMNI2 allows a few connections per user), and two
    # more, the last, for the long-history phase alone.
    users.create(max(cfg.burst, cfg.clients, 2) + 2)
    provider = held.enter_context(client_tracing(stack, mode.tracing))
    run = Phase(stack, users, provider, cfg, mode.label, progress)
    _run(run.chat(0, [TOOL_FREE]))
    return report, run


def run_round(cfg: BenchConfig, run_dir: Path, progress: Progress, number: int) -> dict[str, Any]:
    """One round: its stacks up together, each phase on each stack in turn."""
    names = [name for name in MODES if name != "up" or cfg.as_up]
    # Which of on and off goes first turns around every round.
    pair = ("on", "off") if number % 2 else ("off", "on")
    with contextlib.ExitStack() as held:
        started = {name: _start(MODES[name], cfg, run_dir, progress, held) for name in names}
        reports = {name: report for name, (report, _) in started.items()}
        runs = {name: run for name, (_, run) in started.items()}
        for spread in cfg.burst_spreads:
            for name in pair:
                reports[name].bursts[spread_key(spread)] = burst_phase(runs[name], spread)
        progress(
            f"steady: {cfg.clients} clients x {cfg.messages} messages on each stack, in "
            f"{cfg.steady_blocks} blocks alternating between the stacks ..."
        )
        up = sample_stack(runs["up"].stack) if "up" in runs else {}
        steady = _run(interleaved_steady(runs, [*pair, *names[len(pair) :]]))
        for name, result in steady.items():
            reports[name].steady = result
        if "up" in runs:
            _count_up(runs["up"], reports["up"].steady, up)
        for name in pair:
            run = runs[name]
            run.say(f"hops: {cfg.hop_messages} messages and {cfg.hop_connects} handshakes per path")
            reports[name].hops = _run(hops(run))
            reports[name].history = _history_phase(run)
        _traced_checks(runs["on"], reports["on"])
        for burst_report in reports["off"].bursts.values():
            del burst_report["_trace_ids"], burst_report["_slowest"]
        # Tracing off must mean off in every layer: then Jaeger has heard from no one.
        time.sleep(0.5)
        for name, run in runs.items():
            with JaegerClient(run.stack.info.jaeger_query_url) as jaeger:
                reports[name].exported_by = sorted(jaeger.services())
            dead = run.stack.dead_services()
            if dead:
                raise RuntimeError(
                    f"[{run.label}] services died during the bench: {', '.join(dead)}"
                )
    return {name: asdict(report) for name, report in reports.items()}


def _traced_checks(run: Phase, report: RunReport) -> None:
    """Spans per message, and for each burst: are its chains whole, and where did its slowest
    messages wait (their spans, by offset from the first)."""
    provider = run.provider
    if not isinstance(provider, TracerProvider):
        return
    provider.force_flush()
    report.spans = _span_phase(run, provider)
    for burst_report in report.bursts.values():
        burst_report["chains"] = _check_chains(run.stack, burst_report.pop("_trace_ids"), run.cfg)
        burst_report["slowest"] = _timelines(run.stack, burst_report.pop("_slowest"))


def _timelines(stack: Stack, slowest: Sequence[tuple[str, float, float]]) -> list[dict[str, Any]]:
    timelines = []
    with JaegerClient(stack.info.jaeger_query_url) as jaeger:
        for trace_id, latency_ms, ttft_ms in slowest:
            try:
                spans = sorted(jaeger.get_trace(trace_id), key=lambda s: s.start_ns)
            except (JaegerError, OSError):
                spans = []
            origin = spans[0].start_ns if spans else 0
            timelines.append(
                {
                    "trace_id": trace_id,
                    "latency_ms": round(latency_ms, 1),
                    "ttft_ms": round(ttft_ms, 1),
                    # [start offset ms, duration ms, service, span name]
                    "spans": [
                        [
                            round((s.start_ns - origin) / 1e6, 2),
                            round(s.duration_ms, 2),
                            s.service,
                            s.name,
                        ]
                        for s in spans
                    ],
                }
            )
    return timelines


# The flow view's own count of its judging (its /metrics).
_JUDGING = ("omni_trace_audit_judged_total", "omni_trace_audit_cpu_seconds_total")


def _metric(exposition: str, name: str) -> float | None:
    """An unlabelled sample's value in a Prometheus text exposition."""
    for line in exposition.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return None


def _count_up(run: Phase, steady: dict[str, Any], before: dict[str, ProcessSample]) -> None:
    """As `omni-trace up` runs it, the flow view judges each message once, after it has
    settled (`SETTLE_S` after its end), when it is asked (Prometheus scrapes it), and Jaeger
    answers its reads then. So this stack's CPU per turn counts every process from the start
    of its load until the flow view has judged the load's messages (asked here as Prometheus
    asks), background included (scrapes, the services' metric exports), over the load's
    turns."""
    time.sleep(SETTLE_S + 1)
    response = httpx.get(
        f"{run.stack.info.flowview_url}/metrics",
        headers={"Authorization": f"Bearer {run.stack.flowview_token}"},
        timeout=30,
    )
    response.raise_for_status()
    spent = cpu_spent(before, sample_stack(run.stack))
    turns = max(steady["turns"], 1)
    by_process = {name: round(cpu * 1000 / turns, 3) for name, cpu in sorted(spent.items())}
    steady["cpu_ms_per_turn_by_process"] = by_process
    steady["cpu_ms_per_turn"] = sum(by_process.values())
    judged, cpu_s = (_metric(response.text, name) for name in _JUDGING)
    if judged:
        steady["flowview_judging"] = {
            "judged": int(judged),
            "cpu_ms_per_message": round((cpu_s or 0.0) * 1000 / judged, 3),
        }


def burst_phase(run: Phase, spread_s: float | None = None) -> dict[str, Any]:
    cfg = run.cfg
    spread_s = cfg.burst_spread_s if spread_s is None else spread_s
    run.say(f"burst: {cfg.burst} connections within {spread_s:g} s ...")
    before, mine, started = sample_stack(run.stack), _own_cpu_s(), time.perf_counter()
    samples, held = _run(burst(run, spread_s))
    after = sample_stack(run.stack)
    # A saturated machine queues work, and queueing multiplies any extra cost: say how busy
    # the cores were, counting this process too (it plays the clients), and what a
    # connection with its message cost them, so the rate they could serve.
    busy_s = sum(cpu_spent(before, after).values()) + _own_cpu_s() - mine
    cores = os.cpu_count() or 1
    busy = busy_s / ((time.perf_counter() - started) * cores)
    per_connection_ms = busy_s * 1000 / max(cfg.burst, 1)
    ok = [s for s in samples if s.ok]
    per_connection = {
        name: (held[name] - before[name].rss_mb) * 1024 / cfg.burst
        for name in ("dashboard", "omni2")
        if name in held and name in before
    }
    ttft = [s.ttft_s for s in ok if s.ttft_s is not None]
    latency = [s.latency_s for s in ok if s.latency_s is not None]
    slowest = sorted(ok, key=lambda s: s.latency_s or 0.0, reverse=True)[:SLOWEST]
    return {
        "spread_s": spread_s,
        "connections": cfg.burst,
        "answered": len(ok),
        "lost": len(samples) - len(ok),
        "errors": sorted({s.error for s in samples if not s.ok})[:5],
        "ttft_ms": _ms(ttft),
        "latency_ms": _ms(latency),
        # Every sample, so that rounds pool into one distribution (its tail is a handful of
        # messages per burst: a median of per-round p99s would hide it).
        "samples_ms": {
            "ttft": [round(t * 1000, 3) for t in ttft],
            "latency": [round(t * 1000, 3) for t in latency],
        },
        "cores_busy_pct": round(100 * busy, 1),
        "cpu_ms_per_connection": round(per_connection_ms, 2),
        # Connections (with one message each) per second the cores could serve at that cost.
        "capacity_per_s": round(cores * 1000 / per_connection_ms, 1) if per_connection_ms else None,
        "peak_rss_mb": {name: round(s.peak_rss_mb, 1) for name, s in after.items()},
        "held_kb_per_connection": {k: round(v, 1) for k, v in per_connection.items()},
        "_trace_ids": [s.trace_id for s in ok],
        "_slowest": [
            (s.trace_id, (s.latency_s or 0.0) * 1000, (s.ttft_s or 0.0) * 1000) for s in slowest
        ],
    }


def steady_phase(run: Phase) -> dict[str, Any]:
    """The steady load on one stack: C clients, each on its own connection, M messages."""
    run.say(f"steady: {run.cfg.clients} clients x {run.cfg.messages} messages ...")
    before = sample_stack(run.stack)
    samples, wall = _run(steady(run))
    return _steady_report(samples, wall, cpu_spent(before, sample_stack(run.stack)))


def _steady_report(
    samples: Sequence[Sample],
    wall: float,
    spent: Mapping[str, float],
    by_block: Sequence[float] = (),
) -> dict[str, Any]:
    turns = sum(s.ok for s in samples)
    per_turn = {name: cpu * 1000 / max(turns, 1) for name, cpu in spent.items()}
    report: dict[str, Any] = {
        "turns": turns,
        "lost": len(samples) - turns,
        "seconds": round(wall, 3),
        "turns_per_s": turns / wall if wall > 0 else None,
        "cpu_ms_per_turn": sum(per_turn.values()),
        "cpu_ms_per_turn_by_process": {k: round(v, 3) for k, v in sorted(per_turn.items())},
        "latency_ms": _ms([s.latency_s for s in samples if s.latency_s is not None]),
    }
    if by_block:
        report["cpu_ms_per_turn_by_block"] = list(by_block)
    return report


# The services send their spans every 200 ms: a block's measure waits that long (and for
# Jaeger to store them) before it reads the CPU, so each block pays for its own export.
BLOCK_SETTLE_S = 0.4


async def _block(chats: Sequence[ChatConnection], messages: int) -> list[Sample]:
    async def one(chat: ChatConnection) -> list[Sample]:
        return [await _message(chat, TOOL_FREE) for _ in range(messages)]

    results = await asyncio.gather(*(one(chat) for chat in chats))
    return [sample for result in results for sample in result]


async def interleaved_steady(
    runs: Mapping[str, Phase], order: Sequence[str]
) -> dict[str, dict[str, Any]]:
    """The steady load on several stacks, in blocks that alternate between them.

    Each stack's C clients stay connected throughout; a block sends M / blocks messages on
    each connection of one stack while the others wait, and the order of the stacks turns
    around every block. So a stretch of a shared machine's noise falls on every stack alike,
    and the ratios compare blocks seconds apart, not runs minutes apart. Turns per second
    and CPU per turn of each stack come from its own blocks only."""
    cfg = runs[order[0]].cfg
    blocks = max(min(cfg.steady_blocks, cfg.messages), 1)
    samples: dict[str, list[Sample]] = {name: [] for name in order}
    spent: dict[str, dict[str, float]] = {name: {} for name in order}
    wall = dict.fromkeys(order, 0.0)
    by_block: dict[str, list[float]] = {name: [] for name in order}
    async with contextlib.AsyncExitStack() as held:
        chats = {
            name: [
                await held.enter_async_context(
                    open_chat(
                        runs[name].stack.info.dashboard_ws_url,
                        runs[name].users.token(client)[1],
                        tracer_provider=runs[name].provider,
                    )
                )
                for client in range(cfg.clients)
            ]
            for name in order
        }
        for block in range(blocks):
            # M messages in all: the first M % blocks blocks send one more.
            per_block = cfg.messages // blocks + (block < cfg.messages % blocks)
            for name in order if block % 2 == 0 else order[::-1]:
                stack = runs[name].stack
                before = sample_stack(stack)
                started = time.perf_counter()
                got = await _block(chats[name], per_block)
                wall[name] += time.perf_counter() - started
                await asyncio.sleep(BLOCK_SETTLE_S)
                cpu = cpu_spent(before, sample_stack(stack))
                for process, seconds in cpu.items():
                    spent[name][process] = spent[name].get(process, 0.0) + seconds
                samples[name] += got
                turns = max(sum(s.ok for s in got), 1)
                by_block[name].append(round(sum(cpu.values()) * 1000 / turns, 3))
    return {
        name: _steady_report(samples[name], wall[name], spent[name], by_block[name])
        for name in order
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
    """Rounds of the stacks side by side. A shared machine's noise moves a single run's
    ratios by tens of percent: the bursts' samples are pooled over the rounds, and the
    steady ratios are the rounds' medians, with their range."""
    raise_fd_limit()
    progress("where a traced message's CPU goes, in this process ...")
    costs = span_costs.measure()
    rounds = []
    for n in range(1, cfg.rounds + 1):
        if cfg.rounds > 1:
            progress(f"round {n} of {cfg.rounds}")
        reports = run_round(cfg, run_dir / f"round{n}", progress, n)
        rounds.append({**reports, "ratios": ratios(reports["on"], reports["off"])})
    merged = {
        name: pool(merge_runs([r[name] for r in rounds])) for name in MODES if name in rounds[0]
    }
    per_ratio: dict[str, list[float]] = {}
    for r in rounds:
        for name, value in r["ratios"].items():
            if value is not None:
                per_ratio.setdefault(name, []).append(value)
    pooled = ratios(merged["on"], merged["off"])
    return {
        "config": asdict(cfg),
        "span_costs_us": {**asdict(costs), "total": costs.total},
        **merged,
        "ratios": {
            name: percentile(per_ratio.get(name, []), 50) if name in STEADY_RATIOS else value
            for name, value in pooled.items()
        },
        "ratio_range": {name: [min(v), max(v)] for name, v in per_ratio.items()},
        "rounds": rounds,
    }


# Counts add up over rounds; every other number is the rounds' median.
_SUMMED = frozenset({"lost", "answered", "turns", "checked", "whole", "connections"})


def merge_runs(runs: list[Any], key: str = "") -> Any:
    """One report from the rounds' reports of one kind (tracing on, or off): counts summed,
    other numbers the rounds' median, names united, samples and timelines put together."""
    first = runs[0]
    if isinstance(first, dict):
        keys = dict.fromkeys(k for run in runs for k in run)
        return {k: merge_runs([run[k] for run in runs if k in run], k) for k in keys}
    if isinstance(first, list):
        items = [item for run in runs for item in run]
        return list(dict.fromkeys(items)) if all(isinstance(i, str) for i in items) else items
    if isinstance(first, bool) or not isinstance(first, int | float):
        return first
    numbers = [v for v in runs if isinstance(v, int | float)]
    return sum(numbers) if key in _SUMMED else percentile(numbers, 50)


def pool(run: dict[str, Any]) -> dict[str, Any]:
    """Each burst's percentiles from the rounds' samples put together, and its slowest
    messages of all rounds."""
    for burst_report in run.get("bursts", {}).values():
        samples = burst_report.get("samples_ms", {})
        for measure in ("ttft", "latency"):
            burst_report[f"{measure}_ms"] = percentiles_ms(samples.get(measure, []))
        slowest = burst_report.get("slowest")
        if slowest:
            burst_report["slowest"] = sorted(slowest, key=lambda t: -t["latency_ms"])[:SLOWEST]
    return run


STEADY_RATIOS = {
    "steady_turns_per_s": "steady.turns_per_s",
    "steady_cpu_per_turn": "steady.cpu_ms_per_turn",
}


def burst_ratios(keys: Iterable[str]) -> dict[str, str]:
    """The burst measures of the targets, as ratio name -> path, for each burst spread."""
    return {
        f"burst_{key}_{measure}_{p}": f"bursts.{key}.{measure}_ms.{p}"
        for key in keys
        for measure in ("ttft", "latency")
        for p in ("p50", "p99")
    }


def ratios(on: dict[str, Any], off: dict[str, Any]) -> dict[str, float | None]:
    """The measures the targets are written in, as tracing on / off."""
    paths = {**burst_ratios(on.get("bursts", {})), **STEADY_RATIOS}
    return {name: _ratio(_at(on, path), _at(off, path)) for name, path in paths.items()}


def _at(run: dict[str, Any], path: str) -> Any:
    """A value of a run's report by its dotted path (None where there is none)."""
    value: Any = run
    for key in path.split("."):
        value = value.get(key) if isinstance(value, dict) else None
    return value


# Cost per turn must not grow with stored history (tracing on, long history / fresh).
HISTORY_GROWTH_LIMIT = 1.1

# The p99 limits of a burst: two cores are close to busy when it is sent within 5 s.
P99_LIMIT = 1.25
P99_LIMIT_TIGHT, TIGHT_S = 1.5, 5.0
TRACING_COST_LIMIT_MS = 0.6  # CPU per traced turn minus CPU per untraced turn
CPU_PER_TURN_LIMIT_MS = 5.0  # with tracing on, every process of the stack


@dataclass(frozen=True)
class Target:
    label: str
    value: float | None
    op: str  # "<=" or ">="
    limit: float
    rounds: tuple[float, float] | None = None  # the rounds' range of a ratio

    @property
    def met(self) -> bool:
        if self.value is None:
            return False
        return self.value <= self.limit if self.op == "<=" else self.value >= self.limit


def targets(report: dict[str, Any]) -> list[Target]:
    """Every target of docs/performance.md with this report's figure."""
    r, spread = report["ratios"], report.get("ratio_range", {})

    def ratio(name: str, op: str, limit: float) -> Target:
        rounds = spread.get(name)
        return Target(name, r.get(name), op, limit, tuple(rounds) if rounds else None)

    found = []
    for key, burst_report in report["on"].get("bursts", {}).items():
        tight = burst_report["spread_s"] <= TIGHT_S
        for measure in ("ttft", "latency"):
            found.append(ratio(f"burst_{key}_{measure}_p50", "<=", 1.25))
            found.append(
                ratio(f"burst_{key}_{measure}_p99", "<=", P99_LIMIT_TIGHT if tight else P99_LIMIT)
            )
    found += [
        ratio("steady_turns_per_s", ">=", 0.95),
        ratio("steady_cpu_per_turn", "<=", 1.10),
        Target("tracing cost per turn (ms)", tracing_cost_ms(report), "<=", TRACING_COST_LIMIT_MS),
        Target(
            "CPU per turn, tracing on (ms)",
            _at(report["on"], "steady.cpu_ms_per_turn"),
            "<=",
            CPU_PER_TURN_LIMIT_MS,
        ),
    ]
    if "up" in report:
        found.append(
            Target(
                "CPU per turn, as omni-trace up (ms)",
                _at(report["up"], "steady.cpu_ms_per_turn"),
                "<=",
                CPU_PER_TURN_LIMIT_MS,
            )
        )
    found.append(
        Target(
            "OMNI2 CPU per turn, long history / fresh",
            _at(report["on"], "history.long_over_fresh"),
            "<=",
            HISTORY_GROWTH_LIMIT,
        )
    )
    return found


def tracing_cost_ms(report: dict[str, Any]) -> float | None:
    """CPU per traced turn minus CPU per untraced turn, all processes (rounds' medians)."""
    on, off = (
        _at(report["on"], "steady.cpu_ms_per_turn"),
        _at(report["off"], "steady.cpu_ms_per_turn"),
    )
    return None if on is None or off is None else on - off


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
    for key in on.get("bursts", {}):
        at = f"bursts.{key}"
        name = f"burst {report['config']['burst']} in {key}"
        row(f"{name}: messages lost", f"{at}.lost")
        row(f"{name}: cores busy, stack and clients (%)", f"{at}.cores_busy_pct")
        row(
            f"{name}: CPU per connection and message (ms)",
            f"{at}.cpu_ms_per_connection",
            None,
            True,
        )
        row(f"{name}: connections per s the cores serve", f"{at}.capacity_per_s", None, True)
        for measure, what in (("ttft", "time to first token"), ("latency", "message latency")):
            for p in PERCENTILES:
                ratio = f"burst_{key}_{measure}_{p}"
                computed = ratio not in r
                row(
                    f"{name}: {what} {p} (ms)",
                    f"{at}.{measure}_ms.{p}",
                    None if computed else ratio,
                    computed,
                )
    row("steady: turns per second", "steady.turns_per_s", "steady_turns_per_s")
    row("steady: CPU per turn, all processes (ms)", "steady.cpu_ms_per_turn", "steady_cpu_per_turn")
    row("steady: messages lost", "steady.lost")
    for name in sorted(on["steady"]["cpu_ms_per_turn_by_process"]):
        row(f"  CPU per turn: {name} (ms)", f"steady.cpu_ms_per_turn_by_process.{name}", None, True)
    for name in ("dashboard", "omni2"):
        first = next(iter(on.get("bursts", {})), "")
        row(
            f"memory per held connection: {name} (KiB)",
            f"bursts.{first}.held_kb_per_connection.{name}",
        )
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
    lines = ["", "omni-trace bench: tracing on vs off, the stacks side by side in this run"]
    lines.append(
        f"({rounds} round{'s' if rounds > 1 else ''}; bursts' percentiles from every sample of "
        "every round; other numbers and steady ratios the rounds' medians, counts totals)"
    )
    lines += ["", f"{'':<{width}}  {'on':>10}  {'off':>10}  {'on/off':>7}"]
    for label, a, b, ratio in rows:
        lines.append(f"{label:<{width}}  {_fmt(a):>10}  {_fmt(b):>10}  {_fmt(ratio, 2):>7}")
    lines += ["", *_render_up(report), *_render_span_costs(report), *_render_spans(on, off), ""]
    found = targets(report)
    for target in found:
        between = (
            f" (rounds {target.rounds[0]:.2f}..{target.rounds[1]:.2f})" if target.rounds else ""
        )
        verdict = "met" if target.met else "NOT met"
        figure = f"{_fmt(target.value, 3)}{between} {verdict}"
        lines.append(f"target {target.label} {target.op} {target.limit:g}: {figure}")
    lines += _render_slowest(on, {t.label for t in found if not t.met})
    return "\n".join(lines)


def _render_up(report: dict[str, Any]) -> list[str]:
    up = report.get("up")
    if not up or not up.get("steady"):
        return []
    steady = up["steady"]
    by_process = ", ".join(
        f"{name} {ms:.2f}" for name, ms in steady["cpu_ms_per_turn_by_process"].items() if ms
    )
    judging = steady.get("flowview_judging")
    own = (
        f"; by its own count {judging['cpu_ms_per_message']:.2f} ms per message for "
        f"{judging['judged']} judged"
        if judging
        else ""
    )
    return [
        "as omni-trace up runs it (tracing on, the flow view and Prometheus too): "
        f"CPU per turn {_fmt(steady['cpu_ms_per_turn'], 2)} ms ({by_process}); "
        f"{_fmt(steady['turns_per_s'])} turns per second",
        f"  (every process from the start of its load until the flow view had judged it{own})",
    ]


def _render_span_costs(report: dict[str, Any]) -> list[str]:
    costs = report.get("span_costs_us")
    if not costs:
        return []
    spans = span_costs.SPANS_PER_MESSAGE
    return [
        f"a traced message's {spans} spans in OMNI2's shape, CPU in this process "
        f"(us per message): SDK spans {costs['sdk_spans']:.0f}, sampler and processors "
        f"{costs['sampler_and_processors']:.0f}, encoding with redaction "
        f"{costs['encoding']:.0f}; {costs['total']:.0f} in all (the API alone, without the "
        f"SDK: {costs['api_without_sdk']:.0f})"
    ]


def _render_spans(on: dict[str, Any], off: dict[str, Any]) -> list[str]:
    lines = []
    for kind, spans in (on.get("spans") or {}).items():
        services = ", ".join(f"{k} {v}" for k, v in spans["by_service"].items())
        lines.append(
            f"spans per {kind.replace('_', '-')} message: {spans['total']} ({services}); "
            f"queryable {spans['queryable_after_done_ms']:.0f} ms after done"
        )
    for key, burst_report in on.get("bursts", {}).items():
        chains = burst_report.get("chains")
        if chains:
            whole, checked = chains["whole"], chains["checked"]
            lines.append(f"burst in {key}: chains whole in Jaeger: {whole} of {checked} sampled")
            lines += [f"  broken: {b}" for b in chains["broken"]]
    lines.append(f"services exporting with tracing off: {', '.join(off['exported_by']) or 'none'}")
    return lines


def _render_slowest(on: dict[str, Any], missed: set[str]) -> list[str]:
    """For a burst whose p99 target was missed: where its slowest messages waited."""
    lines = []
    for key, burst_report in on.get("bursts", {}).items():
        if not any(label.startswith(f"burst_{key}_") and "p99" in label for label in missed):
            continue
        lines += [
            "",
            f"where the slowest messages of the burst in {key} waited "
            "(tracing on; each span's start from the first, and its length):",
        ]
        for timeline in burst_report.get("slowest", []):
            lines.append(
                f"  trace {timeline['trace_id']}: latency {timeline['latency_ms']:.1f} ms, "
                f"first token {timeline['ttft_ms']:.1f} ms"
            )
            for offset, duration, service, name in timeline["spans"]:
                lines.append(f"    +{offset:8.2f} ms {duration:8.2f} ms  {service} {name}")
    return lines


def to_json(report: dict[str, Any]) -> str:
    return json.dumps(report, indent=2, default=str)
