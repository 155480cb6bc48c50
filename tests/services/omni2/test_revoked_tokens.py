"""OMNI2 in process (SQLite and PostgreSQL) and revoked tokens: a token of an older generation
than its user's is refused at connect (4401, a reason), and an open connection whose user's
generation moves on is closed within the check interval (4401, a reason, a flow event), with
nothing sent by the client."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from fastapi.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from otel.names import Flow
from services.common.protocol import CloseCode
from services.common.tokens import issue_token
from services.db.repository import flow as flow_repo
from services.db.repository import users as users_repo
from services.omni2.revocation import TOKEN_REVOKED
from tests.db import Admin
from tests.services.omni2.conftest import SECRET


def headers(user: str, generation: int = 0) -> dict[str, str]:
    token = issue_token(user, SECRET, generation=generation)
    return {"x-user-id": user, "authorization": f"Bearer {token}"}


def test_a_token_of_an_older_generation_is_refused_at_connect(
    make_client: Callable[..., TestClient], admin: Admin
) -> None:
    client = make_client()
    admin(lambda s: users_repo.bump_token_generation(s, "alice"))
    with (
        client.websocket_connect("/ws/chat", headers=headers("alice", 0)) as ws,
        pytest.raises(WebSocketDisconnect) as closed,
    ):
        ws.receive_json()
    assert (closed.value.code, closed.value.reason) == (CloseCode.UNAUTHENTICATED, TOKEN_REVOKED)
    with client.websocket_connect("/ws/chat", headers=headers("alice", 1)) as ws:
        assert ws.receive_json()["type"] == "welcome"  # a token of the new generation


def test_an_open_connection_is_closed_when_its_token_is_revoked(
    make_client: Callable[..., TestClient], admin: Admin
) -> None:
    client = make_client(token_check_interval_s=0.2)
    with client.websocket_connect("/ws/chat", headers=headers("alice")) as ws:
        welcome = ws.receive_json()
        admin(lambda s: users_repo.set_password_hash(s, "alice", None))  # revokes alice's tokens
        with pytest.raises(WebSocketDisconnect) as closed:
            ws.receive_json()  # nothing sent: the close comes by itself
    assert (closed.value.code, closed.value.reason) == (CloseCode.UNAUTHENTICATED, TOKEN_REVOKED)
    events = admin(lambda s: flow_repo.flow_events(s, conversation_id=welcome["conversation_id"]))
    (close,) = [e for e in events if e.kind == Flow.CLOSE]
    assert (close.name, close.status) == ("token_revoked", "denied")
    assert close.detail == {"code": 4401, "reason": TOKEN_REVOKED, "error_type": "token_revoked"}
