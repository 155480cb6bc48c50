// The browser's chat connection: connect through the dashboard with the token and the
// `chat.connect` span's context in the query string (browsers cannot set WebSocket headers),
// one `chat.message` span per message with its context in the frame, reconnect with backoff.
// Same protocol and span shapes as the Python client (omni_trace/client.py).

import { type Span, SpanKind, SpanStatusCode, type Tracer } from "@opentelemetry/api";

import { Backoff } from "./backoff";
import { describeClose } from "./closeReasons";
import type { ReconnectConfig } from "./config";
import { Attr, CloseCode, Event, SpanName } from "./names";
import { redactText, redactUrl } from "./redact";
import { TokenClock } from "./stream";
import { carrierOf, safeAttributes, traceIdOf } from "./tracing";

export type Frame = Record<string, unknown>;

export type ConnectionState =
  | { kind: "idle" }
  | { kind: "connecting"; attempt: number; sessionTraceId: string }
  | {
      kind: "connected";
      conversationId: string | null;
      userId: string | null;
      sessionTraceId: string;
    }
  | { kind: "reconnecting"; until: number; reason: string; attempt: number }
  // refused: the close was final (a refusal): the token was dropped and nothing retries.
  | { kind: "closed"; reason: string; code: number | null; refused: boolean; sessionTraceId: string };

export interface Reply {
  ok: boolean;
  text: string;
  traceId: string; // the message trace: the chat.message span's, equal to done/error's trace_id
  frame: Frame; // the done or error frame (or a synthetic error when the socket closed)
  error: string | null;
  tokenFrames: number;
}

export interface MessageCallbacks {
  onToken?(text: string): void;
  onFinish?(reply: Reply): void;
}

export type LogDirection = "in" | "out" | "info";

export interface ChatClientOptions {
  wsUrl: string;
  tracer: Tracer;
  reconnect: ReconnectConfig;
  onState(state: ConnectionState): void;
  onLog?(direction: LogDirection, text: string): void;
}

interface Pending {
  span: Span;
  traceId: string;
  started: number;
  pieces: string[];
  tokenFrames: number;
  clock: TokenClock; // the gaps between token frames as the browser saw them
  callbacks: MessageCallbacks;
}

function str(value: unknown): string | null {
  return typeof value === "string" ? value : null;
}

export class ChatClient {
  private ws: WebSocket | null = null;
  private token: string | null = null;
  private wanted = false; // the user asked for a connection and has not disconnected
  private connectSpan: Span | null = null;
  private pending: Pending[] = [];
  private retryTimer: ReturnType<typeof setTimeout> | undefined;
  private refusal: string | null = null; // a `blocked` frame: the close that follows is final
  private readonly backoff: Backoff;
  private current: ConnectionState = { kind: "idle" };
  private welcomeFrame: Frame | null = null;
  private sessionTraceId = ""; // trace of the latest connection attempt (its chat.connect)

  constructor(private readonly options: ChatClientOptions) {
    this.backoff = new Backoff(options.reconnect.initial_ms, options.reconnect.max_ms);
  }

  get state(): ConnectionState {
    return this.current;
  }

  get welcome(): Frame | null {
    return this.welcomeFrame;
  }

  connect(token: string): void {
    this.teardown("reconnecting with a new token");
    this.token = token;
    this.wanted = true;
    this.backoff.reset();
    this.open();
  }

  disconnect(reason = "disconnected"): void {
    this.wanted = false;
    this.teardown(reason);
    this.setState({ kind: "closed", reason, code: CloseCode.NORMAL, refused: false, sessionTraceId: "" });
  }

  /** Sends one message; returns its trace id, or null when not connected. */
  send(text: string, callbacks: MessageCallbacks = {}): string | null {
    const ws = this.ws;
    if (!ws || this.current.kind !== "connected") return null;
    const attributes: Record<string, string | number> = { [Attr.MESSAGE_CHARS]: text.length };
    if (this.current.conversationId) attributes[Attr.CONVERSATION_ID] = this.current.conversationId;
    const span = this.options.tracer.startSpan(SpanName.MESSAGE, {
      kind: SpanKind.CLIENT,
      attributes,
    });
    const raw = JSON.stringify({ type: "message", text, trace: carrierOf(span) });
    const pending: Pending = {
      span,
      traceId: traceIdOf(span),
      started: performance.now(),
      pieces: [],
      tokenFrames: 0,
      clock: new TokenClock(),
      callbacks,
    };
    this.pending.push(pending);
    ws.send(raw);
    this.log("out", raw);
    return pending.traceId;
  }

