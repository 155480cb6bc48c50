// OpenTelemetry for the browser layer: the `chat-browser` service, exporting over OTLP/HTTP
// straight to Jaeger (its receiver allows CORS), and W3C trace context for URLs and frames.

import {
  type Attributes,
  ROOT_CONTEXT,
  type Span,
  type Tracer,
  defaultTextMapSetter,
  trace,
} from "@opentelemetry/api";
import { W3CTraceContextPropagator } from "@opentelemetry/core";
import { OTLPTraceExporter } from "@opentelemetry/exporter-trace-otlp-http";
import { defaultResource, resourceFromAttributes } from "@opentelemetry/resources";
import { BatchSpanProcessor, WebTracerProvider } from "@opentelemetry/sdk-trace-web";

import { Attr, Service } from "./names";
import { redactText, redactUrl } from "./redact";

export type TraceCarrier = { traceparent?: string; tracestate?: string };

export interface Tracing {
  tracer: Tracer;
  flush(): Promise<void>;
}

const propagator = new W3CTraceContextPropagator();
const URL_ATTRIBUTES = new Set<string>([Attr.URL_FULL, "http.url", "url.query"]);

export function startTracing(otlpTracesUrl: string | null): Tracing {
  if (!otlpTracesUrl) {
    // No exporter configured: spans are no-ops and carry no context; servers start the traces.
    return { tracer: trace.getTracer(Service.CHAT_BROWSER), flush: async () => {} };
  }
  const provider = new WebTracerProvider({
    resource: defaultResource().merge(
      resourceFromAttributes({ "service.name": Service.CHAT_BROWSER }),
    ),
    spanProcessors: [
      // A short delay: users (and tests) look for a message's trace right after the reply.
      new BatchSpanProcessor(new OTLPTraceExporter({ url: otlpTracesUrl, timeoutMillis: 5000 }), {
        scheduledDelayMillis: 200,
      }),
    ],
  });
  const flush = () => provider.forceFlush();
  // Spans still queued when the tab goes away would be lost.
  addEventListener("pagehide", () => void flush());
  addEventListener("visibilitychange", () => {
    if (document.visibilityState === "hidden") void flush();
  });
  return { tracer: provider.getTracer(Service.CHAT_BROWSER), flush };
}

/** `{traceparent, tracestate?}` naming `span` as the parent, for the query string and frames. */
export function carrierOf(span: Span): TraceCarrier {
  const carrier: Record<string, string> = {};
  propagator.inject(trace.setSpan(ROOT_CONTEXT, span), carrier, defaultTextMapSetter);
  return carrier;
}

/** Attributes with URL values redacted and token-like strings masked: the JWT never lands in a span. */
export function safeAttributes(attributes: Attributes): Attributes {
  const out: Attributes = {};
  for (const [key, value] of Object.entries(attributes)) {
    if (typeof value === "string") {
      out[key] = URL_ATTRIBUTES.has(key) ? redactUrl(value) : redactText(value);
    } else {
      out[key] = value;
    }
  }
  return out;
}

export function traceIdOf(span: Span): string {
  return span.spanContext().traceId;
}
