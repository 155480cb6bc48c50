"""The assertion toolkit on recorded traces: passing cases, and failures that print the tree."""

from __future__ import annotations

import pytest

from omni_trace.traces import TraceFetcher, has_spans_named
from omni_trace.traces.assertions import Selector, Trace, TraceAssertionError, assert_message_chain
from omni_trace.traces.fetch import SessionIncomplete
from omni_trace.traces.jaeger import JaegerClient, TraceSpan
from tests.omni_trace.recorded import message_spans, session_spans

CHAIN = "chat-client:chat.message > dashboard-backend:chat.relay > omni2:chat.turn"


@pytest.fixture
def message() -> Trace:
    return Trace(message_spans())


@pytest.fixture
def session() -> Trace:
    return Trace(session_spans())


def test_selector_parsing() -> None:
    sel = Selector.parse("omni2:chat.turn[user.id=alice, kind=SERVER]")
    assert (sel.service, sel.name, sel.attrs) == (
        "omni2",
        "chat.turn",
        {"user.id": "alice", "kind": "SERVER"},
    )
    assert Selector.parse("upstream connect").service == "*"
    with pytest.raises(ValueError, match="expected key=value"):
        Selector.parse("omni2:chat.turn[user.id]")


def test_select_by_service_name_glob_and_attributes(message: Trace) -> None:
    assert [s.name for s in message.select("omni2:chat *")] == ["chat omni2-offline-1"]
    assert len(message.select("*:chat.*[kind=SERVER]")) == 2
    assert message.select("omni2:chat.turn[user.id=alice]")
    assert not message.select("omni2:chat.turn[user.id=bob]")


def test_child_and_descendant_chains(message: Trace) -> None:
    path = message.assert_chain(CHAIN)
    assert [s.service for s in path] == ["chat-client", "dashboard-backend", "omni2"]
    message.assert_chain("chat-client:chat.message >> omni2:chat omni2-*")


def test_broken_chain_names_the_step_and_prints_the_tree(message: Trace) -> None:
    with pytest.raises(TraceAssertionError) as err:
        message.assert_chain("chat-client:chat.message > omni2:chat.turn")
    text = str(err.value)
    assert "breaks after 1 step(s): no child matching 'omni2:chat.turn'" in text
    assert "under chat-client 'chat.message'" in text
    assert f"trace {message.trace_id}" in text  # the tree
    assert "dashboard-backend  chat.relay" in text


def test_counts_attributes_and_durations(message: Trace) -> None:
    message.assert_count("*:*", 4)
    message.assert_count("omni2:*", at_least=2, at_most=2)
    message.assert_attribute("omni2:chat.turn", "user.id", "alice")
    message.assert_attribute("omni2:chat *", "gen_ai.usage.output_tokens", check=lambda v: v > 0)
    message.assert_everywhere(
        "gen_ai.conversation.id",
        message.one("omni2:chat.turn").attributes["gen_ai.conversation.id"],
    )
    message.assert_duration("omni2:chat.turn", max_ms=10_000)
    with pytest.raises(TraceAssertionError, match="expected 3 span"):
        message.assert_count("*:*", 3)
    with pytest.raises(TraceAssertionError, match=r"'user.id' is 'alice', expected 'bob'"):
        message.assert_attribute("omni2:chat.turn", "user.id", "bob")
    with pytest.raises(TraceAssertionError, match=r"took .* ms, expected 0.0..0.0 ms"):
        message.assert_duration("omni2:chat.turn", max_ms=0)
    with pytest.raises(TraceAssertionError, match="expected exactly one"):
        message.one("*:chat.*")


def test_links_into_the_session_trace(message: Trace, session: Trace) -> None:
    linked = message.assert_linked(
        "dashboard-backend:chat.relay", session, "dashboard-backend:upstream connect"
    )
    assert linked.name == "upstream connect"
    message.assert_linked("omni2:chat.turn", session, "traefik:ReverseProxy")
    with pytest.raises(TraceAssertionError) as err:
        message.assert_linked("omni2:chat.turn", session, "traefik:AuthRequest")
    assert "no link from 'omni2:chat.turn' to 'traefik:AuthRequest'" in str(err.value)
    assert f"trace {session.trace_id}" in str(err.value)  # both trees printed


