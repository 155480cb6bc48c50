// The JWT rides in the WebSocket URL's query string (browsers cannot set WebSocket headers),
// so every URL or text the page shows or records goes through here first.

export const REDACTED = "REDACTED";
const SECRET_PARAMS = new Set(["token", "access_token", "jwt", "password", "api_key"]);
const JWT = /eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*/g;

export function redactUrl(url: string): string {
  try {
    const parsed = new URL(url);
    parsed.username = "";
    parsed.password = "";
    for (const key of [...parsed.searchParams.keys()]) {
      if (SECRET_PARAMS.has(key.toLowerCase())) parsed.searchParams.set(key, REDACTED);
    }
    return parsed.toString();
  } catch {
    return redactText(url);
  }
}

/** Masks `token=...` pairs, bearer values and anything shaped like a JWT in free text. */
export function redactText(text: string, secret?: string | null): string {
  let out = text;
  if (secret) out = out.split(secret).join(REDACTED);
  out = out.replace(/\b(token|access_token|jwt|password|api_key)=[^&\s"'<>]+/gi, `$1=${REDACTED}`);
  out = out.replace(/\b(bearer)\s+[A-Za-z0-9._~+/=-]+/gi, `$1 ${REDACTED}`);
  return out.replace(JWT, REDACTED);
}
