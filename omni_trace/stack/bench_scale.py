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
import json
import shutil
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from opentelemetry.sdk.trace import TracerProvider

from omni_trace.stack.bench import (
    TOOL_FREE,
    BenchConfig,
    BenchUsers,
    Phase,
    Progress,
    Sample,
    bench_stack,
    burst_phase,
    client_tracing,
    merge_runs,
    percentile,
    raise_fd_limit,
    steady_phase,
)
from omni_trace.stack.runner import Stack
from omni_trace.stack.settings import StackSettings
from omni_trace.traces import ChainReport, JaegerClient, analyze_chain, default_spec

# The message spans a trace must hold before it counts as queryable at all (the client's,
# the dashboard's, OMNI2's); the whole chain needs the session trace's spans too.
MESSAGE_LAYERS = tuple(layer.name for layer in default_spec().message_layers)
CHAIN_READERS = 4  # parallel readers of the burst's chains (the query service is Go)


@dataclass(frozen=True)
class ScaleConfig:
    burst: int = 500  # connections of the burst through the scale profile, one message each
    burst_spread_s: float = 10.0  # they open within this time (as the on/off bench's burst)
    clients: int = 16  # steady load, 1 vs 2 OMNI2 replicas: clients ...
    messages: int = 50  # ... sending this many messages each
    # Rounds of (a stack with 1 OMNI2, a stack with 2), in alternating order: one load lasts
    # seconds, and the other work on a shared machine moves it by tens of percent (and
    # PostgreSQL's commits with the disk); the ratio is the median of the rounds' ratios.
    rounds: int = 3
    samples: int = 100  # messages timed from done to queryable, per pipeline
    # One sample starts this often, whatever the others do. Sent one after the other, each
    # when the last was whole, they would fall in step with Traefik's 5 s export period and
    # all wait the whole period; 1.3 s is no divisor of it, so they fall at every phase.
    sample_every_s: float = 1.3
    poll_interval_s: float = 0.05  # how often Jaeger is asked while a sample waits
    sample_timeout_s: float = 30.0  # a sample not whole by then is counted as late
    # Every answered burst message's chain must be whole by then (after the burst): the
    # pipeline drains hundreds of traces, and Traefik exports its spans every 5 s.
    chains_timeout_s: float = 180.0
    token_delay_ms: float = 0.0  # the offline model's pause between tokens


QUICK = ScaleConfig(burst=40, burst_spread_s=2.0, clients=4, messages=10, rounds=1, samples=5)


def _bench_config(cfg: ScaleConfig) -> BenchConfig:
    """What the on/off bench's load functions (burst, steady) read."""
    return BenchConfig(
        burst=cfg.burst,
        burst_spread_s=cfg.burst_spread_s,
        clients=cfg.clients,
        messages=cfg.messages,
        token_delay_ms=cfg.token_delay_ms,
    )


def _spread_ms(seconds: Sequence[float]) -> dict[str, float | None]:
    ms = [s * 1000 for s in seconds]
    return {
        "p50": percentile(ms, 50),
        "p99": percentile(ms, 99),
        "max": max(ms) if ms else None,
    }


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
) -> Iterator[tuple[Phase, dict[str, Any]]]:
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
                run = Phase(stack, bench_users, provider, _bench_config(cfg), label, progress)
                # One message first, so first-use costs (imports, pools) are not measured.
                asyncio.run(run.chat(0, [TOOL_FREE]))
                yield run, describe(stack, start_s)
            dead = stack.dead_services()
            if dead:
                raise RuntimeError(f"[{label}] services died during the bench: {', '.join(dead)}")
    finally:
        if stack.postgres is not None:
            stack.postgres.remove()


def describe(stack: Stack, start_s: float) -> dict[str, Any]:
    """What was measured: the stack's parts as it started them."""
    info = stack.info
    return {
        "start_s": round(start_s, 1),
        "trace_pipeline": info.trace_pipeline,
        "database": info.omni2_database_url.split(":", 1)[0].split("+", 1)[0],
        "omni2_replicas": len(info.omni2_replicas),
        "dashboard_replicas": len(info.dashboard_replicas),
    }


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


def queryable_phase(run: Phase, cfg: ScaleConfig) -> dict[str, Any]:
    """S messages, each followed from its `done` until its chain is whole in Jaeger."""
    run.say(
        f"done -> queryable: {cfg.samples} messages, one every {cfg.sample_every_s:g} s, "
        f"Jaeger polled every {cfg.poll_interval_s * 1000:.0f} ms ..."
    )
    results = asyncio.run(_samples(run, cfg))
    answered = sum(ok for ok, _, _ in results)
    whole = [w for _, _, w in results if w is not None]
    return {
        "samples": cfg.samples,
        "unanswered": cfg.samples - answered,
        "whole": len(whole),
        "late": answered - len(whole),  # answered, not whole within the sample timeout
        "message_spans_ms": _spread_ms([s for _, s, _ in results if s is not None]),
        "whole_chain_ms": _spread_ms(whole),
    }


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
) -> dict[str, Any]:
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
    return {
        "answered": len(trace_ids),
        "in_jaeger": sum(arrived for arrived, _ in judged.values()),
        "whole": len(trace_ids) - len(broken),
        "failed_but_whole": sum(bool(r.errors) and not r.broken for _, r in judged.values()),
        "broken": [f"{t}: {r.status}" for t, r in broken[:5]],
    }


