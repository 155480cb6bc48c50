"""CPU and memory of processes, from /proc."""

from __future__ import annotations

import os

from omni_trace.bench.processes import sample_process


def test_process_samples_come_from_proc() -> None:
    sample = sample_process(os.getpid())
    assert sample is not None
    assert sample.cpu_s > 0 and 0 < sample.rss_mb <= sample.peak_rss_mb
    assert sample_process(2**22 + 12345) is None  # no such process
