// The flow view: conversations, their messages' chains, and each message's waterfall, read
// from the flow view's JSON API (omni_trace/flowview/api.py). Everything shown is inserted as
// text, never as HTML: span attributes come from clients and models.

import { byId, el } from "./dom";

interface Summary {
  conversation_id: string;
  user_id: string | null;
  started_unix_ms: number;
  last_unix_ms: number;
  messages: number;
  broken: number;
  errors: number;
}

interface Message {
  trace_id: string;
  start_unix_ms: number;
  layers: Record<string, boolean>;
  // "present", "missing", or "not traced": a later layer recorded that it was not there
  // (a client that sent no trace context); the chain is then judged from the first traced.
  layer_states: Record<string, string>;
  not_traced: string[];
  first_layer: string | null;
  client_only: boolean;
  foreign: string[];
  hops_ms: Record<string, number | null>;
  broken: boolean;
  problems: string[];
  errors: string[];
  session_trace_ids: string[];
  // Streaming per hop (omni_trace/traces/streams.py): absent on reports from before them.
  streams?: Record<string, LayerStream>;
  stream_added_ms?: Record<string, number>;
  stall?: Stall | null;
}

// One layer's gaps between token frames, from its message span (ms); `public`: the client's word.
export interface LayerStream {
  gaps: number;
  p50_ms: number;
  p95_ms: number;
  max_ms: number;
  max_at_ms: number;
  first_to_last_ms: number;
  public: boolean;
}

// The hop that held the tokens: what it added to the longest gap of the layer below, and when.
export interface Stall {
  layer: string;
  below: string;
  added_ms: number;
  max_ms: number;
  below_max_ms: number;
  at_ms: number;
  description: string;
}

interface ModelCall {
  provider: string | null;
  model: string | null;
  input_tokens: number | null;
  output_tokens: number | null;
  duration_ms: number;
  ok: boolean;
  error_type: string | null;
}

interface ToolCall {
  name: string | null;
  call_id: string | null;
  duration_ms: number;
  ok: boolean;
  error: string | null;
}

// How a message ended and what it used (omni_trace/flowview/data.py turn_summary).
interface Turn {
  outcome: "ok" | "refused" | "error";
  reason: string | null;
  error_type: string | null;
  model_calls: ModelCall[];
  input_tokens: number | null;
  output_tokens: number | null;
  cost_usd: number | null;
  tool_calls: ToolCall[];
}

interface ConversationDetail extends Omit<Summary, "messages"> {
  messages: Message[];
  turns: Record<string, Turn>;
  refused: number;
  session_trace_ids: string[];
}

interface Span {
  trace_id: string;
  span_id: string;
  parent_span_id: string | null;
  name: string;
  service: string;
  kind: string;
  start_unix_ns: number;
  duration_ms: number;
  attributes: Record<string, unknown>;
  events: { name: string; offset_ms: number }[];
  links: { trace_id: string; span_id: string; attributes: Record<string, unknown> }[];
  status: string;
  status_message: string;
}

interface Trace {
  trace_id: string;
  kind: string;
  spans: Span[];
  linked_trace_ids: string[];
  chain: Message | null; // message traces: the audit's report
  turn: Turn | null;
  critical_path?: CriticalPath; // message traces (omni_trace/traces/critical_path.py)
}

// The spans that make up a message's time, in order (each segment: a span's own time).
export interface CriticalPath {
  root_span_id: string | null;
  total_ms: number;
  span_ids: string[];
  segments: { span_id: string; service: string; name: string; duration_ms: number; share: number }[];
}

// Two message traces compared (GET /api/diff, omni_trace/traces/diff.py).
interface TimeDelta {
  what: string;
  a_ms: number | null;
  b_ms: number | null;
  delta_ms: number | null;
  a_count: number;
  b_count: number;
}
interface PlacedSpan {
  path: string;
  service: string;
  name: string;
  span_id: string;
  duration_ms: number;
}
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

const HOPS: [string, string][] = [
  ["client_to_dashboard", "client → dashboard"],
  ["dashboard_to_omni2", "dashboard → omni2"],
  ["ttft_client", "first token: client"],
  ["ttft_dashboard", "first token: dashboard"],
  ["ttft_omni2", "first token: omni2"],
  ["model", "model"],
  ["tools", "tools"],
  ["total", "total"],
];
// The hops under one heading each, so that time to first token reads per layer.
const HOP_GROUPS: [string, [string, string][]][] = [
  ["hop", [["client_to_dashboard", "to dashboard"], ["dashboard_to_omni2", "to omni2"]]],
  ["first token at", [["ttft_client", "client"], ["ttft_dashboard", "dash\u00adboard"], ["ttft_omni2", "omni2"]]],
  ["time in", [["model", "model"], ["tools", "tools"]]],
  ["", [["total", "total"]]],
];
interface Hops {
  available: boolean;
  hint?: string;
  minutes?: number;
  latency_ms?: { service: string; span: string; quantile: number; points: [number, number][] }[];
  error_ratio?: { service: string; points: [number, number][] }[];
}

