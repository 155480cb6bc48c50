"""The stack's one error: a stack that cannot start, or a stack file that cannot be read."""

from __future__ import annotations

from omni_trace.errors import CliError


class StackError(CliError, RuntimeError):
    pass
