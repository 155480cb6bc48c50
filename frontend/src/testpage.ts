// The seed's WebSocket test page: a token, Connect and Disconnect, send, and a log of raw frames.

import { ChatClient, type LogDirection } from "./chat";
import { loadConfig, traceUrl } from "./config";
import { byId, el } from "./dom";
import { forgetToken, storedToken } from "./login";
import { StatusView } from "./status";
import { startTracing } from "./tracing";

const ARROWS: Record<LogDirection, string> = { in: "←", out: "→", info: "·" };

async function main(): Promise<void> {
  const log = byId<HTMLOListElement>("log");
  const append = (direction: LogDirection, text: string, link?: string) => {
    const time = new Date().toISOString().slice(11, 23);
    const line = el("li", { class: `log-${direction}` }, `${time} ${ARROWS[direction]} ${text}`);
    if (link) line.append(" ", el("a", { href: link, target: "_blank", rel: "noopener" }, "open trace"));
    log.append(line);
    line.scrollIntoView({ block: "end" });
  };
  const config = await loadConfig().catch((err: unknown) => {
    append("info", String(err));
    throw err;
  });
  const tokenField = byId<HTMLInputElement>("token");
  tokenField.value = storedToken() ?? "";
  const status = new StatusView(byId("status"));
  let refusedCandidate = ""; // the token of the latest connect: the one a refusal is about
  const client = new ChatClient({
    wsUrl: config.chat_ws_url,
    tracer: startTracing(config.otlp_traces_url).tracer,
    reconnect: config.reconnect,
    onState: (state) => {
      status.update(state);
      byId<HTMLButtonElement>("send").disabled = state.kind !== "connected";
      if (state.kind === "closed" && state.refused) {
        // As on the chat page: a refused token is dropped (the stored one only if it was the
        // one refused: a pasted token must not log the chat page out), a new one is needed.
        if (storedToken() === refusedCandidate) forgetToken();
        tokenField.value = "";
        append("info", "log in again on the chat page, or paste another token");
      }
    },
    onLog: append,
  });
  byId("connect-form").addEventListener("submit", (event) => {
    event.preventDefault();
    refusedCandidate = tokenField.value.trim();
    client.connect(refusedCandidate);
  });
  byId("disconnect").addEventListener("click", () => client.disconnect());
  byId("clear").addEventListener("click", () => log.replaceChildren());
  byId("send-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const input = byId<HTMLInputElement>("message");
    const text = input.value.trim();
    if (!text) return;
    const sent = client.send(text, {
      onFinish: (reply) =>
        append("info", `${reply.ok ? "done" : "error"}: trace ${reply.traceId}`, traceUrl(config, reply.traceId)),
    });
    if (sent !== null) input.value = "";
  });
}

void main();
