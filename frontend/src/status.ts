// Shows a connection's state in one element: text for people, data-state for tests and CSS.

import type { ConnectionState } from "./chat";

export class StatusView {
  private state: ConnectionState = { kind: "idle" };
  private ticker: ReturnType<typeof setInterval> | undefined;

  constructor(private readonly element: HTMLElement) {
    this.render();
  }

  update(state: ConnectionState): void {
    this.state = state;
    clearInterval(this.ticker);
    // The countdown of "reconnecting in Ns" has to move while nothing else happens.
    if (state.kind === "reconnecting") this.ticker = setInterval(() => this.render(), 250);
    this.render();
  }

  private render(): void {
    this.element.textContent = describeState(this.state);
    this.element.dataset.state = this.state.kind;
  }
}

/** One line for the user: "connected", "reconnecting in 3s (...)", "closed: <reason>". */
export function describeState(state: ConnectionState, now = Date.now()): string {
  switch (state.kind) {
    case "idle":
      return "not connected";
    case "connecting":
      return state.attempt > 1 ? `connecting (attempt ${state.attempt})` : "connecting";
    case "connected":
      return "connected";
    case "reconnecting": {
      const seconds = Math.max(0, Math.ceil((state.until - now) / 1000));
      return `reconnecting in ${seconds}s (${state.reason})`;
    }
    case "closed":
      return `closed: ${state.reason}`;
  }
}
