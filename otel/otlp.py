"""OTLP/HTTP export with a direct protobuf encoder that masks secrets as it writes.

The SDK's exporter builds a protobuf object per span, attribute and value, then serialises
them; under load that encoding was most of the span export's cost and the largest tracing
cost in OMNI2's profile (docs/performance.md). `encode_spans` writes the same bytes directly
(tests check that they decode to exactly the SDK's request of the redacted spans), and
`OtlpSpanExporter` is the SDK's OTLP/HTTP exporter (endpoint, headers, timeout, retries,
`OTEL_EXPORTER_OTLP_*`) with that encoder in place of the SDK's. A span is encoded on its own
(`encode_span`), so it can be encoded as it ends and its request built from bytes later
(`otel.export`).

Redaction (`otel.redaction`'s rules) happens here, value by value, rather than on a copy of
the span before it: an encoded attribute is kept for reuse (the same conversation id on each
of its spans), so a repeated value is masked once, not once per span, and the span's
attributes and events are read once.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExportResult
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext

from otel.redaction import redact_text, redact_value

log = logging.getLogger(__name__)

_fixed64 = struct.Struct("<Q").pack
_fixed32 = struct.Struct("<I").pack
_double = struct.Struct("<d").pack
_SMALL = [bytes((n,)) for n in range(128)]  # one-byte varints
_HAS_IS_REMOTE, _IS_REMOTE = 0x100, 0x200  # SpanFlags


def _varint(n: int) -> bytes:
    if 0 <= n < 128:
        return _SMALL[n]
    if n < 0:
        n += 1 << 64  # int64: two's complement, ten bytes
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _field(tag: bytes, payload: bytes) -> bytes:
    """A length-delimited field; `tag` is its key byte(s)."""
    return tag + _varint(len(payload)) + payload


def _text(tag: bytes, text: str) -> bytes:
    return _field(tag, text.encode())


def _value(value: Any) -> bytes:
    """An AnyValue, as the SDK encodes each type."""
    if isinstance(value, bool):
        return b"\x10\x01" if value else b"\x10\x00"
    if isinstance(value, str):
        return _text(b"\x0a", value)
    if isinstance(value, int):
        return b"\x18" + _varint(value)
    if isinstance(value, float):
        return b"\x21" + _double(value)
    if isinstance(value, bytes):
        return _field(b"\x3a", value)
    if isinstance(value, Sequence):
        return _field(b"\x2a", b"".join(_field(b"\x0a", _value(v)) for v in value))
    if isinstance(value, Mapping):
        pairs = b"".join(_field(b"\x0a", _key_value(str(k), v)) for k, v in value.items())
        return _field(b"\x32", pairs)
    raise TypeError(f"cannot encode attribute value of type {type(value).__name__}")


_KEYS: dict[str, bytes] = {}  # attribute names repeat: each encoded once
# Whole attributes repeat too (a conversation's id on each of its spans, a check's name): the
# encoded (and redacted) pair of a scalar value is kept, keyed by its type as well (True == 1).
_PAIRS: dict[tuple[bytes, str, type, Any], bytes] = {}
_SCALARS = (str, bool, int, float)
_MAX_CACHED_TEXT = 256


def _key_value(key: str, value: Any) -> bytes:
    """A KeyValue, its value redacted."""
    value = redact_value(key, value)
    encoded = _KEYS.get(key)
    if encoded is None:
        if len(_KEYS) >= 4096:  # bounded: keys are ours, but not only ours
            _KEYS.clear()
        encoded = _KEYS[key] = _text(b"\x0a", key)
    return encoded + _field(b"\x12", _value(value))


def _attribute(tag: bytes, key: str, value: Any) -> bytes:
    kind = type(value)
    if kind not in _SCALARS or (kind is str and len(value) > _MAX_CACHED_TEXT):
        return _field(tag, _key_value(key, value))
    cache_key = (tag, key, kind, value)
    encoded = _PAIRS.get(cache_key)
    if encoded is None:
        if len(_PAIRS) >= 4096:  # bounded: values come from outside
            _PAIRS.clear()
        encoded = _PAIRS[cache_key] = _field(tag, _key_value(key, value))
    return encoded


def _attributes(tag: bytes, attributes: Mapping[str, Any] | None) -> bytes:
    if not attributes:
        return b""
    return b"".join([_attribute(tag, k, v) for k, v in attributes.items()])


def _count(tag: bytes, n: int) -> bytes:
    return tag + _varint(n) if n else b""


def _trace_state(context: SpanContext) -> bytes:
    state = context.trace_state
    return _text(b"\x1a", ",".join(f"{k}={v}" for k, v in state.items())) if state else b""


def _span(span: ReadableSpan) -> bytes:
    context, parent = span.get_span_context(), span.parent
    if context is None:
        raise TypeError(f"span {span.name!r} has no span context")
    parts = [
        b"\x0a\x10" + context.trace_id.to_bytes(16, "big"),
        b"\x12\x08" + context.span_id.to_bytes(8, "big"),
        _trace_state(context),
        b"\x22\x08" + parent.span_id.to_bytes(8, "big") if parent is not None else b"",
        _text(b"\x2a", redact_text(span.name)),
        b"\x30" + _SMALL[span.kind.value + 1],  # the SDK's kinds start at 0, OTLP's at 1
        b"\x39" + _fixed64(span.start_time or 0),
        b"\x41" + _fixed64(span.end_time or 0),
        _attributes(b"\x4a", span.attributes),
        _count(b"\x50", span.dropped_attributes),
    ]
    for event in span.events:
        body = (
            b"\x09"
            + _fixed64(event.timestamp)
            + _text(b"\x12", redact_text(event.name))
            + _attributes(b"\x1a", event.attributes)
            + _count(b"\x20", event.dropped_attributes)
        )
        parts.append(_field(b"\x5a", body))
    parts.append(_count(b"\x60", span.dropped_events))
    for link in span.links:  # without the linked trace state, as the SDK
        linked = link.context
        body = (
            b"\x0a\x10"
            + linked.trace_id.to_bytes(16, "big")
            + b"\x12\x08"
            + linked.span_id.to_bytes(8, "big")
            + _attributes(b"\x22", link.attributes)
            + _count(b"\x28", link.dropped_attributes)
            + b"\x35"
            + _fixed32(_HAS_IS_REMOTE | (_IS_REMOTE if linked.is_remote else 0))
        )
        parts.append(_field(b"\x6a", body))
    parts.append(_count(b"\x70", span.dropped_links))
    status = span.status
    if status is not None:
        description = redact_text(status.description) if status.description else ""
        body = (_text(b"\x12", description) if description else b"") + (
            b"\x18" + _SMALL[status.status_code.value] if status.status_code.value else b""
        )
        parts.append(_field(b"\x7a", body))
    flags = _HAS_IS_REMOTE | (_IS_REMOTE if parent is not None and parent.is_remote else 0)
    parts.append(b"\x85\x01" + _fixed32(flags))
    return b"".join(parts)


def _scope(scope: InstrumentationScope | None) -> bytes:
    if scope is None:
        return _field(b"\x0a", b"")
    body = (
        (_text(b"\x0a", scope.name) if scope.name else b"")
        + (_text(b"\x12", scope.version) if scope.version else b"")
        + _attributes(b"\x1a", scope.attributes)
    )
    return _field(b"\x0a", body)


@dataclass(frozen=True, slots=True)
class EncodedSpan:
    """One span's OTLP bytes, with the resource and scope its request groups it under."""

    resource: Resource
    scope: InstrumentationScope | None
    data: bytes


