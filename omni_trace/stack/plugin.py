"""pytest plugin (entry point `omni_trace_stack`): fixtures that run and drive this project's
stack, for the trace fixtures of `omni_trace.traces.plugin`.

Fixtures:
  omni_stack            the stack under test (StackInfo): the running one named by
                        `--omni-stack-file` / $OMNI_TRACE_STACK_FILE, else a fresh stack on
                        free ports for the session (needs `pip install 'omni-trace[stack]'`)
  omni_tracer_provider  the test's chat-client layer: its spans go to the stack's Jaeger
  omni_chat             `async with omni_chat("alice") as chat:` logs in and connects as the
                        chat-client layer (traced); `await chat.send("...")` returns the reply;
                        `omni_chat(token=...)` connects with a token of the test's own, and
                        open_chat's options (headers, message_span_name) pass through

A conftest.py may override `omni_stack` to start the stack its own way (the project's own
tests do).

A run stopped by SIGTERM (a CI job's timeout, `kill`) stops as on Ctrl-C: the fixtures are
torn down, so the stacks they started stop too. Their processes run in sessions of their own,
and nothing else would stop them. A SIGTERM handler the run already has is left alone.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from types import FrameType
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider

from omni_trace.stack.client import ChatConnection, login, open_chat
from omni_trace.stack.ports import Ports
from omni_trace.stack.runner import Stack, StackInfo
from otel.names import Service
from otel.setup import create_tracer_provider

ChatFactory = Callable[..., AbstractAsyncContextManager[ChatConnection]]


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the test run as Ctrl-C is: pytest then tears every fixture down."""


def _on_sigterm(config: pytest.Config) -> Callable[[int, FrameType | None], None]:
    def terminated(signum: int, frame: FrameType | None) -> None:
        # Once: a second SIGTERM, or the SIGINT that pytest-xdist's shutdown sends a busy
        # worker, would cut the teardown short (SIGKILL still ends the run).
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        if config.pluginmanager.hasplugin("dsession"):
            # pytest-xdist's controller: the workers hold the fixtures, and unless they are
            # told now, its shutdown kills those still busy after 10 s, with no teardown.
            for pid in _children():
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGTERM)
        raise Terminated(f"{signal.Signals(signum).name}: stopping; fixtures are torn down")

    return terminated


def _children() -> list[int]:
    """This process's children, from /proc (none where there is no /proc)."""
    me, found = os.getpid(), []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            # pid (comm) state ppid ...: comm may hold spaces and parentheses.
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == me:
                found.append(int(stat.parent.name))
    return found


_SIGNALS_WERE = pytest.StashKey[dict[int, Any]]()


def pytest_configure(config: pytest.Config) -> None:
    # Only the main thread may set a handler, and one that someone else set is theirs.
    if threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        return
    were: dict[int, Any] = {
        signal.SIGTERM: signal.signal(signal.SIGTERM, _on_sigterm(config)),
        signal.SIGINT: signal.getsignal(signal.SIGINT),
    }
    config.stash[_SIGNALS_WERE] = were


def pytest_unconfigure(config: pytest.Config) -> None:
    for signum, handler in config.stash.get(_SIGNALS_WERE, {}).items():
        signal.signal(signum, handler)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.getgroup("omni-trace").addoption(
        "--omni-stack-file",
        default=os.environ.get("OMNI_TRACE_STACK_FILE"),
        help="test against the running stack described by this stack file "
        "(default: start one on free ports)",
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
def omni_tracer_provider(omni_stack: StackInfo) -> Iterator[TracerProvider]:
    provider = create_tracer_provider(
        Service.CHAT_CLIENT, otlp_endpoint=omni_stack.otlp_http_endpoint
    )
    yield provider
    provider.shutdown()


@pytest.fixture
def omni_chat(omni_stack: StackInfo, omni_tracer_provider: TracerProvider) -> ChatFactory:
    @asynccontextmanager
    async def connect(  # options: open_chat's (headers, message_span_name, ...)
        user: str = "alice",
        password: str | None = None,
        *,
        token: str | None = None,
        **options: Any,
    ) -> AsyncIterator[ChatConnection]:
        if token is None:  # else the test brings its own (an expired one, another user's...)
            password = password or omni_stack.demo_passwords.get(user, "")
            token = await login(omni_stack.dashboard_url, user, password)
        async with open_chat(
            omni_stack.dashboard_ws_url, token, tracer_provider=omni_tracer_provider, **options
        ) as chat:
            yield chat
        omni_tracer_provider.force_flush()

    return connect
