// What the flow view's pages share: the view box, links, tables, the hop columns' heads.

import { byId, el } from "../../dom";
import type { HopColumn } from "../api";

export const LIVE_MS = 5000;

export const view = (): HTMLElement => byId("view");

export function link(href: string, text: string): HTMLAnchorElement {
  return el("a", { href }, text);
}

// Headers ending in "#" head a numeric (right-aligned) column.
export function table(headers: string[], rows: HTMLTableRowElement[]): HTMLTableElement {
  const head = el("tr", {}, ...headers.map((h) => (h.endsWith("#") ? el("th", { class: "num" }, h.slice(0, -1)) : el("th", {}, h))));
  return el("table", { class: "flow" }, el("thead", {}, head), el("tbody", {}, ...rows));
}

// The spec's hop columns under one heading per group, so that time to first token reads per
// layer; a column without a group stands alone.
export function hopGroups(columns: HopColumn[]): [string, HopColumn[]][] {
  const groups: [string, HopColumn[]][] = [];
  for (const column of columns) {
    const last = groups[groups.length - 1];
    if (column.group && last && last[0] === column.group) last[1].push(column);
    else groups.push([column.group, [column]]);
  }
  return groups;
}

// Two header rows: the hop columns under their group (hops, first token at, time in).
export function messagesHead(leading: string[], columns: HopColumn[]): HTMLTableSectionElement {
  const top = el("tr", {}, ...leading.map((h) => el("th", { rowspan: "2" }, h)));
  const bottom = el("tr");
  for (const [group, hops] of hopGroups(columns)) {
    if (group) top.append(el("th", { colspan: String(hops.length), class: "group" }, `${group} (ms)`));
    else top.append(el("th", { rowspan: "2", class: "num" }, `${hops[0].label} (ms)`));
    if (group) bottom.append(...hops.map(({ label }) => el("th", { class: "num" }, label)));
  }
  return el("thead", {}, top, bottom);
}

// How long the page took (performance.now(), milliseconds): the API's answer, then building
// and laying out the rows. On #view as data-api-ms / data-render-ms / data-total-ms, and as
// a performance measure, for whoever wants to know (the browser test prints them).
export function markRendered(name: string, started: number, fetched: number): void {
  void view().offsetHeight; // layout now, so that the time includes it
  const done = performance.now();
  const box = view();
  box.dataset.view = name;
  box.dataset.apiMs = (fetched - started).toFixed(1);
  box.dataset.renderMs = (done - fetched).toFixed(1);
  box.dataset.totalMs = (done - started).toFixed(1);
  performance.measure(`flow:${name}`, { start: started, end: done });
}