  // -- connection ---------------------------------------------------------------------------

  private open(): void {
    this.retryTimer = undefined;
    this.refusal = null;
    this.welcomeFrame = null;
    const url = new URL(this.options.wsUrl);
    const span = this.options.tracer.startSpan(SpanName.CONNECT, {
      kind: SpanKind.CLIENT,
      attributes: safeAttributes({
        [Attr.SERVER_ADDRESS]: url.hostname,
        [Attr.SERVER_PORT]: Number(url.port) || (url.protocol === "wss:" ? 443 : 80),
      }),
    });
    this.sessionTraceId = traceIdOf(span);
    this.setState({
      kind: "connecting",
      attempt: this.backoff.attempts + 1,
      sessionTraceId: this.sessionTraceId,
    });
    if (this.token !== null) url.searchParams.set("token", this.token);
    for (const [key, value] of Object.entries(carrierOf(span))) {
      if (value) url.searchParams.set(key, value);
    }
    span.setAttributes(safeAttributes({ [Attr.URL_FULL]: url.toString() }));
    this.log("info", `connecting to ${redactUrl(url.toString())}`);
    this.connectSpan = span;
    let ws: WebSocket;
    try {
      ws = new WebSocket(url);
    } catch (err) {
      this.onClose(CloseCode.BAD_REQUEST, `invalid chat URL: ${String(err)}`);
      return;
    }
    this.ws = ws;
    // Handlers check `this.ws === ws`: a socket we already gave up on must not act any more.
    ws.onmessage = (event: MessageEvent) => {
      if (this.ws === ws && typeof event.data === "string") this.onFrame(event.data);
    };
    ws.onclose = (event: CloseEvent) => {
      if (this.ws === ws) this.onClose(event.code, event.reason);
    };
  }

