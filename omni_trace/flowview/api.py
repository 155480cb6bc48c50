"""The flow view's JSON API (read-only, over Jaeger's query API).

    GET /api/conversations?user=&since=&page=&page_size=   newest first
    GET /api/conversations/{conversation_id}               its messages and session traces
    GET /api/traces/{trace_id}                             spans, and the traces they link to
    GET /api/search?q=                                     where a pasted id leads
    GET /api/diff?a=&b=                                    two message traces compared
    GET /api/hops?minutes=15                               p50/p95 per layer, error ratios,
                                                           GenAI first token / per chunk
    GET /api/config                                        the page's links (a Jaeger UI) and
                                                           the chain spec's layers and hops
    GET /metrics                                           the audit's verdicts, for Prometheus
    GET /                                                  the page (frontend/src/flow.ts)

Every answer passes through its model (`models`), from which the page's types are generated
(scripts/flow-types). Every parameter is checked before Jaeger is asked (400 with the
reason); Jaeger unreachable is a 503 that says so. Nothing here reads or returns a token:
the spans were redacted before they left each service.

Only the names in `allowed_hosts` are answered (421), with `access_token` only who presents
it (401); at most `max_audits` requests read Jaeger at once (503 with Retry-After), and a
settled message is analysed once for every page and scrape (`guard`, `data.VerdictCache`);
a scrape judges only the messages that settled since the last one (`ledger`).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from omni_trace.flowview.data import (
    BadQuery,
    FlowData,
    Page,
    VerdictCache,
    name,
    since,
    trace_id,
)
from omni_trace.flowview.guard import RETRY_AFTER_S, AuditLimiter, Busy, Guard
from omni_trace.flowview.hops import NO_PROMETHEUS, HopMetrics, MetricsUnavailable
from omni_trace.flowview.metrics import CONTENT_TYPE, AuditMetrics
from omni_trace.flowview.models import (
    Config,
    ConversationDetail,
    Conversations,
    Hops,
    Model,
    SearchResult,
    Trace,
    TraceDiff,
    spec_info,
)
from omni_trace.stack.paths import FRONTEND_DIST
from omni_trace.stack.ports import LOOPBACK_HOSTS
from omni_trace.traces.jaeger import JaegerClient, JaegerError
from omni_trace.traces.spec import ChainSpec

# Every answer passes through its model (omni_trace/flowview/models.py), the page's types'
# source: a key or a type the model does not know fails here, not silently on the page.
Handler = Callable[[Request, FlowData], Model]


class NotFound(Exception):
    """Answered with 404 and this text (not LookupError: a KeyError is a bug, not a 404)."""


def _number(request: Request, key: str, default: float) -> float:
    raw = request.query_params.get(key)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise BadQuery(f"{key}: a number") from None
    if not math.isfinite(value):
        raise BadQuery(f"{key}: a finite number")
    return value


def _conversations(request: Request, data: FlowData) -> Conversations:
    user = request.query_params.get("user") or None
    found = data.conversations(
        user_id=name(user, "user") if user else None,
        since_s=since(_number(request, "since", 3600)),
        page=Page(int(_number(request, "page", 0)), int(_number(request, "page_size", 50))),
    )
    return Conversations.model_validate(found)


def _conversation(request: Request, data: FlowData) -> ConversationDetail:
    conversation_id = name(request.path_params["conversation_id"], "conversation id")
    found = data.conversation(conversation_id)
    if not found["messages"]:
        raise NotFound(f"no messages of conversation {conversation_id} in Jaeger")
    return ConversationDetail.model_validate(found)


def _trace(request: Request, data: FlowData) -> Trace:
    found = data.trace(trace_id(request.path_params["trace_id"]))
    if not found["spans"]:
        raise NotFound(f"trace {found['trace_id']} is not in Jaeger (yet)")
    return Trace.model_validate(found)


def _diff(request: Request, data: FlowData) -> TraceDiff:
    a = trace_id(request.query_params.get("a", ""))
    b = trace_id(request.query_params.get("b", ""))
    found = data.diff(a, b)
    if "missing" in found:
        raise NotFound(f"trace {', '.join(found['missing'])} is not in Jaeger (yet)")
    return TraceDiff.model_validate(found)


def _search(request: Request, data: FlowData) -> SearchResult:
    found = data.search(request.query_params.get("q", ""))
    if found["view"] is None:
        raise NotFound(found["error"])
    return SearchResult.model_validate(found)


async def _healthz(_: Request) -> JSONResponse:
    return JSONResponse({"status": "ok"})


# The page's files in frontend/dist (built with the chat page by scripts/bootstrap); "/" is
# the page. Nothing else of dist is served here.
PAGE_FILES = {
    "": ("flow.html", "text/html"),
    "flow.js": ("flow.js", "text/javascript"),
    "flow.js.map": ("flow.js.map", "application/json"),
    "flow.css": ("flow.css", "text/css"),
    "style.css": ("style.css", "text/css"),
}


def _pages(dist: Path) -> Callable[[Request], Awaitable[Response]]:
    async def page(request: Request) -> Response:
        name = request.path_params.get("name", "")
        if name not in PAGE_FILES:
            return JSONResponse({"error": f"no such file: /{name}"}, status_code=404)
        file, media_type = PAGE_FILES[name]
        path = dist / file
        if not path.is_file():
            return PlainTextResponse(
                f"The flow view's page is not built ({path}): run scripts/bootstrap (or: cd "
                "frontend && npm ci && npm run build). The JSON API works: /api/conversations",
                status_code=503,
            )
        return FileResponse(path, media_type=media_type)

    return page


def _endpoint(
    handler: Handler, data: FlowData, limiter: AuditLimiter | None
) -> Callable[[Request], Awaitable[Response]]:
    """`handler` as a route: its model's JSON, or the error's answer (400, 404, 503)."""

    def answer(request: Request, data: FlowData) -> dict[str, Any]:
        return handler(request, data).answer()

    async def respond(request: Request) -> Response:
        try:
            # The Jaeger client is synchronous (and a long answer's checks take a while):
            # keep the event loop free.
            if limiter is not None:
                found = await run_in_threadpool(limiter.run, answer, request, data)
            else:
                found = await run_in_threadpool(answer, request, data)
            return JSONResponse(found)
        except Busy as err:
            return _busy(err)
        except BadQuery as err:
            return JSONResponse({"error": str(err)}, status_code=400)
        except NotFound as err:
            return JSONResponse({"error": str(err)}, status_code=404)
        except (JaegerError, MetricsUnavailable) as err:
            return JSONResponse({"error": str(err)}, status_code=503)
        except httpx.HTTPStatusError as err:
            status = err.response.status_code
            message = f"Jaeger's query API answered {status} for {err.request.url.path}"
            return JSONResponse({"error": message}, status_code=503)

    return respond


def _busy(err: Busy, json: bool = True) -> Response:
    headers = {"Retry-After": str(RETRY_AFTER_S)}
    if json:
        return JSONResponse({"error": str(err)}, status_code=503, headers=headers)
    return PlainTextResponse(str(err), status_code=503, headers=headers)


# Connections to Jaeger: an update's searches (one at a time) and reads by id (8 at a time)
# share a few, kept from one Prometheus scrape to the next (every 15 s; httpx closes idle ones
# after 5 s by default). Only if Jaeger keeps them: its query server (1.76) closes each after
# its answer ("Connection: close") unless its `jaeger_query.http` config sets
# `keep_alives_enabled: true` (then it keeps idle ones with no timeout).
JAEGER_LIMITS = httpx.Limits(max_connections=100, max_keepalive_connections=20, keepalive_expiry=60)


def create_app(
    jaeger_query_url: str,
    prometheus_url: str | None = None,
    *,
    dist_dir: Path = FRONTEND_DIST,
    jaeger_ui_url: str | None = None,
    allowed_hosts: Iterable[str] = LOOPBACK_HOSTS,
    access_token: str | None = None,
    max_audits: int = 3,
    verdict_cache: int = 10_000,
    spec: ChainSpec | None = None,
) -> Starlette:
    """`jaeger_ui_url`: a Jaeger with its web UI, which the page links each trace to;
    `allowed_hosts`, `access_token`, `max_audits`, `verdict_cache`: FlowViewSettings';
    `spec`: the chain spec the view judges messages by (the default one if none)."""
    jaeger = JaegerClient(jaeger_query_url, limits=JAEGER_LIMITS)
    data = FlowData(jaeger, VerdictCache(verdict_cache), spec)
    metrics = HopMetrics(prometheus_url) if prometheus_url else None
    audit_metrics = AuditMetrics(data.auditor)
    limiter = AuditLimiter(max_audits)

    # The spec the view judges by (FlowData's audit), so that the page heads its hop columns
    # with the spec's layers, and marks model and tool spans by it (Span.role), instead of
    # names of its own.
    page_config = Config(jaeger_ui_url=jaeger_ui_url, spec=spec_info(data.spec)).answer()

    async def config(_: Request) -> JSONResponse:
        return JSONResponse(page_config)

    async def exposition(_: Request) -> Response:
        try:
            counts = await run_in_threadpool(limiter.run, audit_metrics.counts)
        except Busy as err:
            return _busy(err, json=False)
        # Jaeger unreachable: the counters so far, and `omni_trace_audit_update_failed` 1.
        return PlainTextResponse(counts.exposition(), media_type=CONTENT_TYPE)

    def hops(request: Request, _: FlowData) -> Hops:
        minutes = _number(request, "minutes", 15)
        if not 1 <= minutes <= 24 * 60:
            raise BadQuery("minutes: 1..1440")
        if metrics is None:
            return Hops(available=False, hint=NO_PROMETHEUS)
        return Hops.model_validate(metrics.hops(minutes))

    def endpoint(
        handler: Handler, limited: bool = True
    ) -> Callable[[Request], Awaitable[Response]]:
        # Prometheus, not Jaeger, takes no audit slot.
        return _endpoint(handler, data, limiter if limited else None)

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        yield
        jaeger.close()
        if metrics is not None:
            metrics.close()

    return Starlette(
        lifespan=lifespan,
        middleware=[
            Middleware(Guard, allowed_hosts=list(allowed_hosts), access_token=access_token)
        ],
        routes=[
            Route("/api/conversations", endpoint(_conversations)),
            Route("/api/conversations/{conversation_id}", endpoint(_conversation)),
            Route("/api/traces/{trace_id}", endpoint(_trace)),
            Route("/api/search", endpoint(_search)),
            Route("/api/diff", endpoint(_diff)),
            Route("/api/hops", endpoint(hops, limited=False)),
            Route("/metrics", exposition),
            Route("/api/config", config),
            Route("/healthz", _healthz),
            Route("/", _pages(dist_dir)),
            Route("/{name}", _pages(dist_dir)),
        ],
    )
