"""The per-hop stream statistics (otel.stream): exact on hand-made frame times, bounded."""

from __future__ import annotations

import pytest

import otel.stream
from otel.names import Attr
from otel.stream import TokenClock, stream_attributes

MS = 1_000_000


def test_stats_of_known_frame_times() -> None:
    # Frames at 100, 110, 120, 420, 430 ms after the span's start: gaps 10, 10, 300, 10.
    times = [t * MS for t in (100, 110, 120, 420, 430)]
    assert stream_attributes(times, 0) == {
        Attr.STREAM_GAPS: 4,
        Attr.STREAM_GAP_P50: 10.0,
        Attr.STREAM_GAP_P95: 300.0,
        Attr.STREAM_GAP_MAX: 300.0,
        Attr.STREAM_GAP_MAX_AT: 120.0,
        Attr.STREAM_FIRST_TO_LAST: 330.0,
    }


def test_p95_is_the_nearest_rank() -> None:
    # 100 gaps: 95 of 1 ms and 5 of 50 ms; the 95th by rank is still 1 ms, the 96th 50.
    gaps = [1] * 95 + [50] * 5
    times = [0]
    for gap in gaps:
        times.append(times[-1] + gap * MS)
    stats = stream_attributes(times, 0)
    assert stats[Attr.STREAM_GAP_P95] == 1.0 and stats[Attr.STREAM_GAP_MAX] == 50.0


@pytest.mark.parametrize("times", [[], [5 * MS]])
def test_fewer_than_two_frames_have_no_stats(times: list[int]) -> None:
    assert stream_attributes(times, 0) == {}


def test_the_store_is_bounded_and_the_first_to_last_time_still_whole(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(otel.stream, "MAX_GAPS", 3)
    clock = TokenClock()
    for _ in range(10):
        clock.mark()
    assert len(clock.times) == 4
    stats = clock.attributes()
    assert stats[Attr.STREAM_GAPS] == 3
    assert clock.last_ns > clock.times[-1]
    assert stats[Attr.STREAM_FIRST_TO_LAST] == round((clock.last_ns - clock.times[0]) / 1e6, 3)