def scale_burst_phase(run: Phase, cfg: ScaleConfig) -> dict[str, Any]:
    """The on/off bench's burst through the scale profile, then every answered chain."""
    result = burst_phase(run)
    trace_ids = result.pop("_trace_ids")
    del result["_slowest"], result["samples_ms"]  # the on/off bench's: for its pooled tail
    # Per connection of the first replica only; with replicas sharing the connections it
    # would halve. The on/off bench reports it for the small stack.
    result.pop("held_kb_per_connection", None)
    _flush(run)
    run.say(f"reading the {len(trace_ids)} answered messages' chains from Jaeger ...")
    traces = chain_verdicts(
        run.stack.info.jaeger_query_url, trace_ids, cfg.chains_timeout_s, run.say
    )
    sent = result.pop("connections")
    return {
        "sent": sent,
        **result,
        "traces": traces,
        "zero_lost": result["answered"] == sent and traces["whole"] == result["answered"],
    }


# -- the whole bench ------------------------------------------------------------------------


def run_scale_bench(cfg: ScaleConfig, run_dir: Path, progress: Progress) -> dict[str, Any]:
    """The small stack, then rounds of (1 OMNI2, 2 OMNI2) scale stacks (see the module's
    doc); one report."""
    raise_fd_limit()
    root = run_dir / "scale"
    delay = cfg.token_delay_ms
    stacks: dict[str, list[dict[str, Any]]] = {}

    small = StackSettings(model_token_delay_ms=delay)
    with running(small, cfg, root / "small", "small stack", progress, 4) as (run, parts):
        stacks["small"] = [parts]
        small_queryable = queryable_phase(run, cfg)

    steady: dict[int, list[dict[str, Any]]] = {1: [], 2: []}
    kafka_queryable: dict[str, Any] = {}
    burst: dict[str, Any] = {}
    for n in range(cfg.rounds):
        if cfg.rounds > 1:
            progress(f"round {n + 1} of {cfg.rounds}: 1 vs 2 OMNI2 replicas")
        # Alternating order, so that a load that grows or fades over the run falls on both.
        for replicas in (1, 2) if n % 2 == 0 else (2, 1):
            settings = StackSettings(
                scale=True, omni2_replicas=replicas, model_token_delay_ms=delay
            )
            label = f"scale, {replicas} OMNI2"
            # The first stack with 2 OMNI2 (the profile as `up --scale` runs it) also takes
            # the delay samples, on a quiet stack as on the small one, and then the burst.
            profile = replicas == 2 and not burst
            # One user per burst connection (OMNI2 allows a few connections per user).
            users = max(cfg.burst, cfg.clients) if profile else cfg.clients
            stack_dir = root / f"omni2-{replicas}"
            with running(settings, cfg, stack_dir, label, progress, users) as (run, parts):
                stacks.setdefault(f"scale_{replicas}_omni2", []).append(parts)
                if profile:
                    kafka_queryable = queryable_phase(run, cfg)
                steady[replicas].append(steady_phase(run))
                if profile:
                    burst = scale_burst_phase(run, cfg)

    ratios = [
        _ratio(two["turns_per_s"], one["turns_per_s"])
        for one, two in zip(steady[1], steady[2], strict=True)
    ]
    known = [r for r in ratios if r is not None]

    def merged(runs: list[dict[str, Any]]) -> dict[str, Any]:
        return {**merge_runs(runs), "turns_per_s_by_round": [r["turns_per_s"] for r in runs]}

    return {
        "config": asdict(cfg),
        # Each kind's first stack, started in the median time of its rounds.
        "stacks": {
            name: {**runs[0], "start_s": percentile([r["start_s"] for r in runs], 50)}
            for name, runs in stacks.items()
        },
        "burst": burst,
        "throughput": {
            "omni2_1": merged(steady[1]),
            "omni2_2": merged(steady[2]),
            "turns_per_s_2_over_1": percentile(known, 50),
            "ratio_by_round": ratios,
        },
        "queryable": {"small": small_queryable, "kafka": kafka_queryable},
        "zero_lost": burst["zero_lost"] and not any(r["lost"] for r in (*steady[1], *steady[2])),
    }


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or b <= 0 else a / b


# -- the report -----------------------------------------------------------------------------


