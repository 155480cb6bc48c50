"""`omni-trace`: run the traced OMNI2 chat stack, chat through it, and see each message's trace."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import shutil
import signal
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType
from urllib.parse import urlsplit

from pydantic import ValidationError

from omni_trace import bench as bench_mod
from omni_trace.bench import config as bench_config
from omni_trace.bench import render as bench_render
from omni_trace.bench import rounds as bench_rounds
from omni_trace.bench import scale as bench_scale
from omni_trace.bench import scale_report
from omni_trace.stack import demo as demo_mod
from omni_trace.stack import doctor
from omni_trace.stack import users as users_mod
from omni_trace.stack.client import ChatError, login, open_chat
from omni_trace.stack.jaeger_build import JaegerBuildError, ensure_jaeger
from omni_trace.stack.kafka import KafkaBuildError, ensure_kafka
from omni_trace.stack.paths import DEFAULT_STACK_FILE, REPO_ROOT
from omni_trace.stack.ports import (
    DASHBOARD_REPLICA_PORTS,
    JAEGER_PORTS,
    PIPELINE_PORTS,
    POSTGRES_PORTS,
    REPLICA_PORTS,
    Ports,
    busy_ports,
)
from omni_trace.stack.postgres import PostgresUnavailable
from omni_trace.stack.runner import (
    Stack,
    StackError,
    StackInfo,
    require_stack_packages,
    stack_summary,
)
from omni_trace.stack.settings import StackSettings
from omni_trace.traces import audit, diagnosis
from omni_trace.traces.audit import AuditQuery
from omni_trace.traces.baseline import Baseline, BaselineError
from omni_trace.traces.baseline import compare as compare_baseline
from omni_trace.traces.baseline import render as render_baseline
from omni_trace.traces.chain import analyze_chain
from omni_trace.traces.critical_path import critical_path, render_path
from omni_trace.traces.diff import diff_traces, render_diff
from omni_trace.traces.jaeger import JaegerClient, JaegerError
from omni_trace.traces.spec import ChainSpec, SpecError, default_spec, load_spec
from omni_trace.traces.streams import DEFAULT_STALL_MS, STALL_RATIO, render_streams
from omni_trace.traces.waterfall import render_waterfall
from otel.names import Service, telemetry_markdown
from otel.setup import create_tracer_provider

EPILOG = """\
environment:
  OMNI_TRACE_MODEL_TOKEN_DELAY_MS   offline model pause per token (default 15)
  JAEGER_BIN                        use this Jaeger v2 binary instead of building one
  OMNI_TRACE_JAEGER_QUERY_URL       use a running Jaeger (query API base URL) ...
  OMNI_TRACE_JAEGER_OTLP_ENDPOINT   ... and its OTLP/HTTP base URL
  OMNI_TRACE_PUBLIC_TRACE_SERVICES  client services the public OTLP path (4319) takes
                                    (default chat-client,chat-browser)
  OTEL_*                            standard OpenTelemetry variables, honoured by every service

quick start:
  omni-trace demo            start everything, chat, show the traces (Ctrl-C stops)
  omni-trace up              start the stack and keep it running; open the printed chat page
  omni-trace chat "hello"    chat through a running stack and print the trace id
  omni-trace trace show last a waterfall of the newest message trace
  omni-trace audit --since 15m   is every message's chain whole? (exit 1 if not)
  omni-trace doctor          where does the chain break?
  omni-trace users list      OMNI2's users, roles, limits (also add, passwd, block, limits)
  omni-trace bench --quick   what tracing costs: the same load with tracing on and off
  omni-trace bench --scale   the scale-out profile: 500 chats, nothing lost, 1 vs 2 OMNI2