  private onFrame(raw: string): void {
    this.log("in", raw);
    let frame: Frame;
    try {
      const parsed: unknown = JSON.parse(raw);
      if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed)) return;
      frame = parsed as Frame;
    } catch {
      return;
    }
    switch (frame.type) {
      case "welcome":
        this.onWelcome(frame);
        break;
      case "token":
        this.onToken(str(frame.text) ?? "");
        break;
      case "done":
      case "error":
        this.onFinal(frame);
        break;
      case "blocked": {
        // OMNI2 refuses a blocked (or inactive) user with this frame, then closes with a final
        // code; should that close get lost on the way, the frame alone still ends the session.
        const why = str(frame.reason) ?? str(frame.message) ?? str(frame.error) ?? str(frame.text);
        this.refusal = why ?? "user blocked";
        this.onFinal({ type: "error", error: this.refusal, code: str(frame.code) ?? "blocked" });
        break;
      }
    }
  }

  private onWelcome(frame: Frame): void {
    this.welcomeFrame = frame;
    const conversationId = str(frame.conversation_id);
    const userId = str(frame.user_id);
    const span = this.connectSpan;
    this.connectSpan = null;
    if (span) {
      if (conversationId) span.setAttribute(Attr.CONVERSATION_ID, conversationId);
      if (userId) span.setAttribute(Attr.USER_ID, userId);
      span.setAttribute(Attr.FRAME_TYPE, "welcome");
      span.end(); // chat.connect lasts until the welcome frame, as in the Python client
    }
    this.backoff.reset();
    this.setState({ kind: "connected", conversationId, userId, sessionTraceId: this.sessionTraceId });
  }

  private onToken(text: string): void {
    const pending = this.pending[0]; // the backend answers a connection's messages in order
    if (!pending) return;
    if (pending.tokenFrames === 0) {
      pending.span.addEvent(Event.FIRST_TOKEN);
      pending.span.setAttribute(Attr.TIME_TO_FIRST_TOKEN, performance.now() - pending.started);
    }
    pending.tokenFrames += 1;
    pending.clock.mark();
    pending.pieces.push(text);
    pending.callbacks.onToken?.(text);
  }

  private onFinal(frame: Frame): void {
    const traceId = str(frame.trace_id);
    let index = traceId ? this.pending.findIndex((p) => p.traceId === traceId) : 0;
    if (index < 0 && !traceId) index = 0;
    const [pending] = index >= 0 ? this.pending.splice(index, 1) : [];
    if (pending) this.finish(pending, frame);
  }

  private finish(pending: Pending, frame: Frame): void {
    const ok = frame.type === "done";
    const text = pending.pieces.join("");
    const span = pending.span;
    span.setAttributes({
      [Attr.FRAME_TYPE]: String(frame.type),
      [Attr.TOKEN_FRAMES]: pending.tokenFrames,
      [Attr.REPLY_CHARS]: text.length,
      ...pending.clock.attributes(),
    });
    const error = ok ? null : (str(frame.error) ?? "error");
    if (!ok) {
      span.setAttribute(Attr.ERROR_TYPE, str(frame.code) ?? "error");
      span.setStatus({ code: SpanStatusCode.ERROR, message: redactText(error ?? "").slice(0, 200) });
    }
    span.end();
    pending.callbacks.onFinish?.({
      ok,
      text,
      traceId: pending.traceId,
      frame,
      error,
      tokenFrames: pending.tokenFrames,
    });
  }

  private onClose(code: number, reason: string): void {
    this.ws = null;
    let meaning = describeClose(code, reason);
    if (this.refusal !== null && !meaning.final) meaning = { text: this.refusal, final: true };
    this.log("info", `closed: code ${code}${reason ? `, reason "${reason}"` : ""}`);
    this.endConnectSpan(code, reason, meaning.text, code >= 4000 ? "refused" : "connection_failed");
    this.failPending(`connection closed: ${meaning.text}`);
    if (!this.wanted) return;
    if (meaning.final) {
      // The same token would be refused the same way: forget it and stop knocking.
      this.wanted = false;
      this.token = null;
      this.log("info", `not reconnecting (${meaning.text}); the token is dropped`);
      this.setState({
        kind: "closed",
        reason: meaning.text,
        code,
        refused: true,
        sessionTraceId: this.sessionTraceId,
      });
      return;
    }
    const delay = this.backoff.next();
    this.setState({
      kind: "reconnecting",
      until: Date.now() + delay,
      reason: meaning.text,
      attempt: this.backoff.attempts,
    });
    this.log("info", `reconnecting in ${(delay / 1000).toFixed(1)} s (${meaning.text})`);
    this.retryTimer = setTimeout(() => {
      if (this.wanted) this.open();
    }, delay);
  }

  /** Drops the socket and whatever is in flight, without deciding what comes next. */
  private teardown(reason: string): void {
    clearTimeout(this.retryTimer);
    this.retryTimer = undefined;
    const ws = this.ws;
    this.ws = null;
    if (ws && ws.readyState !== WebSocket.CLOSED) ws.close(CloseCode.NORMAL, "client disconnect");
    this.endConnectSpan(CloseCode.NORMAL, "", reason, "cancelled");
    this.failPending(reason);
  }

  private endConnectSpan(code: number, reason: string, meaning: string, errorType: string): void {
    const span = this.connectSpan;
    if (!span) return;
    this.connectSpan = null;
    span.setAttributes({
      [Attr.CLOSE_CODE]: code,
      [Attr.CLOSE_REASON]: redactText(reason),
      [Attr.ERROR_TYPE]: errorType,
    });
    span.setStatus({ code: SpanStatusCode.ERROR, message: redactText(meaning) });
    span.end();
  }

  private failPending(reason: string): void {
    const pending = this.pending;
    this.pending = [];
    for (const p of pending) this.finish(p, { type: "error", error: reason, code: "connection_closed" });
  }

  private setState(state: ConnectionState): void {
    this.current = state;
    this.options.onState(state);
  }

  private log(direction: LogDirection, text: string): void {
    // The token is in the URL only, but a server could echo it: mask it wherever it appears.
    this.options.onLog?.(direction, redactText(text, this.token));
  }
}
