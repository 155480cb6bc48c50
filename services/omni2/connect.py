"""A connection's way in at OMNI2, traced as `chat.connect` in the session trace.

How it came (`chat.entry`: a dashboard, Traefik's public entry point, or straight), and so
who decided that it is traced (the dashboard, or OMNI2 whatever the client's flags said);
gateway identity (the token Traefik verified, matching `x-user-id`), the user checks (known,
active, not blocked), a connection slot (at most N open per user), the conversation row, the
`welcome` frame; then the connection is a `ChatSession` until it ends. Every refusal is
accepted first and closed with a 4xxx code and reason, and leaves a flow event.
"""

from __future__ import annotations

import json
import logging
import uuid
from dataclasses import dataclass
from typing import Any

import anyio
from fastapi import WebSocket, WebSocketDisconnect
from opentelemetry import trace
from opentelemetry.trace import Span, format_trace_id
from pydantic import SecretStr
from sqlalchemy.exc import SQLAlchemyError
from starlette.datastructures import Headers
from starlette.types import Scope

from otel.names import Attr, Entry, Flow
from otel.websocket import current_connection
from services.common.churn import ConnectRefused
from services.common.protocol import CloseCode, welcome_frame
from services.common.provenance import entry_of
from services.common.refusal import Refusal, refuse
from services.common.tokens import Identity
from services.db.repository.flow import FlowRecord
from services.db.repository.users import UserContext
from services.omni2.chat import ChatServices, ChatSession, sample_keep
from services.omni2.checks import CheckRun, Slot, check_connection, check_connections
from services.omni2.gateway import gateway_identity
from services.omni2.revocation import close_revoked, revoked_refusal, until_revoked

log = logging.getLogger(__name__)


def database_unavailable() -> Refusal:
    return Refusal(
        CloseCode.INTERNAL_ERROR,
        "service unavailable: OMNI2 cannot reach its database",
        "database_unavailable",
    )


@dataclass(frozen=True)
class ConnectAttempt:
    """How a connection came (`chat.entry`) and whether the connect rate refuses it, decided
    once, before tracing decides whether and how to trace the connection."""

    entry: str
    over_rate: ConnectRefused | None

    @property
    def traced(self) -> bool:
        return self.over_rate is None or self.over_rate.traced

    def tracing(self) -> dict[str, Any]:
        """Who decided that this connection is traced (otel.websocket's options): through a
        dashboard, the dashboard (Traefik's ReverseProxy span, whose sampled flag is its
        decision: only a dashboard holds its key); through Traefik's public entry point (it
        stripped the client's context), OMNI2, under that span; straight from a client,
        OMNI2, continuing and recording the client's context whatever flags it sent."""
        if self.entry == Entry.DASHBOARD:
            return {"first_hop": False}
        return {"first_hop": True, "gateway": "parent" if self.entry == Entry.GATEWAY else "none"}


_ATTEMPT = "omni2.connect_attempt"  # where the scope keeps it


def connect_attempt(scope: Scope, services: ChatServices, jwt_secret: SecretStr) -> ConnectAttempt:
    """The connection's attempt; a dashboard held its clients to the connect rate, the rest
    meet it here (counted once)."""
    attempt = scope.get(_ATTEMPT)
    if isinstance(attempt, ConnectAttempt):
        return attempt
    headers = Headers(scope=scope)
    entry = entry_of(headers, services.settings)
    over_rate = None
    if entry != Entry.DASHBOARD:
        over_rate = services.churn.check_connect(_connect_key(scope, headers, services, jwt_secret))
    attempt = scope[_ATTEMPT] = ConnectAttempt(entry, over_rate)
    return attempt


def _connect_key(
    scope: Scope, headers: Headers, services: ChatServices, jwt_secret: SecretStr
) -> str:
    """The token's user (its verified identity), or the client's address when there is none
    (a refusal follows then anyway)."""
    try:
        leeway = services.settings.token_leeway_s
        return gateway_identity(headers, jwt_secret.get_secret_value(), leeway).user_id
    except Refusal:
        client = scope.get("client")
        return f"address {client[0] if client else ''}"


def chat_tracing(services: ChatServices, jwt_secret: SecretStr) -> dict[str, Any]:
    """How OMNI2 traces its chat WebSocket (otel.websocket's backend role, with these)."""
    settings = services.settings
    return {
        "message_span": settings.turn_span_name,
        # A message becomes a turn when the worker takes it up, after the checks that may
        # answer it without a trace of its own (a held user, the pending cap past the
        # refusal budget).
        "message_at": "app",
        "sample_ratio": settings.trace_sample_ratio,
        "trace_ids": services.trace_ids,
        # OMNI2 names the trace of every answer; its frames that name none (a frame over the
        # rate) end no message.
        "end_unnamed": False,
        # Its closes (token expired or revoked, a flood, a block) are spans and flow events
        # of its own.
        "record_closes": False,
        "traced": lambda scope: connect_attempt(scope, services, jwt_secret).traced,
        "per_connection": lambda scope: connect_attempt(scope, services, jwt_secret).tracing(),
    }


