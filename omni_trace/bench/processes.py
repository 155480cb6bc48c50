"""CPU time and memory of the stack's processes, read from /proc, and of this process (it
plays the clients)."""

from __future__ import annotations

import os
import resource
from dataclasses import dataclass
from pathlib import Path

from omni_trace.stack.runner import Stack

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class ProcessSample:
    cpu_s: float  # user + system time since the process started
    rss_mb: float
    peak_rss_mb: float


def sample_process(pid: int) -> ProcessSample | None:
    """CPU time and memory of a process from /proc (None once it is gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()  # the name may hold spaces: split after it
    cpu = (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS
    memory = {
        line.split(":")[0]: int(line.split()[1]) / 1024
        for line in status.splitlines()
        if line.startswith(("VmRSS:", "VmHWM:"))
    }
    return ProcessSample(cpu, memory.get("VmRSS", 0.0), memory.get("VmHWM", 0.0))


def sample_stack(stack: Stack) -> dict[str, ProcessSample]:
    samples = {name: sample_process(pid) for name, pid in stack.pids().items()}
    return {name: s for name, s in samples.items() if s is not None}


def own_cpu_s() -> float:
    times = os.times()
    return times.user + times.system


def cpu_spent(
    before: dict[str, ProcessSample], after: dict[str, ProcessSample]
) -> dict[str, float]:
    """CPU seconds each process spent between two samples."""
    return {name: after[name].cpu_s - before[name].cpu_s for name in after if name in before}


def raise_fd_limit() -> None:
    """A burst holds thousands of sockets across the bench and the stack's processes."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
