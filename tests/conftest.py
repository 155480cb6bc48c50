"""Unit tests run spans through an in-memory exporter installed as the global provider.

Stack tests pass their own provider explicitly (see tests/whole_stack/conftest.py), so the two
never mix.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from xdist.scheduler import LoadScopeScheduling

from otel.processors import InheritAttributesProcessor
from otel.sampling import ServerDecisionSampler
from otel.websocket.client import uninstrument_websockets_client, websockets_client_instrumented
from tests.fake_openai import FakeOpenAI
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


# Packages whose files share a package-scoped stack: on several workers (scripts/test) they
# run on one worker, so that stack (and its Chromium) starts once, not once per worker.
ONE_WORKER_PACKAGES = ("browser",)
# Seconds each work unit (a file, or one of the packages above) took in a recent whole run:
# the longest start first, so that no long one is the last to start. Rewritten by
# `scripts/test --save-durations`; a unit not in it counts DEFAULT_S per slow test.
DURATIONS = Path(__file__).with_name("durations.json")
DEFAULT_S = 10.0


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--save-durations",
        action="store_true",
        help=f"write each work unit's seconds to {DURATIONS.name}, which orders the next runs",
    )


def work_unit(path: str) -> str:
    """The unit a test file runs in on several workers: its package's, or its own."""
    parts = Path(path).relative_to("tests").parts
    return parts[0] if parts[0] in ONE_WORKER_PACKAGES else "/".join(parts)


def _relative(path: Path) -> str:
    return path.relative_to(DURATIONS.parent.parent).as_posix()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Slow as well, so `scripts/test --quick` leaves them out: every browser test (Chromium,
    and a stack per package) and every in-process test's PostgreSQL variant (the quick tier
    runs its SQLite one)."""
    for item in items:
        callspec = getattr(item, "callspec", None)
        on_postgres = callspec is not None and "postgresql" in callspec.id.split("-")
        if item.get_closest_marker("browser") is not None or on_postgres:
            item.add_marker(pytest.mark.slow)
    units = {item: work_unit(_relative(item.path)) for item in items}
    # Each unit goes to one worker (below), in this order: scripts/test turns xdist's own
    # reordering off. The sort is stable, so each unit's tests stay together and in order.
    known = json.loads(DURATIONS.read_text()) if DURATIONS.exists() else {}
    slow = Counter(units[item] for item in items if item.get_closest_marker("slow") is not None)
    items.sort(key=lambda item: -known.get(units[item], DEFAULT_S * slow[units[item]]))


class ByWorkUnit(LoadScopeScheduling):
    """xdist's scheduling by scope, with our work units as the scopes. (Its own `loadgroup`
    would do, but with pytest 9 the groups it writes into node ids are lost.)"""

    def _split_scope(self, nodeid: str) -> str:
        return work_unit(nodeid.split("::")[0])


@pytest.hookimpl(optionalhook=True)  # a hook of pytest-xdist, absent with -p no:xdist
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> ByWorkUnit:
    return ByWorkUnit(config, log)


_took: defaultdict[str, float] = defaultdict(float)


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """Setup, call and teardown of each test, added to its unit's seconds (on several
    workers the reports arrive at the controller)."""
    _took[work_unit(report.nodeid.split("::")[0])] += report.duration


def pytest_sessionfinish(session: pytest.Session) -> None:
    config = session.config
    if config.getoption("save_durations") and not hasattr(config, "workerinput"):
        seconds = {unit: round(s, 1) for unit, s in sorted(_took.items())}
        DURATIONS.write_text(json.dumps(seconds, indent=1) + "\n")


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


@pytest.fixture(scope="module")
def fake_openai() -> Iterator[FakeOpenAI]:
    """A local OpenAI-compatible server replaying recorded exchanges, for the module."""
    fake = FakeOpenAI()
    yield fake
    fake.close()


@pytest.fixture(scope="session")
def postgres() -> Iterator[str]:
    """A PostgreSQL server for this test session (base URL, no database name)."""
    with postgres_server() as url:
        yield url


@pytest.fixture(scope="session")
def postgres_database(postgres: str) -> str:
    """One database for the in-process tests; `tests.pg.emptied` resets it per test."""
    return asyncio.run(create_database(postgres, "omni2_tests"))