const PAGE_SIZE = 50;
const COLORS = ["#3d6bd1", "#d1653d", "#2f9e6e", "#8a4fd1", "#c9a227", "#c23b6e"];
const SVG = "http://www.w3.org/2000/svg";
const LIVE_MS = 5000;

const view = () => byId("view");
let live: number | undefined;

async function api<T>(path: string): Promise<T> {
  const response = await fetch(path, { headers: { accept: "application/json" } });
  let body: { error?: string } = {};
  try {
    body = await response.json();
  } catch {
    body = { error: `${response.status} ${response.statusText}` };
  }
  if (!response.ok) throw new Error(body.error ?? `${response.status} ${response.statusText}`);
  return body as T;
}

// Links beyond the page (a Jaeger UI, under compose) come from the server's settings; asked
// once. Without an answer the page simply has no such links.
let pageConfig: Promise<{ jaeger_ui_url: string | null }> | undefined;
function config(): Promise<{ jaeger_ui_url: string | null }> {
  pageConfig ??= api<{ jaeger_ui_url: string | null }>("/api/config").catch(() => ({ jaeger_ui_url: null }));
  return pageConfig;
}

// A trace's page in the Jaeger UI.
export function jaegerUiHref(base: string, traceId: string): string {
  return `${base.replace(/\/+$/, "")}/trace/${encodeURIComponent(traceId)}`;
}

function ms(value: number | null | undefined): string {
  return value === null || value === undefined ? "-" : value.toFixed(1);
}

function time(unixMs: number): string {
  return new Date(unixMs).toLocaleString();
}

// One formatter for every row: a new one per call costs more than the rest of a row.
const clock = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit", second: "2-digit", hourCycle: "h23" });

// Dollars with as many decimals as small amounts need, as OMNI2 writes them (checks.money).
export function money(amount: number | null): string {
  if (amount === null) return "-";
  return amount >= 0.01 || amount === 0 ? `$${amount.toFixed(2)}` : `$${amount.toFixed(6)}`;
}

function link(href: string, text: string): HTMLAnchorElement {
  return el("a", { href }, text);
}

type ChainView = Pick<Message, "broken" | "problems"> &
  Partial<Pick<Message, "not_traced" | "first_layer" | "client_only" | "foreign">>;

// Whether every layer's span is there and joined; how the message ended is its outcome.
export function chainState(message: ChainView): string {
  if (message.broken) return "broken";
  if (message.client_only) return "client-only";
  return message.not_traced?.length ? "not-traced" : "whole";
}

// What the verdict says in words: a layer not traced is the first hop's own record, not a break.
export function chainText(message: ChainView): string {
  const foreign = message.foreign?.length ? ` (${message.foreign.length} foreign span(s) left out)` : "";
  switch (chainState(message)) {
    case "broken":
      return `broken: ${message.problems.join("; ")}`;
    case "client-only":
      return "client only: no server layer recorded it";
    case "not-traced":
      return `whole from ${message.first_layer ?? "?"} (${(message.not_traced ?? []).join(", ")} not traced)${foreign}`;
    default:
      return `whole${foreign}`;
  }
}

function chainCell(message: Message): HTMLTableCellElement {
  return el("td", { class: "chain", "data-chain": chainState(message) }, chainText(message));
}

export function outcomeText(turn: Turn): string {
  if (turn.outcome === "ok") return "ok";
  const code = turn.error_type ? ` (${turn.error_type})` : "";
  return `${turn.outcome}${code}${turn.reason ? `: ${turn.reason}` : ""}`;
}

function outcomeCell(turn: Turn | undefined, errors: string[]): HTMLTableCellElement {
  // A trace without OMNI2's summary (e.g. not read yet): the audit's own errors say enough.
  if (!turn) return el("td", { class: "outcome", "data-outcome": errors.length ? "error" : "ok" }, errors.join("; ") || "ok");
  // A long provider message is cut to three lines here; the message's own page has it whole.
  const text = outcomeText(turn);
  return el("td", { class: "outcome", "data-outcome": turn.outcome, title: text }, el("div", { class: "clamp" }, text));
}

