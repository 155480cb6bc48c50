// A trace's spans as a waterfall: one bar per span on the trace's time axis, indented by
// depth, the critical path highlighted; a click shows the span's attributes, events, links.

import { el } from "../dom";
import type { Span } from "./api";
import { ms } from "./format";
import { link } from "./pages/common";

// A span's role (Span.role: the spec's model_spans or tool_spans) as the GenAI operation it
// is, the name the page's style (flow.css) colours it by.
const OPERATION: Record<NonNullable<Span["role"]>, string> = { model: "chat", tool: "execute_tool" };

// What a span's bar is coloured as: by its role alone, whatever the span is called.
export function operation(span: Pick<Span, "role">): string | undefined {
  return span.role ? OPERATION[span.role] : undefined;
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
    const row = el(
      "div",
      {
        class: "span",
        "data-span": span.span_id,
        "data-status": span.status,
        "data-duration-ms": String(span.duration_ms),
        // Model and tool spans get their own colour: where a message's time went, at a glance.
        // Which spans those are is the server's word, from the spec it serves (Span.role).
        "data-op": operation(span),
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

