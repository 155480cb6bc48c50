"""Traces recorded from a real run (data/), for the toolkit's own tests."""

from __future__ import annotations

import json
from pathlib import Path

from omni_trace.traces.jaeger import TraceSpan, parse_otlp

DATA = Path(__file__).parent / "data"


def recorded(name: str) -> list[TraceSpan]:
    return parse_otlp(json.loads((DATA / name).read_text())["result"])


def message_spans() -> list[TraceSpan]:
    return recorded("message_trace.json")


def session_spans() -> list[TraceSpan]:
    return recorded("session_trace.json")
