"""The flow view's audit ledger over a fake Jaeger: each message judged once when it has
settled, counters exact past one search's limit, Jaeger down survived."""

from __future__ import annotations

import re
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import replace

import pytest

from omni_trace.flowview.data import SETTLE_S, Auditor, VerdictCache
from omni_trace.flowview.ledger import SEARCH_LIMIT, AuditLedger, LedgerState
from omni_trace.flowview.metrics import AuditMetrics
from omni_trace.traces.jaeger import FoundTraces, JaegerError, TraceSpan
from omni_trace.traces.spec import default_spec
from tests.omni_trace.recorded import message_spans, session_spans

NS = 1_000_000_000
# The ledger's clock runs this far behind the real one, and the verdict cache settles with
# the same offset, so that the two agree on what has settled while the test moves time on.
OFFSET_S = 7200.0
SESSION = session_spans()


class FakeJaeger:
    """Jaeger's memory store as the ledger reads it: a search returns the newest matching
    traces up to its limit, whole (their spans parsed only for the ids the caller wants); a
    span is in it once the test adds its trace."""

    def __init__(self) -> None:
        self.traces: dict[str, list[TraceSpan]] = {SESSION[0].trace_id: SESSION}
        # How often the ledger got each trace's spans: read by id or parsed from a search.
        self.reads: Counter[str] = Counter()
        self.by_id: Counter[str] = Counter()  # of which read by id (get_trace)
        self.parsed: Counter[str] = Counter()  # of which parsed from a search's answer
        self.returned: Counter[str] = Counter()  # how often a search returned each trace
        self.searches = 0
        self.full_answers = 0
        self.down = False

    def _check(self) -> None:
        if self.down:
            raise JaegerError("Jaeger query API at http://jaeger:16686 unreachable")

    def add(self, spans: list[TraceSpan]) -> str:
        trace_id = spans[0].trace_id
        self.traces.pop(trace_id, None)  # re-added: the newest
        self.traces[trace_id] = spans
        return trace_id

    def services(self) -> list[str]:
        self._check()
        return sorted({s.service for spans in self.traces.values() for s in spans})

    def get_trace(self, trace_id: str) -> list[TraceSpan]:
        self._check()
        self.reads[trace_id] += 1
        self.by_id[trace_id] += 1
        return list(self.traces.get(trace_id, []))

    def find_traces(
        self,
        service: str,
        operation: str | None = None,
        *,
        start_us: int,
        end_us: int,
        min_duration_us: int = 0,
        limit: int = 100,
        wanted: Callable[[str], bool] | None = None,
    ) -> FoundTraces:
        self._check()
        self.searches += 1
        found: list[str] = []
        for trace_id in reversed(self.traces):
            if any(
                (s.service, s.name) == (service, operation)
                and start_us <= s.start_ns // 1000 <= end_us
                and (s.end_ns - s.start_ns) // 1000 >= min_duration_us
                for s in self.traces[trace_id]
            ):
                found.append(trace_id)
                if len(found) == limit:
                    self.full_answers += 1
                    break
        self.returned.update(found)
        parsed = {t: list(self.traces[t]) for t in found if wanted is None or wanted(t)}
        self.parsed.update(parsed.keys())
        self.reads.update(parsed.keys())
        return FoundTraces(found, parsed)


class Clock:
    def __init__(self) -> None:
        self.now = time.time() - OFFSET_S

    def __call__(self) -> float:
        return self.now


def message(
    number: int, end_s: float, *, broken: bool = False, length_s: float | None = None
) -> list[TraceSpan]:
    """The recorded message trace (whole, answered), as trace `number`, ending at `end_s`;
    `broken`: without the dashboard's span; `length_s`: each span starts that long before
    it ends (a long answer)."""
    spans = message_spans()
    offset = int(end_s * NS) - max(s.end_ns for s in spans)
    trace_id = f"{number + 1:032x}"
    found = []
    for span in spans:
        if broken and span.service == "dashboard-backend":
            continue
        start, end = span.start_ns + offset, span.end_ns + offset
        if length_s is not None:
            start = end - int(length_s * NS)
        found.append(
            replace(
                span,
                trace_id=trace_id,
                start_ns=start,
                end_ns=end,
                events=tuple(replace(e, time_ns=e.time_ns + offset) for e in span.events),
            )
        )
    return found