// Each model the message called, once, with how many calls and whether one failed.
function modelChips(calls: ModelCall[]): HTMLElement[] {
  const byModel = new Map<string, ModelCall[]>();
  for (const call of calls) {
    const key = call.model ?? "?";
    byModel.set(key, [...(byModel.get(key) ?? []), call]);
  }
  return [...byModel].map(([model, of]) => {
    const failed = of.filter((c) => !c.ok);
    const count = of.length > 1 ? ` ×${of.length}` : "";
    const why = failed.length ? ` failed${failed[0].error_type ? ` (${failed[0].error_type})` : ""}` : "";
    return el("span", { class: "chip model", "data-model": model, "data-ok": String(!failed.length) }, `${model}${count}${why}`);
  });
}

export function tokensText(turn: Turn): string {
  return turn.input_tokens === null && turn.output_tokens === null ? "-" : `${turn.input_tokens ?? "-"} in / ${turn.output_tokens ?? "-"} out`;
}

export function toolText(call: ToolCall): string {
  return `${call.name ?? "?"} ${ms(call.duration_ms)} ms ${call.ok ? "ok" : "failed"}`;
}

function toolChips(calls: ToolCall[]): HTMLElement[] {
  return calls.map((call) =>
    el("span", { class: "chip tool", "data-tool": call.name ?? "", "data-ok": String(call.ok), title: call.error ?? "" }, toolText(call)),
  );
}

function usageCells(turn: Turn | undefined): HTMLTableCellElement[] {
  if (!turn) return ["model", "usage", "tools"].map((col) => el("td", { "data-col": col }, "-"));
  return [
    el("td", { "data-col": "model" }, ...(turn.model_calls.length ? modelChips(turn.model_calls) : ["-"])),
    el(
      "td",
      { class: "num", "data-col": "usage" },
      el("div", { "data-col": "tokens" }, tokensText(turn)),
      el("div", { "data-col": "cost" }, money(turn.cost_usd)),
    ),
    el("td", { "data-col": "tools" }, ...(turn.tool_calls.length ? toolChips(turn.tool_calls) : ["-"])),
  ];
}

// Two header rows: the hop columns under their group (hops, first token at, time in).
function messagesHead(leading: string[]): HTMLTableSectionElement {
  const top = el("tr", {}, ...leading.map((h) => el("th", { rowspan: "2" }, h)));
  const bottom = el("tr");
  for (const [group, hops] of HOP_GROUPS) {
    if (group) top.append(el("th", { colspan: String(hops.length), class: "group" }, `${group} (ms)`));
    else top.append(el("th", { rowspan: "2", class: "num" }, `${hops[0][1]} (ms)`));
    if (group) bottom.append(...hops.map(([, label]) => el("th", { class: "num" }, label)));
  }
  return el("thead", {}, top, bottom);
}

// Headers ending in "#" head a numeric (right-aligned) column.
function table(headers: string[], rows: HTMLTableRowElement[]): HTMLTableElement {
  const head = el("tr", {}, ...headers.map((h) => (h.endsWith("#") ? el("th", { class: "num" }, h.slice(0, -1)) : el("th", {}, h))));
  return el("table", { class: "flow" }, el("thead", {}, head), el("tbody", {}, ...rows));
}

const WINDOWS: [string, string][] = [
  ["900", "15 minutes"],
  ["3600", "hour"],
  ["86400", "24 hours"],
  ["604800", "7 days"],
];

function listHref(user: string, since: string, page: number): string {
  const query = new URLSearchParams({ since, page: String(page) });
  if (user) query.set("user", user);
  return `#/?${query}`;
}

function filters(user: string, since: string): HTMLFormElement {
  const who = el("input", { name: "user", placeholder: "any user", value: user });
  const window_ = el("select", { name: "since" }, ...WINDOWS.map(([value, label]) => el("option", { value }, `last ${label}`)));
  window_.value = since;
  const form = el("form", { class: "row", id: "filters" }, el("label", {}, "user ", who), el("label", {}, "window ", window_), el("button", { type: "submit" }, "Show"));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    location.hash = listHref(who.value.trim(), window_.value, 0);
  });
  return form;
}

function svg<K extends keyof SVGElementTagNameMap>(tag: K, attrs: Record<string, string>): SVGElementTagNameMap[K] {
  const node = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, value);
  return node;
}

