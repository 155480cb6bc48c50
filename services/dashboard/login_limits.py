"""Failed logins limited per user name and per client address, in a sliding window.

In memory, per dashboard process: several dashboard replicas behind a load balancer would each
count on their own, so a scale-out needs a shared store (e.g. Redis) behind the same interface.
Memory is bounded: a hostile client can send any number of distinct names (or come from many
addresses), so each table keeps at most `max_keys` keys; entries whose window has passed go
first, then the least recently failed.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass


class FailureWindow:
    """At most `max_failures` failures per key within `window_s` seconds."""

    def __init__(
        self,
        max_failures: int,
        window_s: float,
        max_keys: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_failures < 1 or window_s <= 0 or max_keys < 1:
            raise ValueError("max_failures, window_s and max_keys must be positive")
        self.max_failures = max_failures
        self.window_s = window_s
        self.max_keys = max_keys
        self._clock = clock
        # key -> times of its recent failures (oldest first); order: least recently failed first
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._failures)

    def _recent(self, key: str, now: float) -> deque[float] | None:
        times = self._failures.get(key)
        if times is None:
            return None
        while times and times[0] <= now - self.window_s:
            times.popleft()
        if not times:
            del self._failures[key]
            return None
        return times

    def retry_after(self, key: str) -> int | None:
        """Whole seconds until `key` may try again, or None when it may try now."""
        now = self._clock()
        times = self._recent(key, now)
        if times is None or len(times) < self.max_failures:
            return None
        return max(1, math.ceil(times[0] + self.window_s - now))

    def failed(self, key: str) -> float:
        """Count a failure of `key` now; returns its time (for `forget`)."""
        now = self._clock()
        times = self._recent(key, now)
        if times is None:
            self._make_room(now)
            times = self._failures[key] = deque(maxlen=self.max_failures)
        times.append(now)
        self._failures.move_to_end(key)
        return now

    def forget(self, key: str, at: float) -> None:
        """Take back the failure counted at `at` (an attempt that turned out not to fail)."""
        times = self._failures.get(key)
        if times is not None and at in times:
            times.remove(at)
            if not times:
                del self._failures[key]

    def reset(self, key: str) -> None:
        self._failures.pop(key, None)

    def _make_room(self, now: float) -> None:
        # The front holds the least recently failed keys: drop those whose last failure left
        # the window, then (still full) the least recently failed one.
        while self._failures:
            oldest_key, times = next(iter(self._failures.items()))
            if times[-1] > now - self.window_s and len(self._failures) < self.max_keys:
                return
            del self._failures[oldest_key]


@dataclass(frozen=True)
class LimitRefusal:
    reason: str
    retry_after_s: int


@dataclass(frozen=True)
class Attempt:
    """A login allowed to proceed; it counts as a failure unless it is cleared."""

    user: str
    address: str
    user_at: float
    address_at: float


class LoginLimits:
    """Both limits of `/api/login`: failures per user name and per client address.

    An attempt counts as a failure from the moment it is let through (`begin`) until it
    succeeds: parallel requests cannot all pass the check before the first one's failure is
    counted, so N parallel guesses get no more tries than N sequential ones.
    A success resets the user name's count, not the address's: one address that holds a valid
    account must not be able to wipe its failures on other names by logging in between them.
    """

    def __init__(
        self,
        *,
        per_user: int,
        per_address: int,
        window_s: float,
        max_keys: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.users = FailureWindow(per_user, window_s, max_keys, clock)
        self.addresses = FailureWindow(per_address, window_s, max_keys, clock)

    def check(self, user: str, address: str) -> LimitRefusal | None:
        wait = self.addresses.retry_after(address)
        if wait is not None:
            return LimitRefusal(
                f"too many failed logins from this address; try again in {wait} s", wait
            )
        wait = self.users.retry_after(user)
        if wait is not None:
            return LimitRefusal(
                f"too many failed logins for this user; try again in {wait} s", wait
            )
        return None

    def begin(self, user: str, address: str) -> LimitRefusal | Attempt:
        """Refused, or an attempt already counted as a failure for its user and address."""
        refusal = self.check(user, address)
        if refusal is not None:
            return refusal
        return Attempt(user, address, self.users.failed(user), self.addresses.failed(address))

    def succeeded(self, attempt: Attempt) -> None:
        self.users.reset(attempt.user)
        self.addresses.forget(attempt.address, attempt.address_at)

    def cancel(self, attempt: Attempt) -> None:
        """The attempt was not decided (e.g. no user database): it is not a failure."""
        self.users.forget(attempt.user, attempt.user_at)
        self.addresses.forget(attempt.address, attempt.address_at)
