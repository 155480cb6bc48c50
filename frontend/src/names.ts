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
} as const;

export const Event = {
  FIRST_TOKEN: "first_token",
} as const;

// services/common/protocol.py CloseCode
export const CloseCode = {
  NORMAL: 1000,
  GOING_AWAY: 1001,
  INTERNAL_ERROR: 1011,
  BAD_REQUEST: 4400,
  UNAUTHENTICATED: 4401,
  FORBIDDEN: 4403,
  GATEWAY_UNREACHABLE: 4502,
  GATEWAY_TIMEOUT: 4504,
} as const;
