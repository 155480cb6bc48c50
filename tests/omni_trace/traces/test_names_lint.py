"""`names --lint` on hand-built spans: deprecated GenAI/MCP names with their replacements,
unknown ones with the nearest known name, our own names clean, and the reading bounded."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from omni_trace.traces.jaeger import FoundTraces, SpanEvent, TraceSpan
from omni_trace.traces.names_lint import (
    DEPRECATED,
    UNKNOWN,
    Finding,
    judge,
    lint_jaeger,
    lint_spans,
)
from otel.names import ATTRIBUTES


def _span(
    service: str,
    name: str,
    attributes: dict[str, Any],
    trace_id: str = "t1",
    events: tuple[SpanEvent, ...] = (),
) -> TraceSpan:
    return TraceSpan(
        trace_id=trace_id,
        span_id=f"{abs(hash((service, name, trace_id, len(attributes)))):016x}"[:16],
        parent_span_id=None,
        name=name,
        service=service,
        kind="CLIENT",
        start_ns=0,
        end_ns=1_000_000,
        attributes=attributes,
        events=events,
    )


def test_the_conventions_deprecated_names_come_with_their_replacements() -> None:
    assert judge("gen_ai.system") == (DEPRECATED, "gen_ai.provider.name")
    assert judge("gen_ai.usage.prompt_tokens") == (DEPRECATED, "gen_ai.usage.input_tokens")
    assert judge("gen_ai.usage.completion_tokens") == (DEPRECATED, "gen_ai.usage.output_tokens")
    assert judge("gen_ai.openai.request.seed") == (DEPRECATED, "gen_ai.request.seed")
    assert judge("gen_ai.prompt") == (DEPRECATED, None)  # removed, no replacement


def test_unknown_genai_and_mcp_names_get_the_nearest_known_one() -> None:
    assert judge("gen_ai.usage.input_token") == (UNKNOWN, "gen_ai.usage.input_tokens")
    assert judge("gen_ai.request.modle") == (UNKNOWN, "gen_ai.request.model")
    assert judge("mcp.method") == (UNKNOWN, "mcp.method.name")
    assert judge("gen_ai.zzzz") == (UNKNOWN, None)
    # Other namespaces are not this lint's business; known names are fine.
    assert judge("http.request.method") is None
    assert judge("chat.stream.gaps") is None
    assert judge("gen_ai.provider.name") is None


def test_our_own_genai_and_mcp_names_lint_clean() -> None:
    ours = [key for key in ATTRIBUTES if key.startswith(("gen_ai.", "mcp."))]
    assert ours, "the table has GenAI/MCP names"
    assert {key: judge(key) for key in ours if judge(key)} == {}


def test_findings_count_per_service_span_and_key() -> None:
    old = {"gen_ai.system": "openai", "gen_ai.usage.prompt_tokens": 3, "gen_ai.request.model": "m"}
    spans = [
        _span("svc-a", "chat gpt", old, "t1"),
        _span("svc-a", "chat gpt", old, "t2"),
        _span("svc-b", "tools/call q", {"mcp.method": "tools/call"}, "t3"),
        _span(
            "svc-b",
            "invoke_agent",
            {},
            "t3",
            events=(SpanEvent("gen_ai.choice", 0, {"gen_ai.completion": "..."}),),
        ),
        _span("svc-c", "GET", {"http.request.method": "GET"}, "t4"),
    ]
    assert lint_spans(spans) == [
        Finding("svc-a", "chat gpt", "gen_ai.system", DEPRECATED, "gen_ai.provider.name", 2),
        Finding(
            "svc-a",
            "chat gpt",
            "gen_ai.usage.prompt_tokens",
            DEPRECATED,
            "gen_ai.usage.input_tokens",
            2,
        ),
        Finding("svc-b", "invoke_agent", "gen_ai.completion", DEPRECATED, None, 1),
        Finding("svc-b", "tools/call q", "mcp.method", UNKNOWN, "mcp.method.name", 1),
    ]
    assert lint_spans(spans[-1:]) == []


class _FakeJaeger:
    """Two services sharing a trace: what JaegerClient answers, and what was asked."""

    def __init__(self, traces: dict[str, list[TraceSpan]]) -> None:
        self.traces = traces
        self.asked: list[dict[str, Any]] = []

    def services(self) -> list[str]:
        return sorted({s.service for spans in self.traces.values() for s in spans})

    def find_traces(
        self,
        service: str,
        operation: str | None = None,
        *,
        start_us: int,
        end_us: int,
        limit: int = 100,
        wanted: Callable[[str], bool] | None = None,
        **_: Any,
    ) -> FoundTraces:
        self.asked.append({"service": service, "start_us": start_us, "end_us": end_us})
        ids = [t for t, spans in self.traces.items() if any(s.service == service for s in spans)]
        ids = ids[:limit]
        return FoundTraces(ids, {t: self.traces[t] for t in ids if wanted is None or wanted(t)})


def test_reading_jaeger_is_bounded_and_reads_each_trace_once() -> None:
    traces = {
        f"t{i}": [
            _span("front", "chat", {"gen_ai.system": "x"}, f"t{i}"),
            _span("back", "call", {"gen_ai.provider.name": "x"}, f"t{i}"),
        ]
        for i in range(5)
    }
    jaeger = _FakeJaeger(traces)
    result = lint_jaeger(jaeger, minutes=10, span_limit=1000, now_s=1_000.0)  # type: ignore[arg-type]
    assert (result.traces, result.spans, result.truncated) == (5, 10, False)
    assert result.findings == [
        Finding("front", "chat", "gen_ai.system", DEPRECATED, "gen_ai.provider.name", 5)
    ]
    assert {(a["start_us"], a["end_us"]) for a in jaeger.asked} == {(400_000_000, 1_000_000_000)}
    rendered = result.render()
    assert "front" in rendered and "deprecated: use gen_ai.provider.name" in rendered

    limited = lint_jaeger(_FakeJaeger(traces), span_limit=3)  # type: ignore[arg-type]
    assert (limited.spans, limited.truncated) == (3, True)

    clean = lint_jaeger(_FakeJaeger({"t": traces["t0"][1:]}))  # type: ignore[arg-type]
    assert clean.findings == [] and "no deprecated or unknown" in clean.render()

    only_back = lint_jaeger(_FakeJaeger(traces), services=["back"])  # type: ignore[arg-type]
    assert (only_back.findings, only_back.spans, only_back.services) == ([], 5, ["back"])


def test_an_unreachable_jaeger_is_an_error_not_a_finding(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from omni_trace.cli import main

    assert main(["names", "--lint", "--jaeger", "http://127.0.0.1:9"]) == 2
    err = capsys.readouterr().err
    assert "cannot read spans from Jaeger at http://127.0.0.1:9" in err, err
