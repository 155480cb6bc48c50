"""Failed logins limited per user name at a client address and per client address, in a
sliding window, and slowed down per user name.

A user name's failures from one address lock that address out of the name (429), not the
name's owner elsewhere: five wrong passwords from anywhere must not lock the right owner out.
Failures of a name from every address together slow its logins down instead: beyond
`slow_after` of them each further attempt on the name waits for a slot, spaced
`slow_base_s` after the previous one and doubling up to `slow_max_s`, so guesses on one name
from many addresses come one at a time; an attempt whose slot is more than `slow_max_wait_s`
away is refused (429, a short Retry-After) rather than held.

Two stores behind one interface (`LoginLimiter`), chosen by DASHBOARD_LOGIN_LIMITS:

- memory (`LoginLimits`): per dashboard process. Several dashboard replicas behind a load
  balancer would each count on their own, and a client alternating between them would get
  each replica's allowance.
- database (`DatabaseLoginLimits`): the shared database (login_failures, which OMNI2 creates),
  shared by every replica; each decision is taken under the key's row lock, so attempts at
  the same time on two replicas count like attempts in a row on one.

Both are bounded: a hostile client can send any number of distinct names (or come from many
addresses), so each keeps at most `max_keys` keys per limit; entries whose window has passed
go first, then the least recently failed.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Protocol

from sqlalchemy.ext.asyncio import AsyncSession

from services.db.repository import logins as logins_repo


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
        return retry_after(self._recent(key, now) or (), now, self.max_failures, self.window_s)

    def recent(self, key: str) -> list[float]:
        """The key's failures within the window (slots still to come included), oldest first."""
        return list(self._recent(key, self._clock()) or ())

    def failed(self, key: str, at: float | None = None) -> float:
        """Count a failure of `key` now (or at the slot `at`); returns its time (for
        `forget`)."""
        now = self._clock()
        times = self._recent(key, now)
        if times is None:
            self._make_room(now)
            times = self._failures[key] = deque(maxlen=self.max_failures)
        times.append(now if at is None else at)
        self._failures.move_to_end(key)
        return times[-1]

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


def address_refusal(wait: int) -> LimitRefusal:
    return LimitRefusal(f"too many failed logins from this address; try again in {wait} s", wait)


def user_refusal(wait: int) -> LimitRefusal:
    return LimitRefusal(
        f"too many failed logins for this user from this address; try again in {wait} s", wait
    )


def slow_refusal(wait: int) -> LimitRefusal:
    return LimitRefusal(
        f"this user is being tried too often (logins slowed down); try again in {wait} s", wait
    )


# Failures of a name (all addresses) remembered for its slow-down: beyond this many the wait
# is at its longest anyway.
SLOW_MEMORY = 64


def pair_key(user: str, address: str) -> str:
    """The key of a user name at one address (fits login_failures.key, 255 characters)."""
    key = f"{address} {user}"
    return key if len(key) <= 255 else hashlib.sha256(key.encode()).hexdigest()


@dataclass(frozen=True)
class SlowDown:
    """How logins on one name are spaced once it has failed `after` times in the window."""

    after: int
    base_s: float
    max_s: float
    max_wait_s: float

    def slot(self, failures: Sequence[float], now: float) -> float:
        """When the next attempt on a name with these failures (slots, oldest first) may
        run: now, or spaced after the latest, the spacing doubling with each failure."""
        if len(failures) < self.after or self.base_s <= 0:
            return now
        spacing = min(self.max_s, self.base_s * 2 ** min(len(failures) - self.after, 32))
        return max(now, failures[-1] + spacing)


def default_slow_down(per_user: int) -> SlowDown:
    """The dashboard's defaults: after the failures a name may have from one address."""
    return SlowDown(after=per_user, base_s=1.0, max_s=10.0, max_wait_s=30.0)


@dataclass(frozen=True)
class Attempt:
    """A login allowed to proceed; it counts as a failure unless it is cleared. It runs once
    `wait_s` has passed (the name's slow-down)."""

    user: str
    address: str
    user_at: float
    address_at: float
    slow_at: float = 0.0
    wait_s: float = 0.0


