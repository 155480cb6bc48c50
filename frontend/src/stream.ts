// Streaming per hop, as the browser saw it: the times of a message's token frames and, at its
// end, the `chat.stream.*` attributes of its span. Same statistics as otel/stream.py (nearest
// rank percentiles); the browser's span is the client's word, and the audit treats it so.

import { Attr } from "./names";

// The first 10,000 gaps of a message are kept; a longer stream still has its first-to-last
// time, from the last frame's time kept apart.
export const MAX_GAPS = 10_000;

export type StreamAttributes = Record<string, number>;

/** The times (ms, `performance.now()`) of one message's token frames. */
export class TokenClock {
  readonly times: number[] = [];
  last = 0;

  constructor(readonly started: number = performance.now()) {}

  /** A token frame now: one append into a bounded store. */
  mark(now: number = performance.now()): void {
    if (this.times.length <= MAX_GAPS) this.times.push(now);
    else this.last = now;
  }

  attributes(): StreamAttributes {
    return streamAttributes(this.times, this.started, this.last || null);
  }
}

function percentile(ordered: number[], q: number): number {
  return ordered[Math.max(Math.ceil(q * ordered.length) - 1, 0)];
}

const round3 = (value: number): number => Math.round(value * 1000) / 1000;

/** Count, p50, p95 and max of the gaps, when the longest began (from `started`), first to last. */
export function streamAttributes(
  times: number[],
  started: number,
  last: number | null = null,
): StreamAttributes {
  if (times.length < 2) return {};
  const gaps = times.slice(1).map((t, i) => t - times[i]);
  let longest = 0;
  gaps.forEach((gap, i) => {
    if (gap > gaps[longest]) longest = i;
  });
  const ordered = [...gaps].sort((a, b) => a - b);
  return {
    [Attr.STREAM_GAPS]: gaps.length,
    [Attr.STREAM_GAP_P50]: round3(percentile(ordered, 0.5)),
    [Attr.STREAM_GAP_P95]: round3(percentile(ordered, 0.95)),
    [Attr.STREAM_GAP_MAX]: round3(ordered[ordered.length - 1]),
    [Attr.STREAM_GAP_MAX_AT]: round3(times[longest] - started),
    [Attr.STREAM_FIRST_TO_LAST]: round3((last ?? times[times.length - 1]) - times[0]),
  };
}