// p50 (solid) and p95 (dashed) of each layer's span over the window, and each layer's share
// of error spans, from span metrics in Prometheus (omni_trace/flowview/hops.py).
export function hopChart(hops: Hops): HTMLElement {
  if (!hops.available) return el("p", { class: "hint", id: "hop-chart" }, `Hop chart: ${hops.hint ?? "unavailable"}`);
  const lines = hops.latency_ms ?? [];
  const all = lines.flatMap((l) => l.points);
  const box = el("div", { id: "hop-chart" }, el("h3", {}, `Hops over the last ${hops.minutes} minutes (ms, p50 solid, p95 dashed)`));
  if (!all.length) {
    box.append(el("p", { class: "hint" }, "no messages in this window yet"));
    return box;
  }
  const [width, height] = [800, 200];
  const t0 = Math.min(...all.map(([t]) => t));
  const t1 = Math.max(...all.map(([t]) => t), t0 + 1);
  const top = Math.max(...all.map(([, v]) => v), 1);
  const chart = svg("svg", { viewBox: `0 0 ${width} ${height + 20}`, class: "hops", role: "img" });
  chart.append(svg("text", { x: "2", y: "12", class: "axis" }));
  chart.lastElementChild!.textContent = `${top.toFixed(1)} ms`;
  const keys = [...new Set(lines.map((l) => `${l.service} ${l.span}`))];
  const legend = el("ul", { class: "legend" });
  keys.forEach((key, i) => {
    legend.append(el("li", { style: `color:${COLORS[i % COLORS.length]}` }, key));
  });
  for (const line of lines) {
    const color = COLORS[keys.indexOf(`${line.service} ${line.span}`) % COLORS.length];
    const points = line.points
      .map(([t, v]) => `${(((t - t0) / (t1 - t0)) * width).toFixed(1)},${(height - (v / top) * height + 10).toFixed(1)}`)
      .join(" ");
    chart.append(
      svg("polyline", {
        points,
        fill: "none",
        stroke: color,
        "stroke-width": "2",
        "stroke-dasharray": line.quantile > 0.5 ? "6 4" : "",
        "data-series": `${line.service} ${line.span} p${Math.round(line.quantile * 100)}`,
        "data-points": String(line.points.length),
      }),
    );
  }
  const errors = (hops.error_ratio ?? []).map((e) => {
    const last = e.points[e.points.length - 1]?.[1] ?? 0;
    return el("li", {}, `${e.service}: ${(last * 100).toFixed(1)}% error spans`);
  });
  box.append(chart, legend, el("ul", { class: "legend" }, ...errors));
  return box;
}

async function showConversations(params: URLSearchParams): Promise<void> {
  const user = params.get("user") ?? "";
  const since = WINDOWS.some(([value]) => value === params.get("since")) ? (params.get("since") as string) : "86400";
  const page = Number(params.get("page") ?? "0") || 0;
  const query = new URLSearchParams({ page: String(page), page_size: String(PAGE_SIZE), since });
  if (user) query.set("user", user);
  const [data, hops] = await Promise.all([
    api<{ conversations: Summary[]; total: number }>(`/api/conversations?${query}`),
    api<Hops>("/api/hops?minutes=15").catch((err: Error) => ({ available: false, hint: err.message }) as Hops),
  ]);
  const rows = data.conversations.map((c) =>
    el(
      "tr",
      { "data-conversation": c.conversation_id },
      el("td", { class: "ids" }, link(`#/conversation/${c.conversation_id}`, c.conversation_id)),
      el("td", {}, c.user_id ? link(`#/?user=${encodeURIComponent(c.user_id)}`, c.user_id) : "-"),
      el("td", {}, time(c.started_unix_ms)),
      el("td", { class: "num" }, String(c.messages)),
      el("td", { class: "num" }, String(c.broken)),
      el("td", { class: "num" }, String(c.errors)),
    ),
  );
  const pages = el("nav", { class: "pages" });
  if (page > 0) pages.append(link(listHref(user, since, page - 1), "newer"));
  if ((page + 1) * PAGE_SIZE < data.total) pages.append(link(listHref(user, since, page + 1), "older"));
  const label = WINDOWS.find(([value]) => value === since)?.[1] ?? "";
  // Live refresh redraws the list: keep a filter being typed in.
  const typing = document.activeElement?.closest("#filters") ? byId("filters") : filters(user, since);
  view().replaceChildren(
    el("h2", {}, user ? `Conversations of ${user}` : "Conversations"),
    typing,
    el("p", { class: "hint" }, `${data.total} in the last ${label}, newest first; updated every ${LIVE_MS / 1000} s`),
    table(["conversation", "user", "started", "messages", "broken chains", "errors"], rows),
    pages,
    hopChart(hops),
  );
}

