"""`omni-trace bench --scale`: the scale-out profile under load, measured in one run.

Stacks one after the other (never two at once), each on free ports without the viewers,
tracing on, the offline model's token pause at 0 by default:

- the small stack (one Jaeger holding traces in memory, SQLite, one of each service);
- rounds of two scale stacks (`--scale`: the Kafka trace pipeline, the runner's PostgreSQL,
  2 dashboards), one with 1 OMNI2 and one with 2 (as `omni-trace up --scale` runs it), in
  alternating order (1, 2), (2, 1), ...

Measured:

- burst through the scale profile (the first stack with 2 OMNI2): N connections opened
  within a few seconds, one message each, all held until every one is answered. Sent,
  answered (`done`), lost (no answer within 60 s, or refused). Then every answered message's
  trace is read back from Jaeger, through the Kafka pipeline, until its chain is whole (or a
  timeout): how many arrived, how many are whole, and what is wrong with the others. "0 lost"
  means every sent message answered and every answered message's trace queryable and whole.
- chats per second, 1 vs 2 OMNI2 replicas: the same steady load on each scale stack, C
  clients sending M messages each back to back; turns per second, latency and CPU per turn,
  side by side, with 2/1 as the median of the rounds' ratios. Every process of a stack
  shares the machine's cores: where they are busy, a second replica adds parallelism but no
  CPU (docs/performance.md).
- done -> queryable (the small stack and the first with 2 OMNI2, before their other loads):
  S messages, one every 1.3 s; from the moment `done` arrives, Jaeger's query API is polled
  every 50 ms for the message's trace: when it holds every layer's message span, and when
  the whole chain is readable (the links into the session trace included, whose gateway
  span comes from Traefik, which exports every 5 s). p50 and p99, small stack and Kafka
  pipeline side by side.

Options: --connections N, --burst-seconds, --clients C, --messages M, --rounds (of the 1 vs
2 OMNI2 stacks, default 3), --samples S, --token-delay-ms; --quick for a small load (a test
runs it).

Only numbers measured in the same run compare; nothing here asserts a time. The report is
printed as a table, or as JSON with --json; the exit status is 1 unless nothing was lost.
"""

from __future__ import annotations

import asyncio
import shutil
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

from opentelemetry.sdk.trace import TracerProvider

from omni_trace.bench.config import ScaleConfig
from omni_trace.bench.load import TOOL_FREE, BenchUsers, Phase, Progress, Sample
from omni_trace.bench.phases import burst_phase, steady_phase
from omni_trace.bench.processes import raise_fd_limit
from omni_trace.bench.report import Steady
from omni_trace.bench.scale_report import (
    ChainVerdicts,
    Queryable,
    ScaleBurst,
    ScaleReport,
    StackParts,
    Throughput,
)
from omni_trace.bench.stacks import bench_stack, client_tracing
from omni_trace.bench.stats import merge_runs, ratio, spread_ms
from omni_trace.stack.runner import Stack
from omni_trace.stack.settings import StackSettings
from omni_trace.traces import ChainReport, JaegerClient, analyze_chain, default_spec
from omni_trace.traces.stats import percentile

# The message spans a trace must hold before it counts as queryable at all (the client's,
# the dashboard's, OMNI2's); the whole chain needs the session trace's spans too.
MESSAGE_LAYERS = tuple(layer.name for layer in default_spec().message_layers)
CHAIN_READERS = 4  # parallel readers of the burst's chains (the query service is Go)


def _flush(run: Phase) -> None:
    """The bench's own client spans go out now: the delay measured is the stack's."""
    if isinstance(run.provider, TracerProvider):
        run.provider.force_flush()


# -- one stack ------------------------------------------------------------------------------


@contextmanager
def running(
    settings: StackSettings,
    cfg: ScaleConfig,
    run_dir: Path,
    label: str,
    progress: Progress,
    users: int = 1,
) -> Iterator[tuple[Phase, StackParts]]:
    """A fresh bench stack (its run dir, database and trace store made anew), `users` bench
    users and a traced client, warmed up by one message; with what was started. Stopped, and
    its PostgreSQL cluster removed, on exit."""
    shutil.rmtree(run_dir, ignore_errors=True)
    stack = bench_stack(settings, run_dir)
    if stack.postgres is not None:
        stack.postgres.remove()  # a cluster that an interrupted run left behind
    progress(f"[{label}] starting the stack ...")
    started = time.perf_counter()
    try:
        with stack:
            start_s = time.perf_counter() - started
            progress(f"[{label}] stack up in {start_s:.1f} s")
            bench_users = BenchUsers(stack)
            bench_users.create(users)
            with client_tracing(stack, True) as provider:
                run = Phase(stack, bench_users, provider, cfg.load(), label, progress)
                # One message first, so first-use costs (imports, pools) are not measured.
                asyncio.run(run.chat(0, [TOOL_FREE]))
                yield run, describe(stack, start_s)
            dead = stack.dead_services()
            if dead:
                raise RuntimeError(f"[{label}] services died during the bench: {', '.join(dead)}")
    finally:
        if stack.postgres is not None:
            stack.postgres.remove()


