"""FLOWVIEW_SPEC: the flow view of a stack of another shape judges by that stack's chain spec
and serves it to the page (its name, hops and the attribute that carries a conversation);
a spec it cannot read stops it at start, saying why."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from omni_trace.stack.ports import free_port
from omni_trace.traces.spec import DEFAULT_SPEC


def _env(spec: Path, port: int) -> dict[str, str]:
    return {
        "PATH": os.environ["PATH"],
        "FLOWVIEW_PORT": str(port),
        "FLOWVIEW_SPEC": str(spec),
        # Nothing here reads traces: /api/config answers from the spec alone.
        "FLOWVIEW_JAEGER_QUERY_URL": f"http://127.0.0.1:{free_port()}",
    }


@contextmanager
def _flow_view(spec: Path) -> Iterator[str]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    process = subprocess.Popen(
        [sys.executable, "-m", "omni_trace.flowview"],
        env=_env(spec, port),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None, process.stderr.read() if process.stderr else ""
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "the flow view did not answer within 30 s"
            time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_the_flow_view_serves_the_spec_it_is_given(tmp_path: Path) -> None:
    text = DEFAULT_SPEC.read_text()
    text = re.sub(r"^name: omni2$", "name: acme", text, count=1, flags=re.M)
    text = re.sub(
        r"^conversation_attribute: .*$", "conversation_attribute: acme.thread", text, flags=re.M
    )
    spec = tmp_path / "acme.yaml"
    spec.write_text(text)
    with _flow_view(spec) as url:
        served = httpx.get(f"{url}/api/config", timeout=10).json()["spec"]
    assert served["name"] == "acme"
    assert served["conversation_attribute"] == "acme.thread"
    assert served["layers"] == ["client", "dashboard", "traefik", "omni2"]


def test_a_spec_it_cannot_read_stops_it_at_start(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text("name: acme\nlayers: []\n")
    for spec, reason in ((broken, "layer"), (tmp_path / "missing.yaml", "cannot read")):
        started = subprocess.run(
            [sys.executable, "-m", "omni_trace.flowview"],
            env=_env(spec, free_port()),
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert started.returncode == 2, started.stderr
        assert "spec" in started.stderr and reason in started.stderr, started.stderr
        assert "Traceback" not in started.stderr
