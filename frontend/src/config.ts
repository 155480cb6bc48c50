// What the frontend service tells the page about the running stack (GET /config.json).

export interface ReconnectConfig {
  initial_ms: number; // first pause after a drop
  max_ms: number; // cap of the exponential backoff
}

export interface PageConfig {
  dashboard_url: string; // POST {dashboard_url}/api/login
  chat_ws_url: string; // ws://<dashboard>/ws/chat
  otlp_traces_url: string | null; // OTLP/HTTP traces endpoint; null switches tracing off
  jaeger_query_url: string;
  trace_url_template: string; // "{trace_id}" is replaced by a reply's trace id
  reconnect: ReconnectConfig;
}

export async function loadConfig(): Promise<PageConfig> {
  const response = await fetch("/config.json", { cache: "no-store" });
  if (!response.ok) {
    throw new Error(`cannot load /config.json: HTTP ${response.status}`);
  }
  return (await response.json()) as PageConfig;
}

export function traceUrl(config: PageConfig, traceId: string): string {
  return config.trace_url_template.replace("{trace_id}", encodeURIComponent(traceId));
}