def describe(stack: Stack, start_s: float) -> StackParts:
    """What was measured: the stack's parts as it started them."""
    info = stack.info
    return StackParts(
        start_s=round(start_s, 1),
        trace_pipeline=info.trace_pipeline,
        database=info.omni2_database_url.split(":", 1)[0].split("+", 1)[0],
        omni2_replicas=len(info.omni2_replicas),
        dashboard_replicas=len(info.dashboard_replicas),
    )


# -- done -> queryable ----------------------------------------------------------------------


def _until_queryable(
    query_url: str, sample: Sample, cfg: ScaleConfig
) -> tuple[float | None, float | None]:
    """Seconds from `done` until the trace held every message layer's span, and until the
    whole chain was readable (None: not within the sample timeout)."""
    spans_s: float | None = None
    with JaegerClient(query_url) as jaeger:
        while True:
            report = analyze_chain(jaeger.get_trace(sample.trace_id), jaeger.get_trace)
            waited = time.perf_counter() - sample.done_at
            if spans_s is None and all(report.layers.get(name) for name in MESSAGE_LAYERS):
                spans_s = waited
            if report.whole:
                return spans_s, waited
            if waited >= cfg.sample_timeout_s:
                return spans_s, None
            time.sleep(cfg.poll_interval_s)


async def _samples(run: Phase, cfg: ScaleConfig) -> list[tuple[bool, float | None, float | None]]:
    """Message n starts at n x `sample_every_s`, whatever the others do, and is followed in
    a thread of its own: a sample that waits long delays no other."""
    loop = asyncio.get_running_loop()
    query_url = run.stack.info.jaeger_query_url

    async def one(n: int, pool: ThreadPoolExecutor) -> tuple[bool, float | None, float | None]:
        await asyncio.sleep(n * cfg.sample_every_s)
        (sample,) = await run.chat(n % len(run.users.ids), [TOOL_FREE])
        if not sample.ok:
            return False, None, None
        await loop.run_in_executor(pool, _flush, run)
        return True, *await loop.run_in_executor(pool, _until_queryable, query_url, sample, cfg)

    with ThreadPoolExecutor(max(cfg.samples, 1)) as pool:
        return await asyncio.gather(*(one(n, pool) for n in range(cfg.samples)))


def queryable_phase(run: Phase, cfg: ScaleConfig) -> Queryable:
    """S messages, each followed from its `done` until its chain is whole in Jaeger."""
    run.say(
        f"done -> queryable: {cfg.samples} messages, one every {cfg.sample_every_s:g} s, "
        f"Jaeger polled every {cfg.poll_interval_s * 1000:.0f} ms ..."
    )
    results = asyncio.run(_samples(run, cfg))
    answered = sum(ok for ok, _, _ in results)
    whole = [w for _, _, w in results if w is not None]
    return Queryable(
        samples=cfg.samples,
        unanswered=cfg.samples - answered,
        whole=len(whole),
        late=answered - len(whole),
        message_spans_ms=spread_ms([s for _, s, _ in results if s is not None]),
        whole_chain_ms=spread_ms(whole),
    )


# -- the burst and its chains ---------------------------------------------------------------


def _judge(query_url: str, trace_ids: Sequence[str]) -> dict[str, tuple[bool, ChainReport]]:
    """Each trace's chain as Jaeger holds it now: (any span arrived, the chain's report)."""
    judged = {}
    with JaegerClient(query_url, timeout=30) as jaeger:
        for trace_id in trace_ids:
            spans = jaeger.get_trace(trace_id)
            judged[trace_id] = (bool(spans), analyze_chain(spans, jaeger.get_trace))
    return judged


def chain_verdicts(
    query_url: str, trace_ids: Sequence[str], timeout: float, say: Progress
) -> ChainVerdicts:
    """Every trace read until its chain is whole or the timeout passes: how many reached
    Jaeger, how many are whole, and the first problems of the others."""
    deadline = time.monotonic() + timeout
    judged: dict[str, tuple[bool, ChainReport]] = {}
    pending = list(trace_ids)
    with ThreadPoolExecutor(CHAIN_READERS) as pool:
        while pending:
            chunks = [pending[n::CHAIN_READERS] for n in range(CHAIN_READERS)]
            for found in pool.map(lambda ids: _judge(query_url, ids), chunks):
                judged.update(found)
            pending = [t for t in pending if not judged[t][1].whole]
            say(f"chains: {len(trace_ids) - len(pending)} of {len(trace_ids)} whole in Jaeger")
            if pending and time.monotonic() < deadline:
                time.sleep(2.0)  # the pipeline drains in batches; Traefik exports every 5 s
            elif pending:
                break
    broken = [(t, report) for t, (_, report) in judged.items() if not report.whole]
    return ChainVerdicts(
        answered=len(trace_ids),
        in_jaeger=sum(arrived for arrived, _ in judged.values()),
        whole=len(trace_ids) - len(broken),
        failed_but_whole=sum(bool(r.errors) and not r.broken for _, r in judged.values()),
        broken=tuple(f"{t}: {r.status}" for t, r in broken[:5]),
    )


