// What a WebSocket close means to the user, and whether trying again can help.
// Refusals (4401, 4403, 4400) would fail the same way again: they are shown, never retried.

import { CloseCode } from "./names";

export interface CloseMeaning {
  text: string; // shown to the user
  retry: boolean;
}

function labelled(label: string, reason: string): string {
  if (!reason) return label;
  return reason.toLowerCase().startsWith(label) ? reason : `${label}: ${reason}`;
}

export function describeClose(code: number, reason: string): CloseMeaning {
  switch (code) {
    case CloseCode.UNAUTHENTICATED:
      return { text: labelled("authentication failed", reason), retry: false };
    case CloseCode.FORBIDDEN:
      // OMNI2 refuses blocked users and connections that bypassed the gateway with 4403.
      return {
        text: labelled(/block/i.test(reason) ? "blocked" : "access denied", reason),
        retry: false,
      };
    case CloseCode.BAD_REQUEST:
      return { text: labelled("request refused", reason), retry: false };
    case CloseCode.GATEWAY_UNREACHABLE:
    case CloseCode.GATEWAY_TIMEOUT:
    case CloseCode.GOING_AWAY:
    case CloseCode.INTERNAL_ERROR:
    case 1012: // service restart
    case 1013: // try again later
      return { text: labelled("server unavailable", reason), retry: true };
    case 1006: // no close frame: the server is down or the network dropped
      return { text: "server unavailable: connection lost", retry: true };
    case CloseCode.NORMAL:
      return { text: labelled("connection closed by the server", reason), retry: true };
    default:
      return { text: labelled(`connection closed (code ${code})`, reason), retry: true };
  }
}
