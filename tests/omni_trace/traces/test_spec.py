"""Chain specs: the default one is this stack's names, bad files get clear errors, and the
analysis follows a spec of other names (recorded traces, renamed as another stack would
name them)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
import yaml

from omni_trace.traces.audit import MESSAGE_SPANS
from omni_trace.traces.chain import HOPS, analyze_chain
from omni_trace.traces.jaeger import SpanLink, TraceSpan
from omni_trace.traces.spec import DEFAULT_SPEC, SpecError, default_spec, load_spec, parse_spec
from otel.names import CLIENTS, Attr, Event, LinkRole, Service, SpanName
from tests.omni_trace.recorded import message_spans, session_spans


def test_the_default_spec_names_what_our_services_emit() -> None:
    spec = default_spec()
    assert spec.layer_names == ("client", "dashboard", "traefik", "omni2")
    assert set(spec.message_spans) == {
        *((client, SpanName.MESSAGE) for client in CLIENTS),
        (Service.DASHBOARD, SpanName.RELAY),
        (Service.OMNI2, SpanName.TURN),
    }
    assert spec.message_spans == MESSAGE_SPANS
    assert spec.conversation_attribute == Attr.CONVERSATION_ID
    assert spec.sample_attribute == Attr.SAMPLE_KEEP
    assert spec.user_attribute == Attr.USER_ID
    assert spec.link_role_attribute == Attr.LINK_ROLE
    assert spec.first_token_event == Event.FIRST_TOKEN
    roles = {link.role for layer in spec.layers for link in layer.links}
    roles |= {layer.parent_link for layer in spec.layers if layer.parent_link}
    assert roles == {LinkRole.UPSTREAM_CONNECT, LinkRole.GATEWAY, LinkRole.CLIENT}
    assert spec.layer("traefik").services == (Service.TRAEFIK,)
    assert spec.hops == HOPS


# -- another stack's names ------------------------------------------------------------------

RENAMED = {
    ("chat-client", "chat.message"): ("web", "send"),
    ("dashboard-backend", "chat.relay"): ("ws-proxy", "proxy.message"),
    ("omni2", "chat.turn"): ("llm-api", "answer"),
    ("omni2", "chat omni2-offline-1"): ("llm-api", "llm.call"),
    ("dashboard-backend", "upstream connect"): ("ws-proxy", "dial"),
}
SERVICES = {"chat-client": "web", "dashboard-backend": "ws-proxy", "omni2": "llm-api"}
ROLES = {LinkRole.UPSTREAM_CONNECT: "dialled", LinkRole.GATEWAY: "via-gateway"}

OTHER_SPEC: dict[str, Any] = {
    "name": "acme",
    "conversation_attribute": Attr.CONVERSATION_ID,
    "user_attribute": Attr.USER_ID,
    "link_role_attribute": "acme.link",
    "first_token_event": Event.FIRST_TOKEN,
    "layers": [
        {"name": "browser", "services": ["web"], "message": "send"},
        {
            "name": "proxy",
            "services": ["ws-proxy"],
            "message": "proxy.message",
            "parent": "browser",
            "links": [{"role": "dialled", "span": "dial"}],
        },
        {"name": "gateway", "services": ["traefik"]},
        {
            "name": "backend",
            "services": ["llm-api"],
            "message": "answer",
            "parent": "proxy",
            "links": [{"role": "via-gateway", "layer": "gateway"}],
        },
    ],
    "model_spans": {"services": ["llm-api"], "name": "llm.*"},
}


def _renamed(spans: list[TraceSpan]) -> list[TraceSpan]:
    def rename(span: TraceSpan) -> TraceSpan:
        service, name = RENAMED.get(
            (span.service, span.name), (SERVICES.get(span.service, span.service), span.name)
        )
        links = tuple(
            SpanLink(
                link.trace_id,
                link.span_id,
                {"acme.link": ROLES.get(link.attributes.get(Attr.LINK_ROLE, ""), "")},
            )
            for link in span.links
        )
        return dataclasses.replace(span, service=service, name=name, links=links)

    return [rename(s) for s in spans]


def test_another_stacks_chain_is_whole_by_its_own_spec() -> None:
    spec = parse_spec(OTHER_SPEC)
    report = analyze_chain(_renamed(message_spans()), lambda _: _renamed(session_spans()), spec)
    assert report.problems == [] and report.layers == dict.fromkeys(spec.layer_names, True)
    assert spec.hops == (
        "browser_to_proxy",
        "proxy_to_backend",
        "ttft_browser",
        "ttft_proxy",
        "ttft_backend",
        "model",
        "tools",
        "total",
    )
    assert report.hops["browser_to_proxy"] is not None and report.hops["model"] is not None
    # The same spans read by our own spec: nothing of the chain is found.
    ours = analyze_chain(_renamed(message_spans()), lambda _: _renamed(session_spans()))
    assert ours.problems == [
        "missing layer client",
        "missing layer dashboard",
        "missing layer omni2",
    ]


def test_a_mismatched_spec_names_the_missing_layer_and_link() -> None:
    wrong = {**OTHER_SPEC, "layers": [dict(layer) for layer in OTHER_SPEC["layers"]]}
    wrong["layers"][3]["message"] = "respond"  # the backend's span is called "answer"
    wrong["layers"][1]["links"] = [{"role": "upgraded", "span": "dial"}]
    report = analyze_chain(
        _renamed(message_spans()), lambda _: _renamed(session_spans()), parse_spec(wrong)
    )
    assert report.problems == ["missing layer backend", "missing link proxy.message -> dial"]
    assert report.layers["backend"] is False and report.layers["gateway"] is False


def test_an_optional_layer_may_be_missing() -> None:
    optional = {**OTHER_SPEC, "layers": [dict(layer) for layer in OTHER_SPEC["layers"]]}
    optional["layers"][0]["optional"] = True
    spans = [s for s in _renamed(message_spans()) if s.service != "web"]
    report = analyze_chain(spans, lambda _: _renamed(session_spans()), parse_spec(optional))
    assert report.layers["browser"] is False
    # The proxy's span lost its parent: that is still said, but no layer is missing.
    assert report.problems == ["orphan ws-proxy proxy.message (parent not in trace)"]


# -- bad spec files -------------------------------------------------------------------------


def _with(**changes: Any) -> dict[str, Any]:
    return {**OTHER_SPEC, **changes}


@pytest.mark.parametrize(
    ("data", "says"),
    [
        ([], "a mapping"),
        (_with(layers=[]), "`layers`, a list of at least one layer"),
        (_with(colour="red"), "unknown key(s) colour"),
        ({k: v for k, v in OTHER_SPEC.items() if k != "conversation_attribute"}, "required"),
        (_with(layers=[{"name": "a", "services": ["x"]}]), "no layer has a `message` span"),
        (_with(layers=[{"name": "a", "services": [], "message": "m"}]), "a name or a list"),
        (
            _with(layers=[{"name": "a", "services": "x", "message": "m", "parent": "b"}]),
            "parent 'b' is not a layer before it",
        ),
        (
            _with(
                layers=[
                    {"name": "a", "services": "x", "message": "m"},
                    {"name": "a", "services": "y", "message": "n"},
                ]
            ),
            "layer names repeat",
        ),
        (
            _with(
                layers=[{"name": "a", "services": "x", "message": "m", "links": [{"role": "r"}]}]
            ),
            "`span` or `layer`",
        ),
        (
            _with(
                layers=[
                    {"name": "a", "services": "x", "message": "m"},
                    {"name": "g", "services": "t"},
                ]
            ),
            "nothing could find it",
        ),
    ],
)
def test_a_bad_spec_says_what_is_wrong(data: Any, says: str) -> None:
    with pytest.raises(SpecError, match=None) as caught:
        parse_spec(data, "spec.yaml")
    assert says in str(caught.value)


def test_files_not_found_or_not_yaml_are_named(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="cannot read the chain spec"):
        load_spec(tmp_path / "missing.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("layers: [unclosed")
    with pytest.raises(SpecError, match="not YAML"):
        load_spec(broken)


def test_the_shipped_spec_round_trips() -> None:
    assert load_spec(DEFAULT_SPEC) == default_spec()
    assert yaml.safe_load(DEFAULT_SPEC.read_text())["name"] == "omni2"
