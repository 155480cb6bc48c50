"""`omni-trace audit`: is every message's chain whole, or where did it break? Exits 1 on a
broken chain or a regressed hop (against a baseline), so it can gate CI."""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from omni_trace.commands.common import (
    add_jaeger_source,
    flow_view,
    jaeger_url,
    parse_duration,
    progress,
    spec,
)
from omni_trace.errors import CliError
from omni_trace.traces import audit
from omni_trace.traces.audit import AuditQuery
from omni_trace.traces.baseline import Baseline, Comparison
from omni_trace.traces.baseline import compare as compare_baseline
from omni_trace.traces.baseline import render as render_baseline
from omni_trace.traces.chain import ChainReport
from omni_trace.traces.jaeger import JaegerClient
from omni_trace.traces.spec import ChainSpec
from omni_trace.traces.streams import DEFAULT_STALL_MS, STALL_RATIO

DESCRIPTION = (
    "For a conversation, a user or a time window: each message with the layers "
    "present (client, dashboard, traefik through the link, omni2), per-hop latency, and each "
    "broken chain with its reason. A client that sent no trace context is shown as not "
    "traced (`.`) and its chain judged from the first layer traced; one whose span was "
    "lost breaks the chain. Spans from the browsers' public telemetry path count only as "
    "the client's. Exits 1 if a chain is broken (or has an error span, unless "
    "--allow-errors), so it can gate CI."
)


def add_parser(sub: Any) -> None:
    aud = sub.add_parser(
        "audit",
        help="prove every message's chain is whole, or say where it broke",
        description=DESCRIPTION,
    )
    aud.add_argument("--conversation", help="a conversation id (gen_ai.conversation.id)")
    aud.add_argument("--user", help="a user id (user.id)")
    aud.add_argument(
        "--since",
        type=parse_duration,
        default=3600.0,
        help="how far back to look: 90s, 15m, 2h (default 1h)",
    )
    aud.add_argument("--limit", type=int, default=500, help="at most this many traces per layer")
    aud.add_argument(
        "--settle",
        type=parse_duration,
        default=10.0,
        help="re-check chains broken only by spans younger than this (default 10s;"
        " Traefik exports every 5 s)",
    )
    aud.add_argument("--json", action="store_true", help="machine-readable output")
    aud.add_argument(
        "--stall-ms",
        type=float,
        default=DEFAULT_STALL_MS,
        help="name the hop that held a message's tokens when it added at least this much to "
        f"the longest gap between token frames of the layer below, and {STALL_RATIO:g}x it "
        f"(default {DEFAULT_STALL_MS:g})",
    )
    aud.add_argument(
        "--allow-errors",
        action="store_true",
        help="exit 0 for whole chains whose message failed (error spans)",
    )
    _add_baseline_options(aud)
    add_jaeger_source(aud)
    aud.set_defaults(func=run)


def _add_baseline_options(aud: argparse.ArgumentParser) -> None:
    aud.add_argument(
        "--save-baseline",
        metavar="FILE",
        help="write these messages' hop percentiles (p50, p95, counts, when and where) as JSON",
    )
    aud.add_argument(
        "--baseline",
        metavar="FILE",
        help="compare the hop percentiles with this baseline (from --save-baseline); exit 1 "
        "when a hop regressed, 2 when the file cannot be read",
    )
    aud.add_argument(
        "--tolerance",
        type=float,
        default=0.25,
        metavar="R",
        help="with --baseline: a hop's p50 or p95 may grow by this ratio (default 0.25) ...",
    )
    aud.add_argument(
        "--min-ms",
        type=float,
        default=5.0,
        metavar="M",
        help="... and by at most M ms (default 5) before it counts as regressed",
    )


def run(args: argparse.Namespace) -> int:
    query = AuditQuery(
        conversation_id=args.conversation, user_id=args.user, since_s=args.since, limit=args.limit
    )
    chain_spec = spec(args)
    # A baseline that cannot be read is a usage error (exit 2), found before Jaeger is asked.
    if args.tolerance < 0 or args.min_ms < 0:
        raise CliError("--tolerance and --min-ms cannot be negative")
    baseline = Baseline.load(Path(args.baseline)) if args.baseline else None
    url = jaeger_url(args)
    with JaegerClient(url) as jaeger:
        reports = audit.run_audit(jaeger, query, progress, settle_s=args.settle, spec=chain_spec)
        sampled_out = audit.find_sampled_out(jaeger, query, chain_spec)
    for report in reports:
        report.judge_stall(args.stall_ms)
    flow = flow_view(args)
    comparison = (
        compare_baseline(baseline, reports, args.tolerance, args.min_ms) if baseline else None
    )
    if args.save_baseline:
        source = {"jaeger": url, "query": query.describe(), "spec": chain_spec.name}
        _save_baseline(Baseline.of(reports, source), args.save_baseline, len(reports))
    if args.json:
        print(_as_json(reports, flow, sampled_out, comparison))
    else:
        _print_table(reports, chain_spec, flow, sampled_out, comparison)
    if not reports:
        progress(f"no message traces found for {query.describe()}")
    if comparison is not None and comparison.regressions:
        for regression in comparison.regressions:
            progress(f"omni-trace: {regression}")
        return 1
    return audit.exit_code(reports, query, args.allow_errors, sampled_out)


def _save_baseline(baseline: Baseline, path: str, messages: int) -> None:
    try:
        baseline.save(Path(path))
    except OSError as err:
        raise CliError(f"cannot write baseline {path}: {err}") from err
    progress(f"baseline of {messages} message(s) written to {path}")


def _as_json(
    reports: list[ChainReport],
    flow: str | None,
    sampled_out: Sequence[str],
    comparison: Comparison | None,
) -> str:
    rendered = audit.render_json(reports, flow, sampled_out)
    if comparison is None:
        return rendered
    found = json.loads(rendered)
    found["baseline_comparison"] = comparison.as_dict()
    return json.dumps(found, indent=2)


def _print_table(
    reports: list[ChainReport],
    chain_spec: ChainSpec,
    flow: str | None,
    sampled_out: Sequence[str],
    comparison: Comparison | None,
) -> None:
    print(audit.render_table(reports, chain_spec))
    letters = ", ".join(f"{name[0].upper()} {name}" for name in chain_spec.layer_names)
    print(f"\nlayers ({chain_spec.name}): {letters} (. not traced, - missing); latencies in ms")
    print(audit.summary(reports))
    if stalls := audit.render_stalls(reports):
        print(stalls)
    if sampled_out:
        print(audit.sampling_note(sampled_out))
    if flow and reports:
        print(audit.render_links(reports, flow))
    if comparison is not None:
        print()
        print(render_baseline(comparison))
