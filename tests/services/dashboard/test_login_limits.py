"""The failed-login limiter: sliding windows per key, bounded memory, resets on success."""

from __future__ import annotations

import pytest

from services.dashboard.login_limits import Attempt, FailureWindow, LimitRefusal, LoginLimits


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_key_is_refused_at_its_limit_until_its_oldest_failure_leaves_the_window() -> None:
    clock = Clock()
    window = FailureWindow(max_failures=3, window_s=60, max_keys=10, clock=clock)
    for _ in range(2):
        window.failed("alice")
        clock.now += 10
    assert window.retry_after("alice") is None  # 2 of 3
    window.failed("alice")  # failures at 1000, 1010, 1020
    clock.now = 1025.0
    assert window.retry_after("alice") == 35  # the one at 1000 leaves at 1060
    assert window.retry_after("bob") is None  # other keys are not affected
    clock.now = 1059.5
    assert window.retry_after("alice") == 1  # never 0: Retry-After must make the client wait
    clock.now = 1060.0
    assert window.retry_after("alice") is None  # one slot free again
    window.failed("alice")
    assert window.retry_after("alice") == 10  # now the one at 1010 is the oldest


def test_reset_forgets_a_key() -> None:
    window = FailureWindow(max_failures=2, window_s=60, max_keys=10, clock=Clock())
    window.failed("alice")
    window.failed("alice")
    assert window.retry_after("alice") is not None
    window.reset("alice")
    assert window.retry_after("alice") is None and len(window) == 0


def test_memory_is_bounded_whatever_number_of_names_a_client_sends() -> None:
    clock = Clock()
    window = FailureWindow(max_failures=5, window_s=300, max_keys=100, clock=clock)
    for i in range(10_000):
        window.failed(f"name-{i}")
        clock.now += 0.001
    assert len(window) == 100
    # The newest keys are the ones kept (the least recently failed went first).
    for _ in range(4):
        window.failed("name-9999")
    assert window.retry_after("name-9999") is not None
    assert window.retry_after("name-0") is None


def test_expired_keys_go_before_active_ones() -> None:
    clock = Clock()
    window = FailureWindow(max_failures=2, window_s=60, max_keys=3, clock=clock)
    window.failed("old")
    clock.now += 30
    window.failed("active")
    window.failed("active")
    window.failed("other")
    clock.now += 40  # "old" (at 1000) has left the window, "active" (at 1030) has not
    window.failed("new")
    assert window.retry_after("active") is not None, "an active key was evicted"
    assert len(window) <= 3


def test_windows_need_positive_bounds() -> None:
    with pytest.raises(ValueError):
        FailureWindow(max_failures=0, window_s=60, max_keys=10)
    with pytest.raises(ValueError):
        FailureWindow(max_failures=1, window_s=60, max_keys=0)


def test_forget_takes_back_one_failure() -> None:
    clock = Clock()
    window = FailureWindow(max_failures=2, window_s=60, max_keys=10, clock=clock)
    first = window.failed("alice")
    clock.now += 1
    window.failed("alice")
    assert window.retry_after("alice") is not None
    window.forget("alice", first)
    assert window.retry_after("alice") is None and len(window) == 1
    window.forget("alice", first)  # twice, or a time never counted: nothing happens
    window.forget("bob", first)
    assert len(window) == 1


async def _fail(limits: LoginLimits, user: str, address: str) -> None:
    assert isinstance(await limits.begin(user, address), Attempt)  # never cleared: a failure


async def test_login_limits_count_per_user_and_address_and_per_address_and_success_resets() -> None:
    clock = Clock()
    limits = LoginLimits(per_user=3, per_address=5, window_s=60, max_keys=100, clock=clock)
    for _ in range(3):
        await _fail(limits, "alice", "10.0.0.1")
    refusal = await limits.begin("alice", "10.0.0.1")
    assert isinstance(refusal, LimitRefusal)
    assert "for this user from this address" in refusal.reason
    assert refusal.retry_after_s == 60
    assert limits.check("bob", "10.0.0.1") is None  # 3 of 5 for the address

    # Another address is not locked out of the name: the name is slowed down instead.
    success = await limits.begin("alice", "10.0.0.2")
    assert isinstance(success, Attempt) and success.wait_s == 1.0
    await limits.succeeded(success)
    assert len(limits.users) == 1  # alice at 10.0.0.1 only: the success cleared its own
    assert len(limits.slow) == 0  # ... and the name's slow-down
    assert limits.addresses.retry_after("10.0.0.2") is None and len(limits.addresses) == 1

    for name in ("bob", "carol"):
        await _fail(limits, name, "10.0.0.1")
    refusal = await limits.begin("dave", "10.0.0.1")  # the address has 5 failures now
    assert isinstance(refusal, LimitRefusal) and "from this address" in refusal.reason
    ok = await limits.begin("dave", "10.0.0.3")
    assert isinstance(ok, Attempt)
    await limits.succeeded(ok)  # a success never clears another address's count
    assert limits.check("erin", "10.0.0.1") is not None


async def test_guesses_on_one_name_from_many_addresses_wait_their_turn() -> None:
    limits = LoginLimits(per_user=5, per_address=100, window_s=60, max_keys=100, clock=Clock())
    # 30 requests from 30 addresses arrive before any of them is decided: after 5, each
    # waits for a slot 1, 2, 4, 8, 10 s after the one before; a slot over 30 s away is refused.
    started = [await limits.begin("alice", f"10.0.1.{i}") for i in range(30)]
    attempts = [a for a in started if isinstance(a, Attempt)]
    assert [a.wait_s for a in attempts] == [0, 0, 0, 0, 0, 1, 3, 7, 15, 25]
    refusals = started[len(attempts) :]
    assert all(isinstance(r, LimitRefusal) and "tried too often" in r.reason for r in refusals)
    # A refused attempt takes no slot; a cancelled one gives its slot back.
    await limits.cancel(attempts[-1])
    again = await limits.begin("alice", "10.0.2.1")
    assert isinstance(again, Attempt) and again.wait_s == 25


async def test_an_attempt_counts_while_it_runs_so_parallel_guesses_get_no_extra_tries() -> None:
    limits = LoginLimits(per_user=5, per_address=100, window_s=60, max_keys=100, clock=Clock())
    # 30 requests from one address arrive before any of them is decided.
    started = [await limits.begin("alice", "10.0.1.1") for i in range(30)]
    assert sum(isinstance(a, Attempt) for a in started) == 5
    assert all(isinstance(a, LimitRefusal) for a in started[5:])


async def test_a_cancelled_attempt_is_no_failure() -> None:
    limits = LoginLimits(per_user=1, per_address=1, window_s=60, max_keys=100, clock=Clock())
    attempt = await limits.begin("alice", "10.0.0.1")
    assert isinstance(attempt, Attempt)
    assert limits.check("alice", "10.0.0.1") is not None  # while it runs
    await limits.cancel(attempt)
    assert limits.check("alice", "10.0.0.1") is None
