"""The one base of the failures a user can act on from their message alone (a stack already
running, a Jaeger that does not answer, a spec that does not parse, ...). It sits below the
toolkit, the stack and the CLI alike, so that each raises its own error and `omni-trace`
catches one class: it prints `<prog>: <message>` and exits 2. It imports nothing, so the
toolkit stays free of the stack and the CLI."""

from __future__ import annotations


class CliError(Exception):
    """A clear, user-facing failure: `omni-trace` prints `prog: message` and exits 2.

    `prog` names the command in the message (`omni-trace names --lint: ...`); the default is
    the program's name."""

    def __init__(self, message: str, *, prog: str = "omni-trace") -> None:
        super().__init__(message)
        self.prog = prog
