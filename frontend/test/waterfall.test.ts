// The waterfall colours a span as the model's or a tool's by the role the flow view's API gave
// it (from the chain spec it serves), never by the span's name or service.

import assert from "node:assert/strict";
import { test } from "node:test";

import type { Span } from "../src/flowview/api";
import { operation } from "../src/flowview/waterfall";

const span = (service: string, name: string, role: Span["role"]): Pick<Span, "service" | "name" | "role"> => ({ service, name, role });

test("a span the spec names the model's or a tool's is coloured so, whatever it is called", () => {
  assert.equal(operation(span("llm-gateway", "llm.generate small-model", "model")), "chat");
  assert.equal(operation(span("agent", "tool.invoke lookup", "tool")), "execute_tool");
});

test("a span without a role is not, even under the default spec's names", () => {
  assert.equal(operation(span("omni2", "chat omni2-offline-1", null)), undefined);
  assert.equal(operation(span("omni2", "execute_tool database_query", null)), undefined);
});
