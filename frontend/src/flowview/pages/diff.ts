// Two messages side by side (GET /api/diff).

import { el } from "../../dom";
import { api, type PlacedSpan, type TimeDelta, type TraceDiff } from "../api";
import { deltaText, ms } from "../format";
import { link, table, view } from "./common";

function deltaTable(id: string, deltas: TimeDelta[]): HTMLTableElement {
  const rows = deltas.map((d) =>
    el(
      "tr",
      { "data-what": d.what },
      el("td", {}, d.what),
      el("td", { class: "num" }, `${ms(d.a_ms)}${d.a_count > 1 ? ` ×${d.a_count}` : ""}`),
      el("td", { class: "num" }, `${ms(d.b_ms)}${d.b_count > 1 ? ` ×${d.b_count}` : ""}`),
      el("td", { class: "num", "data-delta": d.delta_ms === null ? "" : String(d.delta_ms) }, deltaText(d.delta_ms)),
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

export async function showDiff(a: string, b: string): Promise<void> {
  const diff = await api<TraceDiff>(`/api/diff?${new URLSearchParams({ a, b })}`);
  view().replaceChildren(el("h2", {}, "Two messages compared"), diffView(diff));
}
