"""Grafana dashboards for the chat stack, built with Grafana's own Foundation SDK, and the
Jaeger UI's link patterns to the flow view.

The JSON files in `grafana/dashboards/` and `compose/jaeger-ui.json` are this module's output
(`omni-trace dashboards`); a test keeps them equal, and a stack test runs every panel's
query against a real Prometheus after traffic. The queries chart what the stack exports:

- the span metrics Jaeger computes (`traces_span_metrics_*`, per service and span name),
  with the same PromQL as the flow view's hop chart (`omni_trace.flowview.hops`);
- the services' own metrics (`otel.names.Metric`), labelled with the recording service as
  `exported_job` (Prometheus keeps `job` for its scrape job: the exporter's labels come from
  what was sent to it, so they are not honoured);
- the audit's verdicts from the flow view's /metrics (`omni_trace.flowview.metrics`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from grafana_foundation_sdk.builders import bargauge, stat, statetimeline, timeseries
from grafana_foundation_sdk.builders.dashboard import (
    ConstantVariable,
    Dashboard,
    DashboardLink,
    Row,
)
from grafana_foundation_sdk.builders.prometheus import Dataquery
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.dashboard import DashboardLinkType, DataSourceRef

from omni_trace.flowview.hops import (
    error_ratio_query,
    histogram_quantile_query,
    latency_query,
    prometheus_name,
)
from omni_trace.stack.jaeger_ui import jaeger_ui_config
from otel.names import METRICS, Metric

# The provisioned data sources' uids (compose/grafana/provisioning/datasources).
PROMETHEUS = DataSourceRef(type_val="prometheus", uid="prometheus")
JAEGER_UID = "jaeger"
WINDOW = "$__rate_interval"
# Where the generated dashboards live in a checkout (compose's Grafana provisions them there).
DASHBOARDS_DIR = Path("grafana") / "dashboards"
FILE_NAME = "omni2-chat-chain.json"
# Where a person opens the flow view; compose publishes it on this port.
DEFAULT_FLOWVIEW_URL = "http://localhost:16687"


def _query(expr: str, legend: str, ref: str = "A") -> Dataquery:
    return Dataquery().expr(expr).legend_format(legend).ref_id(ref).datasource(PROMETHEUS)


def _series(title: str, unit: str, description: str, *queries: Dataquery) -> timeseries.Panel:
    panel = (
        timeseries.Panel()
        .title(title)
        .description(description)
        .unit(unit)
        .datasource(PROMETHEUS)
        .height(8)
        .span(12)
    )
    for query in queries:
        panel = panel.with_target(query)
    return panel


def _ttft(quantile: float, ref: str) -> Dataquery:
    bucket = "chat_time_to_first_token_seconds_bucket"
    return _query(
        f"histogram_quantile({quantile}, sum by (le, exported_job) (rate({bucket}[{WINDOW}])))",
        f"{{{{exported_job}}}} p{int(quantile * 100)}",
        ref,
    )


def chat_chain_dashboard() -> dict[str, Any]:
    """One dashboard: hops, errors, time to first token, usage per user, broken chains."""
    builder = (
        Dashboard("OMNI2 chat chain")
        .uid("omni2-chat-chain")
        .description(
            "Every layer of the chat stack over time: hop latency and errors from Jaeger's "
            "span metrics, time to first token per layer, tokens and cost per user, and the "
            "audit's whole and broken chains. One message's chain: the flow view."
        )
        .tags(["omni-trace", "generated"])
        .refresh("10s")
        .time("now-30m", "now")
        .with_variable(
            ConstantVariable("flowview_url")
            .value(DEFAULT_FLOWVIEW_URL)
            .description("the flow view's address, for the links")
        )
        .link(
            DashboardLink("Flow view: conversations and message chains")
            .type(DashboardLinkType.LINK)
            .url("${flowview_url}/")
            .target_blank(True)
        )
        .with_row(Row("Hops"))
        .with_panel(
            _series(
                "Hop latency p50 and p95",
                "ms",
                "The span each layer records for a message (client, dashboard relay, "
                "Traefik, OMNI2 turn, ForwardAuth), from Jaeger's span metrics.",
                _query(latency_query(0.5, WINDOW), "{{service_name}} {{span_name}} p50", "A"),
                _query(latency_query(0.95, WINDOW), "{{service_name}} {{span_name}} p95", "B"),
            )
        )
        .with_panel(
            _series(
                "Errors per layer",
                "percentunit",
                "Share of each service's spans that ended with an error status.",
                _query(error_ratio_query(WINDOW), "{{service_name}}"),
            ).max(1)
        )
        .with_panel(
            _series(
                "Time to first token per layer",
                "s",
                "From a message to its first token frame, as each layer saw it (the "
                "difference between layers is what the hops between them add).",
                _ttft(0.5, "A"),
                _ttft(0.95, "B"),
            )
        )
        .with_row(Row("Usage"))
        .with_panel(
            bargauge.Panel()
            .title("Tokens per user (time range)")
            .description("Input and output tokens of answered messages, per user.")
            .datasource(PROMETHEUS)
            .unit("short")
            .height(8)
            .span(12)
            .with_target(
                _query(
                    "sum by (user_id, gen_ai_token_type) "
                    "(increase(gen_ai_client_token_usage_sum[$__range]))",
                    "{{user_id}} {{gen_ai_token_type}}",
                ).instant()
            )
        )
        .with_panel(
            bargauge.Panel()
            .title("Cost per user (time range)")
            .description("From the model prices in OMNI2's settings, per user.")
            .datasource(PROMETHEUS)
            .unit("currencyUSD")
            .decimals(4)
            .height(8)
            .span(12)
            .with_target(
                _query(
                    "sum by (user_id) (increase(chat_usage_cost_total[$__range]))", "{{user_id}}"
                ).instant()
            )
        )
        .with_row(Row("Chains (the audit)"))
        .with_panel(
            stat.Panel()
            .title("Broken chains (time range)")
            .description(
                "Messages whose chain misses a layer or a link, as `omni-trace audit` finds "
                "them, each counted once it has settled (10 s after its last span). Open the "
                "flow view to see which."
            )
            .datasource(PROMETHEUS)
            .height(8)
            .span(6)
            .with_target(
                _query(
                    'sum(increase(omni_trace_audit_messages_total{chain="broken"}[$__range]))',
                    "broken",
                ).instant()
            )
        )
        .with_panel(
            _series(
                "Messages per minute by chain and outcome",
                "cpm",
                "Settled messages as the audit judged them: whole chains, chains whole from "
                "the first traced layer (not_traced: e.g. a client that sent no trace context), "
                "broken ones and those only a client recorded; answered, refused or failed.",
                _query(
                    "60 * sum by (chain, outcome) "
                    f"(rate(omni_trace_audit_messages_total[{WINDOW}]))",
                    "{{chain}} {{outcome}}",
                ),
            ).span(9)
        )
        .with_panel(
            _series(
                "Broken chains per minute by missing layer",
                "cpm",
                "Which layer the broken chains lack.",
                _query(
                    f"60 * sum by (layer) (rate(omni_trace_audit_missing_layer_total[{WINDOW}]))",
                    "{{layer}}",
                ),
            ).span(9)
        )
        .with_panel(
            _series(
                "Stalled streams per minute by hop",
                "cpm",
                "Messages whose stream a hop held: its longest gap between token frames "
                "exceeded the layer below's by the audit's stall threshold (50 ms and 2x by "
                "default). The flow view's message page says when and for how long.",
                _query(
                    f"60 * sum by (hop) (rate(omni_trace_audit_stalls_total[{WINDOW}]))",
                    "{{hop}}",
                ),
            ).span(9)
        )
    )
    builder = _semconv_row(builder)
    builder = _alerts_row(builder)
    built: dict[str, Any] = json.loads(json.dumps(builder.build(), cls=JSONEncoder))
    return built


def _p(quantile: float, metric: str, by: tuple[str, ...], legend: str, ref: str) -> Dataquery:
    """A quantile of one of the services' histograms (otel.names.Metric), by its table's unit."""
    series = prometheus_name(metric, METRICS[metric].unit)
    return _query(histogram_quantile_query(quantile, series, by, WINDOW), legend, ref)


def _semconv_row(builder: Dashboard) -> Dashboard:
    """The OpenTelemetry GenAI and MCP metrics (semconv v1.41.0), under their standard names:
    what a GenAI dashboard elsewhere charts, from OMNI2 and the MCP tool server."""
    model, tool, method = ("gen_ai_request_model",), ("gen_ai_tool_name",), ("mcp_method_name",)
    return (
        builder.with_row(Row("GenAI and MCP (semantic conventions)"))
        .with_panel(
            _series(
                "Model calls p50 and p95 (gen_ai.client.operation.duration)",
                "s",
                "Each model call of OMNI2's agent loop, request to the end of its stream.",
                _p(0.5, Metric.OPERATION_DURATION, model, "{{gen_ai_request_model}} p50", "A"),
                _p(0.95, Metric.OPERATION_DURATION, model, "{{gen_ai_request_model}} p95", "B"),
            )
        )
        .with_panel(
            _series(
                "Model stream p95: first chunk and per output chunk",
                "s",
                "gen_ai.client.operation.time_to_first_chunk and time_per_output_chunk: the "
                "model's stream as OMNI2 receives it.",
                _p(
                    0.95,
                    Metric.TIME_TO_FIRST_CHUNK,
                    model,
                    "first chunk {{gen_ai_request_model}}",
                    "A",
                ),
                _p(
                    0.95,
                    Metric.TIME_PER_OUTPUT_CHUNK,
                    model,
                    "per chunk {{gen_ai_request_model}}",
                    "B",
                ),
            )
        )
        .with_panel(
            _series(
                "OMNI2 serving p95: first token and per output token",
                "s",
                "gen_ai.server.time_to_first_token and time_per_output_token: OMNI2 as the "
                "server of the stream, per message.",
                _p(
                    0.95,
                    Metric.SERVER_TIME_TO_FIRST_TOKEN,
                    model,
                    "first token {{gen_ai_request_model}}",
                    "A",
                ),
                _p(
                    0.95,
                    Metric.SERVER_TIME_PER_OUTPUT_TOKEN,
                    model,
                    "per token {{gen_ai_request_model}}",
                    "B",
                ),
            )
        )
        .with_panel(
            _series(
                "MCP operations p95 (mcp.client/server.operation.duration)",
                "s",
                "Each MCP request as OMNI2 (client) and the tool server (server) saw it; the "
                "difference is the network and the session in between.",
                _p(
                    0.95,
                    Metric.MCP_CLIENT_DURATION,
                    method + tool,
                    "client {{mcp_method_name}} {{gen_ai_tool_name}}",
                    "A",
                ),
                _p(
                    0.95,
                    Metric.MCP_SERVER_DURATION,
                    method + tool,
                    "server {{mcp_method_name}} {{gen_ai_tool_name}}",
                    "B",
                ),
            )
        )
        .with_panel(
            _series(
                "Tokens per minute by type (gen_ai.client.token.usage)",
                "short",
                "Input and output tokens of OMNI2's model calls.",
                _query(
                    "60 * sum by (gen_ai_token_type) "
                    f"(rate({prometheus_name(Metric.TOKEN_USAGE, '{token}')}_sum[{WINDOW}]))",
                    "{{gen_ai_token_type}}",
                ),
            )
        )
    )


# Prometheus' alerting rules (config/prometheus/alerts.yml): their ALERTS series, one
# row per firing alert and layer (or filter, for refused spans).
ALERTS_FIRING = 'max by (alertname, layer, filter) (ALERTS{alertstate="firing"})'


def _alerts_row(builder: Dashboard) -> Dashboard:
    """Which of the stack's alerts fired when: broken chains, slow first tokens and errors
    per layer, refused spans."""
    return builder.with_row(Row("Alerts")).with_panel(
        statetimeline.Panel()
        .title("Alerts firing (Prometheus rules)")
        .description(
            "The stack's alerting rules (config/prometheus/alerts.yml): ChatChainBroken (the "
            "audit found a broken chain), ChatFirstTokenSlow (a layer's p95 time to first "
            "token over its budget), ChatLayerErrors (a layer's share of error spans over its "
            "budget), TelemetrySpansRefused (Jaeger's filters refused spans). Budgets: "
            "OMNI_TRACE_ALERT_* (README, Alerts). Empty while none fires."
        )
        .datasource(PROMETHEUS)
        .no_value("no alert firing")
        .height(6)
        .span(24)
        .with_target(_query(ALERTS_FIRING, "{{alertname}} {{layer}}{{filter}}"))
    )


def dashboards() -> dict[str, dict[str, Any]]:
    """File name -> dashboard JSON, as kept in `grafana/dashboards/`."""
    return {FILE_NAME: chat_chain_dashboard()}


def render(dashboard: dict[str, Any]) -> str:
    return json.dumps(dashboard, indent=2, sort_keys=True) + "\n"


def generated(root: Path) -> dict[Path, str]:
    """Each generated file under a checkout's `root`, with its text."""
    files = {root / DASHBOARDS_DIR / name: render(board) for name, board in dashboards().items()}
    files[root / "compose" / "jaeger-ui.json"] = render(jaeger_ui_config(DEFAULT_FLOWVIEW_URL))
    return files


def write(root: Path) -> list[Path]:
    for path, text in generated(root).items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return list(generated(root))


def stale(root: Path) -> list[Path]:
    """Generated files that differ from what the code generates now (or are missing)."""
    return [
        path
        for path, text in generated(root).items()
        if not path.is_file() or path.read_text() != text
    ]


def queries(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """(panel title, PromQL) of every panel's query."""
    return [
        (panel["title"], target["expr"])
        for panel in dashboard.get("panels", [])
        for target in panel.get("targets", [])
        if "expr" in target
    ]
