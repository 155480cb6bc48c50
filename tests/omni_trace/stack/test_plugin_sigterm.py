"""A test run stopped by SIGTERM (a CI job's timeout, `kill`) still tears its fixtures down:
with the stack plugin loaded, the stack a session started is stopped, not left running. With
pytest-xdist, SIGTERM to the controller alone (as `pkill -f pytest` sends it: the workers'
command lines do not say pytest) reaches the workers that hold the fixtures."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from omni_trace.stack.paths import REPO_ROOT
from tests.whole_stack.polling import until

FIXTURE_RUN = """
import pathlib, time
import pytest

OUT = pathlib.Path({out!r})

@pytest.fixture(scope="session")
def held():
    yield
    (OUT / "torn-down").write_text("yes")

def test_waits(held):
    (OUT / "running").write_text("yes")
    time.sleep(120)
"""

STACK_RUN = """
import json, pathlib, time

OUT = pathlib.Path({out!r})

def test_waits(omni_stack):
    urls = [omni_stack.dashboard_url, omni_stack.traefik_url, omni_stack.omni2_url,
            omni_stack.auth_url, omni_stack.jaeger_query_url]
    (OUT / "running").write_text(json.dumps(urls))
    time.sleep(300)
"""


# How the run is made: one process, or a pytest-xdist controller with workers.
RUNS = [pytest.param([], id="one-process"), pytest.param(["-n", "1"], id="xdist")]


def _start(tmp_path: Path, test_text: str, options: list[str]) -> subprocess.Popen[str]:
    (tmp_path / "test_held.py").write_text(test_text.format(out=str(tmp_path)))
    return subprocess.Popen(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *options, "test_held.py"],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _terminate(run: subprocess.Popen[str], timeout_s: float) -> str:
    run.send_signal(signal.SIGTERM)
    try:
        output, _ = run.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        run.kill()
        output, _ = run.communicate()
        pytest.fail(f"the run did not end within {timeout_s:.0f} s of SIGTERM:\n{output}")
    return output


def _listening(url: str) -> bool:
    parts = urlsplit(url)
    with socket.socket() as probe:
        probe.settimeout(1)
        return probe.connect_ex((parts.hostname or "127.0.0.1", parts.port or 80)) == 0


@pytest.mark.parametrize("options", RUNS)
def test_sigterm_runs_the_fixtures_teardown(tmp_path: Path, options: list[str]) -> None:
    run = _start(tmp_path, FIXTURE_RUN, options)
    until("the test ran", lambda: (tmp_path / "running").exists() or run.poll() is not None)
    output = _terminate(run, 30)
    assert (tmp_path / "torn-down").exists(), f"no teardown after SIGTERM:\n{output}"
    assert run.returncode == pytest.ExitCode.INTERRUPTED, output
    assert "SIGTERM" in output, output


def test_a_second_sigterm_does_not_cut_the_teardown_short(tmp_path: Path) -> None:
    slow_teardown = FIXTURE_RUN.replace(
        "    yield\n", '    yield\n    (OUT / "tearing").write_text("yes")\n    time.sleep(2)\n'
    )
    run = _start(tmp_path, slow_teardown, [])
    until("the test ran", lambda: (tmp_path / "running").exists() or run.poll() is not None)
    run.send_signal(signal.SIGTERM)
    until("the teardown began", lambda: (tmp_path / "tearing").exists() or run.poll() is not None)
    output = _terminate(run, 30)
    assert (tmp_path / "torn-down").exists(), f"the second SIGTERM cut the teardown:\n{output}"


@pytest.mark.stack
def test_sigterm_stops_the_stack_the_plugin_started(tmp_path: Path) -> None:
    # Under xdist, the longer way: the controller is told, a worker tears the stack down.
    # (That one process tears its fixtures down is shown above.)
    run = _start(tmp_path, STACK_RUN, ["-n", "1"])
    running = tmp_path / "running"
    until("the stack started", lambda: running.exists() or run.poll() is not None, 120)
    assert running.exists(), run.communicate()[0]
    urls = json.loads(running.read_text())
    assert all(_listening(url) for url in urls), urls
    output = _terminate(run, 60)
    assert run.returncode == pytest.ExitCode.INTERRUPTED, output
    left = [url for url in urls if _listening(url)]
    assert not left, f"still answering after the run ended: {left}\n{output}"
