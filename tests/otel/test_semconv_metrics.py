"""The GenAI and MCP metrics against a table kept from the conventions (semconv v1.41.0,
docs/gen-ai/gen-ai-metrics.md and docs/gen-ai/mcp.md): name, instrument, unit, required
attributes and advisory buckets, in otel/names.py's table and in what the instruments record."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from otel import semconv
from otel.metrics import ChatMetrics
from otel.names import METRICS, Attr, Metric
from tests.otel.collected import collect

_GENAI_S = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92)
_TOKENS = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216)
_TOKENS = (*_TOKENS, 67108864)
_TTFT = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)
_TPOT = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5)
_MCP_S = (0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 30, 60, 120, 300)
_GENAI_REQUIRED = frozenset({"gen_ai.operation.name", "gen_ai.provider.name"})

# name: (instrument, unit, required attributes, advisory bucket boundaries)
CONVENTIONS: dict[str, tuple[str, str, frozenset[str], tuple[float, ...]]] = {
    "gen_ai.client.token.usage": (
        "histogram",
        "{token}",
        _GENAI_REQUIRED | {"gen_ai.token.type"},
        _TOKENS,
    ),
    "gen_ai.client.operation.duration": ("histogram", "s", _GENAI_REQUIRED, _GENAI_S),
    "gen_ai.client.operation.time_to_first_chunk": ("histogram", "s", _GENAI_REQUIRED, _GENAI_S),
    "gen_ai.client.operation.time_per_output_chunk": ("histogram", "s", _GENAI_REQUIRED, _GENAI_S),
    "gen_ai.server.request.duration": ("histogram", "s", _GENAI_REQUIRED, _GENAI_S),
    "gen_ai.server.time_to_first_token": ("histogram", "s", _GENAI_REQUIRED, _TTFT),
    "gen_ai.server.time_per_output_token": ("histogram", "s", _GENAI_REQUIRED, _TPOT),
    "mcp.client.operation.duration": ("histogram", "s", frozenset({"mcp.method.name"}), _MCP_S),
    "mcp.server.operation.duration": ("histogram", "s", frozenset({"mcp.method.name"}), _MCP_S),
}


@pytest.fixture
def opt_in(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """Set OTEL_SEMCONV_STABILITY_OPT_IN (None: unset) for the process's one reading of it."""

    def set_to(value: str | None) -> None:
        if value is None:
            monkeypatch.delenv(semconv.OPT_IN, raising=False)
        else:
            monkeypatch.setenv(semconv.OPT_IN, value)
        semconv.gen_ai_latest_experimental.cache_clear()

    set_to(None)
    yield set_to
    semconv.gen_ai_latest_experimental.cache_clear()


def _traffic(chat: ChatMetrics) -> None:
    """What one message with a tool call records at OMNI2 and the MCP server."""
    call = chat.model_call("offline", "m1", ("127.0.0.1", 9))
    for _ in range(3):
        call.chunk()
    call.finished(response_model="m1-2026", input_tokens=12, output_tokens=30, user_id="alice")
    chat.model_call("offline", "m1").failed("provider_overloaded")
    served = {
        Attr.GEN_AI_OPERATION: "chat",
        Attr.GEN_AI_PROVIDER: "offline",
        Attr.GEN_AI_REQUEST_MODEL: "m1",
    }
    chat.served(served, seconds=1.0, first_token_s=0.1, output_tokens=10)
    chat.served(served, seconds=0.2, first_token_s=None, output_tokens=0, error_type="rate_limited")
    chat.mcp_client("tools/call", "database_query", 0.05, server=("127.0.0.1", 8765))
    chat.mcp_client("tools/list", None, 0.01, error_type="-32000")
    chat.mcp_server("tools/call", "database_query", 0.02, protocol_version="2025-06-18")
    chat.mcp_server("tools/call", "list_tables", 0.02, error_type="tool_error")


def test_the_names_table_follows_the_conventions() -> None:
    for name, (instrument, unit, required, _) in CONVENTIONS.items():
        doc = METRICS[name]
        assert (doc.instrument, doc.unit) == (instrument, unit), name
        assert required <= set(doc.attributes), name
        assert semconv.CONVENTION_VERSION in doc.follows, name
    ours = {name for name, doc in METRICS.items() if doc.follows == "ours"}
    # Our own names only where no convention exists.
    assert not ours & set(CONVENTIONS)
    assert all(name.startswith("chat.") for name in ours), ours


