// The list of conversations (newest first, live, by user and window) and the hop charts.

import { byId, el } from "../../dom";
import { api, type Conversations, type Hops } from "../api";
import { genAiChart, hopChart } from "../chart";
import { time } from "../format";
import { LIVE_MS, link, table, view } from "./common";

const PAGE_SIZE = 50;

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

export async function showConversations(params: URLSearchParams): Promise<void> {
  const user = params.get("user") ?? "";
  const since = WINDOWS.some(([value]) => value === params.get("since")) ? (params.get("since") as string) : "86400";
  const page = Number(params.get("page") ?? "0") || 0;
  const query = new URLSearchParams({ page: String(page), page_size: String(PAGE_SIZE), since });
  if (user) query.set("user", user);
  const [data, hops] = await Promise.all([
    api<Conversations>(`/api/conversations?${query}`),
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
    ...[genAiChart(hops)].filter((chart) => chart !== null),
  );
}
