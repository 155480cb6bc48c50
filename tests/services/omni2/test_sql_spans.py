"""OMNI2's optional SQL spans (OMNI2_SQL_SPANS): opentelemetry-instrumentation-sqlalchemy on
our pinned SQLAlchemy, under chat.persist, with statements but never their values; off by
default."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from importlib.metadata import version

import pytest
from fastapi.testclient import TestClient
from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from sqlalchemy.ext.asyncio import create_async_engine

from otel.names import ATTRIBUTES, SpanName, documented_span
from tests.services.omni2.conftest import converse, gateway_headers

SQLALCHEMY_SCOPE = "opentelemetry.instrumentation.sqlalchemy"
SECRET_TEXT = "my parcel number is 4711-XYZ"


@pytest.fixture
def uninstrument() -> Iterator[None]:
    # The instrumentor is one per process: each test instruments its own engine afresh.
    yield
    SQLAlchemyInstrumentor().uninstrument()


def test_the_instrumentation_refuses_sqlalchemy_2_1_by_its_declared_range_alone(
    caplog: pytest.LogCaptureFixture, uninstrument: None
) -> None:
    """Why otel.instrumentation skips the dependency check: the range, not the code."""
    assert version("sqlalchemy").startswith("2.1.")
    engine = create_async_engine("sqlite+aiosqlite:///:memory:")
    with caplog.at_level(logging.WARNING):
        assert SQLAlchemyInstrumentor().instrument(engine=engine.sync_engine) is None
    assert "< 2.1.0" in caplog.text and "nothing can be instrumented" in caplog.text


def _under(span: ReadableSpan, ancestor: ReadableSpan, by_id: dict[int, ReadableSpan]) -> bool:
    while span.parent is not None and span.parent.span_id in by_id:
        span = by_id[span.parent.span_id]
        if span is ancestor:
            return True
    return False


def test_sql_spans_sit_under_persist_without_values(
    make_client: Callable[..., TestClient], spans: InMemorySpanExporter, uninstrument: None
) -> None:
    client = make_client(sql_spans=True)
    with client.websocket_connect("/ws/chat", headers=gateway_headers()) as ws:
        ws.receive_json()
        spans.clear()
        _, frames = converse(ws, SECRET_TEXT)
    assert frames[-1]["type"] == "done"
    finished = spans.get_finished_spans()
    by_id = {s.context.span_id: s for s in finished}
    sql = [s for s in finished if s.instrumentation_scope.name == SQLALCHEMY_SCOPE]
    (persist,) = [s for s in finished if s.name == SpanName.PERSIST]
    writes = [s for s in sql if _under(s, persist, by_id)]
    assert writes, [s.name for s in sql]
    for span in sql:
        assert span.attributes is not None
        assert documented_span("omni2", span.name), span.name
        assert set(span.attributes) <= set(ATTRIBUTES), set(span.attributes) - set(ATTRIBUTES)
        assert SECRET_TEXT not in str(dict(span.attributes))
    assert any("INSERT" in str(s.attributes.get("db.query.text", "")).upper() for s in writes)


def test_off_by_default(
    make_client: Callable[..., TestClient], spans: InMemorySpanExporter
) -> None:
    client = make_client()
    with client.websocket_connect("/ws/chat", headers=gateway_headers()) as ws:
        ws.receive_json()
        converse(ws, "hello")
    assert not [
        s for s in spans.get_finished_spans() if s.instrumentation_scope.name == SQLALCHEMY_SCOPE
    ]
