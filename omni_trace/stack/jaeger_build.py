"""Build the real Jaeger v2 binary from the Go module proxy, once, and cache it.

tools/jaeger is a small Go module that requires `github.com/jaegertracing/jaeger/cmd/jaeger`
as a tool; the cache key is the hash of its go.mod and go.sum, so the binary is rebuilt only
when they change.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from omni_trace.errors import CliError
from omni_trace.stack.paths import JAEGER_MODULE_DIR, cache_dir

JAEGER_PACKAGE = "github.com/jaegertracing/jaeger/cmd/jaeger"

Progress = Callable[[str], None]


class JaegerBuildError(CliError, RuntimeError):
    pass


def cache_key(module_dir: Path = JAEGER_MODULE_DIR) -> str:
    digest = hashlib.sha256()
    for name in ("go.mod", "go.sum"):
        digest.update((module_dir / name).read_bytes())
    return digest.hexdigest()[:16]


def cached_binary(module_dir: Path = JAEGER_MODULE_DIR) -> Path:
    return cache_dir() / "jaeger" / cache_key(module_dir) / "jaeger"


def ensure_jaeger(progress: Progress = print, jaeger_bin: Path | None = None) -> Path:
    """Path to a runnable Jaeger: `jaeger_bin` if given, else the cached build (built now if
    missing; a cold build takes a few minutes)."""
    if jaeger_bin is not None:
        if not os.access(jaeger_bin, os.X_OK):
            raise JaegerBuildError(f"JAEGER_BIN={jaeger_bin} is not an executable file")
        return jaeger_bin
    target = cached_binary()
    if target.exists():
        return target
    go = shutil.which("go")
    if go is None:
        raise JaegerBuildError(
            "Go is needed to build Jaeger (https://go.dev/dl), or set JAEGER_BIN to a "
            "jaeger v2 binary, or point OMNI_TRACE_JAEGER_QUERY_URL and "
            "OMNI_TRACE_JAEGER_OTLP_ENDPOINT at a running Jaeger"
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(f".partial-{os.getpid()}")
    env = os.environ | {"GOTOOLCHAIN": "local", "CGO_ENABLED": "0", "GOFLAGS": "-mod=mod"}
    command = [go, "build", "-trimpath", "-ldflags", "-s -w", "-o", str(partial), JAEGER_PACKAGE]
    progress(
        f"building Jaeger from the Go module proxy into {target.parent} "
        "(first run only; a few minutes)"
    )
    log_path = target.parent / "build.log"
    started = time.monotonic()
    with log_path.open("wb") as log:
        proc = subprocess.Popen(command, cwd=JAEGER_MODULE_DIR, env=env, stdout=log, stderr=log)
        while True:
            try:
                code = proc.wait(timeout=20)
                break
            except subprocess.TimeoutExpired:
                progress(f"  still building Jaeger ({time.monotonic() - started:.0f} s)")
    if code != 0:
        tail = log_path.read_text(errors="replace")[-2000:]
        raise JaegerBuildError(f"Jaeger build failed (exit {code}); {log_path}:\n{tail}")
    partial.replace(target)
    progress(f"built Jaeger in {time.monotonic() - started:.0f} s")
    return target