def auditor(jaeger: FakeJaeger) -> Auditor:
    return Auditor(jaeger, VerdictCache(10_000, settle_s=OFFSET_S + SETTLE_S))  # type: ignore[arg-type]


def ledger(jaeger: FakeJaeger, clock: Clock, batch: int = 2000) -> AuditLedger:
    return AuditLedger(auditor(jaeger), jaeger, clock=clock, batch=batch)


def total(state: LedgerState) -> int:
    return sum(state.totals.messages.values())


def test_a_message_is_judged_once_across_scrapes() -> None:
    jaeger, clock = FakeJaeger(), Clock()
    audit = ledger(jaeger, clock)
    added: list[tuple[str, float]] = []
    # 80 scrapes 15 s apart (20 minutes), three messages ending between each two.
    for _ in range(80):
        for back in (14.0, 9.0, 2.0):
            number = len(added)
            end = clock.now - back
            added.append((jaeger.add(message(number, end, broken=number % 10 == 0)), end))
        audit.update()
        clock.now += 15
    state = audit.update()

    assert total(state) == len(added) == state.judged == 240
    assert state.totals.messages[("broken", "ok")] == 24
    assert state.totals.missing["dashboard"] == 24
    # Each message's trace read once, though searches returned most of them again.
    assert {jaeger.reads[t] for t, _ in added} == {1}
    assert sum(jaeger.returned[t] > 1 for t, _ in added) > 100
    # The window: messages that ended in its last 900 s (counted by 10 s buckets).
    settled = clock.now - SETTLE_S
    window = sum(state.window.messages.values())
    assert sum(end > settled - 900 for _, end in added) <= window
    assert window <= sum(end > settled - 910 for _, end in added) < len(added)
    assert not state.failed and state.watermark_s == pytest.approx(settled)


def test_counters_are_exact_past_what_one_search_returns() -> None:
    jaeger, clock = FakeJaeger(), Clock()
    audit = ledger(jaeger, clock)
    count = 1200
    for number in range(count):
        jaeger.add(message(number, clock.now - 300 + number * 0.2, broken=number % 4 == 0))
    state = audit.update()

    assert jaeger.full_answers > 0, f"a search should have hit its limit of {SEARCH_LIMIT}"
    assert total(state) == count == state.judged
    assert state.totals.messages[("broken", "ok")] == count // 4
    assert state.totals.messages[("whole", "ok")] == count - count // 4
    assert sum(state.window.messages.values()) == count
    assert {jaeger.reads[f"{n + 1:032x}"] for n in range(count)} == {1}


def test_a_batch_at_a_time_catches_up_without_counting_twice() -> None:
    jaeger, clock = FakeJaeger(), Clock()
    audit = ledger(jaeger, clock, batch=500)
    for number in range(1200):
        jaeger.add(message(number, clock.now - 300 + number * 0.2))
    first = audit.update()
    assert total(first) == 500 and first.watermark_s < clock.now - 300  # behind, and says so
    clock.now += 15
    audit.update()
    clock.now += 15
    state = audit.update()
    assert total(state) == 1200 and state.watermark_s == pytest.approx(clock.now - SETTLE_S)


def test_a_message_seen_again_at_the_watermark_is_counted_once() -> None:
    jaeger, clock = FakeJaeger(), Clock()
    audit = ledger(jaeger, clock)
    trace_id = jaeger.add(message(0, clock.now - SETTLE_S - 1))
    assert total(audit.update()) == 1
    clock.now += 15
    # The next update's look back starts before the watermark: the message is returned again.
    returned = jaeger.returned[trace_id]
    state = audit.update()
    assert jaeger.returned[trace_id] > returned
    assert total(state) == 1 and state.judged == 1 and jaeger.reads[trace_id] == 1


