"""Each process's allowed environment comes from what it reads: its settings class (prefix and
field names, or aliases) or its config files, so no process inherits another's secrets."""

from __future__ import annotations

from omni_trace.flowview.settings import FlowViewSettings
from omni_trace.stack.environment import (
    allowed_environment,
    inherited,
    settings_variables,
)
from services.mcp_tools.settings import McpToolsSettings
from services.omni2.settings import Omni2Settings


def test_a_settings_class_names_the_variables_it_reads() -> None:
    omni2 = settings_variables(Omni2Settings)
    # Prefixed fields, the mixins' fields under OMNI2's prefix, and aliases without a prefix.
    assert {"OMNI2_DATABASE_URL", "OMNI2_ANTHROPIC_API_KEY", "OMNI2_FRAMES_PER_SECOND"} <= omni2
    assert {"OMNI_JWT_SECRET", "OMNI_EDGE_KEY", "OMNI_LOG_LEVEL"} <= omni2
    assert "MCP_TOOLS_AUTH_TOKEN" not in omni2 and "ANTHROPIC_API_KEY" not in omni2
    tools = settings_variables(McpToolsSettings)
    assert "MCP_TOOLS_AUTH_TOKEN" in tools and "OMNI_JWT_SECRET" not in tools
    assert "FLOWVIEW_JAEGER_QUERY_URL" in settings_variables(FlowViewSettings)


def test_each_process_may_inherit_only_what_it_reads() -> None:
    shell = {
        "PATH": "/usr/bin",
        "LC_ALL": "C.UTF-8",
        "OTEL_TRACES_SAMPLER": "parentbased_always_on",
        "http_proxy": "http://proxy:3128",
        "OMNI2_ANTHROPIC_API_KEY": "k1",
        "ANTHROPIC_API_KEY": "k2",
        "OMNI_JWT_SECRET": "s",
        "AWS_SECRET_ACCESS_KEY": "k3",
        "omni2_history_turns": "3",  # pydantic-settings reads names in any case
    }
    omni2 = inherited(allowed_environment("omni2-2"), shell)
    assert set(omni2) == {
        "PATH",
        "LC_ALL",
        "OTEL_TRACES_SAMPLER",
        "http_proxy",
        "OMNI2_ANTHROPIC_API_KEY",
        "OMNI_JWT_SECRET",
        "omni2_history_turns",
    }
    assert set(inherited(allowed_environment("mcp-tools"), shell)) == {
        "PATH",
        "LC_ALL",
        "OTEL_TRACES_SAMPLER",
        "http_proxy",
    }
    for name in ("jaeger", "jaeger-collector-1", "kafka", "prometheus"):
        assert set(inherited(allowed_environment(name), shell)) == {
            "PATH",
            "LC_ALL",
            "OTEL_TRACES_SAMPLER",
        }, name
    # Jaeger and Traefik: the variables their config files take.
    assert allowed_environment("jaeger-collector-2").admits("JAEGER_OTLP_HTPASSWD")
    assert allowed_environment("traefik").admits("OMNI_EDGE_KEY")
    assert not allowed_environment("traefik").admits("OMNI_JWT_SECRET")
    assert allowed_environment("otlp-balancer").admits("OTLP_COLLECTOR_URLS")
