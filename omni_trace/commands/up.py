"""`omni-trace up`: start every layer as a local process and serve until Ctrl-C or SIGTERM.
The stack options and the serving loop are `demo`'s too."""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from omni_trace.commands.common import Stop, add_stack_file, progress
from omni_trace.stack.errors import StackError
from omni_trace.stack.info import StackInfo, stack_summary
from omni_trace.stack.ports import (
    DASHBOARD_REPLICA_PORTS,
    JAEGER_PORTS,
    PIPELINE_PORTS,
    POSTGRES_PORTS,
    REPLICA_PORTS,
    Ports,
    busy_ports,
)
from omni_trace.stack.runner import Stack, require_stack_packages
from omni_trace.stack.settings import StackSettings

# The options a starter takes that StackSettings also reads from OMNI_TRACE_* variables.
SETTINGS_OPTIONS = (
    "scale",
    "trace_pipeline",
    "database",
    "omni2_replicas",
    "dashboard_replicas",
    "conversation_sample_ratio",
)


def add_parser(sub: Any) -> None:
    up = sub.add_parser(
        "up",
        help="start Jaeger, auth, OMNI2, Traefik, the dashboard and the chat page",
        description="Start every layer as a local process, wait until each is "
        "ready, write the stack file, print the URLs (the chat page first), and run until "
        "Ctrl-C or SIGTERM.",
    )
    add_starter_options(up)
    up.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    return serve_stack(args)


def add_starter_options(p: argparse.ArgumentParser) -> None:
    add_stack_file(p)
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
    _add_replica_options(p)
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


def _add_replica_options(p: argparse.ArgumentParser) -> None:
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


def _ports(settings: StackSettings, free: bool) -> Ports:
    """The default ports, refused when one is taken (only those this stack uses), or free ones."""
    if free:
        return Ports.free(settings.host)
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
    return ports


def start_stack(args: argparse.Namespace) -> Stack:
    # Options win over the environment (OMNI_TRACE_*); --scale sets what it names unless an
    # option or variable sets it too.
    given = {
        name: getattr(args, name) for name in SETTINGS_OPTIONS if getattr(args, name) is not None
    }
    settings = StackSettings(**given)
    _check_not_running(args.stack_file)
    ports = _ports(settings, args.free_ports)
    stack = Stack(Path(args.run_dir), ports, settings, progress=progress)
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
            progress(f"warning: {name} exited; last lines of its log:\n{stack.log_tail(name)}")


def serve_stack(args: argparse.Namespace, then: Callable[[StackInfo], bool] | None = None) -> int:
    """Start the stack, run `then` (False: stop right away), keep serving until a signal."""
    # Before the ports: without the stack's packages nothing else about starting one matters.
    require_stack_packages("starting a stack")
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
    except (KeyboardInterrupt, Stop):
        progress("\nstopping ...")
    finally:
        stack.stop()
        args.stack_file.unlink(missing_ok=True)
    return 0
