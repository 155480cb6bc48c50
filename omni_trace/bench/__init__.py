"""`omni-trace bench`: what tracing costs, measured side by side in one run.

Each round starts three stacks on free ports and keeps them up together: tracing on, tracing
off in every layer (the Python services with OTEL_SDK_DISABLED, Traefik without its tracing
block), and tracing on as `omni-trace up` runs it (with the flow view and Prometheus, which
the other two leave out). Only one is loaded at a time, and the phases alternate between
them, so a shared machine's noise falls on all alike. The offline model's token pause is 0 by
default so the pipeline itself is measured:

- burst: K connections opened within a few seconds (10 s, then the same within 5 s), each
  sending one message and held open until all are answered: every latency sample is kept,
  and the rounds' samples are pooled for the percentiles (p50, p95, p99, p99.9) of time to
  first token and message latency; messages lost; how busy the machine's cores were and the
  CPU each connection cost (so the rate the cores could serve); peak memory per process and
  per held connection; (tracing on) whether a sample of the chains is whole in Jaeger, and
  the slowest messages' spans, to say where each waited;
- steady: C clients on open connections, M messages each, sent in blocks that alternate
  between the stacks: turns per second and CPU per answered turn of every stack process (the
  flow view's as CPU per message it judged, since it judges each once, after it settles);
- hops: one client, tool-free messages and handshakes through the dashboard, through Traefik
  with the bearer token, and straight to OMNI2 with the gateway's headers (p50 each);
- spans per message by service (tool-free and tool-calling) and how long after `done` a
  message is queryable in Jaeger (tracing on).

Only ratios measured in the same run are meaningful on a shared machine; nothing here asserts
a time. The report is printed as a table, or as JSON with --json.
"""