export function messageRow(m: Message, turn: Turn | undefined): HTMLTableRowElement {
  return el(
    "tr",
    { "data-trace": m.trace_id, "data-outcome": turn?.outcome ?? "" },
    el("td", { class: "ids" }, link(`#/trace/${m.trace_id}`, m.trace_id.slice(0, 8) + "…")),
    el("td", { class: "num", title: time(m.start_unix_ms) }, clock.format(m.start_unix_ms)),
    chainCell(m),
    outcomeCell(turn, m.errors),
    ...usageCells(turn),
    ...HOPS.map(([key]) => el("td", { class: "num", "data-hop": key }, ms(m.hops_ms[key]))),
  );
}

async function showConversation(id: string, started: number): Promise<void> {
  const c = await api<ConversationDetail>(`/api/conversations/${encodeURIComponent(id)}`);
  const fetched = performance.now();
  // One tbody filled before it enters the page: one layout for all rows, not one per row.
  const body = el("tbody", {}, ...c.messages.map((m) => messageRow(m, c.turns?.[m.trace_id])));
  const sessions = c.session_trace_ids.map((t) => el("li", { class: "ids" }, link(`#/trace/${t}`, t)));
  const refused = c.refused ?? 0;
  view().replaceChildren(
    el("h2", {}, `Conversation ${c.conversation_id}`),
    el(
      "p",
      { id: "conversation-summary" },
      `user ${c.user_id ?? "-"} · ${c.messages.length} messages · ${c.broken} broken · ${c.errors - refused} with errors · ${refused} refused`,
    ),
    el("h3", {}, "Session (connection) trace"),
    el("ul", {}, ...sessions),
    el("h3", {}, "Messages"),
    el("div", { class: "scroll" }, el("table", { class: "flow messages" }, messagesHead(["trace", "sent", "chain", "outcome", "model", "tokens, cost", "tool calls"]), body)),
  );
  markRendered("conversation", started, fetched);
}

// How long the page took (performance.now(), milliseconds): the API's answer, then building
// and laying out the rows. On #view as data-api-ms / data-render-ms / data-total-ms, and as
// a performance measure, for whoever wants to know (the browser test prints them).
function markRendered(name: string, started: number, fetched: number): void {
  void view().offsetHeight; // layout now, so that the time includes it
  const done = performance.now();
  const box = view();
  box.dataset.view = name;
  box.dataset.apiMs = (fetched - started).toFixed(1);
  box.dataset.renderMs = (done - fetched).toFixed(1);
  box.dataset.totalMs = (done - started).toFixed(1);
  performance.measure(`flow:${name}`, { start: started, end: done });
}

function depths(spans: Span[]): Map<string, number> {
  const byId = new Map(spans.map((s) => [s.span_id, s]));
  const depth = new Map<string, number>();
  const of = (span: Span, seen = 0): number => {
    const known = depth.get(span.span_id);
    if (known !== undefined) return known;
    const parent = span.parent_span_id ? byId.get(span.parent_span_id) : undefined;
    const d = parent && seen < 64 ? of(parent, seen + 1) + 1 : 0;
    depth.set(span.span_id, d);
    return d;
  };
  spans.forEach((s) => of(s));
  return depth;
}

function details(span: Span): HTMLElement {
  const lines = [
    `${span.service} · ${span.name} · ${span.kind} · ${ms(span.duration_ms)} ms · status ${span.status}${span.status_message ? `: ${span.status_message}` : ""}`,
    "",
    ...Object.entries(span.attributes).map(([k, v]) => `${k} = ${JSON.stringify(v)}`),
    ...span.events.map((e) => `event ${e.name} at +${ms(e.offset_ms)} ms`),
  ];
  const box = el("div", { class: "details" }, lines.join("\n"));
  for (const l of span.links) {
    box.append(el("div", {}, "link → ", link(`#/trace/${l.trace_id}`, `trace ${l.trace_id.slice(0, 12)}… span ${l.span_id}`), ` ${JSON.stringify(l.attributes)}`));
  }
  return box;
}

// `critical`: span ids on the message's critical path, highlighted.
export function waterfall(spans: Span[], critical: ReadonlySet<string> = new Set()): HTMLElement {
  const sorted = [...spans].sort((a, b) => a.start_unix_ns - b.start_unix_ns);
  const start = Math.min(...sorted.map((s) => s.start_unix_ns));
  const end = Math.max(...sorted.map((s) => s.start_unix_ns + s.duration_ms * 1e6));
  const total = Math.max(end - start, 1);
  const depth = depths(sorted);
  const selected = el("div");
  const rows = sorted.map((span) => {
    const left = ((span.start_unix_ns - start) / total) * 100;
    const width = ((span.duration_ms * 1e6) / total) * 100;
    const bar = el("div", { class: "bar", style: `left:${left}%;width:${width}%` });
    const label = el(
      "div",
      { class: "label", style: `padding-left:${(depth.get(span.span_id) ?? 0) * 0.8}rem` },
      `${span.service}  ${span.name}  ${ms(span.duration_ms)} ms`,
    );
    // The spans the audit times as model and tools (omni_trace/chain.py).
    const operation = span.service === "omni2" && span.name.startsWith("chat ") ? "chat" : span.name.startsWith("execute_tool") ? "execute_tool" : undefined;
    const row = el(
      "div",
      {
        class: "span",
        "data-span": span.span_id,
        "data-status": span.status,
        "data-duration-ms": String(span.duration_ms),
        // Model and tool spans get their own colour: where a message's time went, at a glance.
        "data-op": operation,
        "data-critical": critical.has(span.span_id) ? "true" : undefined,
      },
      label,
      el("div", { class: "track" }, bar),
    );
    row.addEventListener("click", () => selected.replaceChildren(details(span)));
    return row;
  });
  return el("div", {}, el("div", { class: "waterfall" }, ...rows), selected);
}

