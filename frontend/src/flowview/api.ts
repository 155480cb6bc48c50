// The flow view's JSON API (omni_trace/flowview/api.py): its types, generated from the
// models it answers through (../api_types.ts), and how the page asks it.

import type { Config, HopColumn } from "../api_types";

export type * from "../api_types";

export async function api<T>(path: string): Promise<T> {
  const response = await fetch(path, { headers: { accept: "application/json" } });
  let body: { error?: string } = {};
  try {
    body = await response.json();
  } catch {
    body = { error: `${response.status} ${response.statusText}` };
  }
  if (!response.ok) throw new Error(body.error ?? `${response.status} ${response.statusText}`);
  return body as T;
}

// Links beyond the page (a Jaeger UI, under compose) and the chain spec's hops come from the
// server; asked once. Without an answer the page has no such links, and heads each hop column
// with its key (hopColumns).
let pageConfig: Promise<Config> | undefined;
export function config(): Promise<Config> {
  pageConfig ??= api<Config>("/api/config").catch(() => ({ jaeger_ui_url: null, spec: { name: "", layers: [], hops: [], conversation_attribute: "" } }));
  return pageConfig;
}

// The columns of a message's hops: the spec's, or, without one, the report's own keys.
export function hopColumns(spec: Config["spec"], hopsMs: Record<string, number | null> = {}): HopColumn[] {
  if (spec.hops.length) return spec.hops;
  return Object.keys(hopsMs).map((key) => ({ key, group: "", label: key }));
}

// A trace's page in the Jaeger UI.
export function jaegerUiHref(base: string, traceId: string): string {
  return `${base.replace(/\/+$/, "")}/trace/${encodeURIComponent(traceId)}`;
}
