"""`omni-trace doctor` pinpoints the broken hop: stopped Traefik, OMNI2, auth; a bad token."""

from __future__ import annotations

import signal
from collections.abc import Iterator

import pytest

from omni_trace.doctor import diagnose
from omni_trace.stack import Stack
from tests.stack.conftest import running_stack

pytestmark = pytest.mark.stack


@pytest.fixture(scope="module")
def own_stack(tmp_path_factory: pytest.TempPathFactory, jwt_secret: str) -> Iterator[Stack]:
    with running_stack(tmp_path_factory.mktemp("doctor"), jwt_secret) as stack:
        yield stack


def test_healthy_chain(own_stack: Stack) -> None:
    result = diagnose(own_stack.info, user="alice", password="alice-demo")
    assert result.healthy, result.render()
    assert len(result.trace_ids) == 2  # the probe's session and message traces
    assert "answered" in result.verdict


@pytest.mark.parametrize(
    ("service", "hop", "words"),
    [
        ("traefik", "dashboard -> traefik", "connection refused"),
        ("omni2", "traefik -> omni2", "omni2 connection refused"),
        ("auth", "traefik -> auth", "auth connection refused"),
    ],
)
def test_stopped_layer_is_named(own_stack: Stack, service: str, hop: str, words: str) -> None:
    own_stack.stop_service(service)
    try:
        result = diagnose(own_stack.info, user="alice", password="alice-demo", settle_s=6)
    finally:
        own_stack.start_service(service)
    assert result.hop == hop, result.render()
    assert words in result.verdict, result.render()
    assert f"[FAIL] {'traefik route' if service == 'traefik' else service}" in result.render()


def test_bad_token_is_named_with_its_reason(own_stack: Stack) -> None:
    result = diagnose(own_stack.info, user="alice", password="", token="not-a-jwt")
    assert result.hop == "traefik -> auth", result.render()
    assert "authentication failed: token invalid" in result.verdict


def test_hung_backend_is_named(own_stack: Stack) -> None:
    own_stack.signal_service("omni2", signal.SIGSTOP)
    try:
        result = diagnose(own_stack.info, user="alice", password="alice-demo", settle_s=2)
    finally:
        own_stack.signal_service("omni2", signal.SIGCONT)
    assert result.hop == "traefik -> omni2", result.render()
    assert "no answer" in result.verdict, result.render()