// A message's outcome, chain, GenAI usage, tool calls and hops, above its waterfall.
export function turnSummary(chain: Message, turn: Turn): HTMLElement {
  const models = turn.model_calls.map((c) =>
    el(
      "tr",
      { "data-model-call": c.model ?? "", "data-ok": String(c.ok) },
      el("td", {}, c.model ?? "?"),
      el("td", {}, c.provider ?? "-"),
      el("td", { class: "num" }, c.input_tokens === null ? "-" : String(c.input_tokens)),
      el("td", { class: "num" }, c.output_tokens === null ? "-" : String(c.output_tokens)),
      el("td", { class: "num" }, ms(c.duration_ms)),
      el("td", { class: "state" }, c.ok ? "ok" : `failed${c.error_type ? ` (${c.error_type})` : ""}`),
    ),
  );
  const tools = turn.tool_calls.map((c) =>
    el(
      "tr",
      { "data-tool-call": c.name ?? "", "data-ok": String(c.ok) },
      el("td", {}, c.name ?? "?"),
      el("td", { class: "ids" }, c.call_id ?? "-"),
      el("td", { class: "num" }, ms(c.duration_ms)),
      el("td", { class: "state" }, c.ok ? "ok" : `failed${c.error ? `: ${c.error}` : ""}`),
    ),
  );
  const hops = el("table", { class: "flow hops-table" }, messagesHead([]), el("tbody", {}, el("tr", {}, ...HOPS.map(([key]) => el("td", { class: "num", "data-hop": key }, ms(chain.hops_ms[key]))))));
  return el(
    "section",
    { id: "turn", "data-outcome": turn.outcome },
    el(
      "p",
      { class: "verdict" },
      el("span", { class: "outcome", "data-outcome": turn.outcome }, outcomeText(turn)),
      " · chain ",
      el("span", { class: "chain", "data-chain": chainState(chain) }, chainText(chain)),
    ),
    el(
      "p",
      { class: "usage" },
      "tokens ",
      el("strong", { "data-col": "tokens" }, tokensText(turn)),
      " · cost ",
      el("strong", { "data-col": "cost" }, money(turn.cost_usd)),
    ),
    el("h3", {}, "Model calls"),
    models.length ? table(["model", "provider", "input tokens#", "output tokens#", "ms#", "result"], models) : el("p", { class: "hint" }, "no model call"),
    el("h3", {}, "Tool calls"),
    tools.length ? table(["tool", "call id", "ms#", "result"], tools) : el("p", { class: "hint" }, "no tool call"),
    el("h3", {}, "Hops"),
    el("div", { class: "scroll" }, hops),
  );
}

// The verdict on a message's stream: the hop that held its tokens, or none.
export function stallText(chain: Pick<Message, "streams" | "stall">): string {
  if (chain.stall) return chain.stall.description;
  return Object.keys(chain.streams ?? {}).length ? "no hop held the tokens" : "no stream stats";
}

// One row of cells per layer with stream stats, outermost first (the report's layer order).
export function streamRows(chain: Pick<Message, "layers" | "streams" | "stream_added_ms">): string[][] {
  const streams = chain.streams ?? {};
  const order = [...Object.keys(chain.layers ?? {}), ...Object.keys(streams)];
  return [...new Set(order)]
    .filter((name) => name in streams)
    .map((name) => {
      const s = streams[name];
      const added = chain.stream_added_ms?.[name];
      return [
        s.public ? `${name} (the client's word)` : name,
        String(s.gaps),
        ms(s.p50_ms),
        ms(s.p95_ms),
        ms(s.max_ms),
        (s.max_at_ms / 1000).toFixed(1),
        ms(s.first_to_last_ms),
        added === undefined ? "-" : `${added >= 0 ? "+" : ""}${ms(added)}`,
      ];
    });
}

