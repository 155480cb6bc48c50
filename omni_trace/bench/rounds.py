"""The on/off bench's rounds: the stacks of a round started side by side, each phase on
each stack in turn, and the rounds merged into one report."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from omni_trace.bench import span_costs
from omni_trace.bench.config import BenchConfig
from omni_trace.bench.load import TOOL_FREE, BenchUsers, Phase, Progress
from omni_trace.bench.phases import (
    SLOWEST,
    BurstRun,
    burst_phase,
    history_phase,
    hops_phase,
    interleaved_steady_phase,
)
from omni_trace.bench.processes import raise_fd_limit, sample_stack
from omni_trace.bench.report import BenchReport, Ratios, Round, RunReport, spread_key
from omni_trace.bench.stacks import bench_settings, bench_stack, client_tracing
from omni_trace.bench.stats import merge_runs, percentiles_ms, ratio
from omni_trace.bench.traced import count_up, traced_checks
from omni_trace.traces.jaeger import JaegerClient
from omni_trace.traces.stats import percentile


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


def _start(
    mode: Mode, cfg: BenchConfig, run_dir: Path, progress: Progress, held: contextlib.ExitStack
) -> tuple[RunReport, Phase]:
    """One of the round's stacks, started and held by `held`, with its users and a first
    message sent (so first-use costs, imports and pools, are not measured)."""
    stack = bench_stack(
        bench_settings(cfg), run_dir / mode.name, mode.tracing, viewers=mode.viewers
    )
    progress(f"[{mode.label}] starting the stack ...")
    started = time.perf_counter()
    held.enter_context(stack)
    report = RunReport(mode.tracing, mode.name, start_s=time.perf_counter() - started)
    progress(f"[{mode.label}] stack up in {report.start_s:.1f} s")
    users = BenchUsers(stack)
    # One user per burst connection (OMNI2 allows a few connections per user), and two
    # more, the last, for the long-history phase alone.
    users.create(max(cfg.burst, cfg.clients, 2) + 2)
    provider = held.enter_context(client_tracing(stack, mode.tracing))
    run = Phase(stack, users, provider, cfg, mode.label, progress)
    asyncio.run(run.chat(0, [TOOL_FREE]))
    return report, run


def _steady(runs: Mapping[str, Phase], reports: dict[str, RunReport], order: Sequence[str]) -> None:
    """The steady load in blocks alternating between the stacks (`order` first), and the
    stack as `up` runs it counted until its flow view has judged the load."""
    cfg = runs[order[0]].cfg
    runs[order[0]].progress(
        f"steady: {cfg.clients} clients x {cfg.messages} messages on each stack, in "
        f"{cfg.steady_blocks} blocks alternating between the stacks ..."
    )
    up = sample_stack(runs["up"].stack) if "up" in runs else {}
    for name, result in interleaved_steady_phase(runs, order).items():
        reports[name] = replace(reports[name], steady=result)
    if "up" in runs:
        reports["up"] = replace(
            reports["up"], steady=count_up(runs["up"], reports["up"].steady, up)
        )


def _exported_by(runs: Mapping[str, Phase], reports: dict[str, RunReport]) -> None:
    """Which services Jaeger heard from (tracing off must mean off in every layer: then it
    has heard from no one); and every service still running."""
    time.sleep(0.5)
    for name, run in runs.items():
        with JaegerClient(run.stack.info.jaeger_query_url) as jaeger:
            reports[name] = replace(reports[name], exported_by=tuple(sorted(jaeger.services())))
        dead = run.stack.dead_services()
        if dead:
            raise RuntimeError(f"[{run.label}] services died during the bench: {', '.join(dead)}")


def run_round(
    cfg: BenchConfig, run_dir: Path, progress: Progress, number: int
) -> dict[str, RunReport]:
    """One round: its stacks up together, each phase on each stack in turn."""
    names = [name for name in MODES if name != "up" or cfg.as_up]
    # Which of on and off goes first turns around every round.
    pair = ("on", "off") if number % 2 else ("off", "on")
    with contextlib.ExitStack() as held:
        started = {name: _start(MODES[name], cfg, run_dir, progress, held) for name in names}
        reports = {name: report for name, (report, _) in started.items()}
        runs = {name: run for name, (_, run) in started.items()}
        bursts: dict[str, dict[str, BurstRun]] = {name: {} for name in pair}
        for spread in cfg.burst_spreads:
            for name in pair:
                bursts[name][spread_key(spread)] = burst_phase(runs[name], spread)
        for name in pair:
            found = {key: burst.report for key, burst in bursts[name].items()}
            reports[name] = replace(reports[name], bursts=found)
        _steady(runs, reports, [*pair, *names[len(pair) :]])
        for name in pair:
            hops = hops_phase(runs[name])
            reports[name] = replace(reports[name], hops=hops, history=history_phase(runs[name]))
        reports["on"] = traced_checks(runs["on"], reports["on"], bursts["on"])
        _exported_by(runs, reports)
    return reports


def run_bench(cfg: BenchConfig, run_dir: Path, progress: Progress) -> BenchReport:
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
        rounds.append(Round(reports, ratios(reports["on"], reports["off"])))
    merged = {
        name: RunReport.from_dict(pool(merge_runs([r.runs[name].to_dict() for r in rounds])))
        for name in MODES
        if name in rounds[0].runs
    }
    per_ratio: dict[str, list[float]] = {}
    for r in rounds:
        for name, value in r.ratios.items():
            if value is not None:
                per_ratio.setdefault(name, []).append(value)
    pooled = ratios(merged["on"], merged["off"])
    return BenchReport(
        config=cfg,
        span_costs_us=costs,
        runs=merged,
        ratios={
            name: percentile(per_ratio.get(name, []), 50) if name in STEADY_RATIOS else value
            for name, value in pooled.items()
        },
        ratio_range={name: (min(v), max(v)) for name, v in per_ratio.items()},
        rounds=tuple(rounds),
    )


def pool(run: dict[str, Any]) -> dict[str, Any]:
    """Each burst's percentiles from the rounds' samples put together, and its slowest
    messages of all rounds (a run's report as a JSON tree)."""
    for burst_report in run.get("bursts", {}).values():
        samples = burst_report.get("samples_ms", {})
        for measure in ("ttft", "latency"):
            burst_report[f"{measure}_ms"] = percentiles_ms(samples.get(measure, []))
        slowest = burst_report.get("slowest")
        if slowest:
            burst_report["slowest"] = sorted(slowest, key=lambda t: -t["latency_ms"])[:SLOWEST]
    return run


STEADY_RATIOS = ("steady_turns_per_s", "steady_cpu_per_turn")


def ratios(on: RunReport, off: RunReport) -> Ratios:
    """The measures the targets are written in, as tracing on / off."""
    found: dict[str, float | None] = {}
    for key, burst in on.bursts.items():
        other = off.bursts.get(key)
        for measure in ("ttft", "latency"):
            for p in ("p50", "p99"):
                theirs = other.percentiles(measure).get(p) if other else None
                found[f"burst_{key}_{measure}_{p}"] = ratio(
                    burst.percentiles(measure).get(p), theirs
                )
    found["steady_turns_per_s"] = ratio(on.steady.turns_per_s, off.steady.turns_per_s)
    found["steady_cpu_per_turn"] = ratio(on.steady.cpu_ms_per_turn, off.steady.cpu_ms_per_turn)
    return found
