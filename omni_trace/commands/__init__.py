"""`omni-trace`'s commands, one module per command or command group. Each has
`add_parser(sub)`, which adds its subparser(s) with `func=run`, and `run(args) -> int`, the
exit code. A clear failure raises `omni_trace.errors.CliError` (or an error derived from it);
`omni_trace.cli.main` prints it and exits 2."""

from __future__ import annotations

from types import ModuleType

from omni_trace.commands import (
    audit,
    bench,
    build,
    chat,
    dashboards,
    demo,
    doctor,
    names,
    token,
    trace,
    up,
    users,
)

# In the order `omni-trace --help` lists them.
COMMANDS: tuple[ModuleType, ...] = (
    up,
    demo,
    chat,
    token,
    audit,
    trace,
    doctor,
    bench,
    names,
    dashboards,
    users,
    build,
)
