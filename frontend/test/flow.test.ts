// The flow view's words for a chain verdict (the audit's ChainReport as the API serves it).

import assert from "node:assert/strict";
import { test } from "node:test";

import { chainState, chainText } from "../src/flowview/format";

const whole = { broken: false, problems: [], not_traced: [], first_layer: "client", client_only: false, foreign: [] };

test("a chain whose client sent no trace context is whole from its first traced layer", () => {
  const untraced = { ...whole, not_traced: ["client"], first_layer: "dashboard" };
  assert.equal(chainState(untraced), "not-traced");
  assert.equal(chainText(untraced), "whole from dashboard (client not traced)");
});

test("broken, client-only, foreign spans and a report from before these fields", () => {
  assert.equal(chainText({ ...whole, broken: true, problems: ["missing layer client (its span was lost)"] }), "broken: missing layer client (its span was lost)");
  assert.equal(chainState({ ...whole, client_only: true }), "client-only");
  assert.equal(chainText({ ...whole, foreign: ["chat-client chat.message 1"] }), "whole (1 foreign span(s) left out)");
  assert.equal(chainText({ broken: false, problems: [] }), "whole");
});
