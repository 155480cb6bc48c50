"""Unit tests run spans through an in-memory exporter installed as the global provider.

Stack tests pass their own provider explicitly (see tests/whole_stack/conftest.py), so the two
never mix.
"""

from __future__ import annotations

import asyncio
import os
from collections import Counter
from collections.abc import Iterator

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from otel.processors import InheritAttributesProcessor
from otel.sampling import ServerDecisionSampler
from otel.websocket.client import uninstrument_websockets_client, websockets_client_instrumented
from tests.pg import create_database, postgres_server

# The entrance keys every service needs (services/common/provenance.py), for the services
# the tests run in-process; each stack a test starts makes its own.
DASHBOARD_KEY = "d" * 32
EDGE_KEY = "e" * 32
os.environ.setdefault("OMNI_DASHBOARD_KEY", DASHBOARD_KEY)
os.environ.setdefault("OMNI_EDGE_KEY", EDGE_KEY)

_EXPORTER = InMemorySpanExporter()
_PROVIDER = TracerProvider(sampler=ServerDecisionSampler())  # as setup_tracing installs
_PROVIDER.add_span_processor(InheritAttributesProcessor())
_PROVIDER.add_span_processor(SimpleSpanProcessor(_EXPORTER))
trace.set_tracer_provider(_PROVIDER)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Slow as well, so `scripts/test --quick` leaves them out: every browser test (Chromium,
    and a stack per package) and every in-process test's PostgreSQL variant (the quick tier
    runs its SQLite one)."""
    for item in items:
        callspec = getattr(item, "callspec", None)
        on_postgres = callspec is not None and "postgresql" in callspec.id.split("-")
        if item.get_closest_marker("browser") is not None or on_postgres:
            item.add_marker(pytest.mark.slow)
    # On several workers (scripts/test) each file goes to one worker, in this order: the files
    # with the most slow tests first, so that no long file is the last to start. The sort is
    # stable, so each file's tests stay together and in their order.
    slow = Counter(item.path for item in items if item.get_closest_marker("slow") is not None)
    items.sort(key=lambda item: -slow[item.path])


def _websockets_client_as_found() -> Iterator[None]:
    """The `websockets` client as it was: a proxy's tracing (the dashboard's app, the proxy
    role) instruments it for the whole process. Left on, every later test's chat client
    sent a `traceparent` header: the front gateway joined the client's trace, and each
    session waited in vain for the client's handshake span."""
    before = websockets_client_instrumented()
    yield
    if websockets_client_instrumented() and not before:
        uninstrument_websockets_client()


# Around each test, and around each module for its module-scoped apps.
_client_after_test = pytest.fixture(autouse=True)(_websockets_client_as_found)
_client_after_module = pytest.fixture(autouse=True, scope="module")(_websockets_client_as_found)


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """Finished spans of this test (the exporter is cleared before and after)."""
    _EXPORTER.clear()
    yield _EXPORTER
    _EXPORTER.clear()


@pytest.fixture(scope="session")
def postgres() -> Iterator[str]:
    """A PostgreSQL server for this test session (base URL, no database name)."""
    with postgres_server() as url:
        yield url


@pytest.fixture(scope="session")
def postgres_database(postgres: str) -> str:
    """One database for the in-process tests; `tests.pg.emptied` resets it per test."""
    return asyncio.run(create_database(postgres, "omni2_tests"))
