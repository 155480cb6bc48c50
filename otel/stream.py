"""Streaming per hop: the gaps between the token frames one layer relays, as it saw them.

Each layer that streams tokens (the dashboard's relay, OMNI2's turn, the chat client) keeps
the time of every token frame of a message and, when the message ends, puts the gaps' count,
p50, p95, max, when the longest began and the first-to-last time on its message span
(`chat.stream.*`). A hop that holds the stream shows a longest gap that the layer below it
does not have; the audit reads exactly that (omni_trace.traces.streams).

Recording is on the hot path of every token frame: one `perf_counter_ns` and one list append,
nothing else; the statistics are computed once, at the message's end.
"""

from __future__ import annotations

from itertools import pairwise
from math import ceil
from time import perf_counter_ns

from otel.names import Attr

# The first 10,000 gaps of a message are kept (10,001 frame times, 80 KB at most); a longer
# stream still has its first-to-last time, from the last frame's time kept apart.
MAX_GAPS = 10_000


class TokenClock:
    """The times of one message's token frames, from `perf_counter_ns`."""

    __slots__ = ("last_ns", "started_ns", "times")

    def __init__(self, started_ns: int | None = None) -> None:
        # The message span's start on the same clock: the longest gap's offset is from it.
        self.started_ns = perf_counter_ns() if started_ns is None else started_ns
        self.times: list[int] = []
        self.last_ns = 0  # the last frame's time, once the store is full

    def mark(self) -> None:
        """A token frame now (O(1); the store is bounded)."""
        now = perf_counter_ns()
        if len(self.times) <= MAX_GAPS:
            self.times.append(now)
        else:
            self.last_ns = now

    def attributes(self) -> dict[str, int | float]:
        """The `chat.stream.*` attributes; none with fewer than two token frames."""
        return stream_attributes(self.times, self.started_ns, self.last_ns or None)


def percentile(ordered: list[float], q: float) -> float:
    """Nearest rank of a sorted, non-empty list."""
    return ordered[max(ceil(q * len(ordered)) - 1, 0)]


def stream_attributes(
    times: list[int], started_ns: int, last_ns: int | None = None
) -> dict[str, int | float]:
    """Stats of frame times (ns, ascending, same clock as `started_ns`): count, p50, p95 and
    max of the gaps in ms, when the longest began (ms from `started_ns`), first to last."""
    if len(times) < 2:
        return {}
    gaps = [(b - a) / 1e6 for a, b in pairwise(times)]
    longest = max(range(len(gaps)), key=gaps.__getitem__)
    ordered = sorted(gaps)
    last = last_ns if last_ns is not None else times[-1]
    return {
        Attr.STREAM_GAPS: len(gaps),
        Attr.STREAM_GAP_P50: round(percentile(ordered, 0.50), 3),
        Attr.STREAM_GAP_P95: round(percentile(ordered, 0.95), 3),
        Attr.STREAM_GAP_MAX: round(ordered[-1], 3),
        Attr.STREAM_GAP_MAX_AT: round((times[longest] - started_ns) / 1e6, 3),
        Attr.STREAM_FIRST_TO_LAST: round((last - times[0]) / 1e6, 3),
    }
