"""Fixtures that start the real stack (Jaeger, auth, OMNI2, Traefik, dashboard) on free ports.

The test process is the chat-client layer: it exports its spans with its own provider to
the stack's Jaeger, so unit tests' in-memory provider never sees them.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from opentelemetry.sdk.trace import TracerProvider

from omni_trace.jaeger import JaegerClient
from omni_trace.ports import Ports
from omni_trace.settings import StackSettings
from omni_trace.stack import Stack
from otel.names import Service
from otel.setup import create_tracer_provider


@contextmanager
def running_stack(run_dir: Path, jwt_secret: str) -> Iterator[Stack]:
    """A whole stack on free ports, stopped on exit."""
    stack = Stack(
        run_dir,
        Ports.free(),
        StackSettings(model_token_delay_ms=2),
        jwt_secret=jwt_secret,
        progress=lambda message: print(message, flush=True),
    )
    with stack:
        yield stack


@pytest.fixture(scope="session")
def jwt_secret() -> str:
    return secrets.token_urlsafe(32)


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory, jwt_secret: str) -> Iterator[Stack]:
    with running_stack(tmp_path_factory.mktemp("stack"), jwt_secret) as stack:
        yield stack


@pytest.fixture(scope="session")
def client_provider(stack: Stack) -> Iterator[TracerProvider]:
    provider = create_tracer_provider(
        Service.CHAT_CLIENT, otlp_endpoint=stack.info.otlp_http_endpoint
    )
    yield provider
    provider.shutdown()


@pytest.fixture(scope="session")
def jaeger(stack: Stack) -> Iterator[JaegerClient]:
    with JaegerClient(stack.info.jaeger_query_url) as client:
        yield client
