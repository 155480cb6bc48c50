"""The login against hostile clients, on the real dashboard: failed logins lock one address
out of a name, not the name's owner elsewhere (the name is slowed down instead); the client
address comes from X-Forwarded-For only when Traefik sent the request, never from a client
that reached a dashboard replica's own port; and only a JSON body is taken (415), so that a
cross-site form cannot drive failed logins through a visitor's browser."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from omni_trace.stack import Stack
from tests.whole_stack.conftest import running_stack
from tests.whole_stack.test_login import client_from, fresh_address, post_login, user_with_password

pytestmark = [pytest.mark.stack, pytest.mark.slow]

RIGHT = "right-pass-123"


def test_wrong_passwords_from_one_address_do_not_lock_the_owner_out(stack: Stack) -> None:
    user = user_with_password(stack, RIGHT)
    with client_from(fresh_address(), stack) as attacker:
        for _ in range(5):  # the dashboard's default: 5 failures per name and address
            assert post_login(attacker, user, "wrong-pass").status_code == 401
        refused = post_login(attacker, user, RIGHT)
        assert refused.status_code == 429, refused.text
        assert "for this user from this address" in refused.json()["detail"]
    with client_from(fresh_address(), stack) as owner:
        started = time.monotonic()
        answer = post_login(owner, user, RIGHT)
        assert answer.status_code == 200, answer.text
        assert time.monotonic() - started < 10  # slowed down by a second, not locked out


def test_guesses_on_one_name_from_many_addresses_are_slowed_down(stack: Stack) -> None:
    user = user_with_password(stack, RIGHT)
    took = []
    for _ in range(8):  # each from an address of its own: no per-address limit is met
        with client_from(fresh_address(), stack) as client:
            started = time.monotonic()
            assert post_login(client, user, "wrong-pass").status_code == 401
            took.append(time.monotonic() - started)
    # Beyond 5 failures of the name, each attempt waits its turn: 1 s, 2 s, 4 s after the
    # one before (less the time that one took; the first five did not wait).
    assert took[5] >= 0.5 and took[6] >= 1.5 and took[7] >= 3.3, took
    with client_from(fresh_address(), stack) as owner:  # the owner waits, and gets in
        assert post_login(owner, user, RIGHT).status_code == 200


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("application/x-www-form-urlencoded", "username={user}&password={password}"),
        ("text/plain", '{{"username": "{user}", "password": "{password}"}}'),
        ("multipart/form-data; boundary=x", "--x\r\n\r\n{user}\r\n--x--\r\n"),
        (None, '{{"username": "{user}", "password": "{password}"}}'),
    ],
)
def test_a_login_that_is_not_json_is_refused_with_415_and_not_counted(
    stack: Stack, content_type: str | None, body: str
) -> None:
    user = user_with_password(stack, RIGHT)
    headers = {"content-type": content_type} if content_type else {}
    with client_from(fresh_address(), stack) as client:
        for _ in range(6):  # more than the failures a name may have from one address
            answer = client.post(
                "/api/login",
                content=body.format(user=user, password="wrong-pass"),
                headers=headers,
            )
            assert answer.status_code == 415, answer.text
            assert "JSON body only" in answer.json()["detail"]
        assert post_login(client, user, RIGHT).status_code == 200


# -- dashboard replicas behind Traefik's front entry point ------------------------------------


@pytest.fixture(scope="module")
def dashboards(tmp_path_factory: pytest.TempPathFactory, jwt_secret: str) -> Iterator[Stack]:
    run_dir: Path = tmp_path_factory.mktemp("dashboards")
    with running_stack(run_dir, jwt_secret, viewers=False, dashboard_replicas=2) as stack:
        yield stack


@contextmanager
def client_at(url: str, address: str) -> Iterator[httpx.Client]:
    transport = httpx.HTTPTransport(local_address=address)
    with httpx.Client(base_url=url, transport=transport, timeout=30) as client:
        yield client


def _guess(client: httpx.Client, forwarded: str | None = None) -> httpx.Response:
    headers = {"x-forwarded-for": forwarded} if forwarded else {}
    name = f"guess-{uuid.uuid4().hex}"
    return client.post("/api/login", json={"username": name, "password": "x"}, headers=headers)


def test_a_forged_forwarded_for_straight_to_a_replica_is_counted_on_the_real_address(
    dashboards: Stack,
) -> None:
    replica = dashboards.info.dashboard_replicas[0]
    assert replica != dashboards.info.dashboard_url  # a replica's own port, not Traefik's
    with client_at(replica, fresh_address()) as client:
        for n in range(20):  # the default: 20 failures per address, whatever the names
            # A new address in the header each time, as if Traefik had appended it.
            assert _guess(client, f"198.51.100.{n}").status_code == 401
        refused = _guess(client, "198.51.100.200")
        assert refused.status_code == 429, refused.text
        assert "from this address" in refused.json()["detail"]


def test_through_traefik_each_client_is_counted_on_its_own_address(dashboards: Stack) -> None:
    front = dashboards.info.dashboard_url  # Traefik's front entry point
    with client_at(front, fresh_address()) as client:
        for n in range(20):  # whatever the client writes, Traefik appends its real address
            assert _guess(client, f"203.0.113.{n}").status_code == 401
        assert _guess(client).status_code == 429
    # Traefik's own address (every request through it comes from there) is not locked out.
    with client_at(front, fresh_address()) as other:
        alice = dashboards.info.demo_passwords["alice"]
        assert post_login(other, "alice", alice).status_code == 200
