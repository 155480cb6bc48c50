"""The scale bench's report as dataclasses: its JSON and its table as they were."""

from __future__ import annotations

import json

from omni_trace.bench.scale_report import ScaleReport, render
from tests.omni_trace.bench.keys import DATA, key_paths


def test_a_stored_scale_report_reads_back_and_renders_as_before() -> None:
    # A report by hand in the bench's shape (2 rounds, a lost message, a late sample), and
    # the table the bench printed for it before its reports were dataclasses.
    stored = json.loads((DATA / "scale_report.json").read_text())
    report = ScaleReport.from_dict(stored)
    assert key_paths(report.to_dict()) == key_paths(stored)
    assert json.dumps(report.to_dict()) == json.dumps(stored)
    assert render(report) + "\n" == (DATA / "scale_report.txt").read_text()
    assert not report.zero_lost and report.burst.traces.broken
