"""The page's TypeScript unit tests (frontend/test/*.test.ts) under node's test runner."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from omni_trace.stack.paths import REPO_ROOT

FRONTEND = REPO_ROOT / "frontend"
ESBUILD = FRONTEND / "node_modules" / ".bin" / "esbuild"


@pytest.mark.parametrize("source", sorted((FRONTEND / "test").glob("*.test.ts")), ids=str)
def test_typescript_units(source: Path, tmp_path: Path) -> None:
    node = shutil.which("node")
    if node is None or not ESBUILD.exists():
        pytest.fail("node and frontend/node_modules are needed: run scripts/bootstrap")
    # CommonJS: OpenTelemetry's node build `require`s node's modules, which ESM bundles cannot.
    bundle = tmp_path / f"{source.stem}.cjs"
    subprocess.run(
        [str(ESBUILD), str(source), "--bundle", "--platform=node", "--format=cjs",
         f"--outfile={bundle}", "--log-level=warning"],
        check=True,
    )  # fmt: skip
    run = subprocess.run([node, "--test", str(bundle)], capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr
