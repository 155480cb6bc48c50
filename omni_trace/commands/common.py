"""What several commands share: progress on stderr, the stack file and Jaeger options, the
chain spec they read traces by, the demo users' passwords, durations, and SIGTERM as a stop."""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path
from types import FrameType

from omni_trace.errors import CliError
from omni_trace.stack.info import StackInfo
from omni_trace.stack.paths import DEFAULT_STACK_FILE
from omni_trace.traces.spec import ChainSpec, default_spec, load_spec


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class Stop(Exception):
    """SIGTERM, raised where the process is, so that a running stack stops as on Ctrl-C."""


def raise_stop(signum: int, frame: FrameType | None) -> None:
    raise Stop(signal.Signals(signum).name)


def add_stack_file(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--stack-file",
        type=Path,
        default=DEFAULT_STACK_FILE,
        help=f"JSON file describing the running stack (default {DEFAULT_STACK_FILE})",
    )


def add_jaeger_source(p: argparse.ArgumentParser) -> None:
    """Where the traces are read from, and by which chain spec."""
    add_stack_file(p)
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


def jaeger_url(args: argparse.Namespace) -> str:
    return str(args.jaeger or StackInfo.read(args.stack_file).jaeger_query_url)


def spec(args: argparse.Namespace) -> ChainSpec:
    found = load_spec(args.spec) if args.spec else default_spec()
    return found.requiring(args.require) if args.require else found


def flow_view(args: argparse.Namespace) -> str | None:
    """The running stack's flow view, when these traces are that stack's (not --jaeger's)."""
    if args.jaeger:
        return None
    return StackInfo.read(args.stack_file).flowview_url or None


def password(args: argparse.Namespace) -> str:
    """--password, else OMNI_TRACE_PASSWORD, else the stack's demo user's."""
    if args.password is not None:
        return str(args.password)
    env = os.environ.get("OMNI_TRACE_PASSWORD")
    if env:
        return env
    demo = StackInfo.read(args.stack_file).demo_passwords
    if args.user in demo:
        return demo[args.user]
    raise CliError(
        f"no password for {args.user!r} (not one of the stack's demo users: "
        f"{', '.join(demo) or 'none'}): pass --password or set OMNI_TRACE_PASSWORD"
    )


def parse_duration(text: str) -> float:
    """`90`, `90s`, `15m`, `2h`, `1d` -> seconds."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    try:
        if text[-1:] in units:
            return float(text[:-1]) * units[text[-1]]
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (e.g. 90s, 15m, 2h)") from None
