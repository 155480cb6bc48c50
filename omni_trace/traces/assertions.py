"""Assertions on traces, in the spirit of TraceQL's structural operators.

Selectors are `service:name[key=value,...]`: either side may be `*` or an fnmatch pattern,
brackets filter on attributes (`kind=SERVER` and `status=ERROR` test the span itself).
Chains join selectors with ` > ` (child) and ` >> ` (descendant):

    trace.assert_chain("chat-client:chat.message > dashboard-backend:chat.relay >> omni2:chat *")

Every failed assertion raises TraceAssertionError whose text holds the trace tree(s) and
what did not match.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Any, NoReturn, overload

from omni_trace.traces.chain import analyze_chain
from omni_trace.traces.jaeger import TraceSpan
from omni_trace.traces.spec import ChainSpec
from omni_trace.traces.tracetree import render_tree

_CHAIN_SPLIT = re.compile(r"\s+(>>|>)\s+")
_SELECTOR = re.compile(r"^(?:(?P<service>[^:\[\]]+):)?(?P<name>[^\[\]]+?)(?:\[(?P<attrs>.*)\])?$")


class TraceAssertionError(AssertionError):
    pass


@dataclass(frozen=True)
class Selector:
    text: str
    service: str = "*"
    name: str = "*"
    attrs: dict[str, str] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> Selector:
        match = _SELECTOR.match(text.strip())
        if match is None:
            raise ValueError(f"bad span selector {text!r}: expected service:name[key=value,...]")
        attrs: dict[str, str] = {}
        for part in filter(None, (p.strip() for p in (match["attrs"] or "").split(","))):
            key, sep, value = part.partition("=")
            if not sep:
                raise ValueError(f"bad attribute filter {part!r} in {text!r}: expected key=value")
            attrs[key.strip()] = value.strip()
        return cls(text.strip(), (match["service"] or "*").strip(), match["name"].strip(), attrs)

    def matches(self, span: TraceSpan) -> bool:
        if not (fnmatchcase(span.service, self.service) and fnmatchcase(span.name, self.name)):
            return False
        for key, expected in self.attrs.items():
            actual: Any = {"kind": span.kind, "status": span.status}.get(
                key, span.attributes.get(key)
            )
            if actual is None or not fnmatchcase(str(actual), expected):
                return False
        return True


def _selector(value: str | Selector) -> Selector:
    return value if isinstance(value, Selector) else Selector.parse(value)


class Trace(Sequence[TraceSpan]):
    """One trace's spans (in start order; a Trace is the sequence of them), with selection
    and structural assertions."""

    def __init__(self, spans: Iterable[TraceSpan], *, related: Iterable[Trace] = ()) -> None:
        self.spans = sorted(spans, key=lambda s: s.start_ns)
        self.trace_id = self.spans[0].trace_id if self.spans else ""
        self.by_id = {s.span_id: s for s in self.spans}
        self.related = list(related)  # printed along on failure (e.g. the session trace)

    @overload
    def __getitem__(self, index: int) -> TraceSpan: ...
    @overload
    def __getitem__(self, index: slice) -> list[TraceSpan]: ...
    def __getitem__(self, index: int | slice) -> TraceSpan | list[TraceSpan]:
        return self.spans[index]

    def __len__(self) -> int:
        return len(self.spans)

    def tree(self) -> str:
        return render_tree(self.spans)

    def fail(self, message: str) -> NoReturn:
        trees = "\n\n".join(t.tree() for t in [self, *self.related])
        raise TraceAssertionError(f"{message}\n\n{trees}")

    def expect(self, condition: bool, message: str) -> None:
        """Fail with `message` and the trace tree(s) unless `condition` holds: for checks the
        structural assertions below do not cover."""
        if not condition:
            self.fail(message)

    # -- selection -------------------------------------------------------------------------

    def select(self, selector: str | Selector) -> list[TraceSpan]:
        sel = _selector(selector)
        return [s for s in self.spans if sel.matches(s)]

    def one(self, selector: str | Selector) -> TraceSpan:
        found = self.select(selector)
        if len(found) != 1:
            self.fail(f"expected exactly one span {_selector(selector).text!r}, found {len(found)}")
        return found[0]

    def children(self, span: TraceSpan) -> list[TraceSpan]:
        return [s for s in self.spans if s.parent_span_id == span.span_id]

    def ancestors(self, span: TraceSpan) -> list[TraceSpan]:
        """The span's parents, nearest first, as far as this trace holds them."""
        out = []
        while span.parent_span_id in self.by_id:
            span = self.by_id[span.parent_span_id]
            out.append(span)
        return out

    def descendants(self, span: TraceSpan) -> list[TraceSpan]:
        out, todo = [], self.children(span)
        while todo:
            child = todo.pop(0)
            out.append(child)
            todo += self.children(child)
        return out

    # -- assertions ------------------------------------------------------------------------

    def assert_count(
        self,
        selector: str | Selector,
        exactly: int | None = None,
        *,
        at_least: int | None = None,
        at_most: int | None = None,
    ) -> list[TraceSpan]:
        found = self.select(selector)
        n, text = len(found), _selector(selector).text
        if exactly is not None and n != exactly:
            self.fail(f"expected {exactly} span(s) {text!r}, found {n}")
        if at_least is not None and n < at_least:
            self.fail(f"expected at least {at_least} span(s) {text!r}, found {n}")
        if at_most is not None and n > at_most:
            self.fail(f"expected at most {at_most} span(s) {text!r}, found {n}")
        return found

    def assert_chain(self, chain: str) -> list[TraceSpan]:
        """A path of spans matching the chain exists; returns it (first match)."""
        parts = _CHAIN_SPLIT.split(chain.strip())
        selectors = [Selector.parse(p) for p in parts[0::2]]
        operators = parts[1::2]
        best: list[TraceSpan] = []

        def extend(path: list[TraceSpan]) -> list[TraceSpan] | None:
            nonlocal best
            if len(path) > len(best):
                best = path
            if len(path) == len(selectors):
                return path
            step = operators[len(path) - 1]
            candidates = self.children(path[-1]) if step == ">" else self.descendants(path[-1])
            for span in candidates:
                if selectors[len(path)].matches(span):
                    found = extend([*path, span])
                    if found:
                        return found
            return None

        for root in self.select(selectors[0]):
            path = extend([root])
            if path:
                return path
        if not best:
            self.fail(f"chain {chain!r}: no span matches {selectors[0].text!r}")
        missing = selectors[len(best)]
        relation = "child" if operators[len(best) - 1] == ">" else "descendant"
        last = best[-1]
        self.fail(
            f"chain {chain!r} breaks after {len(best)} step(s): no {relation} matching "
            f"{missing.text!r} under {last.service} {last.name!r} (span {last.span_id})"
        )

    def assert_attribute(
        self,
        selector: str | Selector,
        key: str,
        expected: Any = None,
        *,
        check: Callable[[Any], bool] | None = None,
    ) -> None:
        """Every span matching `selector` has `key`: equal to `expected` if given, passing
        `check` if given, else merely set."""
        spans = self.select(selector)
        if not spans:
            self.fail(f"no span {_selector(selector).text!r} to check {key!r} on")
        for span in spans:
            value = span.attributes.get(key)
            if check is not None:
                ok, want = check(value), "to pass the check"
            elif expected is not None:
                ok, want = value == expected, repr(expected)
            else:
                ok, want = value is not None, "set"
            if not ok:
                self.fail(f"{span.service} {span.name!r}: {key!r} is {value!r}, expected {want}")

    def assert_everywhere(self, key: str, expected: Any, services: Iterable[str] = ()) -> None:
        """Every span (of `services`, if given) carries `key` = `expected`."""
        wanted = set(services)
        for span in self.spans:
            if wanted and span.service not in wanted:
                continue
            if span.attributes.get(key) != expected:
                self.fail(
                    f"{span.service} {span.name!r} lacks {key}={expected!r} "
                    f"(has {span.attributes.get(key)!r})"
                )

    def assert_duration(
        self, selector: str | Selector, *, max_ms: float | None = None, min_ms: float = 0.0
    ) -> None:
        spans = self.select(selector)
        if not spans:
            self.fail(f"no span {_selector(selector).text!r}")
        for span in spans:
            if span.duration_ms < min_ms or (max_ms is not None and span.duration_ms > max_ms):
                self.fail(
                    f"{span.service} {span.name!r} took {span.duration_ms:.1f} ms, expected "
                    f"{min_ms:.1f}..{'inf' if max_ms is None else f'{max_ms:.1f}'} ms"
                )

    def assert_no_orphans(self) -> None:
        orphans = [s for s in self.spans if s.parent_span_id and s.parent_span_id not in self.by_id]
        if orphans:
            names = ", ".join(f"{s.service} {s.name!r}" for s in orphans)
            self.fail(f"orphan span(s) whose parent is not in the trace: {names}")

    def assert_no_errors(self) -> None:
        errors = [s for s in self.spans if s.status == "ERROR"]
        if errors:
            names = ", ".join(f"{s.service} {s.name!r} ({s.status_message})" for s in errors)
            self.fail(f"error span(s): {names}")

    def assert_linked(
        self, selector: str | Selector, target: Trace, target_selector: str | Selector
    ) -> TraceSpan:
        """A span matching `selector` links to a span of `target` matching `target_selector`."""
        wanted = _selector(target_selector)
        sources = self.select(selector)
        for span in sources:
            for link in span.links:
                linked = target.by_id.get(link.span_id)
                if link.trace_id == target.trace_id and linked and wanted.matches(linked):
                    return linked
        found = (
            "; ".join(
                f"{s.service} {s.name!r} -> "
                + (", ".join(f"{lk.trace_id}/{lk.span_id}" for lk in s.links) or "no links")
                for s in sources
            )
            or f"no span {_selector(selector).text!r}"
        )
        Trace(self.spans, related=[target]).fail(
            f"no link from {_selector(selector).text!r} to {wanted.text!r} in trace "
            f"{target.trace_id} ({found})"
        )


def assert_message_chain(
    message: Trace, session: Trace | None = None, spec: ChainSpec | None = None
) -> None:
    """The message chain covers every layer of the spec (default: this project's four,
    Traefik through the link), with no orphans, and its session trace holds the linked
    spans."""
    sessions = {session.trace_id: session.spans} if session else {}
    related = [session] if session else []

    def lookup(trace_id: str) -> list[TraceSpan]:
        return sessions.get(trace_id, [])

    report = analyze_chain(message.spans, lookup, spec)
    if not report.whole:
        Trace(message.spans, related=related).fail(f"message chain is not whole: {report.status}")
