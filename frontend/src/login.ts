// Dashboard login: the JWT it returns is kept in localStorage under "token", as in the seed.

export const TOKEN_KEY = "token";
export const USER_KEY = "user";

export class LoginError extends Error {}

export async function login(dashboardUrl: string, username: string, password: string): Promise<string> {
  let response: Response;
  try {
    response = await fetch(`${dashboardUrl}/api/login`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ username, password }),
    });
  } catch {
    throw new LoginError("server unavailable: the dashboard backend cannot be reached");
  }
  if (response.status === 401) throw new LoginError("invalid username or password");
  if (!response.ok) throw new LoginError(`login failed: ${await reasonOf(response)}`);
  const body = (await response.json()) as { token?: unknown };
  if (typeof body.token !== "string") throw new LoginError("login failed: no token in the answer");
  localStorage.setItem(TOKEN_KEY, body.token);
  localStorage.setItem(USER_KEY, username);
  return body.token;
}

// The dashboard answers refusals (429 too many attempts, 503 no user store) with a JSON
// `detail`; show it, and when to try again, rather than a bare status.
async function reasonOf(response: Response): Promise<string> {
  let detail = `HTTP ${response.status}`;
  try {
    const body = (await response.json()) as { detail?: unknown };
    if (typeof body.detail === "string" && body.detail) detail = body.detail.slice(0, 200);
  } catch {
    // not JSON: the status says enough
  }
  const retry = Number(response.headers.get("retry-after"));
  return retry > 0 ? `${detail} (try again in ${Math.ceil(retry)} s)` : detail;
}

export function storedToken(): string | null {
  return localStorage.getItem(TOKEN_KEY);
}

export function forgetToken(): void {
  localStorage.removeItem(TOKEN_KEY);
  localStorage.removeItem(USER_KEY);
}