// Per-layer stream stats and the stalling hop, on a message's page (nothing for a report without).
export function streamSection(chain: Message): HTMLElement[] {
  const rows = streamRows(chain);
  if (!rows.length) return [];
  return [
    el(
      "section",
      { id: "stream", "data-stall": chain.stall?.layer ?? "" },
      el("h3", {}, "Stream (gaps between token frames)"),
      el("p", { class: "verdict", id: "stall" }, stallText(chain)),
      table(
        ["layer", "gaps#", "p50 ms#", "p95 ms#", "max ms#", "max at s#", "first to last ms#", "added ms#"],
        rows.map((cells) => el("tr", { "data-layer": cells[0].split(" ")[0] }, ...cells.map((c, i) => el("td", i ? { class: "num" } : {}, c)))),
      ),
    ),
  ];
}

// The critical path as a list: each segment's time and share of the message's total.
export function criticalPathList(path: CriticalPath): HTMLElement {
  const items = path.segments.map((s) =>
    el("li", { "data-span": s.span_id }, `${ms(s.duration_ms)} ms · ${(s.share * 100).toFixed(1)}% · ${s.service} ${s.name}`),
  );
  return el(
    "section",
    { id: "critical-path" },
    el("h3", {}, `Critical path (${ms(path.total_ms)} ms, highlighted in the waterfall)`),
    el("ol", {}, ...items),
  );
}

function diffDelta(d: TimeDelta): string {
  return d.delta_ms === null ? "-" : `${d.delta_ms >= 0 ? "+" : ""}${d.delta_ms.toFixed(1)}`;
}

function deltaTable(id: string, deltas: TimeDelta[]): HTMLTableElement {
  const rows = deltas.map((d) =>
    el(
      "tr",
      { "data-what": d.what },
      el("td", {}, d.what),
      el("td", { class: "num" }, `${ms(d.a_ms)}${d.a_count > 1 ? ` ×${d.a_count}` : ""}`),
      el("td", { class: "num" }, `${ms(d.b_ms)}${d.b_count > 1 ? ` ×${d.b_count}` : ""}`),
      el("td", { class: "num", "data-delta": d.delta_ms === null ? "" : String(d.delta_ms) }, diffDelta(d)),
    ),
  );
  const found = table(["", "A (ms)#", "B (ms)#", "B − A#"], rows);
  found.id = id;
  return found;
}

function onlyIn(label: string, id: string, spans: PlacedSpan[], layers: string[]): HTMLElement[] {
  if (!spans.length && !layers.length) return [];
  return [
    el("h3", {}, label),
    ...(layers.length ? [el("p", { class: "layers" }, `layers: ${layers.join(", ")}`)] : []),
    el("ul", { id }, ...spans.map((s) => el("li", { "data-span": s.span_id }, `${s.path} · ${ms(s.duration_ms)} ms`))),
  ];
}

// Two messages side by side: what one has that the other has not, and where time went.
export function diffView(diff: TraceDiff): HTMLElement {
  return el(
    "section",
    { id: "diff", "data-same": String(diff.same_structure) },
    el("p", {}, "A ", link(`#/trace/${diff.a}`, diff.a), " · B ", link(`#/trace/${diff.b}`, diff.b)),
    el("p", { class: "verdict" }, diff.same_structure ? "the same spans in the same places" : "the structure differs"),
    ...onlyIn("Only in A", "only-in-a", diff.only_in_a, diff.layers_only_in_a),
    ...onlyIn("Only in B", "only-in-b", diff.only_in_b, diff.layers_only_in_b),
    el("h3", {}, "Hops (largest difference first)"),
    deltaTable("diff-hops", diff.hops),
    el("h3", {}, "Spans by service and name (largest difference first)"),
    deltaTable("diff-spans", diff.spans),
  );
}

async function showDiff(a: string, b: string): Promise<void> {
  const diff = await api<TraceDiff>(`/api/diff?${new URLSearchParams({ a, b })}`);
  view().replaceChildren(el("h2", {}, "Two messages compared"), diffView(diff));
}

// On a message's page: compare it with another message (a trace id).
function compareForm(traceId: string): HTMLFormElement {
  const other = el("input", { name: "other", placeholder: "another message's trace id", size: "34" });
  const form = el("form", { class: "row", id: "compare" }, el("label", {}, "compare with ", other), el("button", { type: "submit" }, "Compare"));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const value = other.value.trim().toLowerCase();
    if (value) location.hash = `#/diff/${traceId}/${encodeURIComponent(value)}`;
  });
  return form;
}

