// One trace: for a message, its outcome, usage, hops, stream and critical path; then its
// waterfall, and the session trace it links to below it.

import { el } from "../../dom";
import { api, config, hopColumns, jaegerUiHref, type CriticalPath, type HopColumn, type Message, type Trace, type Turn } from "../api";
import { chainState, chainText, ms, money, outcomeText, stallText, streamRows, tokensText } from "../format";
import { waterfall } from "../waterfall";
import { link, messagesHead, table, view } from "./common";

// A message's outcome, chain, GenAI usage, tool calls and hops, above its waterfall.
export function turnSummary(chain: Message, turn: Turn, columns: HopColumn[]): HTMLElement {
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
  const hops = el("table", { class: "flow hops-table" }, messagesHead([], columns), el("tbody", {}, el("tr", {}, ...columns.map(({ key }) => el("td", { class: "num", "data-hop": key }, ms(chain.hops_ms[key]))))));
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

export async function showTrace(id: string): Promise<void> {
  const [trace, { jaeger_ui_url: jaegerUi, spec }] = await Promise.all([api<Trace>(`/api/traces/${encodeURIComponent(id)}`), config()]);
  const parts: (HTMLElement | string)[] = [
    el("h2", {}, `${trace.kind === "session" ? "Session" : trace.kind === "message" ? "Message" : "Trace"} ${trace.trace_id}`),
    ...(trace.chain && trace.turn
      ? [
          turnSummary(trace.chain, trace.turn, hopColumns(spec, trace.chain.hops_ms)),
          ...streamSection(trace.chain),
          el("h3", {}, "Waterfall"),
          el("p", { class: "legend-line" }, el("span", { class: "swatch model" }), "model call ", el("span", { class: "swatch tool" }), "tool call ", el("span", { class: "swatch error" }), "error ", el("span", { class: "swatch critical" }), "on the critical path"),
        ]
      : []),
    waterfall(trace.spans, new Set(trace.critical_path?.span_ids ?? [])),
    ...(trace.critical_path ? [criticalPathList(trace.critical_path), compareForm(trace.trace_id)] : []),
  ];
  if (jaegerUi) {
    parts.splice(1, 0, el("p", {}, el("a", { href: jaegerUiHref(jaegerUi, trace.trace_id), id: "jaeger-ui", target: "_blank", rel: "noopener" }, "open in the Jaeger UI")));
  }
  const conversation = trace.spans.map((s) => s.attributes[spec.conversation_attribute]).find((v) => typeof v === "string");
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