def test_the_instruments_record_what_the_conventions_require(opt_in: Any) -> None:
    reader = InMemoryMetricReader()
    chat = ChatMetrics.create(MeterProvider(metric_readers=[reader]).get_meter("test"))
    _traffic(chat)
    found = collect(reader)
    for name, (_, unit, required, buckets) in CONVENTIONS.items():
        assert name in found, name
        metric = found[name]
        assert metric.unit == unit, name
        points = list(metric.data.data_points)
        assert points, name
        for point in points:
            assert required <= set(point.attributes), (name, dict(point.attributes))
            assert set(point.attributes) <= set(METRICS[name].attributes), name
            assert tuple(point.explicit_bounds) == buckets, name

    def points(name: str) -> list[Any]:
        return list(found[name].data.data_points)

    # Per chunk after the first, one time per output chunk; the first chunk once.
    assert sum(p.count for p in points(Metric.TIME_TO_FIRST_CHUNK)) == 1
    assert sum(p.count for p in points(Metric.TIME_PER_OUTPUT_CHUNK)) == 2
    (chunked,) = points(Metric.TIME_PER_OUTPUT_CHUNK)
    assert chunked.attributes[Attr.SERVER_PORT] == 9
    durations = {p.attributes.get(Attr.ERROR_TYPE): p for p in points(Metric.OPERATION_DURATION)}
    assert set(durations) == {None, "provider_overloaded"}
    assert durations[None].attributes[Attr.GEN_AI_RESPONSE_MODEL] == "m1-2026"
    tokens = {p.attributes["gen_ai.token.type"]: p.sum for p in points(Metric.TOKEN_USAGE)}
    assert tokens == {"input": 12, "output": 30}
    # (request duration - time to first token) / (output tokens - 1), once per message.
    (tpot,) = points(Metric.SERVER_TIME_PER_OUTPUT_TOKEN)
    assert tpot.count == 1 and tpot.sum == pytest.approx(0.9 / 9)
    (ttft,) = points(Metric.SERVER_TIME_TO_FIRST_TOKEN)
    assert ttft.count == 1 and ttft.sum == pytest.approx(0.1)
    requests = {p.attributes.get(Attr.ERROR_TYPE) for p in points(Metric.SERVER_REQUEST_DURATION)}
    assert requests == {None, "rate_limited"}
    calls = {
        (p.attributes[Attr.MCP_METHOD], p.attributes.get(Attr.GEN_AI_TOOL_NAME)): p.attributes
        for p in points(Metric.MCP_CLIENT_DURATION)
    }
    assert calls[("tools/call", "database_query")][Attr.GEN_AI_OPERATION] == "execute_tool"
    assert calls[("tools/list", None)][Attr.ERROR_TYPE] == "-32000"
    assert Attr.GEN_AI_OPERATION not in calls[("tools/list", None)]
    served = {
        p.attributes.get(Attr.GEN_AI_TOOL_NAME): p for p in points(Metric.MCP_SERVER_DURATION)
    }
    assert served["list_tables"].attributes[Attr.ERROR_TYPE] == "tool_error"
    assert served["database_query"].attributes["mcp.protocol.version"] == "2025-06-18"


@pytest.mark.parametrize(
    ("value", "omni2_old_name"),
    [
        (None, True),
        ("http", True),
        ("http, gen_ai_latest_experimental", False),
        ("gen_ai_latest_experimental", False),
    ],
)
def test_opt_in_to_the_latest_genai_conventions_drops_omni2s_old_name(
    opt_in: Any, value: str | None, omni2_old_name: bool
) -> None:
    opt_in(value)
    reader = InMemoryMetricReader()
    chat = ChatMetrics.create(MeterProvider(metric_readers=[reader]).get_meter("test"))
    chat.first_token(0.01, server_of_stream=True)  # omni2
    chat.first_token(0.02)  # the dashboard: no convention for a relay, always ours
    (points,) = [list(collect(reader)[Metric.TIME_TO_FIRST_TOKEN].data.data_points)]
    assert sum(p.count for p in points) == (2 if omni2_old_name else 1)


def test_time_per_output_chunk_can_be_left_out() -> None:
    reader = InMemoryMetricReader()
    chat = ChatMetrics.create(MeterProvider(metric_readers=[reader]).get_meter("test"))
    call = chat.model_call("offline", "m1", each_chunk=False)
    for _ in range(3):
        call.chunk()
    call.finished(response_model="m1", input_tokens=1, output_tokens=3, user_id="alice")
    found = collect(reader)
    assert Metric.TIME_PER_OUTPUT_CHUNK not in found
    # The rest of the call is recorded as before.
    assert sum(p.count for p in found[Metric.TIME_TO_FIRST_CHUNK].data.data_points) == 1
    assert sum(p.count for p in found[Metric.OPERATION_DURATION].data.data_points) == 1