"""


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class _Stop(Exception):
    pass


def _raise_stop(signum: int, frame: FrameType | None) -> None:
    raise _Stop(signal.Signals(signum).name)


def _check_not_running(stack_file: Path) -> None:
    if not stack_file.exists():
        return
    try:
        pid = StackInfo.read(stack_file).pid
        os.kill(pid, 0)
    except (StackError, ProcessLookupError, PermissionError, ValueError, TypeError):
        return  # stale file from a stack that is gone
    raise StackError(
        f"a stack is already running (pid {pid}, {stack_file}); stop it first, "
        "or pass another --stack-file with --free-ports"
    )


def start_stack(args: argparse.Namespace) -> Stack:
    # Options win over the environment (OMNI_TRACE_*); --scale sets what it names unless an
    # option or variable sets it too.
    given = {
        name: getattr(args, name)
        for name in (
            "scale",
            "trace_pipeline",
            "database",
            "omni2_replicas",
            "dashboard_replicas",
            "conversation_sample_ratio",
        )
        if getattr(args, name) is not None
    }
    settings = StackSettings(**given)
    _check_not_running(args.stack_file)
    if args.free_ports:
        ports = Ports.free(settings.host)
    else:
        ports = Ports()
        skip = set() if settings.trace_pipeline == "kafka" else set(PIPELINE_PORTS)
        if settings.database != "postgres" or settings.database_url:
            skip |= POSTGRES_PORTS
        if settings.omni2_replicas < 2:
            skip |= REPLICA_PORTS
        if settings.dashboard_replicas < 2:
            skip |= DASHBOARD_REPLICA_PORTS
        if settings.jaeger_query_url:
            skip |= JAEGER_PORTS
        busy = busy_ports(ports, settings.host, skip)
        if busy:
            raise StackError(
                f"ports in use: {', '.join(busy)}; stop what holds them or pass --free-ports"
            )
    stack = Stack(Path(args.run_dir), ports, settings, progress=_progress)
    stack.start()
    stack.info.write(args.stack_file)
    return stack


def print_urls(info: StackInfo, stack_file: Path) -> None:
    print("\nOMNI2 chat stack is up:")
    for label, url in stack_summary(info).items():
        print(f"  {label:<28} {url}")
    print(f"  {'stack file':<28} {stack_file}")


def run_until_stopped(stack: Stack) -> None:
    reported: set[str] = set()
    while True:
        time.sleep(1)
        for name in set(stack.dead_services()) - reported:
            reported.add(name)
            _progress(f"warning: {name} exited; last lines of its log:\n{stack.log_tail(name)}")


def serve_stack(args: argparse.Namespace, then: Callable[[StackInfo], bool] | None = None) -> int:
    """Start the stack, run `then` (False: stop right away), keep serving until a signal."""
    stack = start_stack(args)
    try:
        print_urls(stack.info, args.stack_file)
        if then is not None and not then(stack.info):
            return 0
        print(
            f"\nChat in the browser at {stack.info.frontend_url} (WebSocket test page: "
            f'{stack.info.frontend_url}/test_ws_chat.html)\nor with `omni-trace chat "..."`. '
            "Ctrl-C stops everything.",
            flush=True,
        )
        run_until_stopped(stack)
    except (KeyboardInterrupt, _Stop):
        _progress("\nstopping ...")
    finally:
        stack.stop()
        args.stack_file.unlink(missing_ok=True)
    return 0


def cmd_up(args: argparse.Namespace) -> int:
    return serve_stack(args)


def cmd_demo(args: argparse.Namespace) -> int:
    def demo(info: StackInfo) -> bool:
        demo_mod.run_demo(info, user=args.user, messages=args.message or None)
        return not args.once

    return serve_stack(args, demo)


def _password(args: argparse.Namespace) -> str:
    if args.password is not None:
        return str(args.password)
    env = os.environ.get("OMNI_TRACE_PASSWORD")
    if env:
        return env
    demo = StackInfo.read(args.stack_file).demo_passwords
    if args.user in demo:
        return demo[args.user]
    raise ChatError(
        f"no password for {args.user!r} (not one of the stack's demo users: "
        f"{', '.join(demo) or 'none'}): pass --password or set OMNI_TRACE_PASSWORD"
    )


def cmd_token(args: argparse.Namespace) -> int:
    info = StackInfo.read(args.stack_file)
    print(asyncio.run(login(info.dashboard_url, args.user, _password(args))))
    return 0


def cmd_chat(args: argparse.Namespace) -> int:
    info = StackInfo.read(args.stack_file)
    provider = create_tracer_provider(Service.CHAT_CLIENT, otlp_endpoint=info.otlp_http_endpoint)

    async def chat() -> int:
        token = await login(info.dashboard_url, args.user, _password(args))
        failures = 0
        async with open_chat(info.dashboard_ws_url, token, tracer_provider=provider) as conn:
            print(f"connected as {args.user}, conversation {conn.conversation_id}", file=sys.stderr)
            for text in args.text:
                print(f"> {text}", file=sys.stderr)
                reply = await conn.send(text, on_token=lambda t: print(t, end="", flush=True))
                print()
                for frame in reply.frames:
                    if frame.get("type") == "warning":
                        print(f"warning: {frame.get('warning')}", file=sys.stderr)
                if not reply.ok:
                    failures += 1
                    print(f"error: {reply.error}", file=sys.stderr)
                print(f"trace_id {reply.trace_id}", file=sys.stderr)
                print(f"  {info.jaeger_query_url}/api/traces/{reply.trace_id}", file=sys.stderr)
        return 1 if failures else 0

    try:
        code = asyncio.run(chat())
    finally:
        provider.force_flush(3000)
        provider.shutdown()
    return code


def _jaeger_url(args: argparse.Namespace) -> str:
    return str(args.jaeger or StackInfo.read(args.stack_file).jaeger_query_url)


def _spec(args: argparse.Namespace) -> ChainSpec:
    spec = load_spec(args.spec) if args.spec else default_spec()
    return spec.requiring(args.require) if args.require else spec


def _flow_view(args: argparse.Namespace) -> str | None:
    """The running stack's flow view, when these traces are that stack's (not --jaeger's)."""
    if args.jaeger:
        return None
    return StackInfo.read(args.stack_file).flowview_url or None


def parse_duration(text: str) -> float:
    """`90`, `90s`, `15m`, `2h`, `1d` -> seconds."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    try:
        if text[-1:] in units:
            return float(text[:-1]) * units[text[-1]]
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (e.g. 90s, 15m, 2h)") from None


def cmd_audit(args: argparse.Namespace) -> int:
    query = AuditQuery(
        conversation_id=args.conversation, user_id=args.user, since_s=args.since, limit=args.limit
    )
    spec = _spec(args)
    # A baseline that cannot be read is a usage error (exit 2), found before Jaeger is asked.
    if args.tolerance < 0 or args.min_ms < 0:
        print("omni-trace: --tolerance and --min-ms cannot be negative", file=sys.stderr)
        return 2
    try:
        baseline = Baseline.load(Path(args.baseline)) if args.baseline else None
    except BaselineError as err:
        print(f"omni-trace: {err}", file=sys.stderr)
        return 2
    jaeger_url = _jaeger_url(args)
    with JaegerClient(jaeger_url) as jaeger:
        reports = audit.run_audit(jaeger, query, _progress, settle_s=args.settle, spec=spec)
        sampled_out = audit.find_sampled_out(jaeger, query, spec)
    for report in reports:
        report.judge_stall(args.stall_ms)
    flow_view = _flow_view(args)
    comparison = (
        compare_baseline(baseline, reports, args.tolerance, args.min_ms) if baseline else None
    )
    if args.save_baseline:
        source = {"jaeger": jaeger_url, "query": query.describe(), "spec": spec.name}
        try:
            Baseline.of(reports, source).save(Path(args.save_baseline))
        except OSError as err:
            print(f"omni-trace: cannot write baseline {args.save_baseline}: {err}", file=sys.stderr)
            return 2
        _progress(f"baseline of {len(reports)} message(s) written to {args.save_baseline}")
    if args.json:
        rendered = audit.render_json(reports, flow_view, sampled_out)
        if comparison is not None:
            found = json.loads(rendered)
            found["baseline_comparison"] = comparison.as_dict()
            rendered = json.dumps(found, indent=2)
        print(rendered)
    else:
        print(audit.render_table(reports, spec))
        letters = ", ".join(f"{name[0].upper()} {name}" for name in spec.layer_names)
        print(f"\nlayers ({spec.name}): {letters} (. not traced, - missing); latencies in ms")
        print(audit.summary(reports))
        if stalls := audit.render_stalls(reports):
            print(stalls)
        if sampled_out:
            print(audit.sampling_note(sampled_out))
        if flow_view and reports:
            print(audit.render_links(reports, flow_view))
        if comparison is not None:
            print()
            print(render_baseline(comparison))
    if not reports:
        _progress(f"no message traces found for {query.describe()}")
    if comparison is not None and comparison.regressions:
        for regression in comparison.regressions:
            _progress(f"omni-trace: {regression}")
        return 1
    return audit.exit_code(reports, query, args.allow_errors, sampled_out)


def _latest_message_trace(jaeger: JaegerClient, spec: ChainSpec) -> str:
    candidates: list[tuple[int, str]] = []
    services = set(jaeger.services())
    for service, operation in spec.message_spans:
        if service in services:
            for trace_id in jaeger.find_trace_ids(service, operation=operation, limit=20):
                spans = jaeger.get_trace(trace_id)
                if spans:
                    candidates.append((spans[0].start_ns, trace_id))
    if not candidates:
        raise JaegerError("no message traces in Jaeger yet: chat first (`omni-trace chat ...`)")
    return max(candidates)[1]


def cmd_trace_show(args: argparse.Namespace) -> int:
    width = args.width or shutil.get_terminal_size((120, 40)).columns
    spec = _spec(args)
    with JaegerClient(_jaeger_url(args)) as jaeger:
        last = args.trace_id == "last"
        trace_id = _latest_message_trace(jaeger, spec) if last else args.trace_id
        spans = jaeger.get_trace(trace_id)
        if not spans:
            raise JaegerError(f"trace {trace_id} not found in Jaeger")
        report = analyze_chain(spans, jaeger.get_trace, spec)
        path = critical_path(spans)
        if args.json:
            print(
                json.dumps(
                    {
                        "trace_id": trace_id,
                        "chain": report.as_dict(),
                        "critical_path": path.as_dict(),
                    },
                    indent=2,
                )
            )
            return 1 if report.broken else 0
        print(render_waterfall(spans, width, f"message trace {trace_id}", path.span_ids))
        for session_id in report.session_trace_ids:
            print()
            print(
                render_waterfall(
                    jaeger.get_trace(session_id), width, f"linked session trace {session_id}"
                )
            )
    hops = ", ".join(f"{k} {v:.1f} ms" for k, v in report.hops.items() if v is not None)
    print(f"\nhops: {hops}\nchain: {report.status}")
    if report.streams:
        print(render_streams(report.streams, list(report.layers), report.stall))
    # `*` in the waterfall: the spans on it.
    print(render_path(path))
    flow_view = _flow_view(args)
    if flow_view:
        print(f"flow view: {audit.flow_view_url(flow_view, trace_id)}")
    return 1 if report.broken else 0


def cmd_trace_diff(args: argparse.Namespace) -> int:
    spec = _spec(args)
    with JaegerClient(_jaeger_url(args)) as jaeger:
        traces, reports = [], []
        for trace_id in (args.a, args.b):
            spans = jaeger.get_trace(trace_id)
            if not spans:
                raise JaegerError(f"trace {trace_id} not found in Jaeger")
            traces.append(spans)
            reports.append(analyze_chain(spans, jaeger.get_trace, spec))
    diff = diff_traces(traces[0], traces[1], reports[0], reports[1])
    print(json.dumps(diff.as_dict(), indent=2) if args.json else render_diff(diff))
    return 0


DOCTOR_WINDOW_S = 900.0
DOCTOR_DESCRIPTION = """\
Probe this project's running stack: check each layer, log in, send a probe
message, and read its traces to report where the chain breaks: connection
refused at which hop, authentication failed and why, or which layer went quiet.

From traces alone, on any stack (given --jaeger, --spec, --trace,
--conversation or --since): no probe is sent. The messages already in Jaeger
(default: the last 15 minutes) are read by the chain spec, and each way they
broke or failed is named with its hop, its cause (the missing span, or the
deepest error span) and its traces.

Exits 1 when a chain is broken (from traces: or a message failed), 2 on a bad
spec or an unreachable Jaeger.
"""


def _doctor_token(args: argparse.Namespace) -> str | None:
    """The JWT to probe with, if given: a file (or - for stdin), the environment, or --token.
    A token lets the doctor probe as anyone, a user OMNI2 does not know included."""
    if args.token_file is not None:
        text = sys.stdin.read() if args.token_file == "-" else Path(args.token_file).read_text()
        return text.strip() or None
    return args.token or os.environ.get("OMNI_TRACE_TOKEN") or None


def _doctor_from_traces(args: argparse.Namespace) -> int:
    """The doctor on traces alone: any stack's Jaeger, read by its spec; no probe is sent."""
    spec = _spec(args)
    with JaegerClient(_jaeger_url(args)) as jaeger:
        if args.trace:
            spans = jaeger.get_trace(args.trace)
            if not spans:
                raise JaegerError(f"trace {args.trace} not found in Jaeger")
            reports, scope = [analyze_chain(spans, jaeger.get_trace, spec)], f"trace {args.trace}"
        else:
            query = AuditQuery(
                conversation_id=args.conversation,
                user_id=args.user,
                since_s=args.since or DOCTOR_WINDOW_S,
            )
            reports = audit.run_audit(jaeger, query, _progress, spec=spec)
            scope = query.describe()
    if not reports:
        _progress(f"no message traces found for {scope}: nothing to diagnose")
        return 1
    print(diagnosis.render(reports, spec, scope))
    return 1 if any(r.broken or r.errors for r in reports) else 0


def cmd_doctor(args: argparse.Namespace) -> int:
    if args.jaeger or args.spec or args.trace or args.conversation or args.since:
        return _doctor_from_traces(args)
    info = StackInfo.read(args.stack_file)
    token = _doctor_token(args)
    args.user = args.user or "alice"
    password = "" if token else _password(args)
    result = doctor.diagnose(
        info,
        user=args.user,
        password=password,
        token=token,
        timeout=args.timeout,
        progress=_progress,
    )
    print(result.render())
    return 0 if result.healthy else 1


def cmd_bench(args: argparse.Namespace) -> int:
    if args.scale:
        return cmd_bench_scale(args)
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
    report = bench_rounds.run_bench(cfg, Path(args.run_dir), _progress)
    print(report.to_json() if args.json else bench_render.render(report))
    return 1 if report.lost else 0


def _holds_password(url: str | None) -> bool:
    try:
        return url is not None and urlsplit(url).password is not None
    except ValueError:
        return False  # not a URL: the database layer says so


def cmd_bench_scale(args: argparse.Namespace) -> int:
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
    report = bench_scale.run_scale_bench(cfg, Path(args.run_dir), _progress)
    print(report.to_json() if args.json else scale_report.render(report))
    return 0 if report.zero_lost else 1


def cmd_names(args: argparse.Namespace) -> int:
    if args.lint:
        return cmd_names_lint(args)
    print(telemetry_markdown(), end="")
    return 0


def cmd_names_lint(args: argparse.Namespace) -> int:
    """Exit 1 when a span carries a deprecated or unknown GenAI/MCP name, 0 when clean, 2 when
    Jaeger cannot be read."""
    import httpx

    from omni_trace.traces.names_lint import lint_jaeger

    if args.minutes <= 0 or args.span_limit < 1 or args.traces < 1:
        print(
            "omni-trace names --lint: --minutes, --span-limit and --traces must be positive",
            file=sys.stderr,
        )
        return 2
    try:
        url = _jaeger_url(args)
    except (OSError, ValueError) as err:
        print(
            f"omni-trace names --lint: no --jaeger URL and no running stack ({err})",
            file=sys.stderr,
        )
        return 2
    try:
        with JaegerClient(url, timeout=args.timeout) as client:
            result = lint_jaeger(
                client,
                minutes=args.minutes,
                span_limit=args.span_limit,
                traces_per_service=args.traces,
                services=args.service or (),
            )
    except (JaegerError, httpx.HTTPError, ValueError) as err:
        print(
            f"omni-trace names --lint: cannot read spans from Jaeger at {url}: {err}",
            file=sys.stderr,
        )
        return 2
    print(result.render(), end="")
    return 1 if result.findings else 0


def cmd_dashboards(args: argparse.Namespace) -> int:
    # Imported here: only this command needs Grafana's SDK (the stack extra), and other
    # commands start faster without it.
    require_stack_packages("omni-trace dashboards")
    from omni_trace import dashboards

    if args.check:
        stale = dashboards.stale(REPO_ROOT)
        for path in stale:
            print(f"{path}: not what the code generates; run: omni-trace dashboards")
        return 1 if stale else 0
    for path in dashboards.write(REPO_ROOT):
        print(f"wrote {path}")
    return 0


def cmd_build_jaeger(args: argparse.Namespace) -> int:
    print(ensure_jaeger(_progress, StackSettings().jaeger_bin))
    return 0


def cmd_build_kafka(args: argparse.Namespace) -> int:
    print(ensure_kafka(_progress))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="omni-trace",
        description=(
            "Run the OMNI2 WebSocket chat stack (browser/client, dashboard backend, Traefik "
            "with JWT ForwardAuth, OMNI2) fully traced with OpenTelemetry, so that every chat "
            "message is one trace in Jaeger across every layer."
        ),
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def stack_file(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--stack-file",
            type=Path,
            default=DEFAULT_STACK_FILE,
            help=f"JSON file describing the running stack (default {DEFAULT_STACK_FILE})",
        )

    def starter(p: argparse.ArgumentParser) -> None:
        stack_file(p)
        p.add_argument(
            "--free-ports",
            action="store_true",
            help="pick free ports instead of the defaults (3001, 8091, 8090, 8700, 8000, "
            "4317/4318/4319, 16686)",
        )
        p.add_argument(
            "--run-dir", default="var", help="where configs and logs of this run go (default var/)"
        )
        p.add_argument(
            "--database",
            choices=["sqlite", "postgres"],
            help="OMNI2's database: sqlite (default, in the run dir) or postgres (a PostgreSQL "
            "server the runner starts and stops, Debian's binaries; OMNI_TRACE_DATABASE). "
            "OMNI_TRACE_DATABASE_URL names another database instead",
        )
        p.add_argument(
            "--omni2-replicas",
            type=int,
            choices=[1, 2],
            help="OMNI2 processes behind Traefik's load balancer (default 1; with 2 they share "
            "the per-user connection limit through the database; OMNI_TRACE_OMNI2_REPLICAS)",
        )
        p.add_argument(
            "--dashboard-replicas",
            type=int,
            choices=[1, 2],
            help="dashboard processes (default 1; with 2, Traefik's front entry point takes the "
            "dashboard's address and balances between them; OMNI_TRACE_DASHBOARD_REPLICAS)",
        )
        p.add_argument(
            "--scale",
            action="store_true",
            default=None,
            help="the scale-out profile: --trace-pipeline kafka --database postgres "
            "--omni2-replicas 2 --dashboard-replicas 2, each overridable (OMNI_TRACE_SCALE)",
        )
        p.add_argument(
            "--conversation-sample-ratio",
            type=float,
            metavar="R",
            help="with the Kafka pipeline: keep each conversation with probability R (0..1), "
            "whole, in the ingesters' tail sampling; failed, refused, slow and broken messages "
            "always (OMNI_TRACE_CONVERSATION_SAMPLE_RATIO; docs/sampling.md)",
        )
        p.add_argument(
            "--trace-pipeline",
            choices=["memory", "kafka"],
            help="memory (default): one Jaeger, traces in memory. kafka: two collectors, a Kafka "
            "broker, two ingesters, a persistent Badger store and a query service (the "
            "scale-out pipeline; OMNI_TRACE_TRACE_PIPELINE)",
        )

    up = sub.add_parser(
        "up",
        help="start Jaeger, auth, OMNI2, Traefik, the dashboard and the chat page",
        description="Start every layer as a local process, wait until each is "
        "ready, write the stack file, print the URLs (the chat page first), and run until "
        "Ctrl-C or SIGTERM.",
    )
    starter(up)
    up.set_defaults(func=cmd_up)

    demo = sub.add_parser(
        "demo",
        help="start the stack, chat, and show each message's trace",
        description="Bring the stack up, send a few messages, print each "
        "message's trace (services, spans, durations) and the session trace.",
    )
    starter(demo)
    demo.add_argument("--once", action="store_true", help="stop the stack after the demo")
    demo.add_argument("--user", default="alice", help="demo user (default alice)")
    demo.add_argument(
        "--message",
        action="append",
        help="a message to send (repeatable; default: a short scripted chat)",
    )
    demo.set_defaults(func=cmd_demo)

    chat = sub.add_parser(
        "chat",
        help="chat through a running stack as the client layer",
        description="Log in, connect through the dashboard (token and "
        "traceparent in the query string, trace context in each frame), "
        "stream each answer and print its trace id.",
    )
    chat.add_argument("text", nargs="+", help="message(s) to send, in order, on one connection")
    chat.add_argument("--user", default="alice", help="user to log in as (default alice)")
    chat.add_argument(
        "--password", help="password (default: the demo user's, or $OMNI_TRACE_PASSWORD)"
    )
    stack_file(chat)
    chat.set_defaults(func=cmd_chat)

    token = sub.add_parser("token", help="log in and print a JWT (for scripts)")
    token.add_argument("--user", default="alice", help="user to log in as (default alice)")
    token.add_argument("--password", help="password (default: the demo user's)")
    stack_file(token)
    token.set_defaults(func=cmd_token)

    def jaeger_source(p: argparse.ArgumentParser) -> None:
        stack_file(p)
        p.add_argument(
            "--jaeger",
            metavar="URL",
            help="Jaeger query URL (default: the running stack's, from the stack file)",
        )
        p.add_argument(
            "--spec",
            metavar="FILE",
            help="the chain spec of the stack whose traces these are (YAML; default: this "
            "project's stack, omni_trace/traces/specs/omni2.yaml; see docs/toolkit.md)",
        )
        p.add_argument(
            "--require",
            metavar="LAYER",
            action="append",
            help="expect this layer in every message even when the first hop recorded that "
            "it was not traced (e.g. `--require client` once every client is instrumented: a "
            "client that sent no trace context is then a broken chain); repeatable",
        )

    aud = sub.add_parser(
        "audit",
        help="prove every message's chain is whole, or say where it broke",
        description="For a conversation, a user or a time window: each message with the layers "
        "present (client, dashboard, traefik through the link, omni2), per-hop latency, and each "
        "broken chain with its reason. A client that sent no trace context is shown as not "
        "traced (`.`) and its chain judged from the first layer traced; one whose span was "
        "lost breaks the chain. Spans from the browsers' public telemetry path count only as "
        "the client's. Exits 1 if a chain is broken (or has an error span, unless "
        "--allow-errors), so it can gate CI.",
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
    jaeger_source(aud)
    aud.set_defaults(func=cmd_audit)

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
    jaeger_source(show)
    show.set_defaults(func=cmd_trace_show)
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
    jaeger_source(diff)
    diff.set_defaults(func=cmd_trace_diff)

    doc = sub.add_parser(
        "doctor",
        help="find where the chat chain breaks",
        description=DOCTOR_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    doc.add_argument(
        "--user",
        help="the probe's user (default alice); from traces: only this user's messages",
    )
    doc.add_argument("--trace", metavar="ID", help="from traces: diagnose this message trace")
    doc.add_argument("--conversation", help="from traces: this conversation's messages")
    doc.add_argument(
        "--since",
        type=parse_duration,
        help="from traces: how far back to look (default 15m)",
    )
    doc.add_argument(
        "--password", help="password (default: OMNI_TRACE_PASSWORD, or the demo user's)"
    )
    doc.add_argument(
        "--token-file",
        metavar="PATH",
        help="probe with the JWT in this file (- reads stdin) instead of logging in; "
        "OMNI_TRACE_TOKEN works too. A token can name a user the dashboard cannot log in",
    )
    doc.add_argument(
        "--token", help="probe with this JWT (visible in the process list: prefer --token-file)"
    )
    doc.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for answers")
    jaeger_source(doc)
    doc.set_defaults(func=cmd_doctor)

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
    bench.set_defaults(func=cmd_bench)

    names = sub.add_parser("names", help="print the table of span names and attributes")
    names.add_argument("--markdown", action="store_true", help="the table (the default; for docs)")
    names.add_argument(
        "--lint",
        action="store_true",
        help="check a Jaeger's recent spans for deprecated or unknown GenAI/MCP attribute names "
        "(exit 1 when found, 2 when Jaeger cannot be read)",
    )
    stack_file(names)
    names.add_argument(
        "--jaeger", metavar="URL", help="with --lint: Jaeger query URL (default: the stack's)"
    )
    names.add_argument(
        "--minutes", type=float, default=60.0, help="with --lint: how far back (default 60)"
    )
    names.add_argument(
        "--span-limit",
        type=int,
        default=20_000,
        help="with --lint: read at most this many spans (default 20000)",
    )
    names.add_argument(
        "--traces",
        type=int,
        default=200,
        help="with --lint: the newest traces read per service (default 200)",
    )
    names.add_argument(
        "--service",
        action="append",
        metavar="NAME",
        help="with --lint: only this service's spans (repeatable; default: every service)",
    )
    names.add_argument(
        "--timeout", type=float, default=10.0, help="with --lint: seconds per Jaeger request"
    )
    names.set_defaults(func=cmd_names)
    boards = sub.add_parser(
        "dashboards",
        help="write the Grafana dashboards and the Jaeger UI's links (built in code)",
        description="Build the Grafana dashboards from omni_trace/dashboards.py with Grafana's "
        "Foundation SDK and write them to dashboards/ (compose's Grafana provisions them from "
        "there), and the Jaeger UI's link patterns to the flow view to compose/jaeger-ui.json.",
    )
    boards.add_argument(
        "--check", action="store_true", help="write nothing; exit 1 if a file is out of date"
    )
    boards.set_defaults(func=cmd_dashboards)
    users_mod.add_parser(sub)

    build = sub.add_parser("build-jaeger", help="build (or find) the cached Jaeger binary")
    build.set_defaults(func=cmd_build_jaeger)
    kafka = sub.add_parser(
        "build-kafka",
        help="fetch (or find) the cached Kafka broker of the scale-out trace pipeline",
        description="Fetch the Apache Kafka broker's jars from Maven Central with Maven "
        "(tools/kafka/pom.xml) into ~/.cache/omni-trace/kafka/<hash of the pom>/, once.",
    )
    kafka.set_defaults(func=cmd_build_kafka)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    signal.signal(signal.SIGTERM, _raise_stop)
    try:
        return int(args.func(args))
    except (
        StackError,
        ChatError,
        JaegerError,
        JaegerBuildError,
        KafkaBuildError,
        PostgresUnavailable,
        SpecError,
    ) as err:
        print(f"omni-trace: {err}", file=sys.stderr)
        return 2
    except ValidationError as err:  # an option or OMNI_TRACE_* variable out of range
        for problem in err.errors():
            where = ".".join(str(part) for part in problem["loc"])
            message = str(problem["msg"]).removeprefix("Value error, ")
            print(f"omni-trace: {f'{where}: ' if where else ''}{message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
