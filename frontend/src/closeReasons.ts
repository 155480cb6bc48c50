// What a WebSocket close means to the user, and whether trying again can help.
// The codes the stack sends are in CLOSE_MEANINGS (names.ts, mirroring the Python table):
// a final one (a refusal) is shown and never retried; the others are outages, retried.

import { CLOSE_MEANINGS } from "./names";

export interface ShownClose {
  text: string; // shown to the user: "<label>: <reason>"
  final: boolean; // stop, drop the token and return to the login form
}

// Close codes the stack never sends itself but a browser reports or a server may send.
const OUTAGES: Readonly<Record<number, string>> = {
  1006: "connection lost", // no close frame: the server is down or the network dropped
  1012: "", // service restart
  1013: "", // try again later
};

function labelled(label: string, reason: string): string {
  if (!reason) return label;
  // Servers often say it already ("authentication failed: token invalid"): say it once.
  return reason.toLowerCase().startsWith(label) ? reason : `${label}: ${reason}`;
}

export function describeClose(code: number, reason: string): ShownClose {
  const meaning = CLOSE_MEANINGS[code];
  if (meaning) return { text: labelled(meaning.label, reason), final: meaning.final };
  const outage = OUTAGES[code];
  if (outage !== undefined) return { text: labelled("server unavailable", reason || outage), final: false };
  // A refusal code this page does not know yet: like HTTP, 44xx is the client's fault (asking
  // again fails the same way), 45xx the server's (worth another try).
  if (code >= 4400 && code < 4500) return { text: labelled(`refused (code ${code})`, reason), final: true };
  return { text: labelled(`connection closed (code ${code})`, reason), final: false };
}
