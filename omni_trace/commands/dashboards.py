"""`omni-trace dashboards`: write (or --check) the Grafana dashboards and the Jaeger UI's links,
built in code by omni_trace/grafana.py."""

from __future__ import annotations

import argparse
from typing import Any

from omni_trace.stack.paths import REPO_ROOT
from omni_trace.stack.runner import require_stack_packages


def add_parser(sub: Any) -> None:
    boards = sub.add_parser(
        "dashboards",
        help="write the Grafana dashboards and the Jaeger UI's links (built in code)",
        description="Build the Grafana dashboards from omni_trace/grafana.py with Grafana's "
        "Foundation SDK and write them to grafana/dashboards/ (compose's Grafana provisions "
        "them from there), and the Jaeger UI's link patterns to the flow view to "
        "compose/jaeger-ui.json.",
    )
    boards.add_argument(
        "--check", action="store_true", help="write nothing; exit 1 if a file is out of date"
    )
    boards.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    # Imported here: only this command needs Grafana's SDK (the stack extra), and other
    # commands start faster without it.
    require_stack_packages("omni-trace dashboards")
    from omni_trace import grafana

    if args.check:
        stale = grafana.stale(REPO_ROOT)
        for path in stale:
            print(f"{path}: not what the code generates; run: omni-trace dashboards")
        return 1 if stale else 0
    for path in grafana.write(REPO_ROOT):
        print(f"wrote {path}")
    return 0
