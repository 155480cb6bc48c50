// Names the browser layer emits. They mirror otel/names.py (the single table of names);
// tests/frontend/test_names.py fails when the two drift apart.

export const Service = {
  CHAT_BROWSER: "chat-browser",
} as const;

export const SpanName = {
  CONNECT: "chat.connect",
  MESSAGE: "chat.message",
} as const;

export const Attr = {
  CONVERSATION_ID: "gen_ai.conversation.id",
  USER_ID: "user.id",
  ERROR_TYPE: "error.type",
  SERVER_ADDRESS: "server.address",
  SERVER_PORT: "server.port",
  URL_FULL: "url.full",
  CLOSE_CODE: "chat.close.code",
  CLOSE_REASON: "chat.close.reason",
  FRAME_TYPE: "chat.frame.type",
  MESSAGE_CHARS: "chat.message.chars",
  REPLY_CHARS: "chat.reply.chars",
  TOKEN_FRAMES: "chat.token_frames",
  TIME_TO_FIRST_TOKEN: "chat.time_to_first_token_ms",
  STREAM_GAPS: "chat.stream.gaps",
  STREAM_GAP_P50: "chat.stream.gap_p50_ms",
  STREAM_GAP_P95: "chat.stream.gap_p95_ms",
  STREAM_GAP_MAX: "chat.stream.gap_max_ms",
  STREAM_GAP_MAX_AT: "chat.stream.gap_max_at_ms",
  STREAM_FIRST_TO_LAST: "chat.stream.first_to_last_ms",
} as const;

export const Event = {
  FIRST_TOKEN: "first_token",
} as const;

// services/common/protocol.py CloseCode
export const CloseCode = {
  NORMAL: 1000,
  GOING_AWAY: 1001,
  POLICY_VIOLATION: 1008,
  MESSAGE_TOO_BIG: 1009,
  INTERNAL_ERROR: 1011,
  BAD_REQUEST: 4400,
  UNAUTHENTICATED: 4401,
  FORBIDDEN: 4403,
  USER_UNKNOWN: 4404,
  USER_BLOCKED: 4423,
  TOO_MANY_CONNECTIONS: 4429,
  GATEWAY_UNREACHABLE: 4502,
  GATEWAY_TIMEOUT: 4504,
} as const;

export interface CloseMeaning {
  final: boolean; // trying again fails the same way: stop, drop the token, back to login
  label: string; // shown to the user before the reason
}

// services/common/protocol.py CLOSE_MEANINGS (final and label; the hop is for the doctor).
// tests/frontend/test_names.py keeps the two tables equal in both directions.
export const CLOSE_MEANINGS: Readonly<Record<number, CloseMeaning>> = {
  [CloseCode.NORMAL]: { final: false, label: "connection closed by the server" },
  [CloseCode.GOING_AWAY]: { final: false, label: "server unavailable" },
  [CloseCode.POLICY_VIOLATION]: { final: true, label: "too many frames" },
  [CloseCode.MESSAGE_TOO_BIG]: { final: true, label: "frame too large" },
  [CloseCode.INTERNAL_ERROR]: { final: false, label: "server unavailable" },
  [CloseCode.BAD_REQUEST]: { final: true, label: "request refused" },
  [CloseCode.UNAUTHENTICATED]: { final: true, label: "authentication failed" },
  [CloseCode.FORBIDDEN]: { final: true, label: "access denied" },
  [CloseCode.USER_UNKNOWN]: { final: true, label: "unknown user" },
  [CloseCode.USER_BLOCKED]: { final: true, label: "user blocked" },
  [CloseCode.TOO_MANY_CONNECTIONS]: { final: true, label: "too many connections" },
  [CloseCode.GATEWAY_UNREACHABLE]: { final: false, label: "server unavailable" },
  [CloseCode.GATEWAY_TIMEOUT]: { final: false, label: "server unavailable" },
};
