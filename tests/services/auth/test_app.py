from __future__ import annotations

import jwt
import pytest
from fastapi.testclient import TestClient
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from otel.names import Attr, Entry
from services.auth.app import create_app
from services.auth.settings import AuthSettings
from services.common.provenance import DASHBOARD_KEY_HEADER, EDGE_KEY_HEADER
from services.common.tokens import issue_token
from tests.conftest import DASHBOARD_KEY, EDGE_KEY

SECRET = "test-secret-0123456789abcdef0123456789"


@pytest.fixture
def client() -> TestClient:
    return TestClient(create_app(AuthSettings(OMNI_JWT_SECRET=SECRET)))  # type: ignore[call-arg]


@pytest.mark.parametrize(
    ("key", "entry"),
    [
        ({DASHBOARD_KEY_HEADER: DASHBOARD_KEY}, Entry.DASHBOARD),
        ({EDGE_KEY_HEADER: EDGE_KEY}, Entry.GATEWAY),
    ],
)
def test_valid_token_returns_user_header(
    client: TestClient, spans: InMemorySpanExporter, key: dict[str, str], entry: str
) -> None:
    token = issue_token("alice", SECRET)
    response = client.get("/verify", headers={"Authorization": f"Bearer {token}", **key})
    assert response.status_code == 200
    assert response.headers["X-User-Id"] == "alice"
    (span,) = spans.get_finished_spans()
    assert span.attributes is not None
    assert span.attributes[Attr.AUTH_RESULT] == "allowed"
    assert span.attributes[Attr.ENTRY] == entry
    assert token not in span.to_json() and next(iter(key.values())) not in span.to_json()


@pytest.mark.parametrize(
    "key",
    [
        {},
        {DASHBOARD_KEY_HEADER: "d" * 31},
        {EDGE_KEY_HEADER: DASHBOARD_KEY},
        {"X-Omni-Key": EDGE_KEY},
    ],
)
def test_a_handshake_from_none_of_our_entrances_is_forbidden(
    client: TestClient, key: dict[str, str]
) -> None:
    # A client at the gateway's own entry point, with a valid token but no entrance key (or
    # a wrong one): it could choose its own trace flags there, so it is not let in.
    token = issue_token("alice", SECRET)
    response = client.get("/verify", headers={"Authorization": f"Bearer {token}", **key})
    assert response.status_code == 403
    assert "X-User-Id" not in response.headers
    assert "public entry point" in response.json()["reason"]


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        ({}, "missing bearer token"),
        ({"Authorization": "Bearer nope"}, "token invalid"),
        ({"Authorization": f"Bearer {issue_token('a', SECRET, ttl_seconds=-5)}"}, "expired"),
        (
            {"Authorization": "Bearer " + jwt.encode({"sub": "a"}, None, algorithm="none")},
            "algorithm",
        ),
    ],
)
def test_refusals(client: TestClient, headers: dict[str, str], reason: str) -> None:
    response = client.get("/verify", headers=headers)
    assert response.status_code == 401
    assert "X-User-Id" not in response.headers
    assert reason in response.json()["reason"]
