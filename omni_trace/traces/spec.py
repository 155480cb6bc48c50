"""A chain spec: what a whole message looks like in one stack's traces.

The audit, `trace show`, `doctor` and the pytest assertions read traces through a spec, so
they work on any stack whose layers record one span per message: a spec names each layer's
services and message span, how each layer joins the one before it (a child span, or a link
with a role), the links that reach layers living in the connection's trace (a gateway), and
the attributes that carry the conversation and the user. This project's stack ships its own
(`omni_trace/traces/specs/omni2.yaml`, the default); `--spec FILE` reads another.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from fnmatch import fnmatchcase
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from omni_trace.errors import CliError

DEFAULT_SPEC = Path(__file__).with_name("specs") / "omni2.yaml"


class SpecError(CliError, ValueError):
    """A spec file that cannot be used; the text says where and why."""


@dataclass(frozen=True)
class SpanPattern:
    """Spans by service and name (fnmatch patterns, `*` for any)."""

    services: tuple[str, ...] = ("*",)
    name: str = "*"

    def matches(self, service: str, name: str) -> bool:
        return fnmatchcase(name, self.name) and any(fnmatchcase(service, s) for s in self.services)


@dataclass(frozen=True)
class LinkRule:
    """A link a layer's message span must carry, found by its role attribute. Its target is a
    span named `span` (in the connection's trace), or a span of layer `layer`, which the link
    then proves present."""

    role: str
    span: str | None = None
    layer: str | None = None
    hint: str = ""  # said when the link is missing

    @property
    def target(self) -> str:
        return self.layer or self.span or "?"


Scalar = str | bool | int | float


@dataclass(frozen=True)
class Expectation:
    """When a layer is expected: what a later layer's message span (the first present one
    carrying the first attribute named, its "witness") must say. Without a witness the layer
    is expected; with one that says otherwise, it was not there, or not traced, by the
    witness's own record (a client that sent no trace context)."""

    attributes: tuple[tuple[str, tuple[Scalar, ...]], ...]

    @property
    def key(self) -> str:
        return self.attributes[0][0]

    def unmet(self, attributes: dict[str, object]) -> str | None:
        """The first condition `attributes` fail, as `key=value`; None when all hold."""
        for key, allowed in self.attributes:
            if attributes.get(key) not in allowed:
                return f"{key}={attributes.get(key, '(none)')}"
        return None


@dataclass(frozen=True)
class Layer:
    name: str
    services: tuple[str, ...]
    message: str | None = None  # its span per message; None: reached only through a link
    parent: str | None = None  # the layer whose message span is this one's parent
    parent_link: str | None = None  # or: the role of a link to that span (another trace)
    nested: bool = False  # a descendant of the parent's span, not only a child
    optional: bool = False
    links: tuple[LinkRule, ...] = ()
    # Its spans arrive by a path any client can reach (a browser's telemetry): they only
    # ever count as this layer, and one the next layer did not record as its parent is foreign.
    public: bool = False
    expected_when: Expectation | None = None

    def holds(self, service: str, name: str) -> bool:
        return service in self.services and name == self.message


@dataclass(frozen=True)
class ChainSpec:
    name: str
    layers: tuple[Layer, ...]
    conversation_attribute: str
    user_attribute: str
    link_role_attribute: str
    first_token_event: str
    model_spans: SpanPattern
    tool_spans: SpanPattern
    source: str = ""  # the file it came from
    # The attribute (and value) the collector stamps on every span that came by the public
    # path: such a span counts only as a public layer's, never as proof of another.
    public_attribute: tuple[str, str] | None = None
    # A boolean attribute by which a tail sampler kept (true) or dropped (false) a
    # conversation; a session span carries it, so the audit can tell a sampled-out message
    # (absent on purpose) from a broken one. None: the stack does not sample by conversation.
    sample_attribute: str | None = None

    def layer(self, name: str) -> Layer:
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise KeyError(name)

    @property
    def layer_names(self) -> tuple[str, ...]:
        return tuple(layer.name for layer in self.layers)

    @property
    def message_layers(self) -> tuple[Layer, ...]:
        return tuple(layer for layer in self.layers if layer.message)

    @property
    def message_spans(self) -> tuple[tuple[str, str], ...]:
        """(service, span name) of every span that marks a message trace."""
        return tuple(
            (service, layer.message)
            for layer in self.message_layers
            for service in layer.services
            if layer.message
        )

    @property
    def hops(self) -> tuple[str, ...]:
        """Names of the milliseconds reported per message: each layer's hop from its parent,
        time to first token at each layer, time in the model and in tools, and the whole wait
        at the outermost layer."""
        joined = tuple(f"{layer.parent}_to_{layer.name}" for layer in self.layers if layer.parent)
        ttft = tuple(f"ttft_{layer.name}" for layer in self.message_layers)
        return (*joined, *ttft, "model", "tools", "total")

    def requiring(self, names: Iterable[str]) -> ChainSpec:
        """The spec with these layers expected always (their `expected_when` dropped): a team
        whose clients are all instrumented requires the client layer."""
        wanted = set(names)
        unknown = wanted - set(self.layer_names)
        if unknown:
            raise SpecError(
                f"no layer named {', '.join(sorted(unknown))} in spec {self.name} "
                f"(layers: {', '.join(self.layer_names)})"
            )
        layers = tuple(
            replace(layer, expected_when=None) if layer.name in wanted else layer
            for layer in self.layers
        )
        return replace(self, layers=layers)

    def describe(self) -> str:
        parts = []
        for layer in self.layers:
            where = f"{'|'.join(layer.services)}:{layer.message}" if layer.message else "via link"
            parts.append(f"{layer.name} ({where}{', optional' if layer.optional else ''})")
        return " > ".join(parts)


