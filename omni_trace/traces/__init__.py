"""The trace toolkit: read a chat stack's traces from any Jaeger and judge them by a chain spec.

Depends on nothing in `services/` or `omni_trace.stack` (tests/omni_trace/test_packaging.py
checks it), so `pip install omni-trace` without the `stack` extra is enough to use it:

    from omni_trace.traces import JaegerClient, Trace, analyze_chain, load_spec

The pytest fixtures for it are in `omni_trace.traces.plugin`.
"""

from omni_trace.traces.assertions import Selector, Trace, TraceAssertionError, assert_message_chain
from omni_trace.traces.audit import AuditQuery, find_message_traces, run_audit
from omni_trace.traces.chain import (
    ChainReport,
    analyze_chain,
    session_closed_and_whole,
    wait_for_chain,
)
from omni_trace.traces.fetch import TraceFetcher
from omni_trace.traces.jaeger import (
    JaegerClient,
    JaegerError,
    SpanEvent,
    SpanLink,
    TraceSpan,
    TraceTimeout,
    has_services,
    has_spans_named,
)
from omni_trace.traces.spec import (
    ChainSpec,
    Layer,
    LinkRule,
    SpecError,
    default_spec,
    load_spec,
    parse_spec,
)
from omni_trace.traces.tracetree import render_tree
from omni_trace.traces.waterfall import render_waterfall

__all__ = [
    "AuditQuery",
    "ChainReport",
    "ChainSpec",
    "JaegerClient",
    "JaegerError",
    "Layer",
    "LinkRule",
    "Selector",
    "SpanEvent",
    "SpanLink",
    "SpecError",
    "Trace",
    "TraceAssertionError",
    "TraceFetcher",
    "TraceSpan",
    "TraceTimeout",
    "analyze_chain",
    "assert_message_chain",
    "default_spec",
    "find_message_traces",
    "has_services",
    "has_spans_named",
    "load_spec",
    "parse_spec",
    "render_tree",
    "render_waterfall",
    "run_audit",
    "session_closed_and_whole",
    "wait_for_chain",
]
