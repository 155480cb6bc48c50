// Unit tests of the page's pure logic, run by node's test runner (tests/frontend/test_units.py
// bundles this file with esbuild and runs `node --test` on it).
import assert from "node:assert/strict";
import { test } from "node:test";

import { trace } from "@opentelemetry/api";

import { Backoff } from "../src/backoff";
import { ChatClient, type ConnectionState } from "../src/chat";
import { describeClose } from "../src/closeReasons";
import { LoginError, login } from "../src/login";
import { CLOSE_MEANINGS, CloseCode } from "../src/names";
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
    final: true,
  });
  assert.deepEqual(describeClose(4401, "missing token"), {
    text: "authentication failed: missing token",
    final: true,
  });
  assert.deepEqual(describeClose(4401, "token expired"), {
    text: "authentication failed: token expired",
    final: true,
  });
  assert.deepEqual(describeClose(4423, "user blocked: abusive prompts"), {
    text: "user blocked: abusive prompts",
    final: true,
  });
  assert.deepEqual(describeClose(4404, "unknown user 'ghost'"), { text: "unknown user 'ghost'", final: true });
  assert.deepEqual(describeClose(4403, "origin not allowed"), {
    text: "access denied: origin not allowed",
    final: true,
  });
  assert.equal(describeClose(4403, "identity header does not match").text.startsWith("access denied"), true);
  for (const code of [4502, 4504, 1001, 1006, 1011, 1012, 1013]) {
    const meaning = describeClose(code, "");
    assert.equal(meaning.final, false, String(code));
    assert.ok(meaning.text.startsWith("server unavailable"), meaning.text);
  }
});

test("every code of the table: final ones stop, the others retry, the label leads the reason", () => {
  const finals = [4400, 4401, 4403, 4404, 4423, 4429, 1008, 1009];
  for (const [key, meaning] of Object.entries(CLOSE_MEANINGS)) {
    const code = Number(key);
    assert.equal(meaning.final, finals.includes(code), `code ${code}`);
    assert.deepEqual(describeClose(code, "the reason"), {
      text: `${meaning.label}: the reason`,
      final: meaning.final,
    });
    assert.deepEqual(describeClose(code, ""), { text: meaning.label, final: meaning.final });
  }
  for (const code of Object.values(CloseCode)) assert.ok(CLOSE_MEANINGS[code], `no meaning for ${code}`);
});

test("a refusal code the page does not know yet: 44xx is final, 45xx is retried", () => {
  assert.deepEqual(describeClose(4418, "no teapots"), { text: "refused (code 4418): no teapots", final: true });
  assert.equal(describeClose(4599, "").final, false);
  assert.equal(describeClose(3000, "").final, false);
});

// -- the chat client against a fake WebSocket ----------------------------------------------

class FakeSocket {
  static readonly CONNECTING = 0;
  static readonly OPEN = 1;
  static readonly CLOSING = 2;
  static readonly CLOSED = 3;
  static opened: FakeSocket[] = [];
  readyState = FakeSocket.OPEN;
  onmessage: ((event: { data: unknown }) => void) | null = null;
  onclose: ((event: { code: number; reason: string }) => void) | null = null;
  sent: string[] = [];
  constructor(readonly url: URL) {
    FakeSocket.opened.push(this);
  }
  send(data: string): void {
    this.sent.push(data);
  }
  close(): void {
    this.readyState = FakeSocket.CLOSED;
  }
  /** The server's side: a frame, then (optionally) a close. */
  frame(frame: object): void {
    this.onmessage?.({ data: JSON.stringify(frame) });
  }
  serverClose(code: number, reason: string): void {
    this.readyState = FakeSocket.CLOSED;
    this.onclose?.({ code, reason });
  }
}

function fakeClient(): { client: ChatClient; states: ConnectionState[]; logs: string[] } {
  (globalThis as { WebSocket?: unknown }).WebSocket = FakeSocket;
  FakeSocket.opened = [];
  const states: ConnectionState[] = [];
  const logs: string[] = [];
  const client = new ChatClient({
    wsUrl: "ws://dashboard.test:8091/ws/chat",
    tracer: trace.getTracer("units"),
    reconnect: { initial_ms: 5, max_ms: 20 },
    onState: (state) => states.push(state),
    onLog: (_direction, text) => logs.push(text),
  });
  return { client, states, logs };
}

const pause = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
const WELCOME = { type: "welcome", conversation_id: "c1", user_id: "u1" };

