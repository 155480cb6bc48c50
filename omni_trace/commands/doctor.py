"""`omni-trace doctor`: where does the chain break? A probe through this project's running
stack (omni_trace/doctor/probe.py), or, given a Jaeger, a spec, a trace, a conversation or a
window, a diagnosis from the traces alone (omni_trace/doctor/findings.py)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from omni_trace.commands.common import (
    add_jaeger_source,
    jaeger_url,
    parse_duration,
    password,
    progress,
    spec,
)
from omni_trace.doctor import findings, probe
from omni_trace.stack.info import StackInfo
from omni_trace.traces import audit
from omni_trace.traces.audit import AuditQuery
from omni_trace.traces.chain import analyze_chain
from omni_trace.traces.jaeger import JaegerClient, JaegerError

WINDOW_S = 900.0
DESCRIPTION = """\
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


def add_parser(sub: Any) -> None:
    doc = sub.add_parser(
        "doctor",
        help="find where the chat chain breaks",
        description=DESCRIPTION,
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
    add_jaeger_source(doc)
    doc.set_defaults(func=run)


def token(args: argparse.Namespace) -> str | None:
    """The JWT to probe with, if given: a file (or - for stdin), the environment, or --token.
    A token lets the doctor probe as anyone, a user OMNI2 does not know included."""
    if args.token_file is not None:
        text = sys.stdin.read() if args.token_file == "-" else Path(args.token_file).read_text()
        return text.strip() or None
    return args.token or os.environ.get("OMNI_TRACE_TOKEN") or None


def run(args: argparse.Namespace) -> int:
    if args.jaeger or args.spec or args.trace or args.conversation or args.since:
        return _from_traces(args)
    info = StackInfo.read(args.stack_file)
    jwt = token(args)
    args.user = args.user or "alice"
    result = probe.diagnose(
        info,
        user=args.user,
        password="" if jwt else password(args),
        token=jwt,
        timeout=args.timeout,
        progress=progress,
    )
    print(result.render())
    return 0 if result.healthy else 1


def _from_traces(args: argparse.Namespace) -> int:
    """The doctor on traces alone: any stack's Jaeger, read by its spec; no probe is sent."""
    chain_spec = spec(args)
    with JaegerClient(jaeger_url(args)) as jaeger:
        if args.trace:
            spans = jaeger.get_trace(args.trace)
            if not spans:
                raise JaegerError(f"trace {args.trace} not found in Jaeger")
            reports, scope = (
                [analyze_chain(spans, jaeger.get_trace, chain_spec)],
                f"trace {args.trace}",
            )
        else:
            query = AuditQuery(
                conversation_id=args.conversation,
                user_id=args.user,
                since_s=args.since or WINDOW_S,
            )
            reports = audit.run_audit(jaeger, query, progress, spec=chain_spec)
            scope = query.describe()
    if not reports:
        progress(f"no message traces found for {scope}: nothing to diagnose")
        return 1
    print(findings.render(reports, chain_spec, scope))
    return 1 if any(r.broken or r.errors for r in reports) else 0
