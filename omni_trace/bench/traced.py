"""What only a traced stack can say: spans per message, whether a burst's chains are whole
in Jaeger and where its slowest messages waited, and (as `omni-trace up` runs it) the CPU
of a load until the flow view has judged it."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Mapping, Sequence
from dataclasses import replace

import httpx
from opentelemetry.sdk.trace import TracerProvider

from omni_trace.bench.load import TOOL_CALLING, TOOL_FREE, Phase
from omni_trace.bench.phases import BurstRun, Slow
from omni_trace.bench.processes import ProcessSample, cpu_spent, sample_stack
from omni_trace.bench.report import (
    Chains,
    Judging,
    RunReport,
    SpanAt,
    SpanCount,
    Steady,
    Timeline,
)
from omni_trace.flowview.data import SETTLE_S
from omni_trace.stack.runner import Stack
from omni_trace.traces.chain import wait_for_chain
from omni_trace.traces.jaeger import JaegerClient, JaegerError, has_services
from otel.names import Service, SpanName


def traced_checks(run: Phase, report: RunReport, bursts: Mapping[str, BurstRun]) -> RunReport:
    """Spans per message, and for each burst: are its chains whole, and where did its slowest
    messages wait (their spans, by offset from the first)."""
    provider = run.provider
    if not isinstance(provider, TracerProvider):
        return report
    provider.force_flush()
    spans = span_phase(run, provider)
    checked = {
        key: replace(
            burst.report,
            chains=check_chains(run.stack, burst.trace_ids, run.cfg.chains_checked),
            slowest=timelines(run.stack, burst.slowest),
        )
        for key, burst in bursts.items()
    }
    return replace(report, spans=spans, bursts=checked)


def timelines(stack: Stack, slowest: Sequence[Slow]) -> tuple[Timeline, ...]:
    found = []
    with JaegerClient(stack.info.jaeger_query_url) as jaeger:
        for slow in slowest:
            try:
                spans = sorted(jaeger.get_trace(slow.trace_id), key=lambda s: s.start_ns)
            except (JaegerError, OSError):
                spans = []
            origin = spans[0].start_ns if spans else 0
            at = tuple(
                SpanAt(
                    round((s.start_ns - origin) / 1e6, 2),
                    round(s.duration_ms, 2),
                    s.service,
                    s.name,
                )
                for s in spans
            )
            found.append(
                Timeline(slow.trace_id, round(slow.latency_ms, 1), round(slow.ttft_ms, 1), at)
            )
    return tuple(found)


def span_phase(run: Phase, provider: TracerProvider) -> dict[str, SpanCount]:
    """Spans per message by service, and the delay from `done` until Jaeger has the turn."""
    run.say("spans per message and the delay until a message is queryable ...")
    result: dict[str, SpanCount] = {}
    with JaegerClient(run.stack.info.jaeger_query_url) as jaeger:
        for kind, text in (("tool_free", TOOL_FREE), ("tool_calling", TOOL_CALLING)):
            (sample,) = asyncio.run(run.chat(1, [text]))
            provider.force_flush()
            spans = jaeger.wait_for_trace(
                sample.trace_id,
                lambda s: any(x.service == Service.OMNI2 and x.name == SpanName.TURN for x in s),
                what="OMNI2's chat.turn",
                interval=0.02,
            )
            queryable_ms = (time.perf_counter() - sample.done_at) * 1000
            # Every layer's spans: wait until each service that took part has exported.
            layers = {Service.CHAT_CLIENT, Service.DASHBOARD, Service.OMNI2}
            if kind == "tool_calling":
                layers.add(Service.MCP_TOOLS)
            spans = jaeger.wait_for_trace(
                sample.trace_id,
                has_services(*layers),
                what="the message's spans",
            )
            by_service: dict[str, int] = {}
            for span in spans:
                by_service[span.service] = by_service.get(span.service, 0) + 1
            result[kind] = SpanCount(
                total=len(spans),
                by_service=dict(sorted(by_service.items())),
                queryable_after_done_ms=round(queryable_ms, 1),
            )
    return result


def check_chains(stack: Stack, trace_ids: Sequence[str], count: int) -> Chains:
    """Are `count` sampled chains whole (client > dashboard > omni2, Traefik through links)?"""
    chosen = random.sample(list(trace_ids), min(count, len(trace_ids)))
    broken: list[str] = []
    with JaegerClient(stack.info.jaeger_query_url) as jaeger:
        for trace_id in chosen:
            # Traefik exports every 5 s: the links into the session trace need that long.
            report = wait_for_chain(jaeger, trace_id, timeout=20)
            if not report.whole:
                broken.append(f"{trace_id}: {report.status}")
    return Chains(checked=len(chosen), whole=len(chosen) - len(broken), broken=tuple(broken[:5]))


# The flow view's own count of its judging (its /metrics).
_JUDGING = ("omni_trace_audit_judged_total", "omni_trace_audit_cpu_seconds_total")


def _metric(exposition: str, name: str) -> float | None:
    """An unlabelled sample's value in a Prometheus text exposition."""
    for line in exposition.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return None


def count_up(run: Phase, steady: Steady, before: dict[str, ProcessSample]) -> Steady:
    """As `omni-trace up` runs it, the flow view judges each message once, after it has
    settled (`SETTLE_S` after its end), when it is asked (Prometheus scrapes it), and Jaeger
    answers its reads then. So this stack's CPU per turn counts every process from the start
    of its load until the flow view has judged the load's messages (asked here as Prometheus
    asks), background included (scrapes, the services' metric exports), over the load's
    turns."""
    time.sleep(SETTLE_S + 1)
    response = httpx.get(
        f"{run.stack.info.flowview_url}/metrics",
        headers={"Authorization": f"Bearer {run.stack.flowview_token}"},
        timeout=30,
    )
    response.raise_for_status()
    spent = cpu_spent(before, sample_stack(run.stack))
    turns = max(steady.turns, 1)
    by_process = {name: round(cpu * 1000 / turns, 3) for name, cpu in sorted(spent.items())}
    judged, cpu_s = (_metric(response.text, name) for name in _JUDGING)
    judging = Judging(int(judged), round((cpu_s or 0.0) * 1000 / judged, 3)) if judged else None
    return replace(
        steady,
        cpu_ms_per_turn_by_process=by_process,
        cpu_ms_per_turn=sum(by_process.values()),
        flowview_judging=judging,
    )
