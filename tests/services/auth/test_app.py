from __future__ import annotations

import jwt
import pytest
from fastapi.testclient import TestClient
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from otel.names import Attr
from services.auth.app import create_app
from services.auth.settings import AuthSettings
from services.common.tokens import issue_token

SECRET = "test-secret-0123456789abcdef0123456789"


@pytest.fixture
def client() -> TestClient:
    return TestClient(create_app(AuthSettings(OMNI_JWT_SECRET=SECRET)))  # type: ignore[call-arg]


def test_valid_token_returns_user_header(client: TestClient, spans: InMemorySpanExporter) -> None:
    token = issue_token("alice", SECRET)
    response = client.get("/verify", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200
    assert response.headers["X-User-Id"] == "alice"
    (span,) = spans.get_finished_spans()
    assert span.attributes is not None
    assert span.attributes[Attr.AUTH_RESULT] == "allowed"
    assert token not in span.to_json()


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
