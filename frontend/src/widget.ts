// The chat page: log in, open the chat bubble, stream each reply, link each reply to its trace.

import { ChatClient, type ConnectionState, type Reply } from "./chat";
import { type PageConfig, loadConfig, traceUrl } from "./config";
import { byId, el, show } from "./dom";
import { LoginError, USER_KEY, forgetToken, login, storedToken } from "./login";
import { StatusView } from "./status";
import { startTracing } from "./tracing";

class ChatWidget {
  private readonly client: ChatClient;
  private readonly status: StatusView;
  private readonly messages = byId<HTMLOListElement>("messages");
  private readonly input = byId<HTMLInputElement>("chat-input");
  private readonly sendButton = byId<HTMLButtonElement>("chat-send");
  private readonly panel = byId("chat-panel");
  private readonly session = byId("chat-session");

  constructor(private readonly config: PageConfig) {
    const tracing = startTracing(config.otlp_traces_url);
    this.status = new StatusView(byId("chat-status"));
    this.client = new ChatClient({
      wsUrl: config.chat_ws_url,
      tracer: tracing.tracer,
      reconnect: config.reconnect,
      onState: (state) => this.onState(state),
    });
    byId("chat-bubble").addEventListener("click", () => this.open());
    byId("chat-close").addEventListener("click", () => show(this.panel, false));
    byId("chat-form").addEventListener("submit", (event) => {
      event.preventDefault();
      this.send();
    });
    byId("login-form").addEventListener("submit", (event) => {
      event.preventDefault();
      void this.login();
    });
    byId("logout").addEventListener("click", () => this.logout());
    this.showLoggedIn(storedToken() !== null);
  }

  private async login(): Promise<void> {
    const error = byId("login-error");
    error.textContent = "";
    try {
      await login(
        this.config.dashboard_url,
        byId<HTMLInputElement>("username").value.trim(),
        byId<HTMLInputElement>("password").value,
      );
    } catch (err) {
      error.textContent = err instanceof LoginError ? err.message : String(err);
      return;
    }
    byId<HTMLInputElement>("password").value = "";
    show(byId("login-notice"), false);
    this.showLoggedIn(true);
  }

  private logout(): void {
    this.client.disconnect("logged out");
    forgetToken();
    this.messages.replaceChildren();
    show(this.panel, false);
    this.showLoggedIn(false);
  }

  private showLoggedIn(loggedIn: boolean): void {
    show(byId("login"), !loggedIn);
    show(byId("home"), loggedIn);
    show(byId("chat-bubble"), loggedIn);
    show(byId("logout"), loggedIn);
    const who = byId("who");
    who.textContent = loggedIn ? `signed in as ${localStorage.getItem(USER_KEY) ?? "?"}` : "";
    show(who, loggedIn);
  }

  private open(): void {
    show(this.panel, true);
    const token = storedToken();
    const kind = this.client.state.kind;
    if (token && (kind === "idle" || kind === "closed")) this.client.connect(token);
    this.input.focus();
  }

  private onState(state: ConnectionState): void {
    this.status.update(state);
    this.sendButton.disabled = state.kind !== "connected";
    if ("sessionTraceId" in state) this.panel.dataset.sessionTraceId = state.sessionTraceId;
    if (state.kind === "connected") {
      this.panel.dataset.conversationId = state.conversationId ?? "";
      this.session.replaceChildren(
        `conversation ${state.conversationId ?? "?"} · `,
        this.traceLink(state.sessionTraceId, "connection trace"),
      );
      const text = this.client.welcome?.text;
      if (typeof text === "string") this.messages.append(el("li", { class: "msg system" }, text));
    }
    if (state.kind === "closed" && state.refused) {
      // A refused token will be refused again: drop it and go back to the login form, which
      // says why. The chat client has already stopped reconnecting.
      const user = localStorage.getItem(USER_KEY);
      forgetToken();
      this.messages.replaceChildren();
      show(this.panel, false);
      this.showLoggedIn(false);
      if (user) byId<HTMLInputElement>("username").value = user;
      const notice = byId("login-notice");
      notice.textContent = `Chat closed: ${state.reason}. Please log in again.`;
      notice.dataset.closeCode = String(state.code ?? "");
      show(notice, true);
    }
  }

  private send(): void {
    const text = this.input.value.trim();
    if (!text) return;
    const body = el("div", { class: "text" });
    const reply = el("li", { class: "msg assistant", "data-state": "streaming" }, body);
    const traceId = this.client.send(text, {
      onToken: (piece) => body.append(piece),
      onFinish: (result) => this.finish(reply, result),
    });
    if (traceId === null) return; // not connected: the status line says why
    this.input.value = "";
    this.messages.append(el("li", { class: "msg user" }, text), reply);
    reply.dataset.pendingTraceId = traceId;
    reply.scrollIntoView({ block: "end" });
  }

  private finish(reply: HTMLElement, result: Reply): void {
    reply.dataset.state = result.ok ? "done" : "error";
    reply.dataset.traceId = result.traceId;
    reply.dataset.tokenFrames = String(result.tokenFrames);
    if (!result.ok) reply.append(el("div", { class: "error" }, result.error ?? "error"));
    reply.append(el("div", { class: "meta" }, this.traceLink(result.traceId, "trace")));
    reply.scrollIntoView({ block: "end" });
  }

  private traceLink(traceId: string, label: string): HTMLElement {
    if (!traceId) return el("span", {}, `${label}: not traced`);
    return el(
      "a",
      {
        class: "trace-link",
        href: traceUrl(this.config, traceId),
        target: "_blank",
        rel: "noopener",
        title: traceId,
        "data-trace-id": traceId,
      },
      `${label} ${traceId.slice(0, 8)}…`,
    );
  }
}

async function main(): Promise<void> {
  try {
    new ChatWidget(await loadConfig());
  } catch (err) {
    const notice = byId("login-notice");
    notice.textContent = `The page cannot start: ${String(err)}`;
    show(notice, true);
  }
}

void main();
