"""One process of the stack as the plan gives it to the runner: its command, environment and
readiness check (the runner adds the Popen once it starts it)."""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Callable
from dataclasses import dataclass

import httpx

# Ready when it returns True; an httpx.HTTPError counts as not yet.
Ready = Callable[[httpx.Client], bool]


@dataclass
class Process:
    name: str
    argv: list[str]
    env: dict[str, str]
    ready: Ready
    process: subprocess.Popen[bytes] | None = None


def http_ok(url: str) -> Ready:
    return lambda client: client.get(url).status_code == 200


def http_status(url: str, status: int) -> Ready:
    return lambda client: client.get(url).status_code == status


def tcp_open(host: str, port: int) -> Ready:
    def ready(_: httpx.Client) -> bool:
        try:
            socket.create_connection((host, port), timeout=1).close()
        except OSError:
            return False
        return True

    return ready


def all_ready(*checks: Ready) -> Ready:
    return lambda client: all(check(client) for check in checks)
