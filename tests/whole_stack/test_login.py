"""Login through the dashboard's real /api/login: users from OMNI2's database with hashed
passwords, the same time for unknown and known names, failed attempts limited per user and per
client address, `user.id` only for a verified login, and the password in no span or log.

Failed attempts come from their own loopback addresses (127.0.x.y, all of which reach the
dashboard on 127.0.0.1), so the per-address limit never touches the other stack tests' logins.
"""

from __future__ import annotations

import secrets
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from omni_trace.stack import Stack
from omni_trace.stack.plugin import ChatFactory
from omni_trace.traces import JaegerClient, TraceFetcher, has_spans_named
from otel.names import Attr, Service
from tests.whole_stack.conftest import all_exported

pytestmark = pytest.mark.stack

_next_address = iter(range(1, 60_000))


def fresh_address() -> str:
    """A loopback source address no other test (nor an earlier one here) has used."""
    n = next(_next_address)
    return f"127.{100 + n // 65_025}.{n // 255 % 255}.{n % 255 + 1}"


@contextmanager
def client_from(address: str, stack: Stack) -> Iterator[httpx.Client]:
    transport = httpx.HTTPTransport(local_address=address)
    with httpx.Client(base_url=stack.info.dashboard_url, transport=transport, timeout=30) as c:
        yield c


def post_login(
    client: httpx.Client, user: str, password: str, headers: dict[str, str] | None = None
) -> httpx.Response:
    return client.post("/api/login", json={"username": user, "password": password}, headers=headers)