@dataclass
class ChatConnect:
    """Serves one WebSocket on `/ws/chat`: admits it, then runs its ChatSession. The
    connection's `chat.connect` is otel.websocket's session span (`chat_tracing`)."""

    websocket: WebSocket
    services: ChatServices
    jwt_secret: SecretStr

    async def serve(self) -> None:
        attempt = connect_attempt(self.websocket.scope, self.services, self.jwt_secret)
        connection = current_connection()
        span = connection.session if connection is not None else trace.INVALID_SPAN
        over_rate = attempt.over_rate
        if over_rate is not None and not over_rate.traced:
            await refuse(self.websocket, span, over_rate.refusal)
            return
        span.set_attribute(Attr.ENTRY, attempt.entry)
        # Accept first: a close before accept reaches the client as a bare 403.
        await self.websocket.accept()
        if over_rate is not None:
            log.warning("refused connection: %s", over_rate.refusal.reason)
            await refuse(self.websocket, span, over_rate.refusal)
            return
        admitted = await self._admit(span)
        if admitted is None:
            return
        identity, user, conversation_id, slot = admitted
        try:
            session = ChatSession(
                websocket=self.websocket,
                services=self.services,
                user=user,
                conversation_id=conversation_id,
                gateway=connection.gateway if connection is not None else None,
                session=span.get_span_context(),
                expires_at=identity.expires_at,
                entry=attempt.entry,
            )
            await self._run(session, identity.generation)
        finally:
            # Given back even when the connection's task is being cancelled (a client that
            # vanished): a shared slot's release is a database write.
            with anyio.CancelScope(shield=True):
                await slot.release()

    async def _run(self, session: ChatSession, generation: int) -> None:
        """Run the session; a token revoked meanwhile (logout, password change, block)
        closes it with 4401 within one check interval (services/omni2/revocation.py)."""
        attributes = session.span_attributes()

        async def close(refusal: Refusal) -> None:
            await close_revoked(
                self.websocket, self.services.store, session.session, attributes, refusal
            )

        with self.services.token_watch.watch(session.user_id, generation) as watched:
            await until_revoked(session.run(), watched, close)

    async def _admit(self, span: Span) -> tuple[Identity, UserContext, str, Slot] | None:
        """Identity, user and conversation of an admitted connection; None once refused."""
        session_trace = format_trace_id(span.get_span_context().trace_id)
        try:
            identity = gateway_identity(
                self.websocket.headers,
                self.jwt_secret.get_secret_value(),
                self.services.settings.token_leeway_s,
            )
        except Refusal as refusal:
            log.warning("refused connection: %s", refusal.reason)
            await refuse(self.websocket, span, refusal)
            return None
        user_id = identity.user_id
        span.set_attribute(Attr.USER_ID, user_id)
        checks = CheckRun({Attr.USER_ID: user_id})
        try:
            with checks.traced():
                user, slot = await self._run_checks(checks, identity)
        except Refusal as refusal:
            log.warning("refused user %s: %s", user_id, refusal.reason)
            checks.flow.append(
                FlowRecord(Flow.CONNECT, "refused", "denied", detail={"reason": refusal.reason})
            )
            await self.services.store.record_flow(
                checks.flow, session_trace, user_id, None, {Attr.USER_ID: user_id}
            )
            await refuse(self.websocket, span, refusal)
            return None
        # From here on the connection holds a slot: give it back unless it reaches its session.
        try:
            conversation_id = await self._open(span, checks, user, session_trace)
        except BaseException:
            with anyio.CancelScope(shield=True):
                await slot.release()
            raise
        if conversation_id is None:
            await slot.release()
            return None
        return identity, user, conversation_id, slot

    async def _run_checks(self, checks: CheckRun, identity: Identity) -> tuple[UserContext, Slot]:
        """The user and a connection slot, or Refusal. The token's generation is compared
        between the two checks: a revoked token is refused before it takes a slot."""
        user = await self._check_user(checks, identity.user_id)
        if identity.generation != user.token_generation:
            raise revoked_refusal()  # logged out, password changed or blocked since
        try:
            return user, await check_connections(
                checks,
                user,
                self.services.connections,
                self.services.settings.max_connections_per_user,
            )
        except (SQLAlchemyError, OSError) as err:  # shared slots live in the database
            log.error("cannot count %s's connections, database unavailable: %s", user.user_id, err)
            raise database_unavailable() from err

    async def _check_user(self, checks: CheckRun, user_id: str) -> UserContext:
        """The user's context, or Refusal (unknown, inactive, blocked, no database)."""
        try:
            async with self.services.store.db.session() as session:
                return await check_connection(session, checks, user_id)
        except (SQLAlchemyError, OSError) as err:
            log.error("cannot check user %s, database unavailable: %s", user_id, err)
            raise database_unavailable() from err

    async def _open(
        self, span: Span, checks: CheckRun, user: UserContext, session_trace: str
    ) -> str | None:
        """Store the conversation and welcome the client; None if that failed."""
        conversation_id = str(uuid.uuid4())
        attributes = {Attr.USER_ID: user.user_id, Attr.CONVERSATION_ID: conversation_id}
        span.set_attributes({**attributes, Attr.USER_ROLE: user.role})
        span.set_attributes(sample_keep(self.services.settings, conversation_id))
        checks.flow.append(FlowRecord(Flow.CONNECT, "accepted", "ok", detail={"role": user.role}))
        try:
            await self.services.store.open_conversation(
                conversation_id, user.user_id, session_trace, checks.flow, attributes
            )
        except (SQLAlchemyError, OSError) as err:
            log.error("cannot store conversation %s: %s", conversation_id, err)
            await refuse(self.websocket, span, database_unavailable())
            return None
        try:
            await self.websocket.send_text(json.dumps(welcome_frame(conversation_id, user.user_id)))
        except (OSError, RuntimeError, WebSocketDisconnect):
            span.set_attribute(Attr.ERROR_TYPE, "client_gone")
            return None
        log.info(
            "connection user=%s role=%s conversation=%s trace=%s",
            user.user_id,
            user.role,
            conversation_id,
            session_trace,
        )
        return conversation_id
