"""Identity comes only from the gateway; refusals have reasons; the JWT never leaks."""

from __future__ import annotations

import json
import time
from pathlib import Path

import jwt
import pytest
from opentelemetry.sdk.trace import TracerProvider
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from omni_trace.stack import Stack
from omni_trace.stack.client import ChatRefused, login, open_chat
from omni_trace.stack.demo import message_trace_complete
from omni_trace.stack.plugin import ChatFactory
from omni_trace.traces import JaegerClient, TraceFetcher, TraceSpan, has_services
from otel.names import Attr, Service, SpanName
from services.common.protocol import CloseCode
from services.common.tokens import AUDIENCE, ISSUER, issue_token
from tests.whole_stack.conftest import all_exported

pytestmark = pytest.mark.stack

SPOOFS = {"X-User-Id": "bob", "X_User_Id": "bob", "x-user_id": "bob", "X-USER-ID": "bob"}


async def _welcome(url: str, headers: dict[str, str]) -> dict[str, object]:
    async with connect(url, additional_headers=list(headers.items())) as ws:
        return dict(json.loads(await ws.recv()))


async def test_client_sent_identity_headers_are_replaced_by_the_gateway(
    stack: Stack, omni_chat: ChatFactory
) -> None:
    token = await login(stack.info.dashboard_url, "alice", "alice-demo")
    # Straight at Traefik (its public entry point), as a client that can set headers would.
    welcome = await _welcome(
        stack.info.traefik_public_ws_url, {"Authorization": f"Bearer {token}", **SPOOFS}
    )
    assert welcome["type"] == "welcome"
    assert welcome["user_id"] == "alice"
    # Through the dashboard, with the same headers on the browser side.
    async with omni_chat(token=token, headers=SPOOFS) as chat:
        assert chat.welcome["user_id"] == "alice"


async def _close_of(url: str, headers: dict[str, str]) -> tuple[int | None, str]:
    async with connect(url, additional_headers=list(headers.items())) as ws:
        with pytest.raises(ConnectionClosed) as closed:
            await ws.recv()
    rcvd = closed.value.rcvd
    return (rcvd.code, rcvd.reason) if rcvd else (None, "")


async def test_direct_connection_to_omni2_is_refused(stack: Stack, jwt_secret: str) -> None:
    code, reason = await _close_of(stack.info.omni2_ws_url, {"x-user-id": "alice"})
    assert code == CloseCode.FORBIDDEN
    assert "gateway" in reason
    bobs = issue_token("bob", jwt_secret)
    code, reason = await _close_of(
        stack.info.omni2_ws_url, {"x-user-id": "alice", "Authorization": f"Bearer {bobs}"}
    )
    assert code == CloseCode.FORBIDDEN
    assert "does not match" in reason


def _claims(**over: object) -> dict[str, object]:
    now = int(time.time())
    return {"sub": "alice", "iat": now, "exp": now + 60, "iss": ISSUER, "aud": AUDIENCE} | over


def _bad_tokens(secret: str) -> dict[str, tuple[str | None, str]]:
    return {
        "missing": (None, "missing token"),
        "garbage": ("not-a-jwt", "authentication failed: token invalid"),
        "expired": (issue_token("alice", secret, ttl_seconds=-30), "token expired"),
        "alg-none": (jwt.encode(_claims(), None, algorithm="none"), "algorithm not allowed"),
        "wrong-key": (issue_token("alice", "x" * 40), "token signature invalid"),
    }


@pytest.mark.parametrize("kind", ["missing", "garbage", "expired", "alg-none", "wrong-key"])
async def test_bad_token_gets_a_reason_and_never_reaches_omni2(
    kind: str,
    stack: Stack,
    jwt_secret: str,
    omni_tracer_provider: TracerProvider,
    omni_traces: TraceFetcher,
) -> None:
    token, reason = _bad_tokens(jwt_secret)[kind]
    with pytest.raises(ChatRefused) as refused:
        async with open_chat(
            stack.info.dashboard_ws_url, token, tracer_provider=omni_tracer_provider
        ):
            pass
    assert refused.value.code == CloseCode.UNAUTHENTICATED
    assert reason in refused.value.reason
    session_id = refused.value.session_trace_id
    layers = (Service.CHAT_CLIENT, Service.DASHBOARD) + (
        () if kind == "missing" else (Service.TRAEFIK, Service.AUTH)
    )

    def refused_at_gateway(spans: list[TraceSpan]) -> bool:
        return has_services(*layers)(spans) and (
            kind == "missing" or any(s.name == "GET" for s in spans)
        )

    spans = omni_traces.wait(session_id, refused_at_gateway, what=f"layers {layers}")
    spans.expect(
        not [s for s in spans if s.service == Service.OMNI2 or s.name == "ReverseProxy"],
        "a refused token never reaches OMNI2",
    )
    dashboard = spans.one(f"{Service.DASHBOARD}:{SpanName.CONNECT}")
    spans.expect(
        dashboard.status == "ERROR"
        and dashboard.attributes.get(Attr.CLOSE_CODE) == CloseCode.UNAUTHENTICATED,
        "the dashboard's connect span records the refusal",
    )


async def test_jwt_never_reaches_spans_logs_or_access_log(
    stack: Stack, omni_chat: ChatFactory, omni_jaeger: JaegerClient, omni_traces: TraceFetcher
) -> None:
    token = await login(stack.info.dashboard_url, "alice", "alice-demo")
    async with omni_chat(token=token) as chat:
        reply = await chat.send(f"my token is in the URL only, not here {time.time()}")
    await _welcome(stack.info.traefik_public_ws_url, {"Authorization": f"Bearer {token}"})
    with pytest.raises(ChatRefused):  # and a refusal, whose reason must not echo the token
        async with open_chat(stack.info.dashboard_ws_url, token + "x"):
            pass
    omni_traces.wait(reply.trace_id, message_trace_complete, what="the message chain")
    omni_traces.wait(
        chat.session_trace_id, has_services(Service.TRAEFIK, Service.OMNI2), what="session"
    )

    exported = all_exported(omni_jaeger)
    for service in (
        Service.CHAT_CLIENT,
        Service.DASHBOARD,
        Service.TRAEFIK,
        Service.AUTH,
        Service.OMNI2,
    ):
        assert exported.get(service), f"no exported traces of {service}: the scan would be empty"
        for name, secret in _secrets(stack, token).items():
            leaking = [doc for doc in exported[service] if secret in doc]
            assert not leaking, f"{service} exported the {name} in {len(leaking)} trace(s)"

    logs = sorted(Path(stack.info.logs_dir).glob("*.log"))
    assert {p.name for p in logs} >= {
        "dashboard.log",
        "auth.log",
        "omni2.log",
        "traefik.log",
        "traefik-access.log",
    }
    assert Path(stack.info.traefik_access_log).read_text().strip(), "access log is empty"
    for path in logs:
        text = path.read_text(errors="replace")
        for name, secret in _secrets(stack, token).items():
            assert secret not in text, f"the {name} was written to {path.name}"


def _secrets(stack: Stack, token: str) -> dict[str, str]:
    """What must never reach a span or a log: the user's token and our entrances' keys."""
    return {"JWT": token, "dashboard key": stack.dashboard_key, "edge key": stack.edge_key}
