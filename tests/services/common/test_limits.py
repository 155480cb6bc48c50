"""The per-connection frame throttle, on a fake clock."""

from __future__ import annotations

from services.common.limits import FrameThrottle


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_burst_then_rate_then_close_on_sustained_flood() -> None:
    clock = Clock()
    throttle = FrameThrottle(rate=10, burst=5, abuse_frames=20, clock=clock)
    assert all(throttle.allow() for _ in range(5))
    assert not throttle.allow()
    clock.now = 0.5  # half a second refills five frames
    assert all(throttle.allow() for _ in range(5))
    assert not throttle.abusive
    flood = [throttle.allow() for _ in range(25)]
    assert not any(flood)
    assert throttle.abusive
    assert throttle.refused == 26


def test_a_polite_client_is_never_refused() -> None:
    clock = Clock()
    throttle = FrameThrottle(rate=10, burst=5, abuse_frames=20, clock=clock)
    for i in range(1000):
        clock.now = i * 0.1
        assert throttle.allow()
    assert throttle.refused == 0