async function showTrace(id: string): Promise<void> {
  const trace = await api<Trace>(`/api/traces/${encodeURIComponent(id)}`);
  const parts: (HTMLElement | string)[] = [
    el("h2", {}, `${trace.kind === "session" ? "Session" : trace.kind === "message" ? "Message" : "Trace"} ${trace.trace_id}`),
    ...(trace.chain && trace.turn
      ? [
          turnSummary(trace.chain, trace.turn),
          ...streamSection(trace.chain),
          el("h3", {}, "Waterfall"),
          el("p", { class: "legend-line" }, el("span", { class: "swatch model" }), "model call ", el("span", { class: "swatch tool" }), "tool call ", el("span", { class: "swatch error" }), "error ", el("span", { class: "swatch critical" }), "on the critical path"),
        ]
      : []),
    waterfall(trace.spans, new Set(trace.critical_path?.span_ids ?? [])),
    ...(trace.critical_path ? [criticalPathList(trace.critical_path), compareForm(trace.trace_id)] : []),
  ];
  const { jaeger_ui_url: jaegerUi } = await config();
  if (jaegerUi) {
    parts.splice(1, 0, el("p", {}, el("a", { href: jaegerUiHref(jaegerUi, trace.trace_id), id: "jaeger-ui", target: "_blank", rel: "noopener" }, "open in the Jaeger UI")));
  }
  const conversation = trace.spans.map((s) => s.attributes["gen_ai.conversation.id"]).find((v) => typeof v === "string");
  if (typeof conversation === "string") {
    parts.splice(1, 0, el("p", {}, "conversation ", link(`#/conversation/${conversation}`, conversation)));
  }
  if (trace.linked_trace_ids.length) {
    parts.push(el("h3", {}, "Linked traces"));
    parts.push(el("ul", {}, ...trace.linked_trace_ids.map((t) => el("li", { class: "ids" }, link(`#/trace/${t}`, t)))));
    // The session trace a message links to, drawn below it: connect, Traefik, auth.
    try {
      const linked = await api<Trace>(`/api/traces/${encodeURIComponent(trace.linked_trace_ids[0])}`);
      parts.push(el("h3", {}, `${linked.kind === "session" ? "Session" : "Linked"} trace ${linked.trace_id}`), waterfall(linked.spans));
    } catch (err) {
      parts.push(el("p", { class: "hint" }, `linked trace not shown: ${(err as Error).message}`));
    }
  }
  view().replaceChildren(...parts);
}

async function search(text: string): Promise<void> {
  const found = await api<{ view: string; trace_id?: string; conversation_id?: string; user_id?: string }>(
    `/api/search?${new URLSearchParams({ q: text })}`,
  );
  if (found.view === "trace" && found.trace_id) location.hash = `#/trace/${found.trace_id}`;
  else if (found.view === "conversation" && found.conversation_id) location.hash = `#/conversation/${found.conversation_id}`;
  else if (found.user_id) location.hash = `#/?user=${encodeURIComponent(found.user_id)}`;
}

async function route(): Promise<void> {
  window.clearInterval(live);
  live = undefined;
  const hash = location.hash.replace(/^#/, "") || "/";
  const [path, query] = hash.split("?", 2);
  const error = byId("flow-error");
  const started = performance.now();
  for (const key of ["view", "apiMs", "renderMs", "totalMs"]) delete view().dataset[key];
  const run = async (): Promise<void> => {
    try {
      if (path.startsWith("/conversation/")) await showConversation(decodeURIComponent(path.slice(14)), started);
      else if (path.startsWith("/trace/")) await showTrace(decodeURIComponent(path.slice(7)));
      else if (path.startsWith("/diff/")) {
        const [a, b] = path.slice(6).split("/", 2).map(decodeURIComponent);
        await showDiff(a, b ?? "");
      }
      else await showConversations(new URLSearchParams(query ?? ""));
      error.hidden = true;
    } catch (err) {
      error.textContent = (err as Error).message;
      error.hidden = false;
    }
  };
  await run();
  if (!path.startsWith("/conversation/") && !path.startsWith("/trace/") && !path.startsWith("/diff/")) {
    live = window.setInterval(run, LIVE_MS); // new conversations appear without a reload
  }
}

if (typeof document !== "undefined" && document.getElementById("view")) {
  byId<HTMLFormElement>("search").addEventListener("submit", (event) => {
    event.preventDefault();
    const text = byId<HTMLInputElement>("search-text").value.trim();
    if (text) {
      search(text).catch((err: Error) => {
        const error = byId("flow-error");
        error.textContent = err.message;
        error.hidden = false;
      });
    }
  });
  window.addEventListener("hashchange", () => void route());
  void route();
}
