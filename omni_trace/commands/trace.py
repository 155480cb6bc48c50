"""`omni-trace trace show|diff`: one message trace as a terminal waterfall (with its linked
session trace and critical path), or two compared span by span and hop by hop."""

from __future__ import annotations

import argparse
import json
import shutil
from typing import Any

from omni_trace.commands.common import add_jaeger_source, flow_view, jaeger_url, spec
from omni_trace.traces import audit
from omni_trace.traces.chain import ChainReport, analyze_chain
from omni_trace.traces.critical_path import CriticalPath, critical_path, render_path
from omni_trace.traces.diff import diff_traces, render_diff
from omni_trace.traces.jaeger import JaegerClient, JaegerError, TraceSpan
from omni_trace.traces.spec import ChainSpec
from omni_trace.traces.streams import render_streams
from omni_trace.traces.waterfall import render_waterfall


def add_parser(sub: Any) -> None:
    trace_cmd = sub.add_parser("trace", help="look at traces")
    trace_sub = trace_cmd.add_subparsers(dest="trace_command", required=True, metavar="COMMAND")
    show = trace_sub.add_parser(
        "show", help="a terminal waterfall of a message trace and its linked session trace"
    )
    show.add_argument("trace_id", help="a trace id, or `last` for the newest message trace")
    show.add_argument("--width", type=int, help="output width (default: the terminal's)")
    show.add_argument(
        "--json", action="store_true", help="the chain report and the critical path as JSON"
    )
    add_jaeger_source(show)
    show.set_defaults(func=run)
    diff = trace_sub.add_parser(
        "diff",
        help="two message traces compared: spans and layers in one only, time per hop and span",
        description="Spans are matched by service, span name and position under the message; "
        "time differences per hop (the audit's hops) and per service and span name, largest "
        "first.",
    )
    diff.add_argument("a", help="a trace id (A)")
    diff.add_argument("b", help="another trace id (B); differences read B - A")
    diff.add_argument("--json", action="store_true", help="machine-readable output")
    add_jaeger_source(diff)
    diff.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    return show(args) if args.trace_command == "show" else diff(args)


def _latest_message_trace(jaeger: JaegerClient, chain_spec: ChainSpec) -> str:
    candidates: list[tuple[int, str]] = []
    services = set(jaeger.services())
    for service, operation in chain_spec.message_spans:
        if service in services:
            for trace_id in jaeger.find_trace_ids(service, operation=operation, limit=20):
                spans = jaeger.get_trace(trace_id)
                if spans:
                    candidates.append((spans[0].start_ns, trace_id))
    if not candidates:
        raise JaegerError("no message traces in Jaeger yet: chat first (`omni-trace chat ...`)")
    return max(candidates)[1]


def _trace(jaeger: JaegerClient, trace_id: str) -> list[TraceSpan]:
    spans = jaeger.get_trace(trace_id)
    if not spans:
        raise JaegerError(f"trace {trace_id} not found in Jaeger")
    return spans


def show(args: argparse.Namespace) -> int:
    width = args.width or shutil.get_terminal_size((120, 40)).columns
    chain_spec = spec(args)
    with JaegerClient(jaeger_url(args)) as jaeger:
        last = args.trace_id == "last"
        trace_id = _latest_message_trace(jaeger, chain_spec) if last else args.trace_id
        spans = _trace(jaeger, trace_id)
        report = analyze_chain(spans, jaeger.get_trace, chain_spec)
        path = critical_path(spans)
        if args.json:
            print(_show_json(trace_id, report, path))
            return 1 if report.broken else 0
        print(render_waterfall(spans, width, f"message trace {trace_id}", path.span_ids))
        for session_id in report.session_trace_ids:
            print()
            print(
                render_waterfall(
                    jaeger.get_trace(session_id), width, f"linked session trace {session_id}"
                )
            )
    _print_summary(report, path)
    flow = flow_view(args)
    if flow:
        print(f"flow view: {audit.flow_view_url(flow, trace_id)}")
    return 1 if report.broken else 0


def _show_json(trace_id: str, report: ChainReport, path: CriticalPath) -> str:
    found = {"trace_id": trace_id, "chain": report.as_dict(), "critical_path": path.as_dict()}
    return json.dumps(found, indent=2)


def _print_summary(report: ChainReport, path: CriticalPath) -> None:
    hops = ", ".join(f"{k} {v:.1f} ms" for k, v in report.hops.items() if v is not None)
    print(f"\nhops: {hops}\nchain: {report.status}")
    if report.streams:
        print(render_streams(report.streams, list(report.layers), report.stall))
    # `*` in the waterfall: the spans on it.
    print(render_path(path))


def diff(args: argparse.Namespace) -> int:
    chain_spec = spec(args)
    with JaegerClient(jaeger_url(args)) as jaeger:
        traces, reports = [], []
        for trace_id in (args.a, args.b):
            spans = _trace(jaeger, trace_id)
            traces.append(spans)
            reports.append(analyze_chain(spans, jaeger.get_trace, chain_spec))
    found = diff_traces(traces[0], traces[1], reports[0], reports[1])
    print(json.dumps(found.as_dict(), indent=2) if args.json else render_diff(found))
    return 0
