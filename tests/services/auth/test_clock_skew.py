"""The auth service's ForwardAuth with clocks apart: a token issued a few seconds in its future
(the dashboard's clock ahead) passes within the leeway (OMNI_TOKEN_LEEWAY_S, 30 s by
default) and is refused with a reason beyond it; the expiry has no leeway."""

from __future__ import annotations

import time

import jwt
import pytest
from fastapi.testclient import TestClient

from services.auth.app import create_app
from services.auth.settings import AuthSettings
from services.common.provenance import DASHBOARD_KEY_HEADER
from services.common.tokens import ALGORITHM, AUDIENCE, ISSUER
from tests.conftest import DASHBOARD_KEY

SECRET = "test-secret-0123456789abcdef0123456789"


def token_issued_at(iat: int, ttl_s: int = 3600) -> str:
    claims = {"sub": "alice", "iat": iat, "exp": iat + ttl_s, "iss": ISSUER, "aud": AUDIENCE}
    return jwt.encode(claims, SECRET, algorithm=ALGORITHM)


def verify(token: str, **settings: object) -> tuple[int, dict[str, str]]:
    app = create_app(AuthSettings(OMNI_JWT_SECRET=SECRET, **settings))  # type: ignore[arg-type]
    headers = {"Authorization": f"Bearer {token}", DASHBOARD_KEY_HEADER: DASHBOARD_KEY}
    response = TestClient(app).get("/verify", headers=headers)
    return response.status_code, (response.json() if response.content else {})


@pytest.mark.parametrize("ahead_s", [1, 5, 25])
def test_a_token_from_a_clock_a_little_ahead_is_accepted(ahead_s: int) -> None:
    assert verify(token_issued_at(int(time.time()) + ahead_s))[0] == 200


def test_a_token_from_a_clock_far_ahead_is_refused_with_a_reason() -> None:
    status, body = verify(token_issued_at(int(time.time()) + 120))
    assert status == 401
    assert body["reason"] == (
        "token issued in the future (more than 30 s ahead of this server's clock)"
    )


def test_the_leeway_is_a_setting() -> None:
    token = token_issued_at(int(time.time()) + 5)
    assert verify(token, OMNI_TOKEN_LEEWAY_S=0)[0] == 401
    assert verify(token, OMNI_TOKEN_LEEWAY_S=10)[0] == 200


def test_an_expired_token_gets_no_leeway() -> None:
    status, body = verify(token_issued_at(int(time.time()) - 3600, ttl_s=3599))
    assert (status, body.get("reason")) == (401, "token expired")