def test_an_unsettled_message_waits_until_its_last_span_has_settled() -> None:
    jaeger, clock = FakeJaeger(), Clock()
    audit = ledger(jaeger, clock)
    start = clock.now
    # It started before the update's settled time, and ended after.
    spans = message(0, start - 3, length_s=20)
    trace_id = jaeger.add(spans)
    assert total(audit.update()) == 0 and jaeger.reads[trace_id] == 1
    clock.now = start + 5  # its last span is 8 s old: not read again yet
    assert total(audit.update()) == 0 and jaeger.reads[trace_id] == 1
    # A late span arrives: the message grew, its verdict waits for that span to settle.
    late = replace(spans[-1], span_id="00000000000000aa", end_ns=int((start + 6) * NS))
    jaeger.add([*spans, late])
    clock.now = start + 8
    assert total(audit.update()) == 0 and jaeger.reads[trace_id] == 2
    clock.now = start + 17
    state = audit.update()
    assert total(state) == 1 and jaeger.reads[trace_id] == 3


def test_a_message_longer_than_the_step_to_the_watermark_is_found() -> None:
    jaeger, clock = FakeJaeger(), Clock()
    audit = ledger(jaeger, clock)
    start = clock.now
    for _ in range(4):
        audit.update()
        clock.now += 15
    # Its spans started 110 s before the watermark and ended after it: they reach Jaeger
    # only now.
    watermark = start + 45 - SETTLE_S
    trace_id = jaeger.add(message(0, watermark + 5, length_s=115))
    clock.now = start + 75
    state = audit.update()
    assert total(state) == 1 and jaeger.reads[trace_id] == 1


def test_history_before_start_up_is_left_out() -> None:
    jaeger, clock = FakeJaeger(), Clock()
    old = jaeger.add(message(0, clock.now - 2000))
    edge = jaeger.add(message(1, clock.now - SETTLE_S - 905))  # just before the window
    recent = jaeger.add(message(2, clock.now - 100))
    state = ledger(jaeger, clock).update()
    assert total(state) == 1 and state.judged == 2
    assert jaeger.reads[old] == 0 and jaeger.reads[edge] == 1 and jaeger.reads[recent] == 1


def test_jaeger_down_keeps_the_counters_and_says_so() -> None:
    jaeger, clock = FakeJaeger(), Clock()
    metrics = AuditMetrics(auditor(jaeger), jaeger, clock)
    audit = metrics._ledger
    for number in range(5):
        jaeger.add(message(number, clock.now - 20 - number))
    assert total(audit.update()) == 5
    jaeger.down = True
    clock.now += 15
    jaeger.add(message(5, clock.now - 20))
    state = audit.update()
    assert state.failed and total(state) == 5
    text = metrics.counts().exposition()
    assert "omni_trace_audit_update_failed 1" in text
    assert 'omni_trace_audit_messages_total{chain="whole",outcome="ok"} 5' in text
    jaeger.down = False
    clock.now += 15
    state = audit.update()
    assert not state.failed and total(state) == 6


