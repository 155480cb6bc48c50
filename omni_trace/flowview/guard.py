"""Who may read the flow view, and how much at once.

- The Host allowlist: a web page on another site can point its own name at 127.0.0.1 (DNS
  rebinding) and read a developer's flow view through their browser, same-origin; that
  request still names the attacker's host, so any name not listed gets 421.
- The access token: off loopback anyone who reaches the port could read every trace; the
  token is asked as a bearer token or as the password of basic auth (a browser's login box).
- Security headers on every answer: the page runs only its own script, connects only to
  itself, and may not be framed.
- The audit limiter: every audit searches Jaeger at every layer; beyond a few at once the
  next is refused (503, Retry-After) rather than queued, so Jaeger keeps answering the stack.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

T = TypeVar("T")

# /healthz says only "ok" and reads nothing: probes (a kubelet's, by pod address) need no
# name or token.
OPEN_PATHS = frozenset({"/healthz"})
# The names a browser on this machine reaches a loopback-bound flow view by.
REALM = 'Basic realm="omni-trace flow view", charset="UTF-8"'
RETRY_AFTER_S = 2
# Inline style attributes: the page positions waterfall bars with them (no script, no URL).
FLOW_VIEW_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; style-src-attr 'unsafe-inline'; "
    "img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'"
)


def security_headers(csp: str) -> list[tuple[bytes, bytes]]:
    return [
        (b"content-security-policy", csp.encode()),
        (b"x-frame-options", b"DENY"),
        (b"x-content-type-options", b"nosniff"),
        (b"referrer-policy", b"no-referrer"),
    ]


def host_name(value: str) -> str:
    """A Host header's (or an allowlist entry's) name: lower case, no port, no brackets, no
    trailing dot (`localhost.` is `localhost`)."""
    value = value.strip().lower()
    if value.startswith("["):
        value = value[1:].split("]", 1)[0]
    elif value.count(":") == 1:
        value = value.split(":", 1)[0]
    return value.rstrip(".")


def presented_token(authorization: str) -> str | None:
    """The token of `Bearer <token>`, or the password of `Basic base64(user:password)`."""
    scheme, _, credentials = authorization.strip().partition(" ")
    credentials = credentials.strip()
    if scheme.lower() == "bearer":
        return credentials or None
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(credentials, validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None
    _, colon, password = decoded.partition(":")
    return password if colon else None


class Guard:
    """ASGI middleware: Host allowlist (421), access token (401), security headers."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        allowed_hosts: Iterable[str],
        access_token: str | None = None,
        csp: str = FLOW_VIEW_CSP,
    ) -> None:
        self.app = app
        self.allowed = frozenset(host_name(h) for h in allowed_hosts)
        self.token = access_token.encode() if access_token else None
        self.headers = security_headers(csp)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *self.headers]
            await send(message)

        refusal = None if scope["path"] in OPEN_PATHS else self._refusal(Headers(scope=scope))
        if refusal is None:
            await self.app(scope, receive, send_with_headers)
            return
        status, reason, extra = refusal
        body = json.dumps({"error": reason}).encode()
        await send_with_headers(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    *extra,
                ],
            }
        )
        await send_with_headers({"type": "http.response.body", "body": body})

    def _refusal(self, headers: Headers) -> tuple[int, str, list[tuple[bytes, bytes]]] | None:
        host = host_name(headers.get("host", ""))
        if host not in self.allowed:
            shown = host[:64] or "(none)"
            return (
                421,
                f"this flow view does not answer to the host name {shown!r} "
                "(FLOWVIEW_ALLOWED_HOSTS lists the names it does)",
                [],
            )
        if self.token is None:
            return None
        given = presented_token(headers.get("authorization", ""))
        # compare_digest: the time taken says nothing about how much of a guess was right.
        if given is not None and hmac.compare_digest(given.encode(), self.token):
            return None
        return (
            401,
            "the flow view asks for its access token (FLOWVIEW_ACCESS_TOKEN): "
            "Authorization: Bearer <token>, or any user name with the token as password",
            [(b"www-authenticate", REALM.encode())],
        )


class Busy(Exception):
    """Every audit slot is taken: answered 503 with Retry-After."""


class AuditLimiter:
    """At most `slots` requests read Jaeger at once; one more is refused at once (queued
    requests would only pile up behind a slow Jaeger, each holding a thread)."""

    def __init__(self, slots: int) -> None:
        self._slots = threading.BoundedSemaphore(slots)

    def run(self, work: Callable[..., T], *args: Any) -> T:
        """`work(*args)` in a slot, called in the worker thread: the slot is held until the
        work ends, even when the client that asked has gone."""
        with self.slot():
            return work(*args)

    @contextmanager
    def slot(self) -> Iterator[None]:
        if not self._slots.acquire(blocking=False):
            raise Busy(
                f"the flow view is running as many audits as it may at once; retry in "
                f"{RETRY_AFTER_S} s"
            )
        try:
            yield
        finally:
            self._slots.release()
