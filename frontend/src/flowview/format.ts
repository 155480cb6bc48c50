// The flow view's words and numbers: pure functions of the API's answers (no DOM).

import type { LayerStream, Message, ToolCall, Turn } from "./api";

export function ms(value: number | null | undefined): string {
  return value === null || value === undefined ? "-" : value.toFixed(1);
}

export function time(unixMs: number): string {
  return new Date(unixMs).toLocaleString();
}

// One formatter for every row: a new one per call costs more than the rest of a row.
export const clock = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit", second: "2-digit", hourCycle: "h23" });

// Dollars with as many decimals as small amounts need, as OMNI2 writes them (checks.money).
export function money(amount: number | null): string {
  if (amount === null) return "-";
  return amount >= 0.01 || amount === 0 ? `$${amount.toFixed(2)}` : `$${amount.toFixed(6)}`;
}

// A report from before the newer fields (not_traced, first_layer, ...) reads as before them.
export type ChainView = Pick<Message, "broken" | "problems"> &
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

export function outcomeText(turn: Turn): string {
  if (turn.outcome === "ok") return "ok";
  const code = turn.error_type ? ` (${turn.error_type})` : "";
  return `${turn.outcome}${code}${turn.reason ? `: ${turn.reason}` : ""}`;
}

export function tokensText(turn: Turn): string {
  return turn.input_tokens === null && turn.output_tokens === null ? "-" : `${turn.input_tokens ?? "-"} in / ${turn.output_tokens ?? "-"} out`;
}

export function toolText(call: ToolCall): string {
  return `${call.name ?? "?"} ${ms(call.duration_ms)} ms ${call.ok ? "ok" : "failed"}`;
}

// Streaming per hop (omni_trace/traces/streams.py): absent on reports from before it.
type StreamView = Partial<Pick<Message, "layers" | "stream_added_ms" | "stall">> & { streams?: Record<string, LayerStream> };

// The verdict on a message's stream: the hop that held its tokens, or none.
export function stallText(chain: StreamView): string {
  if (chain.stall) return chain.stall.description;
  return Object.keys(chain.streams ?? {}).length ? "no hop held the tokens" : "no stream stats";
}

// One row of cells per layer with stream stats, outermost first (the report's layer order).
export function streamRows(chain: StreamView): string[][] {
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

export function deltaText(deltaMs: number | null): string {
  return deltaMs === null ? "-" : `${deltaMs >= 0 ? "+" : ""}${deltaMs.toFixed(1)}`;
}
