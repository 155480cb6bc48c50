// Shows a connection's state in one element: text for people, data-state for tests and CSS.

import { type ConnectionState, describeState } from "./chat";

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
