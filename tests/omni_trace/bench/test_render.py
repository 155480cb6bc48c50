"""The on/off bench's table."""

from __future__ import annotations

import json

from omni_trace.bench.render import render
from omni_trace.bench.report import BenchReport
from tests.omni_trace.bench.keys import DATA


def test_a_stored_report_renders_as_the_bench_rendered_it_before() -> None:
    # bench_report.txt: bench_report.json as the bench printed it before its reports were
    # dataclasses (the same rows, figures, targets and slowest messages).
    report = BenchReport.from_dict(json.loads((DATA / "bench_report.json").read_text()))
    assert render(report) + "\n" == (DATA / "bench_report.txt").read_text()