class LoginLimiter(Protocol):
    """The limits of `/api/login`: failures per user name at an address, per client
    address, and the slow-down per user name.

    An attempt counts as a failure from the moment it is let through (`begin`) until it
    succeeds: parallel requests cannot all pass the check before the first one's failure is
    counted, so N parallel guesses get no more tries than N sequential ones.
    A success resets the user name's counts, not the address's: one address that holds a valid
    account must not be able to wipe its failures on other names by logging in between them.
    """

    async def begin(self, user: str, address: str) -> LimitRefusal | Attempt:
        """Refused, or an attempt already counted as a failure for its user and address."""
        ...

    async def succeeded(self, attempt: Attempt) -> None: ...

    async def cancel(self, attempt: Attempt) -> None:
        """The attempt was not decided (e.g. no user database): it is not a failure."""
        ...


class LoginLimits:
    """The limiter in this process's memory (DASHBOARD_LOGIN_LIMITS=memory): one dashboard.
    Nothing here awaits, so the event loop makes each call atomic."""

    def __init__(
        self,
        *,
        per_user: int,
        per_address: int,
        window_s: float,
        max_keys: int,
        slow_down: SlowDown | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        # users: keyed by pair_key(user, address); slow: by user name.
        self.users = FailureWindow(per_user, window_s, max_keys, clock)
        self.addresses = FailureWindow(per_address, window_s, max_keys, clock)
        self.slow = FailureWindow(SLOW_MEMORY, window_s, max_keys, clock)
        self.slow_down = slow_down or default_slow_down(per_user)
        self._clock = clock

    def check(self, user: str, address: str) -> LimitRefusal | None:
        wait = self.addresses.retry_after(address)
        if wait is not None:
            return address_refusal(wait)
        wait = self.users.retry_after(pair_key(user, address))
        if wait is not None:
            return user_refusal(wait)
        return None

    async def begin(self, user: str, address: str) -> LimitRefusal | Attempt:
        refusal = self.check(user, address)
        if refusal is not None:
            return refusal
        now = self._clock()
        slot = self.slow_down.slot(self.slow.recent(user), now)
        if slot - now > self.slow_down.max_wait_s:
            return slow_refusal(max(1, math.ceil(slot - now - self.slow_down.max_wait_s)))
        return Attempt(
            user,
            address,
            self.users.failed(pair_key(user, address)),
            self.addresses.failed(address),
            self.slow.failed(user, slot),
            slot - now,
        )

    async def succeeded(self, attempt: Attempt) -> None:
        self.users.reset(pair_key(attempt.user, attempt.address))
        self.slow.reset(attempt.user)
        self.addresses.forget(attempt.address, attempt.address_at)

    async def cancel(self, attempt: Attempt) -> None:
        self.users.forget(pair_key(attempt.user, attempt.address), attempt.user_at)
        self.slow.forget(attempt.user, attempt.slow_at)
        self.addresses.forget(attempt.address, attempt.address_at)


# The session factory of `DatabaseLoginLimits`: a transaction, committed when the block ends
# without an exception. Database problems come out of it as the factory raises them.
Transaction = Callable[[], AbstractAsyncContextManager[AsyncSession]]

# login_failures.scope: USER rows are keyed by pair_key(user, address), SLOW rows by name.
USER, ADDRESS, SLOW = "user", "address", "slow"


class _Refused(Exception):
    """Leaves the transaction of a refused attempt, rolling it back: it leaves no trace."""

    def __init__(self, refusal: LimitRefusal) -> None:
        super().__init__(refusal.reason)
        self.refusal = refusal


class DatabaseLoginLimits:
    """The limiter in the shared database (DASHBOARD_LOGIN_LIMITS=database): every dashboard
    replica that shares the database shares the counts. Times are wall-clock seconds, the
    one clock replicas share. Each call is one transaction that locks the address's row, then
    the user's (the same order everywhere), so parallel attempts on any replicas take turns.
    At most `max_keys` keys per limit, plus those of attempts in flight at that moment."""

    def __init__(
        self,
        transaction: Transaction,
        *,
        per_user: int,
        per_address: int,
        window_s: float,
        max_keys: int,
        slow_down: SlowDown | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if per_user < 1 or per_address < 1 or window_s <= 0 or max_keys < 1:
            raise ValueError("per_user, per_address, window_s and max_keys must be positive")
        self._transaction = transaction
        self._limits = {USER: per_user, ADDRESS: per_address}
        self.window_s = window_s
        self.max_keys = max_keys
        self.slow_down = slow_down or default_slow_down(per_user)
        self._clock = clock

    async def begin(self, user: str, address: str) -> LimitRefusal | Attempt:
        now = self._clock()
        pair = pair_key(user, address)
        try:
            async with self._transaction() as session:
                counted = {}
                for scope, key, refusal in (
                    (ADDRESS, address, address_refusal),
                    (USER, pair, user_refusal),
                ):
                    recent = await self._recent(session, scope, key, now)
                    wait = retry_after(recent, now, self._limits[scope], self.window_s)
                    if wait is not None:
                        raise _Refused(refusal(wait))
                    counted[scope] = [*recent, now][-self._limits[scope] :]
                slow = await self._recent(session, SLOW, user, now)
                slot = self.slow_down.slot(slow, now)
                if slot - now > self.slow_down.max_wait_s:
                    wait_s = math.ceil(slot - now - self.slow_down.max_wait_s)
                    raise _Refused(slow_refusal(max(1, wait_s)))
                counted[SLOW] = [*slow, slot][-SLOW_MEMORY:]
                for scope, key in ((ADDRESS, address), (USER, pair), (SLOW, user)):
                    await logins_repo.set_login_failures(session, scope, key, counted[scope])
        except _Refused as refused:
            return refused.refusal
        return Attempt(user, address, now, now, slot, slot - now)

    async def succeeded(self, attempt: Attempt) -> None:
        async with self._transaction() as session:
            await self._forget(session, ADDRESS, attempt.address, attempt.address_at)
            pair = pair_key(attempt.user, attempt.address)
            await logins_repo.set_login_failures(session, USER, pair, ())
            await logins_repo.set_login_failures(session, SLOW, attempt.user, ())

    async def cancel(self, attempt: Attempt) -> None:
        async with self._transaction() as session:
            await self._forget(session, ADDRESS, attempt.address, attempt.address_at)
            pair = pair_key(attempt.user, attempt.address)
            await self._forget(session, USER, pair, attempt.user_at)
            await self._forget(session, SLOW, attempt.user, attempt.slow_at)

    async def keys(self, scope: str) -> int:
        """Keys stored for one limit (USER or ADDRESS)."""
        async with self._transaction() as session:
            return await logins_repo.login_keys(session, scope)

    async def _recent(self, session: AsyncSession, scope: str, key: str, now: float) -> list[float]:
        """The key's failures within the window, oldest first, its row locked (made if new)."""
        stored = await logins_repo.lock_login_key(session, scope, key)
        if stored is None:
            stored = await logins_repo.add_login_key(
                session, scope, key, now, now - self.window_s, self.max_keys
            )
        return sorted(t for t in stored if t > now - self.window_s)

    async def _forget(self, session: AsyncSession, scope: str, key: str, at: float) -> None:
        stored = await logins_repo.lock_login_key(session, scope, key)
        if stored is None or at not in stored:
            return
        stored.remove(at)
        await logins_repo.set_login_failures(session, scope, key, stored)


def retry_after(
    failures: Sequence[float], now: float, max_failures: int, window_s: float
) -> int | None:
    """Whole seconds until a key with these failures (within the window, oldest first) may
    try again, or None when it may try now."""
    if len(failures) < max_failures:
        return None
    return max(1, math.ceil(failures[-max_failures] + window_s - now))
