"""Prometheus' alerting rules for the stack, with the budgets of its settings.

The rules are a template (config/prometheus/alerts.yml) whose `@NAME@` placeholders are
the budgets: `omni-trace up` renders it here, and compose's Prometheus renders the same file
with `sed` from compose/.env (the same variable names) when it starts. `@` rather than `$`:
the rules' annotations use Prometheus' own `$value` and `$labels`.
"""

from __future__ import annotations

import re

from omni_trace.stack.paths import CONFIG_DIR
from omni_trace.stack.settings import StackSettings

RULES_TEMPLATE = CONFIG_DIR / "prometheus" / "alerts.yml"
ALERTS = ("ChatChainBroken", "ChatFirstTokenSlow", "ChatLayerErrors", "TelemetrySpansRefused")
_PLACEHOLDER = re.compile(r"@([A-Z0-9_]+)@")


def budgets(settings: StackSettings) -> dict[str, str]:
    """Placeholder -> its value as PromQL reads it (`%g`: 2, 0.05, 1e-06)."""
    return {
        "FIRST_TOKEN_P95_S": f"{settings.alert_first_token_p95_s:g}",
        "ERROR_RATIO": f"{settings.alert_error_ratio:g}",
    }


# The environment variable each placeholder comes from (StackSettings' names; compose/.env
# holds the same ones).
ENVIRONMENT = {
    "FIRST_TOKEN_P95_S": "OMNI_TRACE_ALERT_FIRST_TOKEN_P95_S",
    "ERROR_RATIO": "OMNI_TRACE_ALERT_ERROR_RATIO",
}


def render_rules(settings: StackSettings) -> str:
    """The rules file with `settings`' budgets. Fails on a placeholder it has no value for."""
    values = budgets(settings)

    def value(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in values:
            raise KeyError(f"{RULES_TEMPLATE}: no budget for @{name}@")
        return values[name]

    return _PLACEHOLDER.sub(value, RULES_TEMPLATE.read_text())
