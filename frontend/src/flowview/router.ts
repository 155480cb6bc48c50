// The flow view's pages by the address's hash: #/ (conversations), #/conversation/<id>,
// #/trace/<id>, #/diff/<a>/<b>; the list refreshes itself, the others do not.

import { byId } from "../dom";
import { api } from "./api";
import { showConversation } from "./pages/conversation";
import { showConversations } from "./pages/conversations";
import { showDiff } from "./pages/diff";
import { LIVE_MS, view } from "./pages/common";
import { showTrace } from "./pages/trace";

let live: number | undefined;

async function search(text: string): Promise<void> {
  const found = await api<{ view: string; trace_id?: string; conversation_id?: string; user_id?: string }>(
    `/api/search?${new URLSearchParams({ q: text })}`,
  );
  if (found.view === "trace" && found.trace_id) location.hash = `#/trace/${found.trace_id}`;
  else if (found.view === "conversation" && found.conversation_id) location.hash = `#/conversation/${found.conversation_id}`;
  else if (found.user_id) location.hash = `#/?user=${encodeURIComponent(found.user_id)}`;
}

async function route(): Promise<void> {
  window.clearInterval(live);
  live = undefined;
  const hash = location.hash.replace(/^#/, "") || "/";
  const [path, query] = hash.split("?", 2);
  const error = byId("flow-error");
  const started = performance.now();
  for (const key of ["view", "apiMs", "renderMs", "totalMs"]) delete view().dataset[key];
  const run = async (): Promise<void> => {
    try {
      if (path.startsWith("/conversation/")) await showConversation(decodeURIComponent(path.slice(14)), started);
      else if (path.startsWith("/trace/")) await showTrace(decodeURIComponent(path.slice(7)));
      else if (path.startsWith("/diff/")) {
        const [a, b] = path.slice(6).split("/", 2).map(decodeURIComponent);
        await showDiff(a, b ?? "");
      }
      else await showConversations(new URLSearchParams(query ?? ""));
      error.hidden = true;
    } catch (err) {
      error.textContent = (err as Error).message;
      error.hidden = false;
    }
  };
  await run();
  if (!path.startsWith("/conversation/") && !path.startsWith("/trace/") && !path.startsWith("/diff/")) {
    live = window.setInterval(run, LIVE_MS); // new conversations appear without a reload
  }
}

// Start the page (flow.html): the search box and the router.
export function start(): void {
  byId<HTMLFormElement>("search").addEventListener("submit", (event) => {
    event.preventDefault();
    const text = byId<HTMLInputElement>("search-text").value.trim();
    if (text) {
      search(text).catch((err: Error) => {
        const error = byId("flow-error");
        error.textContent = err.message;
        error.hidden = false;
      });
    }
  });
  window.addEventListener("hashchange", () => void route());
  void route();
}