def scale_burst_phase(run: Phase, cfg: ScaleConfig) -> ScaleBurst:
    """The on/off bench's burst through the scale profile, then every answered chain. Its
    samples (for the on/off bench's pooled tail) and its memory per held connection (per
    connection of the first replica only: with replicas sharing the connections it would
    halve; the on/off bench reports it for the small stack) are left out."""
    result = burst_phase(run)
    burst = result.report
    _flush(run)
    run.say(f"reading the {len(result.trace_ids)} answered messages' chains from Jaeger ...")
    traces = chain_verdicts(
        run.stack.info.jaeger_query_url, result.trace_ids, cfg.chains_timeout_s, run.say
    )
    return ScaleBurst(
        sent=burst.connections,
        spread_s=burst.spread_s,
        answered=burst.answered,
        lost=burst.lost,
        errors=burst.errors,
        ttft_ms=burst.ttft_ms,
        latency_ms=burst.latency_ms,
        cores_busy_pct=burst.cores_busy_pct,
        cpu_ms_per_connection=burst.cpu_ms_per_connection,
        capacity_per_s=burst.capacity_per_s,
        peak_rss_mb=burst.peak_rss_mb,
        traces=traces,
        zero_lost=burst.answered == burst.connections and traces.whole == burst.answered,
    )


# -- the whole bench ------------------------------------------------------------------------


@dataclass
class _Rounds:
    """What the rounds of (1 OMNI2, 2 OMNI2) scale stacks measured."""

    stacks: dict[str, list[StackParts]] = field(default_factory=dict)
    steady: dict[int, list[Steady]] = field(default_factory=lambda: {1: [], 2: []})
    kafka_queryable: Queryable | None = None
    burst: ScaleBurst | None = None

    def stack(self, cfg: ScaleConfig, root: Path, replicas: int, progress: Progress) -> None:
        """One scale stack with `replicas` OMNI2: the steady load, and on the first stack
        with 2 OMNI2 (the profile as `up --scale` runs it) the delay samples first, on a
        quiet stack as on the small one, and then the burst."""
        settings = StackSettings(
            scale=True, omni2_replicas=replicas, model_token_delay_ms=cfg.token_delay_ms
        )
        label = f"scale, {replicas} OMNI2"
        profile = replicas == 2 and self.burst is None
        # One user per burst connection (OMNI2 allows a few connections per user).
        users = max(cfg.burst, cfg.clients) if profile else cfg.clients
        stack_dir = root / f"omni2-{replicas}"
        with running(settings, cfg, stack_dir, label, progress, users) as (run, parts):
            self.stacks.setdefault(f"scale_{replicas}_omni2", []).append(parts)
            if profile:
                self.kafka_queryable = queryable_phase(run, cfg)
            self.steady[replicas].append(steady_phase(run))
            if profile:
                self.burst = scale_burst_phase(run, cfg)


def _merged(runs: list[Steady]) -> Steady:
    merged = merge_runs([run.to_dict() for run in runs])
    return Steady.from_dict({**merged, "turns_per_s_by_round": [r.turns_per_s for r in runs]})


def run_scale_bench(cfg: ScaleConfig, run_dir: Path, progress: Progress) -> ScaleReport:
    """The small stack, then rounds of (1 OMNI2, 2 OMNI2) scale stacks (see the module's
    doc); one report."""
    raise_fd_limit()
    root = run_dir / "scale"
    small = StackSettings(model_token_delay_ms=cfg.token_delay_ms)
    with running(small, cfg, root / "small", "small stack", progress, 4) as (run, parts):
        measured = _Rounds(stacks={"small": [parts]})
        small_queryable = queryable_phase(run, cfg)
    for n in range(cfg.rounds):
        if cfg.rounds > 1:
            progress(f"round {n + 1} of {cfg.rounds}: 1 vs 2 OMNI2 replicas")
        # Alternating order, so that a load that grows or fades over the run falls on both.
        for replicas in (1, 2) if n % 2 == 0 else (2, 1):
            measured.stack(cfg, root, replicas, progress)
    steady, burst = measured.steady, measured.burst
    if burst is None or measured.kafka_queryable is None:
        raise ValueError("omni-trace bench --scale: --rounds must be at least 1")
    ratios = [
        ratio(two.turns_per_s, one.turns_per_s)
        for one, two in zip(steady[1], steady[2], strict=True)
    ]
    return ScaleReport(
        config=cfg,
        # Each kind's first stack, started in the median time of its rounds.
        stacks={
            name: replace(
                runs[0], start_s=percentile([r.start_s for r in runs if r.start_s is not None], 50)
            )
            for name, runs in measured.stacks.items()
        },
        burst=burst,
        throughput=Throughput(
            omni2_1=_merged(steady[1]),
            omni2_2=_merged(steady[2]),
            turns_per_s_2_over_1=percentile([r for r in ratios if r is not None], 50),
            ratio_by_round=tuple(ratios),
        ),
        queryable={"small": small_queryable, "kafka": measured.kafka_queryable},
        zero_lost=burst.zero_lost and not any(r.lost for r in (*steady[1], *steady[2])),
    )
