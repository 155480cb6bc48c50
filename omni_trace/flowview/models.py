"""The flow view's JSON, typed: every answer of the API (omni_trace/flowview/api.py) passes
through one of these models on its way out, and the page's types
(frontend/src/api_types.ts) are generated from them (scripts/flow_types.py), so that the page
and the API cannot drift apart unnoticed (tests/frontend/test_flow_types.py).

An answer keeps the shape its producer gave it: a field with a default is one a producer may
leave out (the page sees it as optional), and is left out again on the way out.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from omni_trace.traces.spec import ChainSpec


class Model(BaseModel):
    # A key the model does not know is a contract change: it fails here, not on the page.
    model_config = ConfigDict(extra="forbid")

    def answer(self) -> dict[str, Any]:
        """The JSON body: what the producer set, nothing added."""
        return self.model_dump(mode="json", exclude_unset=True)


# -- a message's chain (omni_trace.traces.chain.ChainReport.as_dict) --------------------------


class LayerStream(Model):
    """One layer's gaps between token frames, from its message span (ms); `public`: the
    client's word (omni_trace.traces.streams)."""

    gaps: int
    p50_ms: float
    p95_ms: float
    max_ms: float
    max_at_ms: float
    first_to_last_ms: float
    public: bool


class Stall(Model):
    """The hop that held the tokens: what it added to the longest gap of the layer below."""

    layer: str
    below: str
    added_ms: float
    max_ms: float
    below_max_ms: float
    at_ms: float
    description: str


class Message(Model):
    """The audit's chain report of one message (`omni-trace audit --json`)."""

    trace_id: str
    start_unix_ms: int
    conversation_id: str | None
    user_id: str | None
    layers: dict[str, bool]
    # "present", "missing", or "not traced": a later layer recorded that it was not there.
    layer_states: dict[str, str]
    not_traced: list[str]
    not_traced_because: dict[str, str]
    first_layer: str | None
    hops_ms: dict[str, float | None]
    broken: bool
    problems: list[str]
    errors: list[str]
    session_trace_ids: list[str]
    client_trace_id: str | None
    hop: str | None
    cause: str | None
    foreign: list[str]
    client_only: bool
    streams: dict[str, LayerStream]
    stream_added_ms: dict[str, float]
    stall: Stall | None


# -- how a message ended (omni_trace.flowview.data.turn_summary) ------------------------------


class ModelCall(Model):
    provider: str | None
    model: str | None
    input_tokens: int | None
    output_tokens: int | None
    duration_ms: float
    ok: bool
    error_type: str | None


class ToolCall(Model):
    name: str | None
    call_id: str | None
    duration_ms: float
    ok: bool
    error: str | None


class Turn(Model):
    outcome: Literal["ok", "refused", "error"]
    reason: str | None
    error_type: str | None
    model_calls: list[ModelCall]
    input_tokens: int | None
    output_tokens: int | None
    cost_usd: float | None
    tool_calls: list[ToolCall]


# -- conversations ----------------------------------------------------------------------------


class Summary(Model):
    """One conversation in the list (GET /api/conversations)."""

    conversation_id: str
    user_id: str | None
    started_unix_ms: int
    last_unix_ms: int
    messages: int
    broken: int
    errors: int
    not_traced: int


class Conversations(Model):
    conversations: list[Summary]
    total: int
    page: int
    page_size: int


class ConversationDetail(Model):
    """GET /api/conversations/{id}: its messages and, by trace id, how each ended."""

    conversation_id: str
    user_id: str | None
    started_unix_ms: int
    last_unix_ms: int
    broken: int
    errors: int
    not_traced: int
    refused: int
    messages: list[Message]
    turns: dict[str, Turn]
    session_trace_ids: list[str]


# -- a trace ----------------------------------------------------------------------------------


class SpanEvent(Model):
    name: str
    offset_ms: float


class SpanLink(Model):
    trace_id: str
    span_id: str
    attributes: dict[str, Any]


class Span(Model):
    trace_id: str
    span_id: str
    parent_span_id: str | None
    name: str
    service: str
    kind: str
    start_unix_ns: int
    duration_ms: float
    attributes: dict[str, Any]
    events: list[SpanEvent]
    links: list[SpanLink]
    status: str
    status_message: str
    # What the spec the view serves (ChainSpec.model_spans, tool_spans) times this span as:
    # the waterfall marks it so, whatever the stack names its spans.
    role: Literal["model", "tool"] | None


class Segment(Model):
    span_id: str
    service: str
    name: str
    start_unix_ns: int
    end_unix_ns: int
    duration_ms: float
    share: float


