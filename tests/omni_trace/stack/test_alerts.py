"""Prometheus' alerting rules (config/prometheus/alerts.yml) as the stack renders them:
valid for the real promtool, and each rule unit-tested on synthetic series
(../data/alerts_test.yml)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from omni_trace.stack import Stack
from omni_trace.stack.alerts import ALERTS, ENVIRONMENT, RULES_TEMPLATE, budgets, render_rules
from omni_trace.stack.ports import Ports
from omni_trace.stack.settings import StackSettings

DATA = Path(__file__).parents[1] / "data"  # tests/omni_trace/data
# The budgets ../data/alerts_test.yml is written for: the settings' defaults.
DEFAULTS = {"alert_first_token_p95_s": 2.0, "alert_error_ratio": 0.05}


def _promtool() -> str:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool is missing: scripts/bootstrap installs Debian's prometheus package")
    return promtool


def _promtool_run(*args: str, cwd: Path) -> str:
    run = subprocess.run([_promtool(), *args], cwd=cwd, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stdout + run.stderr
    return run.stdout


def test_the_defaults_are_the_budgets_the_unit_tests_assume() -> None:
    fields = StackSettings.model_fields
    assert {name: fields[name].default for name in DEFAULTS} == DEFAULTS


@pytest.mark.parametrize(
    "settings",
    [DEFAULTS, {"alert_first_token_p95_s": 0.000001, "alert_error_ratio": 1.0}],
    ids=["defaults", "extremes"],
)
def test_promtool_accepts_the_rendered_rules(tmp_path: Path, settings: dict[str, float]) -> None:
    rules = tmp_path / "alerts.yml"
    rules.write_text(render_rules(StackSettings.model_validate(settings)))
    out = _promtool_run("check", "rules", str(rules), cwd=tmp_path)
    assert f"SUCCESS: {len(ALERTS)} rules found" in out
    groups = yaml.safe_load(rules.read_text())["groups"]
    assert [rule["alert"] for group in groups for rule in group["rules"]] == list(ALERTS)
    # Each budget is in its rule's expression as PromQL reads the setting.
    exprs = {rule["alert"]: rule["expr"] for rule in groups[0]["rules"]}
    values = budgets(StackSettings.model_validate(settings))
    assert exprs["ChatFirstTokenSlow"].rstrip().endswith(f"> {values['FIRST_TOKEN_P95_S']}")
    assert exprs["ChatLayerErrors"].rstrip().endswith(f"> {values['ERROR_RATIO']}")
    assert "@" not in rules.read_text()


def test_every_rule_fires_on_its_condition_and_only_then(tmp_path: Path) -> None:
    """promtool's unit tests: a broken chain fires and whole chains do not; the slow layer's
    first token fires after its `for:`, not the fast one's; errors per layer over budget;
    refused spans per filter."""
    (tmp_path / "alerts.yml").write_text(render_rules(StackSettings.model_validate(DEFAULTS)))
    shutil.copy(DATA / "alerts_test.yml", tmp_path / "alerts_test.yml")
    out = _promtool_run("test", "rules", "alerts_test.yml", cwd=tmp_path)
    assert "SUCCESS" in out
    tested = {
        case["alertname"]
        for test in yaml.safe_load((DATA / "alerts_test.yml").read_text())["tests"]
        for case in test["alert_rule_test"]
    }
    assert tested == set(ALERTS)


def test_a_demo_sees_an_alert_within_a_minute() -> None:
    """Rules evaluated every 5 s; no `for:` over 30 s."""
    (group,) = yaml.safe_load(RULES_TEMPLATE.read_text())["groups"]
    assert group["interval"] == "5s"
    for rule in group["rules"]:
        assert rule.get("for", "0s") in {"0s", "15s", "30s"}, rule["alert"]


def test_each_budget_has_a_setting_and_an_environment_name() -> None:
    settings = StackSettings.model_validate(DEFAULTS)
    assert budgets(settings).keys() == ENVIRONMENT.keys()
    for variable in ENVIRONMENT.values():
        field = variable.removeprefix("OMNI_TRACE_").lower()
        assert field in StackSettings.model_fields, variable


def test_budgets_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMNI_TRACE_ALERT_FIRST_TOKEN_P95_S", "0.75")
    monkeypatch.setenv("OMNI_TRACE_ALERT_ERROR_RATIO", "0.2")
    assert budgets(StackSettings()) == {"FIRST_TOKEN_P95_S": "0.75", "ERROR_RATIO": "0.2"}


@pytest.mark.parametrize(
    "field, value",
    [("alert_first_token_p95_s", 0), ("alert_error_ratio", 0), ("alert_error_ratio", 1.5)],
)
def test_a_budget_that_could_never_or_always_fire_is_refused(field: str, value: float) -> None:
    with pytest.raises(ValueError):
        StackSettings.model_validate({field: value})


def test_up_gives_prometheus_the_rules_with_the_stacks_budgets(tmp_path: Path) -> None:
    """The Prometheus config `omni-trace up` writes loads the rules it rendered from the
    settings; the real promtool accepts both together."""
    settings = StackSettings(alert_first_token_p95_s=0.25, alert_error_ratio=0.1)
    stack = Stack(tmp_path, Ports(), settings, progress=lambda _: None)
    stack.config_dir.mkdir(parents=True, exist_ok=True)
    config = stack._render_prometheus_config()
    (rules,) = yaml.safe_load(config.read_text())["rule_files"]
    assert Path(rules).read_text() == render_rules(settings)
    assert "> 0.25" in Path(rules).read_text() and "> 0.1" in Path(rules).read_text()
    out = _promtool_run("check", "config", str(config), cwd=tmp_path)
    assert f"SUCCESS: {len(ALERTS)} rules found" in out