def test_the_exposition_has_counters_and_window_gauges() -> None:
    jaeger, clock = FakeJaeger(), Clock()
    metrics = AuditMetrics(auditor(jaeger), jaeger, clock)
    for number in range(3):
        jaeger.add(message(number, clock.now - 20, broken=number == 0))
    text = metrics.counts().exposition()
    samples = dict(re.findall(r"^(omni_trace_audit_\S+) (\S+)$", text, re.M))
    assert samples['omni_trace_audit_messages_total{chain="whole",outcome="ok"}'] == "2"
    assert samples['omni_trace_audit_messages_total{chain="broken",outcome="ok"}'] == "1"
    assert samples['omni_trace_audit_missing_layer_total{layer="dashboard"}'] == "1"
    assert samples['omni_trace_audit_messages{chain="whole",outcome="ok",window_s="900"}'] == "2"
    assert samples['omni_trace_audit_missing_layer{layer="dashboard",window_s="900"}'] == "1"
    assert samples["omni_trace_audit_judged_total"] == "3"
    assert float(samples["omni_trace_audit_cpu_seconds_total"]) > 0
    assert samples["omni_trace_audit_update_failed"] == "0"
    types = dict(re.findall(r"^# TYPE (\S+) (\S+)$", text, re.M))
    assert types["omni_trace_audit_messages_total"] == "counter"
    assert types["omni_trace_audit_messages"] == "gauge"
    assert "omni_trace_audit_limited" not in text


def test_a_new_message_is_judged_from_its_search_and_parsed_once() -> None:
    jaeger, clock = FakeJaeger(), Clock()
    audit = ledger(jaeger, clock)
    trace_id = jaeger.add(message(0, clock.now - 20))
    layers = {(s.service, s.name) for s in jaeger.traces[trace_id]}
    assert len(layers & set(default_spec().message_spans)) == 3
    state = audit.update()
    assert total(state) == 1 and state.totals.messages[("whole", "ok")] == 1
    # Each of the three layers' searches returned it; the first to do so had it parsed, and
    # it was never read by id. The session trace it links to was, once.
    assert jaeger.returned[trace_id] >= 3
    assert jaeger.parsed[trace_id] == 1 and jaeger.by_id[trace_id] == 0
    assert jaeger.by_id[SESSION[0].trace_id] == 1
    # The next update's look back returns it again: judged already, not parsed again.
    returned = jaeger.returned[trace_id]
    clock.now += 15
    assert total(audit.update()) == 1
    assert jaeger.returned[trace_id] > returned
    assert jaeger.parsed[trace_id] == 1 and jaeger.by_id[trace_id] == 0


def test_a_message_recorded_at_one_layer_only_is_found_and_counted() -> None:
    jaeger, clock = FakeJaeger(), Clock()
    audit = ledger(jaeger, clock)
    whole = jaeger.add(message(0, clock.now - 20))
    only = {
        service: jaeger.add([s for s in message(n, clock.now - 20) if s.service == service])
        for n, service in enumerate(("omni2", "dashboard-backend"), start=1)
    }
    state = audit.update()
    assert total(state) == 3 == state.judged
    assert state.totals.messages[("whole", "ok")] == 1
    assert state.totals.messages[("broken", "ok")] == 2
    assert state.totals.missing["client"] == 2
    for trace_id in (whole, *only.values()):
        assert jaeger.parsed[trace_id] == 1 and jaeger.by_id[trace_id] == 0


def test_a_burst_in_a_long_range_is_not_sent_again_at_each_cut() -> None:
    """The first update searches the whole window (15 minutes): a burst at its end answers
    each layer's search in full, and the range is cut below what the answer held and across
    it, not halved level after level (each level sending the burst's newest traces again)."""
    jaeger, clock = FakeJaeger(), Clock()
    audit = ledger(jaeger, clock)
    count = 1200
    for number in range(count):
        jaeger.add(message(number, clock.now - 20 + number * 0.004))
    state = audit.update()
    assert total(state) == count == state.judged
    assert jaeger.full_answers == 2 * 3  # two per layer
    assert max(jaeger.returned.values()) <= 2 * 3
    assert set(jaeger.parsed.values()) == {1} and not jaeger.by_id.keys() - {SESSION[0].trace_id}
    # The next update's look back returns the burst again, judged: cut where it lies.
    clock.now += 15
    full, returned = jaeger.full_answers, Counter(jaeger.returned)
    assert total(audit.update()) == count
    assert jaeger.full_answers - full == 2 * 3
    assert max((jaeger.returned - returned).values()) <= 2 * 3
    assert set(jaeger.parsed.values()) == {1}