# -- reading a spec file ---------------------------------------------------------------------


def _strings(value: Any, where: str) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list) and value and all(isinstance(v, str) and v for v in value):
        return tuple(value)
    raise SpecError(f"{where}: a name or a list of names")


def _string(data: dict[str, Any], key: str, where: str, default: str | None = None) -> str:
    value = data.get(key, default)
    if not isinstance(value, str) or not value:
        raise SpecError(f"{where}.{key}: a non-empty string" + ("" if default else " (required)"))
    return value


def _optional(data: dict[str, Any], key: str, where: str) -> str | None:
    value = data.get(key)
    if value is not None and (not isinstance(value, str) or not value):
        raise SpecError(f"{where}.{key}: a non-empty string")
    return value


def _mapping(value: Any, where: str, allowed: set[str]) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise SpecError(f"{where}: a mapping")
    unknown = set(value) - allowed
    if unknown:
        raise SpecError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
    return value


def _pattern(value: Any, where: str) -> SpanPattern:
    data = _mapping(value, where, {"services", "name"})
    services = _strings(data.get("services", "*"), f"{where}.services")
    return SpanPattern(services, _string(data, "name", where, "*"))


def _link(value: Any, where: str) -> LinkRule:
    data = _mapping(value, where, {"role", "span", "layer", "hint"})
    rule = LinkRule(
        role=_string(data, "role", where),
        span=_optional(data, "span", where),
        layer=_optional(data, "layer", where),
        hint=data.get("hint") or "",
    )
    if (rule.span is None) == (rule.layer is None):
        raise SpecError(f"{where}: name the link's target: `span` or `layer` (one of them)")
    return rule


_LAYER_KEYS = {
    "name",
    "services",
    "message",
    "parent",
    "parent_link",
    "nested",
    "optional",
    "links",
    "public",
    "expected_when",
}
_TOP_KEYS = {
    "name",
    "layers",
    "conversation_attribute",
    "user_attribute",
    "link_role_attribute",
    "first_token_event",
    "model_spans",
    "tool_spans",
    "sample_attribute",
    "public_attribute",
}


def _expectation(value: Any, where: str) -> Expectation | None:
    if value is None:
        return None
    if not isinstance(value, dict) or not value:
        raise SpecError(f"{where}: a mapping of attribute names to the values that say so")
    conditions = []
    for key, allowed in value.items():
        values = allowed if isinstance(allowed, list) else [allowed]
        if not isinstance(key, str) or not key or not values:
            raise SpecError(f"{where}: attribute names to a value or a list of values")
        if not all(isinstance(v, str | bool | int | float) for v in values):
            raise SpecError(f"{where}.{key}: values are strings, numbers or true/false")
        conditions.append((key, tuple(values)))
    return Expectation(tuple(conditions))


def _public_attribute(value: Any, where: str) -> tuple[str, str] | None:
    if value is None:
        return None
    data = _mapping(value, where, {"key", "value"})
    return _string(data, "key", where), _string(data, "value", where)


