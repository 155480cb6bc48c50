"""The health check of each layer of a running stack: an HTTP answer of the expected status,
or a TCP connect for what answers no HTTP (the Kafka broker, PostgreSQL)."""

from __future__ import annotations

import socket
from urllib.parse import urlsplit

import httpx

from omni_trace.doctor.report import Check
from omni_trace.stack.info import StackInfo


def _probe_http(name: str, url: str, expect: int = 200) -> Check:
    try:
        status = httpx.get(url, timeout=3).status_code
    except httpx.ConnectError:
        return Check(name, False, f"connection refused ({url})")
    except httpx.TimeoutException:
        return Check(name, False, f"no answer within 3 s: hung? ({url})")
    except httpx.HTTPError as err:
        return Check(name, False, f"{type(err).__name__} ({url})")
    if status == expect:
        return Check(name, True, f"answers {status} ({url})")
    return Check(name, False, f"answers {status}, expected {expect} ({url})")


def layer_checks(info: StackInfo) -> dict[str, Check]:
    return {
        "dashboard": _probe_http("dashboard", f"{info.dashboard_url}/healthz"),
        # Through the real route: 401 proves the router and ForwardAuth -> auth work.
        "traefik": _probe_http("traefik route /ws/chat", f"{info.traefik_url}/ws/chat", 401),
        # Clients without a dashboard: the public entry point, through the gateway's route.
        **(
            {
                "traefik-public": _probe_http(
                    "traefik public entry /ws/chat",
                    f"{info.traefik_public_url}/ws/chat",
                    401,
                )
            }
            if info.traefik_public_url
            else {}
        ),
        "auth": _probe_http("auth service", f"{info.auth_url}/healthz"),
        "omni2": _probe_http("omni2", f"{info.omni2_url}/healthz"),
        "jaeger": _probe_http("jaeger query API", f"{info.jaeger_query_url}/api/services"),
        # The other OMNI2 replicas, each dashboard process behind Traefik's front entry
        # point, and the Kafka trace pipeline's parts.
        **{
            f"omni2-{n}": _probe_http(f"omni2 replica {n}", f"{url}/healthz")
            for n, url in enumerate(info.omni2_replicas[1:], 2)
        },
        **{
            f"dashboard-{n}": _probe_http(f"dashboard replica {n}", f"{url}/healthz")
            for n, url in enumerate(info.dashboard_replicas, 1)
            if len(info.dashboard_replicas) > 1
        },
        **{name: _probe_http(name, url) for name, url in info.jaeger_parts.items()},
        **_otlp_checks(info),
        **_scale_checks(info),
    }


def _otlp_checks(info: StackInfo) -> dict[str, Check]:
    """Both telemetry paths: the public one answers a GET with its receiver's 405 (up, and
    no credential asked); the internal one with 401 (up, and a credential asked: a 405 there
    means anyone could send spans as omni2). With the Kafka pipeline both go through the
    balancer to the collectors. An external Jaeger has one OTLP endpoint: only it is checked."""
    checks = {
        "otlp-public": _probe_http(
            "OTLP public path (browsers)", f"{info.otlp_http_endpoint}/v1/traces", 405
        )
    }
    internal = info.otlp_internal_endpoint
    if internal and internal != info.otlp_http_endpoint:
        check = _probe_http("OTLP internal path (credential)", f"{internal}/v1/traces", 401)
        if not check.ok and "answers 405" in check.detail:
            check.detail = f"takes spans without the credential ({internal}/v1/traces)"
        checks["otlp-internal"] = check
    return checks


def _scale_checks(info: StackInfo) -> dict[str, Check]:
    """What answers no HTTP health check: the Kafka broker and PostgreSQL (a TCP connect),
    and the balancer in front of the collectors (the collectors' own answer through it: 401
    on its internal entry point, which asks for the credential)."""
    checks = {}
    if info.kafka_brokers:
        checks["kafka"] = _probe_tcp("kafka broker", info.kafka_brokers)
        checks["otlp-balancer"] = _probe_http(
            "OTLP balancer -> collectors",
            f"{info.otlp_internal_endpoint or info.otlp_http_endpoint}/v1/traces",
            401 if info.otlp_internal_endpoint else 405,
        )
    database = _postgres_address(info.omni2_database_url)
    if database is not None:
        checks["postgres"] = _probe_tcp("postgresql", database)
    return checks


def _postgres_address(database_url: str) -> str | None:
    """host:port of a PostgreSQL URL (never its password), None for any other database."""
    parts = urlsplit(database_url)
    if not parts.scheme.startswith("postgresql") or not parts.hostname:
        return None
    return f"{parts.hostname}:{parts.port or 5432}"


def _probe_tcp(name: str, address: str) -> Check:
    host, _, port = address.rpartition(":")
    try:
        socket.create_connection((host, int(port)), timeout=3).close()
    except (OSError, ValueError) as err:
        return Check(name, False, f"no TCP connection to {address}: {err}")
    return Check(name, True, f"accepts TCP connections ({address})")
