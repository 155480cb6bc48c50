"""setup_tracing honours the standard OTEL_* variables and installs the server's sampler."""

from __future__ import annotations

from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider

from otel.sampling import ServerDecisionSampler
from otel.setup import create_tracer_provider


def _batch(provider: TracerProvider) -> Any:
    processor = provider._active_span_processor._span_processors[-1]
    return processor._batch_processor  # type: ignore[attr-defined]


@pytest.mark.parametrize(("env", "expected"), [(None, 200), ("1234", 1234)])
def test_bsp_variables_are_honoured(
    monkeypatch: pytest.MonkeyPatch, env: str | None, expected: int
) -> None:
    if env is None:
        monkeypatch.delenv("OTEL_BSP_SCHEDULE_DELAY", raising=False)
    else:
        monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", env)
    provider = create_tracer_provider("omni2", otlp_endpoint="http://127.0.0.1:9")
    try:
        assert _batch(provider)._schedule_delay_millis == expected
    finally:
        provider.shutdown()


def test_service_name_and_sampler(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_SERVICE_NAME", "my-omni2")
    provider = create_tracer_provider("omni2", otlp_endpoint="http://127.0.0.1:9")
    try:
        assert provider.resource.attributes["service.name"] == "my-omni2"
        assert isinstance(provider.sampler, ServerDecisionSampler)
    finally:
        provider.shutdown()


def test_the_exporter_session_skips_environment_lookups_unless_a_proxy_is_set(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from otel.setup import _session

    for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    assert _session().trust_env is False
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.internal:3128")
    assert _session().trust_env is True
