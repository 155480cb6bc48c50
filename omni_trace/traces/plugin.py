"""pytest plugin (entry point `omni_trace`): fixtures for asserting on any chat stack's traces.

Fixtures:
  omni_spec      the chain spec (`--omni-spec FILE` / $OMNI_TRACE_SPEC; default: this
                 project's stack), with `--omni-require LAYER` layers always expected
  omni_jaeger    a JaegerClient: `--omni-jaeger URL` / $OMNI_TRACE_JAEGER_QUERY_URL (any
                 stack's Jaeger; no stack of ours is started), else `omni_stack`'s
  omni_traces    `omni_traces.message(reply or trace id)` -> (message Trace, session Trace),
                 waiting until the chain is whole by omni_spec (or returning what is there
                 after the timeout)

The fixtures that start and drive this project's stack (`omni_stack`, `omni_chat`) are in
`omni_trace.stack.plugin`; these ones need them only without `--omni-jaeger`.

Assertions: omni_trace.traces.Trace (select/one/assert_chain/assert_count/assert_attribute/
assert_everywhere/assert_duration/assert_linked/assert_no_orphans/assert_no_errors) and
assert_message_chain(message, session, spec).
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from omni_trace.traces.fetch import TraceFetcher
from omni_trace.traces.jaeger import JaegerClient
from omni_trace.traces.spec import ChainSpec, SpecError, default_spec, load_spec


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("omni-trace")
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
    group.addoption(
        "--omni-require",
        action="append",
        default=[
            name for name in os.environ.get("OMNI_TRACE_REQUIRE", "").split(",") if name.strip()
        ],
        metavar="LAYER",
        help="expect this layer in every message even where the first hop recorded that it "
        "was not traced (e.g. client, once every client is instrumented); repeatable, or "
        "$OMNI_TRACE_REQUIRE=client,...",
    )


@pytest.fixture(scope="session")
def omni_spec(request: pytest.FixtureRequest) -> ChainSpec:
    path = request.config.getoption("--omni-spec")
    required = [name.strip() for name in request.config.getoption("--omni-require")]
    try:
        spec = load_spec(path) if path else default_spec()
        return spec.requiring(required) if required else spec
    except SpecError as err:
        raise pytest.UsageError(f"--omni-spec/--omni-require: {err}") from None


@pytest.fixture(scope="session")
def omni_jaeger(request: pytest.FixtureRequest) -> Iterator[JaegerClient]:
    url = request.config.getoption("--omni-jaeger")
    if not url:
        url = request.getfixturevalue("omni_stack").jaeger_query_url
    with JaegerClient(url) as client:
        yield client


@pytest.fixture
def omni_traces(
    request: pytest.FixtureRequest, omni_jaeger: JaegerClient, omni_spec: ChainSpec
) -> TraceFetcher:
    # Against another stack's Jaeger there is no chat client of ours to flush.
    ours = not request.config.getoption("--omni-jaeger")
    provider = request.getfixturevalue("omni_tracer_provider") if ours else None
    return TraceFetcher(omni_jaeger, provider, omni_spec)
