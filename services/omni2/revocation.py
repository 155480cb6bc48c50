"""Revoked tokens on open connections: a connection whose user's token generation moved on
(logout, a password change, a block: services/common/tokens.py) is closed within one check
interval, with 4401 and a reason (4423 and the block's reason for a blocked user).

At connect the generation is checked with the user (services/omni2/connect.py); afterwards one
query per interval covers every open connection of this process, however many there are, so
the cost does not grow with connections. The poller runs only while a connection is watched.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import anyio
from opentelemetry import trace
from opentelemetry.trace import NonRecordingSpan, SpanContext, format_trace_id
from sqlalchemy.exc import SQLAlchemyError
from starlette.websockets import WebSocket

from otel.names import Attr, Flow, SpanName
from services.common.protocol import CloseCode
from services.common.refusal import Refusal, refuse
from services.db import Database
from services.db.repository import users as users_repo
from services.db.repository.flow import FlowRecord
from services.omni2.steps import traced_step
from services.omni2.store import Store

log = logging.getLogger(__name__)

# How long a connection closed for a revoked token has to end on its own (a client that does
# not answer the close), before its session is cancelled.
CLOSE_GRACE_S = 5.0

TOKEN_REVOKED = (
    "authentication failed: token revoked (the user logged out, changed password or was "
    "blocked); log in again"
)


def revoked_refusal(blocked_reason: str | None = None) -> Refusal:
    if blocked_reason is not None:
        return Refusal(CloseCode.USER_BLOCKED, f"user blocked: {blocked_reason}", "user_blocked")
    return Refusal(CloseCode.UNAUTHENTICATED, TOKEN_REVOKED, "token_revoked")


@dataclass(eq=False)
class Watched:
    """One open connection's token: `revoked` is set (with `refusal`) once it is no longer
    valid."""

    user_id: str
    generation: int
    revoked: asyncio.Event = field(default_factory=asyncio.Event)
    refusal: Refusal | None = None

    def revoke(self, refusal: Refusal) -> None:
        self.refusal = refusal
        self.revoked.set()


class TokenWatch:
    """The open connections of one OMNI2 process, checked against its database together."""

    def __init__(self, db: Database, interval_s: float) -> None:
        self._db = db
        self.interval_s = interval_s
        self._watched: set[Watched] = set()
        self._poller: asyncio.Task[None] | None = None

    @contextmanager
    def watch(self, user_id: str, generation: int) -> Iterator[Watched]:
        """Watch a connection's token while the block runs."""
        watched = Watched(user_id, generation)
        self._watched.add(watched)
        if self._poller is None or self._poller.done():
            self._poller = asyncio.create_task(self._poll())
        try:
            yield watched
        finally:
            self._watched.discard(watched)

    async def check(self) -> None:
        """One check of every watched token (what the poller does each interval)."""
        watched = list(self._watched)
        if not watched:
            return
        async with self._db.session() as session:
            states = await users_repo.token_states(session, sorted({w.user_id for w in watched}))
        for w in watched:
            generation, blocked = states.get(w.user_id, (None, None))
            if generation is None:
                w.revoke(Refusal(CloseCode.USER_UNKNOWN, "user removed", "unknown_user"))
            elif generation != w.generation:
                # A block alone is met at the next message (a `blocked` frame, then 4423):
                # this closes the connections of tokens the block (or a logout) revoked.
                w.revoke(revoked_refusal(blocked))

    async def _poll(self) -> None:
        while self._watched:
            await asyncio.sleep(self.interval_s)
            try:
                await self.check()
            except (SQLAlchemyError, OSError) as err:
                # Checked again next interval; a connection is not closed for our problem.
                log.warning("cannot check open connections' tokens: %s", err)


async def until_revoked(
    session: Awaitable[None],
    watched: Watched,
    close: Callable[[Refusal], Awaitable[None]],
    grace_s: float = CLOSE_GRACE_S,
) -> None:
    """Run a connection's session until it ends. If its token is revoked meanwhile, `close`
    it (4401 and the reason; the session sees the close and ends), and cancel the session
    if it has not ended `grace_s` later (a client that never answers the close). The
    session runs in this task, so a cancellation reaches it as it would without this."""
    with anyio.CancelScope() as scope:
        closer = asyncio.create_task(_close_when_revoked(watched, close, scope, grace_s))
        try:
            await session
        finally:
            with anyio.CancelScope(shield=True):
                closer.cancel()
                await asyncio.gather(closer, return_exceptions=True)


async def _close_when_revoked(
    watched: Watched,
    close: Callable[[Refusal], Awaitable[None]],
    scope: anyio.CancelScope,
    grace_s: float,
) -> None:
    await watched.revoked.wait()
    if watched.refusal is not None:
        await close(watched.refusal)
    await asyncio.sleep(grace_s)
    scope.cancel()


async def close_revoked(
    websocket: WebSocket,
    store: Store,
    session: SpanContext,
    attributes: dict[str, Any],
    refusal: Refusal,
) -> None:
    """Close an open connection whose token was revoked: a `chat.close` span in its session
    trace and a flow event (stored before the client sees the close), then the close."""
    flow: list[FlowRecord] = []
    user_id = str(attributes.get(Attr.USER_ID, ""))
    conversation_id = attributes.get(Attr.CONVERSATION_ID)
    detail = {"code": int(refusal.code), "reason": refusal.reason}
    with traced_step(
        flow,
        Flow.CLOSE,
        refusal.error_type,
        SpanName.CLOSE,
        context=trace.set_span_in_context(NonRecordingSpan(session)),
        attributes=attributes,
        detail=detail,
    ) as step:
        log.info("closing connection of user=%s: %s", user_id, refusal.reason)
        step.fail(refusal.error_type, refusal.reason, status="denied", **detail)
        step.stop_clock()
        trace_id = format_trace_id(step.span.get_span_context().trace_id)
        await store.record_flow(
            flow, trace_id, user_id, str(conversation_id) if conversation_id else None, attributes
        )
        await refuse(websocket, step.span, refusal)
