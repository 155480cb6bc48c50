"""The plan names each variable a service reads from that service's settings class: a renamed
setting fails here, at planning, instead of starting a service that ignores its value."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

import services.omni2.settings
from omni_trace.stack import Stack
from omni_trace.stack.environment import UnknownSetting, env_name, settings_env
from omni_trace.stack.ports import Ports
from omni_trace.stack.settings import StackSettings
from services.dashboard.settings import DashboardSettings
from services.omni2.settings import Omni2Settings


def _stack(tmp_path: Path) -> Stack:
    # An external Jaeger: planning needs no Jaeger binary.
    settings = StackSettings(
        jaeger_query_url="http://127.0.0.1:9", jaeger_otlp_endpoint="http://127.0.0.1:9"
    )
    stack = Stack(tmp_path, Ports(), settings, progress=lambda _: None)
    stack.config_dir.mkdir(parents=True)
    return stack


def test_a_settings_field_names_its_variable() -> None:
    assert env_name(Omni2Settings, "database_url") == "OMNI2_DATABASE_URL"
    # A mixin's field under the class's own prefix; an alias without one.
    assert env_name(DashboardSettings, "frames_per_second") == "DASHBOARD_FRAMES_PER_SECOND"
    assert env_name(Omni2Settings, "jwt_secret") == "OMNI_JWT_SECRET"
    assert settings_env(DashboardSettings, upstream_ws_url="ws://x", dashboard_key="k") == {
        "DASHBOARD_UPSTREAM_WS_URL": "ws://x",
        "OMNI_DASHBOARD_KEY": "k",
    }


def test_a_setting_the_class_does_not_have_fails_loudly() -> None:
    with pytest.raises(UnknownSetting, match="Omni2Settings has no setting 'databse_url'"):
        env_name(Omni2Settings, "databse_url")


def test_a_renamed_setting_fails_the_plan(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    class Renamed(BaseSettings):
        """OMNI2's settings with database_url renamed."""

        model_config = SettingsConfigDict(env_prefix="OMNI2_")
        host: str = "127.0.0.1"
        db_url: str = Field(default="")

    stack = _stack(tmp_path)
    assert "OMNI2_DATABASE_URL" in stack._plan()["omni2"].env
    monkeypatch.setattr(services.omni2.settings, "Omni2Settings", Renamed)
    with pytest.raises(UnknownSetting, match="Renamed has no setting"):
        stack._plan()
