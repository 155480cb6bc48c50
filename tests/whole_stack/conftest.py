"""Fixtures that start the real stack (Jaeger, auth, OMNI2, Traefik, dashboard) on free ports.

The test process is the chat-client layer: it exports its spans with its own provider (the
plugin's `omni_tracer_provider`) to the stack's Jaeger, so unit tests' in-memory provider
never sees them. Tests chat and read traces through the toolkit's own fixtures and assertions
(omni_chat, omni_traces, omni_jaeger; omni_trace.traces.Trace), the way a user would.
"""

from __future__ import annotations

import contextlib
import secrets
import subprocess
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry.sdk.trace import TracerProvider
from sqlalchemy.ext.asyncio import AsyncSession

from omni_trace.stack import Stack, StackInfo
from omni_trace.stack.ports import Ports
from omni_trace.stack.settings import StackSettings
from omni_trace.traces import JaegerClient, TraceFetcher
from otel.names import Service
from otel.setup import create_tracer_provider
from services.db.repository import users as users_repo
from tests.db import Admin


@contextmanager
def serving(argv: list[str], env: dict[str, str], url: str, log: Path) -> Iterator[str]:
    """A process of a test's own (a second flow view, an example service) until its
    `/healthz` answers; stopped on exit. Its output goes to `log`, shown if it dies."""
    with log.open("wb") as out:
        process = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 20
            while True:
                with contextlib.suppress(httpx.HTTPError):
                    if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                        break
                assert process.poll() is None, f"{argv} exited: {log.read_text()}"
                assert time.monotonic() < deadline, f"{argv} not up: {log.read_text()}"
                time.sleep(0.1)
            yield url
        finally:
            process.terminate()
            process.wait(10)


@contextmanager
def running_stack(
    run_dir: Path,
    jwt_secret: str,
    database_url: str | None = None,
    service_env: dict[str, dict[str, str]] | None = None,
    *,
    viewers: bool = True,
    **settings: Any,
) -> Iterator[Stack]:
    """A whole stack on free ports, stopped on exit (OMNI2 on SQLite unless told; `settings`
    are StackSettings fields, e.g. database="postgres", whose cluster is removed after)."""
    stack = Stack(
        run_dir,
        Ports.free(),
        StackSettings(database_url=database_url, **{"model_token_delay_ms": 2, **settings}),
        jwt_secret=jwt_secret,
        service_env=service_env,
        viewers=viewers,
        progress=lambda message: print(message, flush=True),
    )
    with stack:
        yield stack
    if stack.postgres is not None:
        stack.postgres.remove()


@contextmanager
def client_provider(stack: Stack) -> Iterator[TracerProvider]:
    """The chat-client layer of a test's own stack, exporting to that stack's Jaeger."""
    provider = create_tracer_provider(
        Service.CHAT_CLIENT, otlp_endpoint=stack.info.otlp_http_endpoint
    )
    yield provider
    provider.shutdown()


# A module whose tests need a stack of their own names its fixture `own_stack`; these three
# then talk to that stack, for the module.
@pytest.fixture(scope="module")
def provider(own_stack: Stack) -> Iterator[TracerProvider]:
    """The chat-client layer, exporting to the module's stack."""
    with client_provider(own_stack) as provider:
        yield provider


@pytest.fixture(scope="module")
def jaeger(own_stack: Stack) -> Iterator[JaegerClient]:
    with JaegerClient(own_stack.info.jaeger_query_url) as client:
        yield client


@pytest.fixture(scope="module")
def traces(jaeger: JaegerClient, provider: TracerProvider) -> TraceFetcher:
    return TraceFetcher(jaeger, provider)


@pytest.fixture(scope="session")
def jwt_secret() -> str:
    return secrets.token_urlsafe(32)


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory, jwt_secret: str) -> Iterator[Stack]:
    with running_stack(tmp_path_factory.mktemp("stack"), jwt_secret) as stack:
        yield stack


@pytest.fixture(scope="session")
def omni_stack(stack: Stack) -> StackInfo:
    """The toolkit's fixtures (omni_chat, omni_traces, omni_jaeger, omni_tracer_provider) run
    on this shared stack, as a user's conftest points them at theirs."""
    return stack.info


@pytest.fixture(scope="session")
def admin(stack: Stack) -> Admin:
    """The running OMNI2's database, from the test (users, limits, the stored rows)."""
    return Admin(stack.info.omni2_database_url)


def all_exported(jaeger: JaegerClient) -> dict[str, list[str]]:
    """Raw JSON of every trace Jaeger holds, per service: what the secret scans read."""
    raw: dict[str, list[str]] = {}
    with httpx.Client(timeout=10) as client, ThreadPoolExecutor(8) as pool:
        for service in jaeger.services():
            ids = jaeger.find_trace_ids(service, lookback="2h", limit=5000)
            urls = [f"{jaeger.query_url}/api/v3/traces/{trace_id}" for trace_id in ids]
            raw[service] = list(pool.map(lambda url: client.get(url).text, urls))
    return raw


def new_user(admin: Admin, role: str = "user", **limits: int | float | None) -> str:
    """A fresh user of `role` (so tests never share usage or rate windows)."""
    user_id = f"{role}-{uuid.uuid4().hex[:8]}"

    async def add(session: AsyncSession) -> None:
        await users_repo.add_user(session, user_id, role)
        await session.flush()
        if limits:
            await users_repo.set_limits(session, user_id, **limits)  # type: ignore[arg-type]

    admin(add)
    return user_id
