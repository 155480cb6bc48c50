"""pytest plugin (entry point `omni_trace`): fixtures for asserting on a chat stack's traces.

Fixtures:
  omni_stack     the stack under test (StackInfo): the running one named by
                 `--omni-stack-file` / $OMNI_TRACE_STACK_FILE, else a fresh stack on free
                 ports for the session
  omni_spec      the chain spec (`--omni-spec FILE` / $OMNI_TRACE_SPEC; default: this
                 project's stack)
  omni_jaeger    a JaegerClient: `--omni-jaeger URL` / $OMNI_TRACE_JAEGER_QUERY_URL (any
                 stack's Jaeger; no stack of ours is started), else omni_stack's
  omni_chat      `async with omni_chat("alice") as chat:` logs in and connects as the
                 chat-client layer (traced); `await chat.send("...")` returns the reply
  omni_traces    `omni_traces.message(reply or trace id)` -> (message Trace, session Trace),
                 waiting until the chain is whole by omni_spec (or returning what is there
                 after the timeout)

Assertions (import from omni_trace.assertions): Trace.select/one/assert_chain/
assert_count/assert_attribute/assert_everywhere/assert_duration/assert_linked/
assert_no_orphans/assert_no_errors, and assert_message_chain(message, session, spec).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from opentelemetry.sdk.trace import TracerProvider

from omni_trace.assertions import Trace
from omni_trace.chain import session_closed_and_whole, wait_for_chain
from omni_trace.client import ChatConnection, ChatReply, login, open_chat
from omni_trace.jaeger import JaegerClient, TraceTimeout
from omni_trace.ports import Ports
from omni_trace.spec import ChainSpec, SpecError, default_spec, load_spec
from omni_trace.stack import Stack, StackInfo
from otel.names import Service
from otel.setup import create_tracer_provider

ChatFactory = Callable[..., AbstractAsyncContextManager[ChatConnection]]


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("omni-trace")
    group.addoption(
        "--omni-stack-file",
        default=os.environ.get("OMNI_TRACE_STACK_FILE"),
        help="test against the running stack described by this stack file "
        "(default: start one on free ports)",
    )
    group.addoption(
        "--omni-jaeger",
        default=os.environ.get("OMNI_TRACE_JAEGER_QUERY_URL"),
        metavar="URL",
        help="read traces from this Jaeger (query API base URL), any stack's; no stack of "
        "ours is started for the trace fixtures",
    )
    group.addoption(
        "--omni-spec",
        default=os.environ.get("OMNI_TRACE_SPEC"),
        metavar="FILE",
        help="the chain spec of the stack under test (default: this project's stack)",
    )


@pytest.fixture(scope="session")
def omni_stack(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[StackInfo]:
    stack_file = request.config.getoption("--omni-stack-file")
    if stack_file:
        yield StackInfo.read(Path(stack_file))
        return
    with Stack(tmp_path_factory.mktemp("omni-stack"), Ports.free(), progress=lambda _: None) as s:
        yield s.info


@pytest.fixture(scope="session")
def omni_spec(request: pytest.FixtureRequest) -> ChainSpec:
    path = request.config.getoption("--omni-spec")
    try:
        return load_spec(path) if path else default_spec()
    except SpecError as err:
        raise pytest.UsageError(f"--omni-spec: {err}") from None


@pytest.fixture(scope="session")
def omni_jaeger(request: pytest.FixtureRequest) -> Iterator[JaegerClient]:
    url = request.config.getoption("--omni-jaeger")
    if not url:
        url = request.getfixturevalue("omni_stack").jaeger_query_url
    with JaegerClient(url) as client:
        yield client


@pytest.fixture(scope="session")
def omni_tracer_provider(omni_stack: StackInfo) -> Iterator[TracerProvider]:
    provider = create_tracer_provider(
        Service.CHAT_CLIENT, otlp_endpoint=omni_stack.otlp_http_endpoint
    )
    yield provider
    provider.shutdown()


@pytest.fixture
def omni_chat(omni_stack: StackInfo, omni_tracer_provider: TracerProvider) -> ChatFactory:
    @asynccontextmanager
    async def connect(
        user: str = "alice", password: str | None = None
    ) -> AsyncIterator[ChatConnection]:
        password = password or omni_stack.demo_passwords.get(user, "")
        token = await login(omni_stack.dashboard_url, user, password)
        async with open_chat(
            omni_stack.dashboard_ws_url, token, tracer_provider=omni_tracer_provider
        ) as chat:
            yield chat
        omni_tracer_provider.force_flush()

    return connect


@dataclass
class TraceFetcher:
    jaeger: JaegerClient
    provider: TracerProvider | None = None  # our chat client's, flushed before reading
    spec: ChainSpec | None = None

    def message(
        self, reply: ChatReply | str, timeout: float = 20.0, *, connection_closed: bool = True
    ) -> tuple[Trace, Trace]:
        """The message trace of a reply and its linked session trace, once the chain is whole
        (or after `timeout`, as far as it got). With `connection_closed`, also wait for the
        session trace to be whole (Traefik exports its entry span when the connection ends)."""
        if self.provider is not None:
            self.provider.force_flush()
        trace_id = reply if isinstance(reply, str) else reply.trace_id
        report = wait_for_chain(self.jaeger, trace_id, timeout, spec=self.spec)
        session = Trace([])
        if report.session_trace_ids:
            session = self.session(report.session_trace_ids[0], timeout, closed=connection_closed)
        return Trace(self.jaeger.get_trace(trace_id), related=[session]), session

    def session(self, trace_id: str, timeout: float = 20.0, *, closed: bool = True) -> Trace:
        if closed:
            with contextlib.suppress(TraceTimeout):
                self.jaeger.wait_for_trace(
                    trace_id,
                    lambda spans: session_closed_and_whole(spans, self.spec),
                    what="the whole session",
                    timeout=timeout,
                )
        return Trace(self.jaeger.get_trace(trace_id))

    def trace(self, trace_id: str) -> Trace:
        return Trace(self.jaeger.get_trace(trace_id))


@pytest.fixture
def omni_traces(
    request: pytest.FixtureRequest, omni_jaeger: JaegerClient, omni_spec: ChainSpec
) -> TraceFetcher:
    # Against another stack's Jaeger there is no chat client of ours to flush.
    ours = not request.config.getoption("--omni-jaeger")
    provider = request.getfixturevalue("omni_tracer_provider") if ours else None
    return TraceFetcher(omni_jaeger, provider, omni_spec)
