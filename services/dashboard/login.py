"""`POST /api/login`: a user name and password from the shared database in exchange for a JWT.

The users and their Argon2id password hashes live in the database the dashboard shares with
OMNI2 (services/db; one store: OMNI2 creates the tables and seeds the demo users, `omni-trace
users` adds users and sets passwords). The dashboard never creates a table: it reads users,
and with DASHBOARD_LOGIN_LIMITS=database writes the failed-login rows. Every attempt costs one hash
verification, whether the name is known or not, so the answer time does not reveal which
names exist; failed attempts are limited per user name at a client address and per client
address, and slowed down per user name (services/dashboard/login_limits.py: in this process,
or in that database for dashboard replicas). The client address is the peer's, or the last
X-Forwarded-For entry of a request from a trusted proxy (DASHBOARD_TRUSTED_PROXIES). Only a
JSON body is taken (415 otherwise): a cross-site HTML form cannot send one, so another site
cannot drive failed logins through a visitor's browser. The password never reaches a span or
a log line, and the server span carries `user.id` only once the password matched.

`POST /api/logout` with the bearer token revokes every token of its user issued until then:
the user's token generation in the shared database goes up, and OMNI2 refuses older tokens at
connect and closes their open connections (4401).
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Collection
from contextlib import asynccontextmanager
from typing import Any

from fastapi import APIRouter, FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse
from opentelemetry import trace
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy.exc import ArgumentError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession

from otel.names import Attr
from services.common.passwords import MAX_PASSWORD_CHARS, dummy_hash, verify_password
from services.common.tokens import TokenError, issue_token, verify_bearer
from services.dashboard.login_limits import (
    Attempt,
    DatabaseLoginLimits,
    LimitRefusal,
    LoginLimiter,
    LoginLimits,
    SlowDown,
)
from services.dashboard.settings import DashboardSettings
from services.db import Database
from services.db.repository import users as users_repo

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 8 * 1024
MAX_USERNAME_CHARS = 128  # users.id
MAX_ADDRESS_CHARS = 128  # an IPv6 address with a zone fits many times over
INVALID = "invalid username or password"

Verifier = Callable[[str, str], bool]
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class LoginRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    username: str = Field(min_length=1, max_length=MAX_USERNAME_CHARS)
    password: str = Field(min_length=1, max_length=MAX_PASSWORD_CHARS)


class LoginResponse(BaseModel):
    token: str
    token_type: str = "bearer"
    expires_in: int
    user_id: str


class StoreUnavailable(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def dashboard_database(url: str, timeout_s: float) -> Database:
    """The shared database as the dashboard opens it, once per process (the login and the
    refusal log use it): it never creates a table or a file, and waits `timeout_s` at most."""
    try:
        return Database(url, timeout_s=timeout_s, makes_files=False)
    except (ArgumentError, ImportError, ValueError) as err:
        # The message of a bad URL repeats the URL, password included: name the setting.
        raise ValueError(
            f"DASHBOARD_DATABASE_URL is not a usable SQLAlchemy async URL ({type(err).__name__})"
        ) from None


class UserStore:
    """The shared database as the login uses it: password hashes, and the transactions of the
    shared failed-login limits. Given a URL, it opens (and closes) a database of its own."""

    def __init__(self, database: str | Database, timeout_s: float) -> None:
        self._owned = not isinstance(database, Database)
        self._db = (
            database if isinstance(database, Database) else dashboard_database(database, timeout_s)
        )
        self._timeout_s = timeout_s

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        """A transaction on the shared database, committed when the block ends without an
        exception; every database problem (the block's too) comes out as StoreUnavailable."""
        try:
            async with asyncio.timeout(self._timeout_s), self._db.session() as session:
                yield session
        except FileNotFoundError:
            # The SQLite file is missing (the dashboard's Database never makes it).
            raise StoreUnavailable(
                "the user database does not exist yet (OMNI2 creates it)"
            ) from None
        except TimeoutError:
            raise StoreUnavailable(
                f"the user database did not answer within {self._timeout_s:g} s"
            ) from None
        except (SQLAlchemyError, OSError) as err:
            raise StoreUnavailable(_store_problem(err)) from None

    async def password_hash(self, user_id: str) -> str | None:
        """The user's hash; None for an unknown user or one without a password."""
        return (await self.login_record(user_id))[0]

    async def login_record(self, user_id: str) -> tuple[str | None, int]:
        """The user's hash (None: unknown user, or no password) and token generation."""
        async with self.transaction() as session:
            return await users_repo.login_record(session, user_id)

    async def revoke_tokens(self, user_id: str, generation: int) -> int | None:
        """Raise the user's token generation from `generation` (every token issued so far is
        refused then); None when it is not the user's generation any more."""
        async with self.transaction() as session:
            return await users_repo.bump_token_generation(session, user_id, only_from=generation)

    async def close(self) -> None:
        if self._owned:
            await self._db.dispose()


def _store_problem(err: BaseException) -> str:
    text = str(getattr(err, "orig", None) or err)
    if "login_failures" in text and ("no such table" in text or "does not exist" in text):
        return "the login_failures table is missing (OMNI2 of this version creates it at start)"
    if "no such table" in text or 'relation "users" does not exist' in text:
        return "the users table is missing (OMNI2 creates it when it starts)"
    if "password_hash" in text or "token_generation" in text:
        return "the users table lacks a column of this version (start OMNI2 once to upgrade it)"
    return f"cannot read the user database ({type(err).__name__})"


def client_address(request: Request, trusted_proxies: Collection[str]) -> str:
    """The address the per-address limit counts. A request from a trusted proxy (Traefik's
    front entry point, in front of dashboard replicas) carries the address Traefik was reached
    from as the last X-Forwarded-For entry. Earlier entries, and the whole header of a request
    from anywhere else (a client that reached a replica's own port), are whatever the client
    wrote, and are never used."""
    address = request.client.host if request.client else ""
    if is_trusted(address, tuple(trusted_proxies)):
        forwarded = ",".join(request.headers.getlist("x-forwarded-for"))
        address = forwarded.rsplit(",", 1)[-1].strip() or address
    return address[:MAX_ADDRESS_CHARS]


@functools.lru_cache(maxsize=16)
def trusted_networks(entries: tuple[str, ...]) -> tuple[IPNetwork, ...]:
    """DASHBOARD_TRUSTED_PROXIES as networks: an address is a network of one."""
    return tuple(ipaddress.ip_network(entry, strict=False) for entry in entries)


def is_trusted(peer: str, trusted_proxies: tuple[str, ...]) -> bool:
    try:
        address = ipaddress.ip_address(peer)
    except ValueError:
        return False  # not an IP address (a test client, a Unix socket): nothing to trust
    return any(address in network for network in trusted_networks(trusted_proxies))


def login_limiter(settings: DashboardSettings, users: UserStore) -> LoginLimiter:
    """Failed logins counted in this process, or in the shared database for replicas."""
    per_user, per_address = (
        settings.login_max_failures_per_user,
        settings.login_max_failures_per_address,
    )
    window_s, max_keys = settings.login_failure_window_s, settings.login_limit_max_keys
    slow_down = SlowDown(
        after=per_user,
        base_s=settings.login_slow_down_s,
        max_s=settings.login_slow_down_max_s,
        max_wait_s=settings.login_slow_down_max_wait_s,
    )
    if settings.login_limits == "database":
        return DatabaseLoginLimits(
            users.transaction,
            per_user=per_user,
            per_address=per_address,
            window_s=window_s,
            max_keys=max_keys,
            slow_down=slow_down,
        )
    return LoginLimits(
        per_user=per_user,
        per_address=per_address,
        window_s=window_s,
        max_keys=max_keys,
        slow_down=slow_down,
    )


def require_json(request: Request) -> None:
    """415 unless the body is declared JSON: an HTML form (urlencoded, multipart, text/plain)
    on another site can post to us without a CORS preflight, a JSON body cannot."""
    media_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media_type != "application/json":
        raise HTTPException(
            415,
            detail="the login takes a JSON body only (Content-Type: application/json)",
        )


async def _login_request(request: Request) -> LoginRequest:
    """The body, bounded and parsed defensively (a bad one is answered, never echoed)."""
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            raise HTTPException(413, detail=f"login body over {MAX_BODY_BYTES} bytes")
    try:
        return LoginRequest.model_validate_json(bytes(body))
    except (ValidationError, ValueError, RecursionError):
        # pydantic's own message would repeat the input, password included.
        raise HTTPException(
            422,
            detail=f'expected JSON {{"username": 1-{MAX_USERNAME_CHARS} characters, '
            f'"password": 1-{MAX_PASSWORD_CHARS} characters}}',
        ) from None


def login_router(
    settings: DashboardSettings,
    *,
    store: UserStore | None = None,
    verify: Verifier = verify_password,
) -> APIRouter:
    users = store or UserStore(
        settings.database_url.get_secret_value(), settings.database_timeout_s
    )
    limits = login_limiter(settings, users)
    # Each verification holds 64 MiB for a moment: a flood of logins must not hold N of them.
    verifications = asyncio.Semaphore(settings.login_max_concurrent_verifications)
    secret = settings.jwt_secret.get_secret_value()
    no_password = dummy_hash()  # made now, so the first unknown name is not slower

    async def password_matches(stored: str | None, password: str) -> bool:
        # Exactly one verification on every path: unknown names and users without a password
        # are checked against the dummy hash, so they cost what a known name costs.
        async with verifications:
            matches = await asyncio.to_thread(verify, stored or no_password, password)
        return matches and stored is not None

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        await users.close()

    router = APIRouter(lifespan=lifespan)

    @router.post(
        "/api/login",
        response_model=LoginResponse,
        responses={
            401: {"description": INVALID},
            429: {"description": "too many failed logins (Retry-After says when to retry)"},
            503: {"description": "the user database is unavailable"},
        },
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": LoginRequest.model_json_schema()}},
            }
        },
    )
    async def login(request: Request) -> Any:
        require_json(request)
        body = await _login_request(request)
        address = client_address(request, settings.trusted_proxies)
        try:
            attempt = await limits.begin(body.username, address)
        except StoreUnavailable as err:
            # The limits live in the database too (DASHBOARD_LOGIN_LIMITS=database).
            log.error("login unavailable, failed logins cannot be counted: %s", err.reason)
            raise HTTPException(503, detail=f"login unavailable: {err.reason}") from None
        if isinstance(attempt, LimitRefusal):
            log.warning("login refused for address %s: %s", address, attempt.reason)
            return JSONResponse(
                {"detail": attempt.reason, "retry_after_s": attempt.retry_after_s},
                status_code=429,
                headers={"Retry-After": str(attempt.retry_after_s)},
            )
        if attempt.wait_s > 0:
            # The name has failed often lately (from any address): its turn comes later.
            await asyncio.sleep(attempt.wait_s)
        try:
            stored, generation = await users.login_record(body.username)
        except StoreUnavailable as err:
            await _settle(limits.cancel, attempt)
            log.error("login unavailable: %s", err.reason)
            raise HTTPException(503, detail=f"login unavailable: {err.reason}") from None
        if not await password_matches(stored, body.password):
            # Counted as a failure already (limits.begin). The name is not logged: a
            # password typed into the name field would land here.
            log.info("failed login from %s", address)
            raise HTTPException(401, detail=INVALID)
        # The password matched: the login succeeds even if the count cannot be reset now.
        await _settle(limits.succeeded, attempt)
        trace.get_current_span().set_attribute(Attr.USER_ID, body.username)
        return LoginResponse(
            token=issue_token(body.username, secret, settings.token_ttl_s, generation=generation),
            expires_in=settings.token_ttl_s,
            user_id=body.username,
        )

    @router.post(
        "/api/logout",
        responses={
            401: {"description": "no valid bearer token (the reason says why)"},
            503: {"description": "the user database is unavailable"},
        },
    )
    async def logout(request: Request) -> Any:
        """Revoke every token of the bearer token's user (this one included)."""
        authorization = request.headers.get("authorization")
        try:
            identity = verify_bearer(authorization, secret, settings.token_leeway_s)
        except TokenError as err:
            return JSONResponse(
                {"detail": f"logout refused: {err}"},
                status_code=401,
                headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
            )
        try:
            # Only a token still valid logs out: a revoked one, replayed, must not end the
            # sessions the user opened since.
            generation = await users.revoke_tokens(identity.user_id, identity.generation)
        except users_repo.NotFound:
            generation = None
        except StoreUnavailable as err:
            log.error("logout unavailable: %s", err.reason)
            raise HTTPException(503, detail=f"logout unavailable: {err.reason}") from None
        if generation is None:
            return JSONResponse(
                {"detail": "logout refused: token revoked already (or unknown user)"},
                status_code=401,
            )
        trace.get_current_span().set_attribute(Attr.USER_ID, identity.user_id)
        log.info("user %s logged out (token generation %d)", identity.user_id, generation)
        return {"detail": "logged out: every token of this user issued until now is revoked"}

    return router


async def _settle(step: Callable[[Attempt], Awaitable[None]], attempt: Attempt) -> None:
    """Clear an attempt's failure (cancelled or succeeded). If the database fails now, the
    attempt stays counted as a failure until it leaves the window: logged, not raised."""
    try:
        await step(attempt)
    except StoreUnavailable as err:
        log.warning("a login attempt stays counted as a failure: %s", err.reason)
