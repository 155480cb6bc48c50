// A conversation's messages: each one's chain verdict, outcome, usage and hop times.

import { el } from "../../dom";
import { api, config, hopColumns, type ConversationDetail, type HopColumn, type Message, type ModelCall, type ToolCall, type Turn } from "../api";
import { chainState, chainText, clock, ms, money, outcomeText, time, tokensText, toolText } from "../format";
import { link, markRendered, messagesHead, view } from "./common";

function chainCell(message: Message): HTMLTableCellElement {
  return el("td", { class: "chain", "data-chain": chainState(message) }, chainText(message));
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

export function messageRow(m: Message, turn: Turn | undefined, columns: HopColumn[]): HTMLTableRowElement {
  return el(
    "tr",
    { "data-trace": m.trace_id, "data-outcome": turn?.outcome ?? "" },
    el("td", { class: "ids" }, link(`#/trace/${m.trace_id}`, m.trace_id.slice(0, 8) + "…")),
    el("td", { class: "num", title: time(m.start_unix_ms) }, clock.format(m.start_unix_ms)),
    chainCell(m),
    outcomeCell(turn, m.errors),
    ...usageCells(turn),
    ...columns.map(({ key }) => el("td", { class: "num", "data-hop": key }, ms(m.hops_ms[key]))),
  );
}

export async function showConversation(id: string, started: number): Promise<void> {
  const [c, { spec }] = await Promise.all([api<ConversationDetail>(`/api/conversations/${encodeURIComponent(id)}`), config()]);
  const fetched = performance.now();
  const columns = hopColumns(spec, c.messages[0]?.hops_ms);
  // One tbody filled before it enters the page: one layout for all rows, not one per row.
  const body = el("tbody", {}, ...c.messages.map((m) => messageRow(m, c.turns?.[m.trace_id], columns)));
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
    el("div", { class: "scroll" }, el("table", { class: "flow messages" }, messagesHead(["trace", "sent", "chain", "outcome", "model", "tokens, cost", "tool calls"], columns), body)),
  );
  markRendered("conversation", started, fetched);
}
