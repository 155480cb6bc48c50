"""Keep secrets out of spans and logs.

Every exported span is masked by these rules: as our OTLP encoder writes it (`otel.otlp`,
each attribute through `redact_value`, names and descriptions through `redact_text`), and
around any other exporter by `redact_span` (`RedactingSpanExporter`); every log record passes
through `RedactingLogFilter`. So a secret that slips into a URL or a message is caught in one
place.

What counts as a secret (documented in README, "Security"):

- the value of a parameter named in `SECRET_NAMES`, or whose name ends in one of
  `SECRET_SUFFIXES` after a `_`, `-` or `.` (`github_token`, `x-goog-signature`), compared
  case-insensitively after percent-decoding the name (`tok%65n`, `API%5FKEY`): in query strings
  and URLs, in `name=value` pairs anywhere in free text (quoted values too) and in quoted
  dict/JSON pairs (`"password": "..."`);
- `code` (an OAuth authorization code, one exchange away from a token) only as a query
  parameter (`?code=` / `&code=`): in free text `code=1008` is a close or exit code;
- the password of URL userinfo (`scheme://user:REDACTED@host`), or the whole userinfo when it
  has no password (`https://REDACTED@host`: a lone user part is often a token);
- the values of credential headers written out (`Authorization: Basic ...`, `X-Api-Key: ...`),
  `Bearer` values anywhere, and anything shaped like a JWT.
"""

from __future__ import annotations

import functools
import logging
import re
import traceback
from collections.abc import Sequence
from typing import Any
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.trace import Link
from opentelemetry.util.types import Attributes

from otel.names import Attr

REDACTED = "REDACTED"

# Parameter names whose values are secrets: credentials, signatures of signed URLs (S3, GCS,
# Azure SAS `sig`), session ids.
SECRET_NAMES = frozenset(
    {
        "token",
        "access_token",
        "refresh_token",
        "id_token",
        "private_token",
        "jwt",
        "password",
        "passwd",
        "pwd",
        "secret",
        "client_secret",
        "api_key",
        "apikey",
        "api-key",
        "key",
        "auth",
        "authorization",
        "credential",
        "credentials",
        "session",
        "sessionid",
        "sig",
        "signature",
        "x-amz-signature",
        "x-amz-credential",
        "x-amz-security-token",
        "x-goog-signature",
        "x-goog-credential",
    }
)
# `<anything><separator><suffix>` is a secret too: `github_token`, `db-password`.
SECRET_SUFFIXES = tuple(
    sep + suffix
    for suffix in (
        "token",
        "secret",
        "password",
        "passwd",
        "apikey",
        "api_key",
        "api-key",
        "signature",
        "credential",
        "credentials",
    )
    for sep in "_-."
)
# Secrets only as a query parameter: an OAuth authorization code is one, a close code is not.
QUERY_ONLY_SECRET_NAMES = frozenset({"code"})
# Span attributes that hold URLs or query strings.
URL_ATTRIBUTES = frozenset({"url.query", "url.full", "http.url", "http.target", "url.original"})

# name=value, the value bare or quoted; the name may be percent-encoded (tok%65n=...). Each
# pattern starts only where its first part begins (the lookbehinds): tried at every character
# of a long run, it cost quadratic time (8 KiB of letters: 0.4 s).
_PARAM = re.compile(r"""(?<![\w.~%-])([\w.~%-]+)=("[^"\n]*"|'[^'\n]*'|[^&\s"'<>]+)""")
# "name": "value" in dict reprs and JSON.
_QUOTED_PAIR = re.compile(r"""(["'])([\w.~%-]+)\1(\s*:\s*)("[^"\n]*"|'[^'\n]*')""")
# scheme://userinfo@ : no whitespace, path, query or quote inside the userinfo.
_USERINFO = re.compile(r"(?<![A-Za-z0-9+.-])([A-Za-z][A-Za-z0-9+.-]*://)([^\s/?#@\"'<>]+)@")
# Authorization header values
_BEARER = re.compile(r"(?i)\b(bearer)\s+[A-Za-z0-9._~+/=-]+")
# Credential headers written out (`Authorization: Basic ...`, `X-Api-Key: ...`): the value,
# after its scheme word if it has one.
_HEADER_NAMES = (
    r"(?:proxy-)?authorization|x-api-key|api-key|apikey|x-auth-token|x-amz-security-token"
    r"|private-token"
)
_HEADER = re.compile(
    rf"(?i)(?<![\w-])({_HEADER_NAMES})(\s*:\s*)(?!(?:[a-z]+\s+)?REDACTED\b)"
    r"((?:basic|bearer|digest|negotiate|token)\s+)?[^\s,;\"'<>]+"
)
# A JWT anywhere: three base64url parts, the first starting with '{"' encoded.
_JWT = re.compile(r"eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")
_QUERY_SEPARATORS = "?&;"


