// Lines over time as SVG: the hop page's span-metric chart and its GenAI chart beside it.

import { el } from "../dom";
import type { GenAiSeries, Hops } from "./api";

const COLORS = ["#3d6bd1", "#d1653d", "#2f9e6e", "#8a4fd1", "#c9a227", "#c23b6e"];
const SVG = "http://www.w3.org/2000/svg";

function svg<K extends keyof SVGElementTagNameMap>(tag: K, attrs: Record<string, string>): SVGElementTagNameMap[K] {
  const node = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, value);
  return node;
}

// One line: `key` names its colour and legend entry (p50 and p95 of one thing share them).
interface Line {
  key: string;
  series: string;
  dashed: boolean;
  points: [number, number][];
}

// The lines on one time axis, `top` (ms, at least 1) at the top, and their legend.
function plot(lines: Line[]): [SVGSVGElement, HTMLElement] {
  const all = lines.flatMap((l) => l.points);
  const [width, height] = [800, 200];
  const t0 = Math.min(...all.map(([t]) => t));
  const t1 = Math.max(...all.map(([t]) => t), t0 + 1);
  const top = Math.max(...all.map(([, v]) => v), 1);
  const chart = svg("svg", { viewBox: `0 0 ${width} ${height + 20}`, class: "hops", role: "img" });
  chart.append(svg("text", { x: "2", y: "12", class: "axis" }));
  chart.lastElementChild!.textContent = `${top.toFixed(1)} ms`;
  const keys = [...new Set(lines.map((l) => l.key))];
  const legend = el("ul", { class: "legend" });
  keys.forEach((key, i) => {
    legend.append(el("li", { style: `color:${COLORS[i % COLORS.length]}` }, key));
  });
  for (const line of lines) {
    const color = COLORS[keys.indexOf(line.key) % COLORS.length];
    const points = line.points
      .map(([t, v]) => `${(((t - t0) / (t1 - t0)) * width).toFixed(1)},${(height - (v / top) * height + 10).toFixed(1)}`)
      .join(" ");
    chart.append(
      svg("polyline", {
        points,
        fill: "none",
        stroke: color,
        "stroke-width": "2",
        "stroke-dasharray": line.dashed ? "6 4" : "",
        "data-series": line.series,
        "data-points": String(line.points.length),
      }),
    );
  }
  return [chart, legend];
}

// p50 (solid) and p95 (dashed) of each layer's span over the window, and each layer's share
// of error spans, from span metrics in Prometheus (omni_trace/flowview/hops.py).
export function hopChart(hops: Hops): HTMLElement {
  if (!hops.available) return el("p", { class: "hint", id: "hop-chart" }, `Hop chart: ${hops.hint ?? "unavailable"}`);
  const lines = hops.latency_ms ?? [];
  const box = el("div", { id: "hop-chart" }, el("h3", {}, `Hops over the last ${hops.minutes} minutes (ms, p50 solid, p95 dashed)`));
  if (!lines.some((l) => l.points.length)) {
    box.append(el("p", { class: "hint" }, "no messages in this window yet"));
    return box;
  }
  const [chart, legend] = plot(
    lines.map((l) => ({
      key: `${l.service} ${l.span}`,
      series: `${l.service} ${l.span} p${Math.round(l.quantile * 100)}`,
      dashed: l.quantile > 0.5,
      points: l.points,
    })),
  );
  const errors = (hops.error_ratio ?? []).map((e) => {
    const last = e.points[e.points.length - 1]?.[1] ?? 0;
    return el("li", {}, `${e.service}: ${(last * 100).toFixed(1)}% error spans`);
  });
  box.append(chart, legend, el("ul", { class: "legend" }, ...errors));
  return box;
}

// The metric's short name on the chart (the legend has the whole of it in its title).
function genAiLabel(metric: string): string {
  return metric.replace(/^gen_ai\./, "");
}

// The GenAI semantic-convention series by their standard names (OMNI2's time to first token
// as the server of the stream, and the model's time per output chunk as OMNI2 receives it):
// p50 solid, p95 dashed, per service and requested model, in milliseconds.
export function genAiChart(hops: Hops): HTMLElement | null {
  if (!hops.available) return null;
  const series: GenAiSeries[] = hops.genai_s ?? [];
  const box = el("div", { id: "genai-chart" }, el("h3", {}, `GenAI streaming over the last ${hops.minutes} minutes (ms, p50 solid, p95 dashed)`));
  if (!series.some((s) => s.points.length)) {
    box.append(el("p", { class: "hint" }, "no GenAI metrics in this window yet"));
    return box;
  }
  const lines = series.map((s) => ({
    key: `${genAiLabel(s.metric)} ${s.service} ${s.model}`,
    series: `${s.metric} ${s.service} ${s.model} p${Math.round(s.quantile * 100)}`,
    dashed: s.quantile > 0.5,
    points: s.points.map(([t, v]): [number, number] => [t, v * 1000]),
  }));
  const [chart, legend] = plot(lines);
  box.append(chart, legend);
  return box;
}
