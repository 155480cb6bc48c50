from __future__ import annotations

import time

import jwt
import pytest

from services.common.tokens import (
    AUDIENCE,
    ISSUER,
    TokenError,
    bearer_token,
    issue_token,
    verify_token,
)

SECRET = "test-secret-0123456789abcdef0123456789"


def test_round_trip() -> None:
    identity = verify_token(issue_token("alice", SECRET), SECRET)
    assert identity.user_id == "alice"
    assert identity.expires_at > time.time()


def _claims(**over: object) -> dict[str, object]:
    # Made when the tests are collected, which can be minutes before they run: an hour of
    # validity keeps these tokens failing for their own reason, not for having expired.
    now = int(time.time())
    return {"sub": "alice", "iat": now, "exp": now + 3600, "iss": ISSUER, "aud": AUDIENCE} | over


@pytest.mark.parametrize(
    ("token", "reason"),
    [
        (issue_token("alice", SECRET, ttl_seconds=-10), "token expired"),
        (jwt.encode(_claims(), None, algorithm="none"), "token algorithm not allowed"),
        (issue_token("alice", "another-secret-0123456789abcdef0123"), "token signature invalid"),
        (jwt.encode(_claims(aud="elsewhere"), SECRET, algorithm="HS256"), "token invalid"),
        (jwt.encode(_claims(iss="someone"), SECRET, algorithm="HS256"), "token invalid"),
        (jwt.encode({"sub": "alice"}, SECRET, algorithm="HS256"), "token lacks claim"),
        (jwt.encode(_claims(sub=""), SECRET, algorithm="HS256"), "token subject invalid"),
        ("not-a-jwt", "token invalid"),
    ],
)
def test_refusals_have_reasons(token: str, reason: str) -> None:
    with pytest.raises(TokenError, match=reason):
        verify_token(token, SECRET)


def test_refusal_reason_never_contains_the_token() -> None:
    token = issue_token("alice", SECRET, ttl_seconds=-10)
    with pytest.raises(TokenError) as err:
        verify_token(token, SECRET)
    assert token not in str(err.value)


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("Bearer abc", "abc"),
        ("bearer  abc ", "abc"),
        ("Basic abc", None),
        ("Bearer", None),
        (None, None),
        ("", None),
    ],
)
def test_bearer_token(header: str | None, expected: str | None) -> None:
    assert bearer_token(header) == expected