def _fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return str(value)


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    """Rows of a label and one value per column; a ratio column (its header has a "/")
    gets two decimals."""
    width = max(len(str(row[0])) for row in rows)
    digits = [2 if "/" in h else 1 for h in header]
    out = [f"{'':<{width}}" + "".join(f"  {h:>14}" for h in header)]
    for label, *values in rows:
        cells = (_fmt(v, d) for v, d in zip(values, digits, strict=True))
        out.append(f"{label:<{width}}" + "".join(f"  {c:>14}" for c in cells))
    return out


def render(report: dict[str, Any]) -> str:
    cfg, stacks, burst = report["config"], report["stacks"], report["burst"]
    traces = burst["traces"]
    lines = [
        "",
        "omni-trace bench --scale: the scale-out profile, measured one stack after the other",
        "",
        "stacks: "
        + "; ".join(
            f"{name} ({s['trace_pipeline']} traces, {s['database']}, dashboards "
            f"{s['dashboard_replicas']}, OMNI2 {s['omni2_replicas']}) up in {s['start_s']:.1f} s"
            for name, s in stacks.items()
        ),
        "",
        f"burst through the scale profile: {burst['sent']} connections within "
        f"{cfg['burst_spread_s']:g} s, one message each, held until all were answered",
        f"  sent {burst['sent']}, answered {burst['answered']}, lost {burst['lost']}"
        + (f" ({'; '.join(burst['errors'])})" if burst["errors"] else ""),
        f"  time to first token p50 / p99: {_fmt(burst['ttft_ms']['p50'])} / "
        f"{_fmt(burst['ttft_ms']['p99'])} ms; message latency p50 / p99: "
        f"{_fmt(burst['latency_ms']['p50'])} / {_fmt(burst['latency_ms']['p99'])} ms",
        f"  cores busy (the stack and the bench's clients): {_fmt(burst['cores_busy_pct'])}%",
        f"  traces in Jaeger through Kafka: {traces['in_jaeger']} of {traces['answered']} "
        f"answered; chains whole: {traces['whole']} of {traces['answered']}",
        *(f"    broken: {b}" for b in traces["broken"]),
        f"  0 lost: {'yes' if burst['zero_lost'] else 'NO'} (every message answered, every "
        "answered message's trace queryable and whole)",
        "",
        f"chats per second: {cfg['clients']} clients x {cfg['messages']} messages, "
        "scale profile with 1 then 2 OMNI2 replicas",
    ]
    throughput = report["throughput"]
    one, two = throughput["omni2_1"], throughput["omni2_2"]

    def row(label: str, a: Any, b: Any, ratio: bool = True) -> list[Any]:
        return [label, a, b, _ratio(b, a) if ratio else None]

    rows = [
        [
            "turns per second",
            one["turns_per_s"],
            two["turns_per_s"],
            throughput["turns_per_s_2_over_1"],
        ],
        row("message latency p50 (ms)", one["latency_ms"]["p50"], two["latency_ms"]["p50"]),
        row("message latency p99 (ms)", one["latency_ms"]["p99"], two["latency_ms"]["p99"]),
        row("CPU per turn, stack processes (ms)", one["cpu_ms_per_turn"], two["cpu_ms_per_turn"]),
    ]
    by_one, by_two = one["cpu_ms_per_turn_by_process"], two["cpu_ms_per_turn_by_process"]
    for name in sorted(set(by_one) | set(by_two)):
        rows.append(row(f"  {name}", by_one.get(name), by_two.get(name), ratio=False))
    rows.append(row("messages lost", one["lost"], two["lost"], ratio=False))
    lines += _table(["1 OMNI2", "2 OMNI2", "2/1"], rows)
    if cfg["rounds"] > 1:
        by_round = ", ".join(_fmt(r, 2) for r in throughput["ratio_by_round"])
        lines += [
            f"({cfg['rounds']} rounds, each a stack with 1 and a stack with 2 OMNI2 in "
            "alternating order: counts are totals, other numbers medians;",
            f" turns per second 2/1 is the median of the rounds' ratios: {by_round})",
        ]

    small, kafka = report["queryable"]["small"], report["queryable"]["kafka"]
    lines += [
        "",
        f"done -> queryable in Jaeger: {cfg['samples']} messages, one every "
        f"{cfg['sample_every_s']:g} s, Jaeger polled every {cfg['poll_interval_s'] * 1000:.0f} ms",
    ]
    rows = []
    for label, key in (("message spans", "message_spans_ms"), ("whole chain", "whole_chain_ms")):
        for stat in ("p50", "p99", "max"):
            rows.append([f"{label} {stat} (ms)", small[key][stat], kafka[key][stat]])
    rows.append(["not whole within the timeout", small["late"], kafka["late"]])
    lines += _table(["small stack", "Kafka pipeline"], rows)
    lines.append("")
    verdict = "0 lost" if report["zero_lost"] else "messages or chains LOST"
    lines.append(f"verdict: {verdict}")
    return "\n".join(lines)


def to_json(report: dict[str, Any]) -> str:
    return json.dumps(report, indent=2, default=str)