def test_orphans(message: Trace) -> None:
    message.assert_no_orphans()
    without_relay = Trace(s for s in message.spans if s.name != "chat.relay")
    with pytest.raises(TraceAssertionError, match=r"orphan span.*omni2 'chat.turn'"):
        without_relay.assert_no_orphans()


def test_message_chain_covers_four_layers(message: Trace, session: Trace) -> None:
    assert_message_chain(message, session)


@pytest.mark.parametrize(
    ("drop", "problem"),
    [
        (lambda s: s.service == "omni2", "missing layer omni2"),
        (lambda s: s.service == "dashboard-backend", "missing layer dashboard"),
        (lambda s: s.service == "chat-client", "missing layer client"),
    ],
)
def test_message_chain_names_the_missing_layer(
    message: Trace, session: Trace, drop: object, problem: str
) -> None:
    broken = Trace(s for s in message.spans if not drop(s))  # type: ignore[operator]
    with pytest.raises(TraceAssertionError, match=problem):
        assert_message_chain(broken, session)


def test_message_chain_without_session_lacks_traefik(message: Trace) -> None:
    with pytest.raises(TraceAssertionError, match="missing layer traefik"):
        assert_message_chain(message, Trace([]))


def test_ancestors_and_expect(message: Trace, session: Trace) -> None:
    model = message.one("omni2:chat *")
    assert [(s.service, s.name) for s in message.ancestors(model)] == [
        ("omni2", "chat.turn"),
        ("dashboard-backend", "chat.relay"),
        ("chat-client", "chat.message"),
    ]
    message.expect(True, "never shown")
    related = Trace(message.spans, related=[session])
    with pytest.raises(TraceAssertionError) as failure:
        related.expect(False, "the model span has no parent")
    text = str(failure.value)
    assert text.startswith("the model span has no parent")
    assert "chat.turn" in text and "ReverseProxy" in text  # both trees


class _Jaeger:
    """Jaeger as far as TraceFetcher.wait reads it: the trace grows by one span per poll."""

    def __init__(self, spans: list[TraceSpan]) -> None:
        self.spans, self.polls = spans, 0

    def wait_for_trace(self, trace_id, until, *, what, timeout):  # type: ignore[no-untyped-def]
        return JaegerClient.wait_for_trace(self, trace_id, until, what=what, timeout=timeout)  # type: ignore[arg-type]

    def get_trace(self, trace_id: str) -> list[TraceSpan]:
        self.polls += 1
        return self.spans[: self.polls]


def test_the_fetcher_waits_for_a_condition_and_fails_with_the_tree() -> None:
    spans = message_spans()
    fetcher = TraceFetcher(_Jaeger(spans))  # type: ignore[arg-type]
    wanted = has_spans_named(("omni2", "chat.turn"), ("dashboard-backend", "chat.relay"))
    trace = fetcher.wait(spans[0].trace_id, wanted, what="turn and relay", timeout=30)
    assert {("omni2", "chat.turn"), ("dashboard-backend", "chat.relay")} <= {
        (s.service, s.name) for s in trace.spans
    }
    missing = has_spans_named(("llm-api", "answer"))
    with pytest.raises(TraceAssertionError) as failure:
        TraceFetcher(_Jaeger(spans)).wait(  # type: ignore[arg-type]
            spans[0].trace_id, missing, what="the backend's answer", timeout=0.5
        )
    text = str(failure.value)
    assert "the backend's answer not seen within 0 s" in text and "chat.message" in text


def test_a_session_that_never_becomes_whole_says_what_it_waited_for() -> None:
    """A wait for a whole session that runs out warns (else each one silently costs its
    timeout) and names the parent that never arrived."""
    spans = session_spans()
    child = next(s for s in spans if s.parent_span_id)
    orphaned = [
        *spans,
        TraceSpan(**{**vars(child), "span_id": "c" * 16, "parent_span_id": "f" * 16}),
    ]
    jaeger = _Jaeger(orphaned)
    jaeger.polls = len(orphaned)  # all there from the first poll
    with pytest.warns(SessionIncomplete, match="parent spans never arrived: " + "f" * 16):
        session = TraceFetcher(jaeger).session(spans[0].trace_id, timeout=0.3)  # type: ignore[arg-type]
    assert len(session.spans) == len(orphaned)
