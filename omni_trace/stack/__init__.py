"""This project's stack: plan it (plan/), start it (runner), chat through it (client);
`omni_trace.doctor` checks it and `omni_trace.bench` measures it. Uses `omni_trace.traces`;
the services themselves run as processes and need the `stack` extra."""

from omni_trace.stack.errors import StackError
from omni_trace.stack.info import StackInfo, stack_summary
from omni_trace.stack.runner import Stack

__all__ = ["Stack", "StackError", "StackInfo", "stack_summary"]
