// The browser's per-hop stream statistics (src/stream.ts), the same as otel/stream.py's.
import assert from "node:assert/strict";
import { test } from "node:test";

import { Attr } from "../src/names";
import { MAX_GAPS, TokenClock, streamAttributes } from "../src/stream";

test("streamAttributes: gaps, nearest-rank percentiles, the longest stall and its offset", () => {
  // Frames at 100, 110, 120, 420, 430 ms after the span's start: gaps 10, 10, 300, 10.
  assert.deepEqual(streamAttributes([100, 110, 120, 420, 430], 0), {
    [Attr.STREAM_GAPS]: 4,
    [Attr.STREAM_GAP_P50]: 10,
    [Attr.STREAM_GAP_P95]: 300,
    [Attr.STREAM_GAP_MAX]: 300,
    [Attr.STREAM_GAP_MAX_AT]: 120,
    [Attr.STREAM_FIRST_TO_LAST]: 330,
  });
  assert.deepEqual(streamAttributes([5], 0), {});
});

test("TokenClock keeps a bounded store and the whole first-to-last time", () => {
  const clock = new TokenClock(0);
  for (let i = 0; i < MAX_GAPS + 5; i++) clock.mark(i);
  assert.equal(clock.times.length, MAX_GAPS + 1);
  const stats = clock.attributes();
  assert.equal(stats[Attr.STREAM_GAPS], MAX_GAPS);
  assert.equal(stats[Attr.STREAM_FIRST_TO_LAST], MAX_GAPS + 4);
});

test("the flow view's stream rows and stall verdict from a chain report", async () => {
  const { stallText, streamRows } = await import("../src/flowview/format");
  const layer = (max: number, pub = false) => ({ gaps: 40, p50_ms: 10, p95_ms: 20, max_ms: max, max_at_ms: 2300, first_to_last_ms: 900, public: pub });
  const chain = {
    layers: { client: true, dashboard: true, traefik: true, omni2: true },
    streams: { omni2: layer(12), client: layer(412, true), dashboard: layer(410) },
    stream_added_ms: { client: 2, dashboard: 398 },
    stall: { layer: "dashboard", below: "omni2", added_ms: 398, max_ms: 410, below_max_ms: 12, at_ms: 2300, description: "the dashboard held tokens for 398 ms at 2.3 s" },
  };
  assert.equal(stallText(chain), "the dashboard held tokens for 398 ms at 2.3 s");
  const rows = streamRows(chain);
  assert.deepEqual(rows.map((r) => r[0]), ["client (the client's word)", "dashboard", "omni2"]);
  assert.deepEqual(rows[1], ["dashboard", "40", "10.0", "20.0", "410.0", "2.3", "900.0", "+398.0"]);
  assert.equal(rows[2][7], "-"); // the innermost layer has nothing below it
  assert.equal(stallText({ streams: chain.streams, stall: null }), "no hop held the tokens");
  assert.equal(stallText({}), "no stream stats");
  assert.deepEqual(streamRows({ layers: {} }), []);
});