@functools.lru_cache(maxsize=4096)
def _secret_name(name: str) -> str | None:
    """'always', 'query' (a secret only as a query parameter) or None. Cached: the same few
    names come by on every span, and decoding them is most of the cost."""
    plain = unquote(unquote(name)).strip().lower()
    if plain in SECRET_NAMES or plain.endswith(SECRET_SUFFIXES):
        return "always"
    return "query" if plain in QUERY_ONLY_SECRET_NAMES else None


def is_secret_param(name: str) -> bool:
    """A query parameter whose value is a secret, whatever its case or percent-encoding."""
    return _secret_name(name) is not None


def _mask_param(match: re.Match[str]) -> str:
    kind = _secret_name(match.group(1))
    if kind is None:
        return match.group(0)
    start = match.start()
    if kind == "query" and (start == 0 or match.string[start - 1] not in _QUERY_SEPARATORS):
        return match.group(0)
    return f"{match.group(1)}={_masked(match.group(2))}"


def _mask_quoted_pair(match: re.Match[str]) -> str:
    if _secret_name(match.group(2)) != "always":
        return match.group(0)
    quote, name, colon, value = match.groups()
    return f"{quote}{name}{quote}{colon}{_masked(value)}"


def _masked(value: str) -> str:
    """REDACTED, in the value's own quotes if it had any."""
    return f"{value[0]}{REDACTED}{value[0]}" if value[:1] in ("'", '"') else REDACTED


def _mask_userinfo(userinfo: str) -> str:
    user, colon, _password = userinfo.partition(":")
    return f"{user}:{REDACTED}" if colon else REDACTED


def _mask_url_userinfo(match: re.Match[str]) -> str:
    return f"{match.group(1)}{_mask_userinfo(match.group(2))}@"


def redact_text(text: str) -> str:
    """Mask secrets in free text (log lines, error messages, tracebacks, attribute values)."""
    # Each pattern runs only when the text holds what it needs to match: substring checks
    # rule out most strings (the attributes of nearly every span) at a fraction of the cost
    # of one search with every pattern's prefix.
    lower = text.lower()
    if "@" in text and "://" in text:
        text = _USERINFO.sub(_mask_url_userinfo, text)
    if "=" in text:
        text = _PARAM.sub(_mask_param, text)
    if "bearer" in lower:
        text = _BEARER.sub(rf"\1 {REDACTED}", text)
    if ":" in text:
        if '"' in text or "'" in text:
            text = _QUOTED_PAIR.sub(_mask_quoted_pair, text)
        if "auth" in lower or "key" in lower or "token" in lower:
            text = _HEADER.sub(rf"\1\2\3{REDACTED}", text)
    return _JWT.sub(REDACTED, text) if "eyJ" in text else text


def redact_query(query: str) -> str:
    """Mask the values of secret parameters in a query string."""
    pairs = parse_qsl(query, keep_blank_values=True)
    return urlencode([(k, REDACTED if is_secret_param(k) else v) for k, v in pairs])


def redact_url(url: str) -> str:
    """Mask secret query values and the userinfo's password in a URL."""
    parts = urlsplit(url)
    userinfo, at, host = parts.netloc.rpartition("@")
    netloc = f"{_mask_userinfo(userinfo)}@{host}" if at else host
    return urlunsplit((parts.scheme, netloc, parts.path, redact_query(parts.query), ""))


def peer_attributes(url: str) -> dict[str, str | int]:
    """A CLIENT span's `url.full` (redacted), `server.address` and `server.port` for `url`."""
    parts = urlsplit(url)
    secure = parts.scheme in ("https", "wss")
    return {
        Attr.URL_FULL: redact_url(url),
        Attr.SERVER_ADDRESS: parts.hostname or "",
        Attr.SERVER_PORT: parts.port or (443 if secure else 80),
    }


