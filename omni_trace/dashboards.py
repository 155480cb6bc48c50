"""Grafana dashboards for the chat stack, built with Grafana's own Foundation SDK, and the
Jaeger UI's link patterns to the flow view.

The JSON files in `dashboards/` and `compose/jaeger-ui.json` are this module's output
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

from grafana_foundation_sdk.builders import bargauge, stat, timeseries
from grafana_foundation_sdk.builders.dashboard import (
    ConstantVariable,
    Dashboard,
    DashboardLink,
    Row,
)
from grafana_foundation_sdk.builders.prometheus import Dataquery
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.dashboard import DashboardLinkType, DataSourceRef

from omni_trace.flowview.hops import error_ratio_query, latency_query
from omni_trace.stack.jaeger_ui import jaeger_ui_config

# The provisioned data sources' uids (compose/grafana/provisioning/datasources).
PROMETHEUS = DataSourceRef(type_val="prometheus", uid="prometheus")
JAEGER_UID = "jaeger"
WINDOW = "$__rate_interval"
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
    )
    built: dict[str, Any] = json.loads(json.dumps(builder.build(), cls=JSONEncoder))
    return built


def dashboards() -> dict[str, dict[str, Any]]:
    """File name -> dashboard JSON, as kept in `dashboards/`."""
    return {FILE_NAME: chat_chain_dashboard()}


def render(dashboard: dict[str, Any]) -> str:
    return json.dumps(dashboard, indent=2, sort_keys=True) + "\n"


def generated(root: Path) -> dict[Path, str]:
    """Each generated file under a checkout's `root`, with its text."""
    files = {root / "dashboards" / name: render(board) for name, board in dashboards().items()}
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