class CriticalPath(Model):
    """The spans that make up a message's time, in order (omni_trace/traces/critical_path.py)."""

    root_span_id: str | None
    total_ms: float
    span_ids: list[str]
    segments: list[Segment]


class Trace(Model):
    """GET /api/traces/{id}; a message trace has its chain report, turn and critical path."""

    trace_id: str
    kind: Literal["message", "session", "other"]
    spans: list[Span]
    linked_trace_ids: list[str]
    chain: Message | None
    turn: Turn | None
    critical_path: CriticalPath | None = None


# -- diff, search -----------------------------------------------------------------------------


class TimeDelta(Model):
    what: str
    a_ms: float | None
    b_ms: float | None
    delta_ms: float | None
    a_count: int
    b_count: int


class PlacedSpan(Model):
    path: str
    service: str
    name: str
    span_id: str
    duration_ms: float


class TraceDiff(Model):
    """GET /api/diff: two message traces compared (omni_trace/traces/diff.py)."""

    a: str
    b: str
    same_structure: bool
    only_in_a: list[PlacedSpan]
    only_in_b: list[PlacedSpan]
    layers_only_in_a: list[str]
    layers_only_in_b: list[str]
    hops: list[TimeDelta]
    spans: list[TimeDelta]


class SearchResult(Model):
    """GET /api/search: where a pasted id leads."""

    view: Literal["trace", "conversation", "conversations"] | None
    trace_id: str | None = None
    kind: Literal["message", "session", "other"] | None = None
    conversation_id: str | None = None
    user_id: str | None = None
    error: str | None = None


# -- hops over time (omni_trace/flowview/hops.py) ---------------------------------------------

Point = tuple[float, float]  # [unix seconds, value]


class LatencySeries(Model):
    service: str
    span: str
    quantile: float
    points: list[Point]


class ErrorSeries(Model):
    service: str
    points: list[Point]


class GenAiSeries(Model):
    """A GenAI semantic-convention histogram's quantile over time (seconds), per service
    (Prometheus' `exported_job`) and requested model."""

    metric: str
    service: str
    model: str
    quantile: float
    points: list[Point]


class Hops(Model):
    available: bool
    hint: str | None = None
    minutes: float | None = None
    latency_ms: list[LatencySeries] | None = None
    error_ratio: list[ErrorSeries] | None = None
    genai_s: list[GenAiSeries] | None = None


# -- the page's settings and the spec's hops (GET /api/config) --------------------------------


class HopColumn(Model):
    """One number of a message's `hops_ms`, as the page heads its column."""

    key: str
    group: str  # "" for a column of its own
    label: str


class SpecInfo(Model):
    """The chain spec the view judges messages by: its layers, outermost first, and the hops
    it reports for each message, in the order the page shows them."""

    name: str
    layers: list[str]
    hops: list[HopColumn]
    # The span attribute that carries a message's conversation (the page links by it).
    conversation_attribute: str


class Config(Model):
    jaeger_ui_url: str | None
    spec: SpecInfo


def spec_info(spec: ChainSpec) -> SpecInfo:
    """The hops of `spec` (ChainSpec.hops) under the page's headings: each layer's hop from
    its parent, time to first token at each layer, time in the model and in tools, total."""
    columns = [
        HopColumn(key=f"{layer.parent}_to_{layer.name}", group="hop", label=f"to {layer.name}")
        for layer in spec.layers
        if layer.parent
    ]
    columns += [
        HopColumn(key=f"ttft_{layer.name}", group="first token at", label=layer.name)
        for layer in spec.message_layers
    ]
    columns += [
        HopColumn(key="model", group="time in", label="model"),
        HopColumn(key="tools", group="time in", label="tools"),
        HopColumn(key="total", group="", label="total"),
    ]
    if tuple(c.key for c in columns) != spec.hops:  # one rule for both, or the page lies
        raise ValueError(f"spec {spec.name}: its hops and the page's columns differ")
    return SpecInfo(
        name=spec.name,
        layers=list(spec.layer_names),
        hops=columns,
        conversation_attribute=spec.conversation_attribute,
    )


# What the generator writes to TypeScript, in this order (scripts/flow_types.py).
EXPORTED: tuple[type[Model], ...] = (
    LayerStream,
    Stall,
    Message,
    ModelCall,
    ToolCall,
    Turn,
    Summary,
    Conversations,
    ConversationDetail,
    SpanEvent,
    SpanLink,
    Span,
    Segment,
    CriticalPath,
    Trace,
    TimeDelta,
    PlacedSpan,
    TraceDiff,
    SearchResult,
    LatencySeries,
    ErrorSeries,
    GenAiSeries,
    Hops,
    HopColumn,
    SpecInfo,
    Config,
)
