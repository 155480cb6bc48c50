"""The suite's own scheduling (tests/conftest.py): which unit a file runs in on several
workers, and the recorded durations that order the units."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import (
    DURATIONS,
    ONE_WORKER_PACKAGES,
    ByWorkUnit,
    work_unit,
)

TESTS = Path(__file__).parent


def test_a_package_that_shares_a_stack_is_one_unit_and_other_files_are_their_own() -> None:
    assert work_unit("tests/browser/test_csp.py") == "browser"
    assert work_unit("tests/browser/seed_page/test_x.py") == "browser"
    assert work_unit("tests/whole_stack/test_audit.py") == "whole_stack/test_audit.py"


def test_every_recorded_unit_is_still_in_the_tree() -> None:
    # A renamed file would keep its old name here and start with the default weight.
    recorded = json.loads(DURATIONS.read_text())
    stale = [
        unit
        for unit in recorded
        if unit not in ONE_WORKER_PACKAGES and not (TESTS / unit).is_file()
    ]
    assert not stale, f"run scripts/test --save-durations: {stale} are gone"
    assert all(seconds >= 0 for seconds in recorded.values())


def test_xdist_schedules_a_package_that_shares_a_stack_as_one_scope() -> None:
    # With pytest 9, xdist's own `--dist loadgroup` loses its groups and would spread the
    # browser files over every worker, each starting the package's stack and Chromium.
    scheduler = ByWorkUnit.__new__(ByWorkUnit)  # its scopes need no workers
    scopes = {
        scheduler._split_scope(nodeid)
        for nodeid in (
            "tests/browser/test_csp.py::test_a",
            "tests/browser/test_flow_view.py::test_b[x]",
        )
    }
    assert scopes == {"browser"}
    assert scheduler._split_scope("tests/whole_stack/test_audit.py::test_c") == (
        "whole_stack/test_audit.py"
    )
