"""The stack file names the chat page, and older stack files (without it) still read."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import pytest
import yaml

from omni_trace.stack import Stack, StackInfo, stack_summary
from omni_trace.stack.ports import Ports
from omni_trace.stack.settings import StackSettings


def test_stack_file_has_the_frontend_url(tmp_path: Path) -> None:
    stack = Stack(tmp_path, Ports(frontend=3999), StackSettings(), progress=lambda _: None)
    assert stack.info.frontend_url == "http://127.0.0.1:3999"
    path = tmp_path / "stack.json"
    stack.info.write(path)
    assert json.loads(path.read_text())["frontend_url"] == "http://127.0.0.1:3999"
    assert StackInfo.read(path) == stack.info
    summary = stack_summary(stack.info)
    assert summary["chat page (browser)"] == "http://127.0.0.1:3999"
    assert summary["WebSocket test page"] == "http://127.0.0.1:3999/test_ws_chat.html"


def test_default_frontend_port_is_the_seeds() -> None:
    assert Ports().frontend == 3001


def test_a_stack_file_from_before_the_page_still_reads(tmp_path: Path) -> None:
    info = Stack(tmp_path, Ports(), StackSettings(), progress=lambda _: None).info
    old = {k: v for k, v in asdict(info).items() if k != "frontend_url"}
    path = tmp_path / "old.json"
    path.write_text(json.dumps(old))
    assert StackInfo.read(path).frontend_url == ""


def _stack(tmp_path: Path) -> Stack:
    # An external Jaeger: planning needs no Jaeger binary.
    settings = StackSettings(
        jaeger_query_url="http://127.0.0.1:9", jaeger_otlp_endpoint="http://127.0.0.1:9"
    )
    return Stack(tmp_path, Ports(), settings, progress=lambda _: None)


def test_the_stack_file_is_private(tmp_path: Path) -> None:
    path = tmp_path / "stack.json"
    path.write_text("{}")
    path.chmod(0o644)
    _stack(tmp_path).info.write(path)
    assert path.stat().st_mode & 0o777 == 0o600


def test_service_variables_reach_the_services(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OMNI2_MODEL_TOKEN_DELAY_MS", "7")
    monkeypatch.setenv("OMNI2_HISTORY_TURNS", "3")
    monkeypatch.setenv("DASHBOARD_FRAMES_PER_SECOND", "5")
    stack = _stack(tmp_path)
    stack.config_dir.mkdir(parents=True)
    plan = stack._plan()
    assert float(plan["omni2"].env["OMNI2_MODEL_TOKEN_DELAY_MS"]) == 7
    assert plan["omni2"].env["OMNI2_HISTORY_TURNS"] == "3"
    assert plan["dashboard"].env["DASHBOARD_FRAMES_PER_SECOND"] == "5"


@pytest.mark.parametrize("disabled", [True, False])
def test_sdk_disabled_switches_traefik_tracing_off_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, disabled: bool
) -> None:
    if disabled:
        monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    else:
        monkeypatch.delenv("OTEL_SDK_DISABLED", raising=False)
    stack = _stack(tmp_path)
    stack.config_dir.mkdir(parents=True)
    config = yaml.safe_load(stack._render_traefik_config().read_text())
    assert ("tracing" in config) is not disabled
    assert config["accessLog"]["fields"]["queryParameters"]["defaultMode"] == "drop"


@pytest.mark.parametrize("viewers", [True, False])
def test_the_viewers_are_left_out_when_asked(tmp_path: Path, viewers: bool) -> None:
    """The bench's stacks run without the flow view and Prometheus (they read Jaeger while it
    measures); the chat page's links then lead to Jaeger's JSON, and Jaeger's UI has no links."""
    stack = Stack(tmp_path, Ports(), StackSettings(), progress=lambda _: None, viewers=viewers)
    stack.config_dir.mkdir(parents=True)
    plan = stack._plan()
    assert ("flowview" in plan) is viewers
    assert bool(stack.info.flowview_url) is viewers
    link = plan["frontend"].env["FRONTEND_TRACE_URL_TEMPLATE"]
    ui_config = plan["jaeger"].env["JAEGER_UI_CONFIG"]
    if viewers:
        assert link == f"{stack.info.flowview_url}/#/trace/{{trace_id}}"
        links = json.loads(Path(ui_config).read_text())["linkPatterns"]
        assert all(p["url"].startswith(f"{stack.info.flowview_url}/#/") for p in links)
    else:
        assert "prometheus" not in plan
        assert link == "{jaeger_query_url}/api/traces/{trace_id}"
        assert ui_config == ""


def test_demo_logins_come_from_what_omni2_wrote(tmp_path: Path) -> None:
    """The harness learns the demo users from OMNI2's OMNI2_DEMO_USERS_FILE, not its code."""
    stack = Stack(tmp_path, Ports(), StackSettings(), progress=lambda _: None)
    stack.config_dir.mkdir(parents=True)
    omni2 = stack._plan()["omni2"].env
    written = Path(omni2["OMNI2_DEMO_USERS_FILE"])
    assert written.parent == tmp_path
    assert stack._demo_passwords() == {}  # not written (seeding off): no demo logins
    written.write_text("not json")
    assert stack._demo_passwords() == {}
    written.write_text(json.dumps({"alice": "alice-demo"}))
    assert stack._demo_passwords() == {"alice": "alice-demo"}


def test_the_scale_profile_sets_what_it_names_unless_given(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    scale = StackSettings(scale=True)
    assert (scale.trace_pipeline, scale.database) == ("kafka", "postgres")
    assert (scale.omni2_replicas, scale.dashboard_replicas) == (2, 2)
    assert StackSettings(scale=True, omni2_replicas=1).omni2_replicas == 1
    monkeypatch.setenv("OMNI_TRACE_DATABASE", "sqlite")
    assert StackSettings(scale=True).database == "sqlite"
    assert StackSettings().trace_pipeline == "memory"


def test_dashboard_replicas_stand_behind_the_front_entry_point(tmp_path: Path) -> None:
    settings = StackSettings(
        dashboard_replicas=2,
        jaeger_query_url="http://127.0.0.1:9",
        jaeger_otlp_endpoint="http://127.0.0.1:9",
    )
    ports = Ports()
    info = Stack(tmp_path, ports, settings, progress=lambda _: None).info
    assert info.dashboard_url == f"http://127.0.0.1:{ports.dashboard}"
    assert info.dashboard_replicas == [
        f"http://127.0.0.1:{ports.dashboard_1}",
        f"http://127.0.0.1:{ports.dashboard_2}",
    ]
