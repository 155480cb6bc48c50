"""The stacks a bench loads: free ports, no viewers unless asked, every dashboard's and
OMNI2 replica's frame and connect limits lifted; and the bench client's tracing."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from opentelemetry.trace import NoOpTracerProvider
from opentelemetry.trace import TracerProvider as ApiTracerProvider
from pydantic import SecretStr

from omni_trace.bench.config import BenchConfig
from omni_trace.stack.ports import Ports
from omni_trace.stack.runner import Stack
from omni_trace.stack.settings import StackSettings
from otel.names import Service
from otel.setup import create_tracer_provider


def _replicas(service: str, count: int) -> list[str]:
    """The stack's names of a service's replicas: `omni2`, `omni2-2`, ..."""
    return [service, *(f"{service}-{n}" for n in range(2, count + 1))]


def bench_stack(
    settings: StackSettings, run_dir: Path, tracing: bool = True, *, viewers: bool = False
) -> Stack:
    """A stack the bench can load: free ports, no viewers unless asked (see Stack), and the
    frame and connect limits of every dashboard and OMNI2 replica lifted."""
    # The bench sends faster than a person: the per-connection frame limit (a protection
    # with tests of its own) would refuse the load it is here to measure. OMNI2 holds the
    # same limit on each of its connections (the bench's Traefik and OMNI2 hops meet it
    # without a dashboard in front). Each service reads only its own prefix.
    lifted = {
        f"{service}_{name}": value
        for service in ("DASHBOARD", "OMNI2")
        for name, value in (
            ("FRAMES_PER_SECOND", "1e6"),
            ("FRAME_BURST", "1000000"),
            # The hop phase reconnects as one user far faster than a person would.
            ("CONNECTS_PER_MINUTE", "1e9"),
            ("CONNECT_BURST", "1000000"),
        )
    }
    services = [
        *_replicas("dashboard", settings.dashboard_replicas),
        *_replicas("omni2", settings.omni2_replicas),
    ]
    return Stack(
        run_dir,
        Ports.free(),
        settings,
        service_env={name: lifted for name in services},
        progress=lambda _: None,
        tracing=tracing,
        viewers=viewers,
    )


def bench_settings(cfg: BenchConfig) -> StackSettings:
    """The on/off bench's stack settings: the offline model's pause, and OMNI2's database
    from --database-url, else OMNI_TRACE_DATABASE_URL (StackSettings reads it), else SQLite."""
    settings = StackSettings(model_token_delay_ms=cfg.token_delay_ms)
    if cfg.database_url:
        settings = settings.model_copy(update={"database_url": SecretStr(cfg.database_url)})
    return settings


@contextmanager
def client_tracing(stack: Stack, tracing: bool) -> Iterator[ApiTracerProvider]:
    """The bench client is the chat-client layer: traced like a real client when the stack
    is, and not at all when it is not."""
    if not tracing:
        yield NoOpTracerProvider()
        return
    provider = create_tracer_provider(
        Service.CHAT_CLIENT, otlp_endpoint=stack.info.otlp_http_endpoint
    )
    try:
        yield provider
    finally:
        provider.shutdown()