def _redact_url_value(key: str, value: str) -> str:
    # Only a query or a userinfo can hold a secret: skip parsing clean URLs (most spans).
    if key == "url.query":
        return redact_query(value) if "=" in value else value
    if "?" in value or "@" in value or "#" in value:
        return redact_url(value)
    return value


def redact_value(key: str, value: object) -> object:
    """An attribute's value with secrets masked (the same object when it held none)."""
    if isinstance(value, str):
        if key in URL_ATTRIBUTES:
            value = _redact_url_value(key, value)
        return redact_text(value)
    if isinstance(value, tuple | list) and any(isinstance(v, str) for v in value):
        return tuple(redact_text(v) if isinstance(v, str) else v for v in value)
    return value


def redact_attributes(attributes: Attributes) -> Attributes:
    """Attributes with secrets masked in string values and string lists; the same mapping
    when there was nothing to mask (most spans), so clean spans are not copied."""
    if not attributes:
        return attributes
    changed: dict[str, Any] = {}
    for key, value in attributes.items():
        cleaned = redact_value(key, value)
        if cleaned != value:
            changed[key] = cleaned
    return {**attributes, **changed} if changed else attributes


class _ResourceCache:
    """Resources are shared by every span of a provider: redact each one once."""

    def __init__(self) -> None:
        self._resource: Resource | None = None
        self._redacted: Resource | None = None

    def redacted(self, resource: Resource) -> Resource:
        if resource is not self._resource:
            attributes = redact_attributes(resource.attributes)
            cleaned = (
                resource
                if attributes is resource.attributes
                else Resource(attributes, resource.schema_url)  # type: ignore[arg-type]
            )
            self._resource, self._redacted = resource, cleaned
        assert self._redacted is not None
        return self._redacted


_RESOURCES = _ResourceCache()


def _redact_event(event: Event) -> Event:
    attributes = redact_attributes(event.attributes)
    name = redact_text(event.name)
    if attributes is event.attributes and name == event.name:
        return event
    return Event(name, attributes, event.timestamp)


def _redact_link(link: Link) -> Link:
    attributes = redact_attributes(link.attributes)
    return link if attributes is link.attributes else Link(link.context, attributes)


def redact_span(span: ReadableSpan) -> ReadableSpan:
    """`span` with secrets masked in its name, attributes, events, links, resource and
    status: a copy when anything had to be masked, else the span itself (the profile under
    load showed a copy of every span as a share of export's cost)."""
    # Each property returns a new view: read each once, and compare with what was read.
    original_attributes, original_events, original_links = span.attributes, span.events, span.links
    attributes = redact_attributes(original_attributes)
    events = [_redact_event(event) for event in original_events]
    links = [_redact_link(link) for link in original_links]
    resource = _RESOURCES.redacted(span.resource)
    name = redact_text(span.name)
    status = span.status
    if status.description and (text := redact_text(status.description)) != status.description:
        status = type(status)(status.status_code, text)
    unchanged = (
        attributes is original_attributes
        and name == span.name
        and resource is span.resource
        and status is span.status
        and all(new is old for new, old in zip(events, original_events, strict=True))
        and all(new is old for new, old in zip(links, original_links, strict=True))
    )
    if unchanged:
        return span
    return ReadableSpan(
        name=name,
        context=span.context,
        parent=span.parent,
        resource=resource,
        attributes=attributes,
        events=events,
        links=links,
        kind=span.kind,
        status=status,
        start_time=span.start_time,
        end_time=span.end_time,
        instrumentation_scope=span.instrumentation_scope,
    )


class RedactingSpanExporter(SpanExporter):
    """Wraps an exporter and masks secrets in every span before it leaves the process."""

    def __init__(self, inner: SpanExporter) -> None:
        self._inner = inner

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return self._inner.export([redact_span(s) for s in spans])

    def shutdown(self) -> None:
        self._inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self._inner.force_flush(timeout_millis)


class RedactingLogFilter(logging.Filter):
    """Rewrites each record's message, traceback and stack with secrets masked (attach it to
    handlers): an exception's text can hold a URL with a token as easily as a message can."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact_text(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        if record.exc_info and not record.exc_text:
            # Formatters print exc_text when it is set, so the raw traceback never is.
            record.exc_text = redact_text(
                "".join(traceback.format_exception(*record.exc_info)).rstrip("\n")
            )
        elif record.exc_text:
            record.exc_text = redact_text(record.exc_text)
        if record.stack_info:
            record.stack_info = redact_text(record.stack_info)
        return True