def _layer(value: Any, where: str) -> Layer:
    data = _mapping(value, where, _LAYER_KEYS)
    name = _string(data, "name", where)
    links = data.get("links") or []
    if not isinstance(links, list):
        raise SpecError(f"{where}.links: a list")
    flags = {key: data.get(key, False) for key in ("optional", "nested", "public")}
    if not all(isinstance(flag, bool) for flag in flags.values()):
        raise SpecError(f"{where}: `optional`, `nested` and `public` are true or false")
    optional, nested = flags["optional"], flags["nested"]
    return Layer(
        name=name,
        services=_strings(data.get("services"), f"{where}.services"),
        message=_optional(data, "message", where),
        parent=_optional(data, "parent", where),
        parent_link=_optional(data, "parent_link", where),
        nested=nested,
        optional=optional,
        links=tuple(_link(link, f"{where}.links[{i}]") for i, link in enumerate(links)),
        public=flags["public"],
        expected_when=_expectation(data.get("expected_when"), f"{where}.expected_when"),
    )


def _check_layers(layers: tuple[Layer, ...], source: str) -> None:
    """What no single layer shows: names unique, parents before their children, every layer
    findable (by its `message` span or a link to it)."""
    names = [layer.name for layer in layers]
    if len(set(names)) != len(names):
        raise SpecError(f"{source}: layer names repeat: {names}")
    if not any(layer.message for layer in layers):
        raise SpecError(f"{source}: no layer has a `message` span: nothing marks a message")
    for i, layer in enumerate(layers):
        _check_layer(layer, layers[:i], names)
        if layer.expected_when is not None and i == len(layers) - 1:
            raise SpecError(
                f"layer {layer.name}: `expected_when` is read on a later layer's span, "
                "and it is the last layer"
            )
    for layer in layers:
        reached = any(link.layer == layer.name for other in layers for link in other.links)
        if not layer.message and not reached:
            raise SpecError(
                f"layer {layer.name}: no `message` span and no layer links to it: "
                "nothing could find it"
            )


def _check_layer(layer: Layer, before: tuple[Layer, ...], names: list[str]) -> None:
    """`layer` against the layers `before` it and the names of all."""
    if layer.parent is not None:
        parent = next((b for b in before if b.name == layer.parent), None)
        if parent is None:
            raise SpecError(f"layer {layer.name}: parent {layer.parent!r} is not a layer before it")
        if not layer.message or not parent.message:
            raise SpecError(f"layer {layer.name}: both it and its parent need a `message`")
    if (layer.parent_link is not None or layer.nested) and layer.parent is None:
        raise SpecError(f"layer {layer.name}: `parent_link` and `nested` need a `parent`")
    if layer.links and not layer.message:
        raise SpecError(f"layer {layer.name}: links are checked on its `message` span")
    for link in layer.links:
        if link.layer is not None and link.layer not in names:
            raise SpecError(f"layer {layer.name}: link {link.role!r} to unknown layer")
    if layer.public and not layer.message:
        raise SpecError(f"layer {layer.name}: a `public` layer needs its `message` span")


def parse_spec(data: Any, source: str = "<spec>") -> ChainSpec:
    top = _mapping(data, source, _TOP_KEYS)
    raw_layers = top.get("layers")
    if not isinstance(raw_layers, list) or not raw_layers:
        raise SpecError(f"{source}: `layers`, a list of at least one layer, outermost first")
    layers = tuple(_layer(layer, f"layers[{i}]") for i, layer in enumerate(raw_layers))
    _check_layers(layers, source)
    return ChainSpec(
        name=_string(top, "name", source),
        layers=layers,
        conversation_attribute=_string(top, "conversation_attribute", source),
        user_attribute=_string(top, "user_attribute", source),
        link_role_attribute=_string(top, "link_role_attribute", source, "link.role"),
        first_token_event=_string(top, "first_token_event", source, "first_token"),
        model_spans=_pattern(top.get("model_spans", {"name": "chat *"}), "model_spans"),
        tool_spans=_pattern(top.get("tool_spans", {"name": "execute_tool*"}), "tool_spans"),
        source=source,
        sample_attribute=_optional(top, "sample_attribute", source),
        public_attribute=_public_attribute(top.get("public_attribute"), "public_attribute"),
    )


def load_spec(path: Path | str) -> ChainSpec:
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as err:
        raise SpecError(f"cannot read the chain spec {path}: {err.strerror}") from None
    except yaml.YAMLError as err:
        raise SpecError(f"{path}: not YAML: {err}") from None
    return parse_spec(data, str(path))


@cache
def default_spec() -> ChainSpec:
    """This project's stack (omni_trace/traces/specs/omni2.yaml)."""
    return load_spec(DEFAULT_SPEC)
