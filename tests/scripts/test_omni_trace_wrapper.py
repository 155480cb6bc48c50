"""`scripts/omni-trace` keeps stdout for the command: what the install step prints goes to
stderr, so `scripts/omni-trace bench --json | jq` works on a first run too."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_what_the_install_step_prints_stays_off_stdout(tmp_path: Path) -> None:
    (tmp_path / "scripts").mkdir()
    shutil.copy(ROOT / "scripts" / "omni-trace", tmp_path / "scripts" / "omni-trace")
    bootstrap = tmp_path / "scripts" / "bootstrap"
    # As npm does when the chat page is built: its own lines on stdout.
    bootstrap.write_text("#!/usr/bin/env bash\necho 'added 16 packages in 3s'\n")
    command = tmp_path / ".venv" / "bin" / "omni-trace"
    command.parent.mkdir(parents=True)
    command.write_text('#!/usr/bin/env bash\necho \'{"args": "\'"$*"\'"}\'\n')
    for script in (bootstrap, command):
        script.chmod(0o755)

    done = subprocess.run(
        [tmp_path / "scripts" / "omni-trace", "bench", "--json"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(done.stdout) == {"args": "bench --json"}
    assert "added 16 packages" in done.stderr
