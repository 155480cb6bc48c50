"""No secret is known in advance: a service without a long enough OMNI_JWT_SECRET refuses to
start, says why and how to make one, and never prints the value it refused."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from omni_trace.stack.paths import REPO_ROOT
from services.auth.settings import AuthSettings
from services.common.settings import MIN_SECRET_BYTES, load_settings


def test_a_short_secret_is_refused_without_being_printed(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    short = "s3cr3t-too-short-" + "x" * 5
    monkeypatch.setenv("OMNI_JWT_SECRET", short)
    with pytest.raises(SystemExit) as exited:
        load_settings(AuthSettings)
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert f"at least {MIN_SECRET_BYTES} bytes" in err
    assert "secrets.token_urlsafe" in err
    assert short not in err


def test_a_long_secret_is_accepted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMNI_JWT_SECRET", "k" * MIN_SECRET_BYTES)
    assert load_settings(AuthSettings).jwt_secret.get_secret_value() == "k" * MIN_SECRET_BYTES


@pytest.mark.parametrize("service", ["auth", "omni2", "dashboard"])
def test_services_refuse_to_start_without_a_secret(service: str) -> None:
    env = {k: v for k, v in os.environ.items() if k != "OMNI_JWT_SECRET"}
    env["OTEL_SDK_DISABLED"] = "true"
    done = subprocess.run(
        [sys.executable, "-m", f"services.{service}"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 2, done.stderr
    assert "OMNI_JWT_SECRET" in done.stderr
    assert "Traceback" not in done.stderr
