"""Per-connection frame limits: every frame a client sends costs one token.

The dashboard holds them for the browser's connection, and OMNI2 for each of its own, so a
client that reaches OMNI2 without the dashboard (through Traefik, or straight) meets them too.

A token bucket (`rate` per second, `burst` at once) decides which frames pass. Each refused
frame is answered with an `error` frame (a client waiting for an answer to its message gets
one), and draws on a second bucket of the same refill rate: a client that keeps flooding
empties it and is closed with 1008, which bounds the answers a flood can cost.
"""

from __future__ import annotations

import time
from collections.abc import Callable


class _Bucket:
    def __init__(self, rate: float, capacity: float, clock: Callable[[], float]) -> None:
        self.rate, self.capacity, self._clock = rate, capacity, clock
        self.tokens = capacity
        self._at = clock()

    def take(self) -> bool:
        now = self._clock()
        self.tokens = min(self.capacity, self.tokens + (now - self._at) * self.rate)
        self._at = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False


class FrameThrottle:
    def __init__(
        self,
        rate: float,
        burst: int,
        abuse_frames: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._frames = _Bucket(rate, burst, clock)
        self._abuse = _Bucket(rate, abuse_frames, clock)
        self.refused = 0

    def allow(self) -> bool:
        """Count one frame; False when it must be refused."""
        if self._frames.take():
            return True
        self.refused += 1
        self._abuse.take()
        return False

    @property
    def abusive(self) -> bool:
        """The client kept flooding after being told: close the connection."""
        return self._abuse.tokens < 1