for (const [code, reason, shown] of [
  [4401, "authentication failed: token invalid", "authentication failed: token invalid"],
  [4401, "token expired", "authentication failed: token expired"],
  [4403, "origin not allowed", "access denied: origin not allowed"],
  [4404, "unknown user 'ghost'", "unknown user 'ghost'"],
  [4423, "user blocked: abusive prompts", "user blocked: abusive prompts"],
  [4429, "5 connections open", "too many connections: 5 connections open"],
  [1008, "frame rate exceeded", "too many frames: frame rate exceeded"],
  [1009, "frame over 65536 bytes", "frame too large: frame over 65536 bytes"],
] as const) {
  test(`close ${code} "${reason}" is final: shown, not retried, the token dropped`, async () => {
    const { client, states, logs } = fakeClient();
    client.connect("eyJhbGci.secret-token.sig");
    assert.equal(FakeSocket.opened.length, 1);
    assert.equal(FakeSocket.opened[0]!.url.searchParams.get("token"), "eyJhbGci.secret-token.sig");
    FakeSocket.opened[0]!.serverClose(code, reason);
    await pause(60); // many times the 5 ms backoff: a retry would have opened a socket by now
    assert.equal(FakeSocket.opened.length, 1, "no reconnect attempt");
    const state = client.state;
    assert.ok(state.kind === "closed", state.kind);
    assert.deepEqual([state.reason, state.code, state.refused], [shown, code, true]);
    assert.ok(!states.some((s) => s.kind === "reconnecting"), "never showed reconnecting");
    assert.ok(logs.some((line) => line.includes("the token is dropped")), logs.join("\n"));
    assert.ok(!logs.join("\n").includes("secret-token"), "the token is never logged");
    // Connecting again needs a new token: the dropped one is not reused.
    client.connect("new-token");
    assert.equal(FakeSocket.opened[1]!.url.searchParams.get("token"), "new-token");
  });
}

test("a final close after the welcome (token expired mid-connection) fails the message and stops", async () => {
  const { client } = fakeClient();
  client.connect("t");
  const socket = FakeSocket.opened[0]!;
  socket.frame(WELCOME);
  assert.equal(client.state.kind, "connected");
  let error: string | null = null;
  client.send("hello", { onFinish: (reply) => (error = reply.error) });
  socket.serverClose(4401, "token expired");
  await pause(60);
  assert.equal(error, "connection closed: authentication failed: token expired");
  assert.equal(FakeSocket.opened.length, 1);
  assert.equal(client.state.kind === "closed" && client.state.refused, true);
});

test("a `blocked` frame makes the close that follows final, whatever its code", async () => {
  const { client } = fakeClient();
  client.connect("t");
  const socket = FakeSocket.opened[0]!;
  socket.frame(WELCOME);
  let error: string | null = null;
  client.send("hello", { onFinish: (reply) => (error = reply.error) });
  socket.frame({ type: "blocked", error: "user blocked: abusive prompts", code: "user_blocked" });
  assert.equal(error, "user blocked: abusive prompts");
  socket.serverClose(1006, ""); // the close frame got lost on the way
  await pause(60);
  assert.equal(FakeSocket.opened.length, 1, "no reconnect attempt");
  assert.equal(client.state.kind === "closed" && client.state.reason, "user blocked: abusive prompts");
});

for (const code of [4502, 4504, 1001, 1006, 1011]) {
  test(`close ${code} is an outage: the client reconnects with backoff and the same token`, async () => {
    const { client, states } = fakeClient();
    client.connect("same-token");
    FakeSocket.opened[0]!.serverClose(code, "");
    assert.equal(client.state.kind, "reconnecting");
    await pause(60);
    assert.ok(FakeSocket.opened.length >= 2, "reconnected");
    assert.equal(FakeSocket.opened[1]!.url.searchParams.get("token"), "same-token");
    assert.ok(states.some((s) => s.kind === "reconnecting"));
    client.disconnect();
  });
}

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

test("a refused login shows the dashboard's reason and when to try again", async () => {
  const realFetch = globalThis.fetch;
  globalThis.fetch = async () =>
    new Response(JSON.stringify({ detail: "too many failed logins for this user" }), {
      status: 429,
      headers: { "content-type": "application/json", "retry-after": "42" },
    });
  try {
    await assert.rejects(
      login("http://dashboard", "alice", "wrong"),
      (err: unknown) =>
        err instanceof LoginError &&
        err.message === "login failed: too many failed logins for this user (try again in 42 s)",
    );
  } finally {
    globalThis.fetch = realFetch;
  }
});
