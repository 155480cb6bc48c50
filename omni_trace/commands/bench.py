"""`omni-trace bench`: what tracing costs (the same load with tracing on and off), or with
--scale the scale-out profile. The load, phases and reports are omni_trace/bench's; this is
their command line. Options that do not belong to the chosen mode are refused as usage errors
(SystemExit with the message, as argparse does)."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from omni_trace import bench as bench_mod
from omni_trace.bench import config as bench_config
from omni_trace.bench import render as bench_render
from omni_trace.bench import rounds as bench_rounds
from omni_trace.bench import scale as bench_scale
from omni_trace.bench import scale_report
from omni_trace.commands.common import progress


def add_parser(sub: Any) -> None:
    bench = sub.add_parser(
        "bench",
        help="what tracing costs (tracing on vs off), or with --scale the scale-out profile",
        description=f"{bench_mod.__doc__}\n{bench_scale.__doc__}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    bench.add_argument(
        "--scale",
        action="store_true",
        help="the scale-out profile instead of on vs off: a burst through --scale with "
        "nothing lost and every chain whole, chats per second with 1 vs 2 OMNI2 replicas, "
        "done -> queryable for the small stack and the Kafka pipeline (about 8 minutes on 2 "
        "cores; --quick about 70 s)",
    )
    bench.add_argument(
        "--quick", action="store_true", help="a small load (seconds, for tests and a first look)"
    )
    bench.add_argument("--json", action="store_true", help="print the report as JSON")
    _add_load_options(bench)
    _add_stack_options(bench)
    bench.set_defaults(func=run)


def _add_load_options(bench: argparse.ArgumentParser) -> None:
    bench.add_argument(
        "--rounds",
        type=int,
        help="rounds of the stacks side by side (on, off, as `up` runs it); bursts pool their "
        "samples, steady ratios are the rounds' medians (default 2, --quick 1). "
        "With --scale: rounds of (a stack with 1 OMNI2, one with 2) for the steady load "
        "(default 3, --quick 1)",
    )
    bench.add_argument("--connections", type=int, help="burst: connections (default 500)")
    bench.add_argument(
        "--burst-seconds",
        type=float,
        help="burst: the connections open within this time (default 10; 5 saturates 2 cores)",
    )
    bench.add_argument(
        "--tight-burst-seconds",
        type=float,
        help="the same burst again within this time (default 5; 0 leaves it out; --quick 0)",
    )
    bench.add_argument("--clients", type=int, help="steady load: clients (default 16)")
    bench.add_argument("--messages", type=int, help="steady load: messages each (default 50)")
    bench.add_argument(
        "--samples",
        type=int,
        help="--scale: messages timed from done to queryable in Jaeger, per pipeline (default 100)",
    )
    bench.add_argument(
        "--history-rows",
        type=int,
        help="long-history phase: messages stored for one user (default 100,000)",
    )


def _add_stack_options(bench: argparse.ArgumentParser) -> None:
    bench.add_argument(
        "--token-delay-ms",
        type=float,
        help="the offline model's pause between tokens (default 0: the pipeline alone; "
        "20 is closer to a real model)",
    )
    bench.add_argument(
        "--database-url",
        help="OMNI2's database without a password, e.g. postgresql+asyncpg://host/db (default "
        "SQLite; one with a password goes in OMNI_TRACE_DATABASE_URL: a command line is "
        "visible to every user)",
    )
    bench.add_argument(
        "--run-dir",
        default="var/bench",
        help="configs and logs of the stacks (var/bench; --scale's in its scale/, made anew)",
    )


def run(args: argparse.Namespace) -> int:
    if args.scale:
        return run_scale(args)
    if args.samples is not None:
        raise SystemExit("omni-trace bench: --samples is an option of --scale")
    if _holds_password(args.database_url):
        raise SystemExit(
            "omni-trace bench: --database-url holds a password, and every user of this machine "
            "can read a command line: pass it in OMNI_TRACE_DATABASE_URL instead"
        )
    preset = bench_config.QUICK if args.quick else bench_config.BenchConfig()
    given = {
        "burst": args.connections,
        "burst_spread_s": args.burst_seconds,
        "tight_burst_spread_s": args.tight_burst_seconds,
        "clients": args.clients,
        "messages": args.messages,
        "token_delay_ms": args.token_delay_ms,
        "database_url": args.database_url,
        "rounds": args.rounds,
        "history_rows": args.history_rows,
    }
    cfg = dataclasses.replace(preset, **{k: v for k, v in given.items() if v is not None})
    if args.tight_burst_seconds == 0:
        cfg = dataclasses.replace(cfg, tight_burst_spread_s=None)
    report = bench_rounds.run_bench(cfg, Path(args.run_dir), progress)
    print(report.to_json() if args.json else bench_render.render(report))
    return 1 if report.lost else 0


def _holds_password(url: str | None) -> bool:
    try:
        return url is not None and urlsplit(url).password is not None
    except ValueError:
        return False  # not a URL: the database layer says so


def run_scale(args: argparse.Namespace) -> int:
    """`bench --scale`: its own stacks and phases (omni_trace/bench/scale.py)."""
    unused = [
        option
        for option, value in (
            ("--history-rows", args.history_rows),
            ("--database-url", args.database_url),
            ("--tight-burst-seconds", args.tight_burst_seconds),
        )
        if value is not None
    ]
    if unused:
        raise SystemExit(
            f"omni-trace bench --scale: {', '.join(unused)} belong to the on/off bench"
        )
    preset = bench_config.SCALE_QUICK if args.quick else bench_config.ScaleConfig()
    given = {
        "burst": args.connections,
        "burst_spread_s": args.burst_seconds,
        "clients": args.clients,
        "messages": args.messages,
        "rounds": args.rounds,
        "samples": args.samples,
        "token_delay_ms": args.token_delay_ms,
    }
    cfg = dataclasses.replace(preset, **{k: v for k, v in given.items() if v is not None})
    report = bench_scale.run_scale_bench(cfg, Path(args.run_dir), progress)
    print(report.to_json() if args.json else scale_report.render(report))
    return 0 if report.zero_lost else 1