def users_cli(stack: Stack, *args: str, password: str) -> None:
    """`omni-trace users ... --password-stdin` as an operator runs it."""
    argv = [sys.executable, "-m", "omni_trace.cli", "users"]
    argv += ["--database-url", stack.info.omni2_database_url, *args, "--password-stdin"]
    done = subprocess.run(argv, input=f"{password}\n", capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


def user_with_password(stack: Stack, password: str) -> str:
    user = f"login-{uuid.uuid4().hex[:8]}"
    users_cli(stack, "add", user, password=password)
    return user


async def test_a_user_added_with_a_password_logs_in_and_chats(
    stack: Stack, omni_chat: ChatFactory
) -> None:
    user = user_with_password(stack, "first-pass-123")
    async with omni_chat(user, "first-pass-123") as chat:  # logs in through /api/login
        assert chat.welcome["user_id"] == user
        reply = await chat.send(f"hello from {user}")
    assert reply.ok, reply.error

    users_cli(stack, "passwd", user, password="second-pass-456")
    with client_from(fresh_address(), stack) as client:
        assert post_login(client, user, "first-pass-123").status_code == 401
        assert post_login(client, user, "second-pass-456").status_code == 200


def test_failed_logins_per_user_are_refused_with_429_and_retry_after(stack: Stack) -> None:
    user = user_with_password(stack, "right-pass-123")
    with client_from(fresh_address(), stack) as client:
        for _ in range(5):  # the default: 5 failures per user and address per 5 minutes
            assert post_login(client, user, "wrong-pass").status_code == 401
        refused = post_login(client, user, "right-pass-123")  # from there, even the password
        assert refused.status_code == 429
        retry_after = int(refused.headers["Retry-After"])
        assert 0 < retry_after <= 300
        assert refused.json()["detail"] == (
            f"too many failed logins for this user from this address; try again in {retry_after} s"
        )
        assert refused.json()["retry_after_s"] == retry_after
        assert post_login(client, "alice", "alice-demo").status_code == 200
    # The owner elsewhere is not locked out (tests/whole_stack/test_login_hardening.py).


def test_parallel_guesses_get_no_more_tries_than_sequential_ones(stack: Stack) -> None:
    user = user_with_password(stack, "right-pass-123")
    with client_from(fresh_address(), stack) as client, ThreadPoolExecutor(20) as pool:
        answers = list(pool.map(lambda i: post_login(client, user, f"guess-{i}"), range(20)))
    statuses = sorted(a.status_code for a in answers)
    assert statuses == [401] * 5 + [429] * 15, statuses


def test_a_success_resets_the_users_count(stack: Stack) -> None:
    user = user_with_password(stack, "right-pass-123")
    with client_from(fresh_address(), stack) as client:
        for _ in range(3):
            for _ in range(4):
                assert post_login(client, user, "wrong-pass").status_code == 401
            assert post_login(client, user, "right-pass-123").status_code == 200


def test_failed_logins_per_address_are_refused_with_429(stack: Stack) -> None:
    with client_from(fresh_address(), stack) as client:
        for i in range(20):  # the default: 20 failures per address, whatever the names
            assert post_login(client, f"guess-{i}-{uuid.uuid4().hex}", "x").status_code == 401
        refused = post_login(client, "alice", "alice-demo")
        assert refused.status_code == 429
        assert "from this address" in refused.json()["detail"]
        assert int(refused.headers["Retry-After"]) > 0
    with client_from(fresh_address(), stack) as elsewhere:
        assert post_login(elsewhere, "alice", "alice-demo").status_code == 200


@pytest.mark.slow  # waits on exports or timing: not in --quick
def test_unknown_and_known_names_take_the_same_time(stack: Stack) -> None:
    user = user_with_password(stack, "right-pass-123")
    known: list[float] = []
    unknown: list[float] = []

    def timed(client: httpx.Client, name: str, into: list[float]) -> None:
        started = time.perf_counter()
        response = post_login(client, name, "wrong-pass")
        into.append(time.perf_counter() - started)
        assert response.status_code == 401, response.text

    for round_ in range(5):  # 4 pairs per address and round, then a success resets the user
        with client_from(fresh_address(), stack) as client:
            assert post_login(client, user, "right-pass-123").status_code == 200  # warm
            for i in range(4):
                pair = [(user, known), (f"nobody-{uuid.uuid4().hex}", unknown)]
                for name, into in pair if (round_ + i) % 2 else reversed(pair):
                    timed(client, name, into)
    assert len(known) == len(unknown) == 20
    ratio = statistics.median(known) / statistics.median(unknown)
    assert 0.5 <= ratio <= 2.0, (
        f"median known {statistics.median(known) * 1000:.1f} ms, "
        f"unknown {statistics.median(unknown) * 1000:.1f} ms (ratio {ratio:.2f})"
    )


def _traceparent() -> tuple[str, dict[str, str]]:
    trace_id = secrets.token_hex(16)
    return trace_id, {"traceparent": f"00-{trace_id}-{secrets.token_hex(8)}-01"}


LOGIN = "POST /api/login"  # the dashboard's server span of a login


def test_login_spans_name_only_verified_users_and_never_hold_the_password(
    stack: Stack, omni_jaeger: JaegerClient, omni_traces: TraceFetcher
) -> None:
    password = f"pw-{uuid.uuid4().hex}"
    user = user_with_password(stack, password)
    wrong = f"wrong-{uuid.uuid4().hex}"
    in_name_field = f"typed-in-name-{uuid.uuid4().hex}"  # a password typed into the name field
    attempts = {
        "success": (user, password, 200),
        "wrong password": (user, wrong, 401),
        "unknown name": (in_name_field, wrong, 401),
    }
    traces = {}
    with client_from(fresh_address(), stack) as client:
        for what, (name, secret, status) in attempts.items():
            trace_id, headers = _traceparent()
            assert post_login(client, name, secret, headers).status_code == status, what
            traces[what] = trace_id

    login_span = f"{Service.DASHBOARD}:{LOGIN}"
    logins = {
        what: omni_traces.wait(
            trace_id,
            has_spans_named((Service.DASHBOARD, LOGIN)),
            what=f"the dashboard's login span ({what})",
        )
        for what, trace_id in traces.items()
    }
    spans = {what: trace.one(login_span) for what, trace in logins.items()}
    logins["success"].assert_attribute(login_span, Attr.USER_ID, user)
    logins["success"].assert_attribute(login_span, "http.response.status_code", 200)
    for what in ("wrong password", "unknown name"):
        logins[what].expect(
            Attr.USER_ID not in spans[what].attributes, f"{what}: user.id on a failed login"
        )
        logins[what].assert_attribute(login_span, "http.response.status_code", 401)

    exported = all_exported(omni_jaeger)
    assert exported.get(Service.DASHBOARD), "no exported dashboard traces: the scan is empty"
    for service, docs in exported.items():
        for secret in (password, wrong, in_name_field):
            assert not [d for d in docs if secret in d], f"{service} exported a login secret"
    logs = sorted(Path(stack.info.logs_dir).glob("*.log"))
    assert "dashboard.log" in {p.name for p in logs}
    for path in logs:
        text = path.read_text(errors="replace")
        for secret in (password, wrong, in_name_field):
            assert secret not in text, f"a login secret in {path.name}"
