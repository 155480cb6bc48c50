// Unit tests of the page's pure logic, run by node's test runner (tests/frontend/test_units.py
// bundles this file with esbuild and runs `node --test` on it).
import assert from "node:assert/strict";
import { test } from "node:test";

import { Backoff } from "../src/backoff";
import { describeClose } from "../src/closeReasons";
import { REDACTED, redactText, redactUrl } from "../src/redact";
import { describeState } from "../src/status";

test("redactUrl masks the token and keeps the trace context", () => {
  const url = "ws://h:1/ws/chat?token=eyJa.eyJb.sig&traceparent=00-abc-def-01";
  const out = redactUrl(url);
  assert.ok(out.includes(`token=${REDACTED}`), out);
  assert.ok(out.includes("traceparent=00-abc-def-01"), out);
  assert.ok(!out.includes("eyJa"), out);
});

test("redactText masks token pairs, bearer values, JWTs and a given secret", () => {
  assert.equal(redactText("x token=abc&y=1"), `x token=${REDACTED}&y=1`);
  assert.equal(redactText("Bearer abc.def"), `Bearer ${REDACTED}`);
  assert.equal(redactText("jwt eyJhbGci.eyJzdWIi.c2ln end"), `jwt ${REDACTED} end`);
  assert.equal(redactText("echo: s3cret!", "s3cret!"), `echo: ${REDACTED}`);
});

test("refusals are shown and not retried; outages are retried", () => {
  assert.deepEqual(describeClose(4401, "authentication failed: token expired"), {
    text: "authentication failed: token expired",
    retry: false,
  });
  assert.deepEqual(describeClose(4401, "missing token"), {
    text: "authentication failed: missing token",
    retry: false,
  });
  assert.equal(describeClose(4403, "user is blocked").text, "blocked: user is blocked");
  assert.equal(describeClose(4403, "user is blocked").retry, false);
  assert.equal(describeClose(4403, "identity header does not match").text.startsWith("access denied"), true);
  for (const code of [4502, 4504, 1001, 1006, 1011, 1012]) {
    const meaning = describeClose(code, "");
    assert.equal(meaning.retry, true, String(code));
    assert.ok(meaning.text.startsWith("server unavailable"), meaning.text);
  }
});

test("backoff doubles up to the cap and restarts after a success", () => {
  const backoff = new Backoff(500, 4000, 0);
  assert.deepEqual([1, 2, 3, 4, 5].map(() => backoff.next()), [500, 1000, 2000, 4000, 4000]);
  backoff.reset();
  assert.equal(backoff.next(), 500);
  const jittered = new Backoff(1000, 10_000, 0.2);
  for (let i = 0; i < 50; i++) {
    jittered.reset();
    const delay = jittered.next();
    assert.ok(delay >= 800 && delay <= 1200, String(delay));
  }
});

test("the state line counts down while reconnecting", () => {
  const now = 1_000_000;
  assert.equal(
    describeState({ kind: "reconnecting", until: now + 2100, reason: "server unavailable", attempt: 2 }, now),
    "reconnecting in 3s (server unavailable)",
  );
  assert.equal(
    describeState({ kind: "closed", reason: "authentication failed", code: 4401, refused: true, sessionTraceId: "" }),
    "closed: authentication failed",
  );
  assert.equal(describeState({ kind: "connecting", attempt: 1, sessionTraceId: "" }), "connecting");
});