def encode_span(span: ReadableSpan) -> EncodedSpan:
    """One span's bytes, secrets masked."""
    return EncodedSpan(span.resource, span.instrumentation_scope or None, _span(span))


def encode_request(spans: Sequence[EncodedSpan]) -> bytes:
    """An ExportTraceServiceRequest: spans grouped by resource, then by scope (as the SDK)."""
    # By identity: a Resource's hash serialises its attributes to JSON, and a process has
    # one or two resource objects.
    grouped: dict[int, tuple[Resource, dict[InstrumentationScope | None, list[bytes]]]] = {}
    for span in spans:
        _, by_scope = grouped.setdefault(id(span.resource), (span.resource, {}))
        by_scope.setdefault(span.scope, []).append(span.data)
    requests = []
    for resource, by_scope in grouped.values():
        body = [_field(b"\x0a", _attributes(b"\x0a", resource.attributes))]
        for scope, encoded in by_scope.items():
            scope_spans = _scope(scope) + b"".join(_field(b"\x12", s) for s in encoded)
            if scope is not None and scope.schema_url:
                scope_spans += _text(b"\x1a", scope.schema_url)
            body.append(_field(b"\x12", scope_spans))
        if resource.schema_url:
            body.append(_text(b"\x1a", resource.schema_url))
        requests.append(_field(b"\x0a", b"".join(body)))
    return b"".join(requests)


def encode_spans(spans: Sequence[ReadableSpan]) -> bytes:
    """An ExportTraceServiceRequest of `spans`, secrets masked."""
    return encode_request([encode_span(span) for span in spans])


class OtlpSpanExporter(OTLPSpanExporter):
    """The SDK's OTLP/HTTP span exporter, encoding with `encode_spans`."""

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        try:
            data = encode_spans(spans)
        except Exception as err:  # a span we cannot encode loses its batch, not the process
            log.error("Failed to encode span batch: %s", err)
            return SpanExportResult.FAILURE
        return self.send(data)

    def send(self, data: bytes) -> SpanExportResult:
        """Send one encoded request (with the SDK's retries and timeout)."""
        if self._shutdown:
            log.warning("Exporter already shutdown, ignoring batch")
            return SpanExportResult.FAILURE
        if 0 < self._max_request_size < len(data):
            log.warning("Dropping span batch: %d bytes exceeds the maximum request", len(data))
            return SpanExportResult.FAILURE
        return (
            SpanExportResult.SUCCESS
            if self._client.export(data).success
            else SpanExportResult.FAILURE
        )
