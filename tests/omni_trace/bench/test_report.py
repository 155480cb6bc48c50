"""The on/off bench's report as dataclasses: its JSON is the one today's users read."""

from __future__ import annotations

import json

from omni_trace.bench.load import Sample
from omni_trace.bench.phases import steady_report
from omni_trace.bench.report import BenchReport
from tests.omni_trace.bench.keys import DATA, key_paths


def _stored() -> dict[str, object]:
    # A full run's report (2 rounds, both bursts, the stack as `up` runs it), written by the
    # bench before its reports were dataclasses; samples and spans cut to a few each.
    stored: dict[str, object] = json.loads((DATA / "bench_report.json").read_text())
    return stored


def test_a_stored_report_reads_back_into_the_same_json() -> None:
    stored = _stored()
    report = BenchReport.from_dict(stored)
    assert key_paths(report.to_dict()) == key_paths(stored)
    assert json.dumps(report.to_dict()) == json.dumps(stored)  # values and key order too
    assert json.loads(report.to_json()) == stored


def test_typed_access_reads_what_the_json_holds() -> None:
    report = BenchReport.from_dict(_stored())
    assert list(report.runs) == ["on", "off", "up"]
    assert report.on.tracing and not report.off.tracing
    assert list(report.on.bursts) == ["10s", "5s"]
    assert report.on.bursts["5s"].chains is not None and report.off.bursts["5s"].chains is None
    assert report.up is not None and report.up.hops is None and report.on.hops is not None
    assert report.up.steady.flowview_judging is not None
    assert report.lost == 0
    assert len(report.rounds) == report.config.rounds == 2


def test_a_steady_phase_writes_the_keys_of_todays_report() -> None:
    samples = [Sample(True, 0.01, 0.02), Sample(False, error="lost")]
    steady = steady_report(samples, 1.0, {"omni2": 0.01}, by_block=[1.0, 2.0]).to_dict()
    stored = _stored()["on"]
    assert isinstance(stored, dict)
    assert list(steady) == list(stored["steady"])
    assert steady["turns"] == 1 and steady["lost"] == 1
