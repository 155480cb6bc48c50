// Generated from omni_trace/flowview/models.py by scripts/flow-types: do not edit by hand.
// The flow view's JSON API (omni_trace/flowview/api.py) answers through those models;
// tests/frontend/test_flow_types.py fails when this file and they differ.

// One layer's gaps between token frames, from its message span (ms); `public`: the
// client's word (omni_trace.traces.streams).
export interface LayerStream {
  gaps: number;
  p50_ms: number;
  p95_ms: number;
  max_ms: number;
  max_at_ms: number;
  first_to_last_ms: number;
  public: boolean;
}

// The hop that held the tokens: what it added to the longest gap of the layer below.
export interface Stall {
  layer: string;
  below: string;
  added_ms: number;
  max_ms: number;
  below_max_ms: number;
  at_ms: number;
  description: string;
}

// The audit's chain report of one message (`omni-trace audit --json`).
export interface Message {
  trace_id: string;
  start_unix_ms: number;
  conversation_id: string | null;
  user_id: string | null;
  layers: Record<string, boolean>;
  layer_states: Record<string, string>;
  not_traced: string[];
  not_traced_because: Record<string, string>;
  first_layer: string | null;
  hops_ms: Record<string, number | null>;
  broken: boolean;
  problems: string[];
  errors: string[];
  session_trace_ids: string[];
  client_trace_id: string | null;
  hop: string | null;
  cause: string | null;
  foreign: string[];
  client_only: boolean;
  streams: Record<string, LayerStream>;
  stream_added_ms: Record<string, number>;
  stall: Stall | null;
}

export interface ModelCall {
  provider: string | null;
  model: string | null;
  input_tokens: number | null;
  output_tokens: number | null;
  duration_ms: number;
  ok: boolean;
  error_type: string | null;
}

export interface ToolCall {
  name: string | null;
  call_id: string | null;
  duration_ms: number;
  ok: boolean;
  error: string | null;
}

export interface Turn {
  outcome: "ok" | "refused" | "error";
  reason: string | null;
  error_type: string | null;
  model_calls: ModelCall[];
  input_tokens: number | null;
  output_tokens: number | null;
  cost_usd: number | null;
  tool_calls: ToolCall[];
}

// One conversation in the list (GET /api/conversations).
export interface Summary {
  conversation_id: string;
  user_id: string | null;
  started_unix_ms: number;
  last_unix_ms: number;
  messages: number;
  broken: number;
  errors: number;
  not_traced: number;
}

export interface Conversations {
  conversations: Summary[];
  total: number;
  page: number;
  page_size: number;
}

// GET /api/conversations/{id}: its messages and, by trace id, how each ended.
export interface ConversationDetail {
  conversation_id: string;
  user_id: string | null;
  started_unix_ms: number;
  last_unix_ms: number;
  broken: number;
  errors: number;
  not_traced: number;
  refused: number;
  messages: Message[];
  turns: Record<string, Turn>;
  session_trace_ids: string[];
}

export interface SpanEvent {
  name: string;
  offset_ms: number;
}

export interface SpanLink {
  trace_id: string;
  span_id: string;
  attributes: Record<string, unknown>;
}

export interface Span {
  trace_id: string;
  span_id: string;
  parent_span_id: string | null;
  name: string;
  service: string;
  kind: string;
  start_unix_ns: number;
  duration_ms: number;
  attributes: Record<string, unknown>;
  events: SpanEvent[];
  links: SpanLink[];
  status: string;
  status_message: string;
  role: "model" | "tool" | null;
}

export interface Segment {
  span_id: string;
  service: string;
  name: string;
  start_unix_ns: number;
  end_unix_ns: number;
  duration_ms: number;
  share: number;
}

// The spans that make up a message's time, in order (omni_trace/traces/critical_path.py).
export interface CriticalPath {
  root_span_id: string | null;
  total_ms: number;
  span_ids: string[];
  segments: Segment[];
}

// GET /api/traces/{id}; a message trace has its chain report, turn and critical path.
export interface Trace {
  trace_id: string;
  kind: "message" | "session" | "other";
  spans: Span[];
  linked_trace_ids: string[];
  chain: Message | null;
  turn: Turn | null;
  critical_path?: CriticalPath | null;
}

export interface TimeDelta {
  what: string;
  a_ms: number | null;
  b_ms: number | null;
  delta_ms: number | null;
  a_count: number;
  b_count: number;
}

export interface PlacedSpan {
  path: string;
  service: string;
  name: string;
  span_id: string;
  duration_ms: number;
}

// GET /api/diff: two message traces compared (omni_trace/traces/diff.py).
export interface TraceDiff {
  a: string;
  b: string;
  same_structure: boolean;
  only_in_a: PlacedSpan[];
  only_in_b: PlacedSpan[];
  layers_only_in_a: string[];
  layers_only_in_b: string[];
  hops: TimeDelta[];
  spans: TimeDelta[];
}

// GET /api/search: where a pasted id leads.
export interface SearchResult {
  view: "trace" | "conversation" | "conversations" | null;
  trace_id?: string | null;
  kind?: "message" | "session" | "other" | null;
  conversation_id?: string | null;
  user_id?: string | null;
  error?: string | null;
}

export interface LatencySeries {
  service: string;
  span: string;
  quantile: number;
  points: [number, number][];
}

export interface ErrorSeries {
  service: string;
  points: [number, number][];
}

// A GenAI semantic-convention histogram's quantile over time (seconds), per service
// (Prometheus' `exported_job`) and requested model.
export interface GenAiSeries {
  metric: string;
  service: string;
  model: string;
  quantile: number;
  points: [number, number][];
}

export interface Hops {
  available: boolean;
  hint?: string | null;
  minutes?: number | null;
  latency_ms?: LatencySeries[] | null;
  error_ratio?: ErrorSeries[] | null;
  genai_s?: GenAiSeries[] | null;
}

// One number of a message's `hops_ms`, as the page heads its column.
export interface HopColumn {
  key: string;
  group: string;
  label: string;
}

// The chain spec the view judges messages by: its layers, outermost first, and the hops
// it reports for each message, in the order the page shows them.
export interface SpecInfo {
  name: string;
  layers: string[];
  hops: HopColumn[];
  conversation_attribute: string;
}

export interface Config {
  jaeger_ui_url: string | null;
  spec: SpecInfo;
}
