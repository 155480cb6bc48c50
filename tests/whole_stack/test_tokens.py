"""Revoked tokens and clock skew on the real stack: a token stops working at logout
(`POST /api/logout`), at a password change (`omni-trace users passwd`) and at a block
(`omni-trace users block`), at connect (4401 with a reason) and on a connection already open
(closed with 4401 and a reason within OMNI2's check interval); a token issued a few seconds in
a verifier's future (its clock behind the dashboard's) is accepted within the leeway
(OMNI_TOKEN_LEEWAY_S, 30 s) and refused beyond it."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
import uuid

import httpx
import jwt
import pytest
from opentelemetry.sdk.trace import TracerProvider
from websockets.exceptions import ConnectionClosed

from omni_trace.stack import Stack
from omni_trace.stack.client import ChatRefused, login, open_chat
from omni_trace.traces import TraceFetcher, has_spans_named
from otel.names import Attr, Flow, Service, SpanName
from services.common.protocol import CloseCode
from services.common.tokens import ALGORITHM, AUDIENCE, ISSUER
from services.db.repository import flow as flow_repo
from tests.db import Admin

pytestmark = pytest.mark.stack

PASSWORD = "token-pass-123"
REVOKED = "token revoked"
# OMNI2's check interval (OMNI2_TOKEN_CHECK_INTERVAL_S, 5 s) and some room.
CLOSED_WITHIN_S = 15


def users_cli(stack: Stack, *args: str, password: str | None = None) -> None:
    """`omni-trace users ...` as an operator runs it (a password on stdin)."""
    argv = [sys.executable, "-m", "omni_trace.cli", "users"]
    argv += ["--database-url", stack.info.omni2_database_url, *args]
    argv += ["--password-stdin"] if password is not None else []
    done = subprocess.run(
        argv, input=f"{password or ''}\n", capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr


def user_with_password(stack: Stack) -> str:
    user = f"tokens-{uuid.uuid4().hex[:8]}"
    users_cli(stack, "add", user, password=PASSWORD)
    return user


async def refused(stack: Stack, token: str, provider: TracerProvider) -> ChatRefused:
    with pytest.raises(ChatRefused) as refusal:
        async with open_chat(stack.info.dashboard_ws_url, token, tracer_provider=provider):
            pass
    return refusal.value


def token_issued_at(user: str, secret: str, iat: int) -> str:
    """A token as a dashboard whose clock reads `iat` issues it."""
    claims = {"sub": user, "iat": iat, "exp": iat + 3600, "iss": ISSUER, "aud": AUDIENCE}
    return jwt.encode(claims, secret, algorithm=ALGORITHM)


def logout(stack: Stack, token: str | None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    return httpx.post(f"{stack.info.dashboard_url}/api/logout", headers=headers, timeout=30)


async def test_a_token_used_after_logout_is_refused_with_4401_and_a_reason(
    stack: Stack, omni_tracer_provider: TracerProvider
) -> None:
    user = user_with_password(stack)
    token = await login(stack.info.dashboard_url, user, PASSWORD)
    async with open_chat(
        stack.info.dashboard_ws_url, token, tracer_provider=omni_tracer_provider
    ) as chat:
        assert chat.welcome["user_id"] == user

    answer = logout(stack, token)
    assert answer.status_code == 200, answer.text
    again = logout(stack, token)  # a revoked token, replayed, logs nobody out
    assert again.status_code == 401 and "revoked already" in again.json()["detail"]
    refusal = await refused(stack, token, omni_tracer_provider)
    assert refusal.code == CloseCode.UNAUTHENTICATED
    assert REVOKED in refusal.reason, refusal.reason

    # A new login works (a token of the new generation), and logout needs a valid token.
    fresh = await login(stack.info.dashboard_url, user, PASSWORD)
    async with open_chat(stack.info.dashboard_ws_url, fresh, tracer_provider=omni_tracer_provider):
        pass
    for bad in (None, "not-a-jwt"):
        answer = logout(stack, bad)
        assert answer.status_code == 401 and "logout refused" in answer.json()["detail"]


@pytest.mark.slow  # waits on exports or timing: not in --quick
async def test_a_token_used_after_a_password_change_or_a_block_is_refused(
    stack: Stack, omni_tracer_provider: TracerProvider
) -> None:
    user = user_with_password(stack)
    token = await login(stack.info.dashboard_url, user, PASSWORD)
    users_cli(stack, "passwd", user, password="token-pass-456")
    refusal = await refused(stack, token, omni_tracer_provider)
    assert (refusal.code, REVOKED in refusal.reason) == (CloseCode.UNAUTHENTICATED, True), refusal

    # Blocked, then unblocked: the token from before the block stays refused.
    token = await login(stack.info.dashboard_url, user, "token-pass-456")
    users_cli(stack, "block", user, "--reason", "testing")
    users_cli(stack, "unblock", user)
    refusal = await refused(stack, token, omni_tracer_provider)
    assert (refusal.code, REVOKED in refusal.reason) == (CloseCode.UNAUTHENTICATED, True), refusal


@pytest.mark.slow  # waits on exports or timing: not in --quick
async def test_an_open_connection_is_closed_when_its_users_password_changes(
    stack: Stack, omni_tracer_provider: TracerProvider, omni_traces: TraceFetcher, admin: Admin
) -> None:
    user = user_with_password(stack)
    token = await login(stack.info.dashboard_url, user, PASSWORD)
    async with open_chat(
        stack.info.dashboard_ws_url, token, tracer_provider=omni_tracer_provider
    ) as chat:
        assert (await chat.send("hello")).ok
        users_cli(stack, "passwd", user, password="token-pass-789")
        started = time.monotonic()
        with pytest.raises(ConnectionClosed) as closed:
            while True:  # nothing is sent: the close comes by itself
                await asyncio.wait_for(chat.connection.recv(), timeout=CLOSED_WITHIN_S)
        waited = time.monotonic() - started
    rcvd = closed.value.rcvd
    assert rcvd is not None and rcvd.code == CloseCode.UNAUTHENTICATED, rcvd
    assert REVOKED in rcvd.reason, rcvd
    assert waited < CLOSED_WITHIN_S

    # The audit trail and the session trace say so.
    events = admin(lambda s: flow_repo.flow_events(s, conversation_id=chat.conversation_id))
    (revoked,) = [e for e in events if e.kind == Flow.CLOSE]
    assert revoked.name == "token_revoked"
    spans = omni_traces.wait(
        revoked.trace_id, has_spans_named((Service.OMNI2, SpanName.CLOSE)), what="chat.close"
    )
    close = spans.one(f"{Service.OMNI2}:{SpanName.CLOSE}")
    spans.expect(close.attributes.get(Attr.CLOSE_CODE) == 4401, "chat.close records the 4401")


@pytest.mark.parametrize(("ahead_s", "accepted"), [(5, True), (20, True), (120, False)])
async def test_a_token_from_a_clock_ahead_is_accepted_within_the_leeway(
    stack: Stack,
    omni_tracer_provider: TracerProvider,
    jwt_secret: str,
    ahead_s: int,
    accepted: bool,
) -> None:
    # The dashboard's clock ahead of the auth service's and OMNI2's: the token's `iat` is in
    # their future.
    user = user_with_password(stack)
    token = token_issued_at(user, jwt_secret, int(time.time()) + ahead_s)
    if accepted:
        async with open_chat(
            stack.info.dashboard_ws_url, token, tracer_provider=omni_tracer_provider
        ) as chat:
            assert chat.welcome["user_id"] == user
        return
    refusal = await refused(stack, token, omni_tracer_provider)
    assert refusal.code == CloseCode.UNAUTHENTICATED
    assert "token issued in the future" in refusal.reason, refusal.reason
