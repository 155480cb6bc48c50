"""Port plan of a stack: the defaults of the seed, or free ones so runs never collide."""

from __future__ import annotations

import fcntl
import ipaddress
import json
import os
import random
import socket
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, fields
from pathlib import Path


@dataclass(frozen=True)
class Ports:
    dashboard: int = 8091
    traefik: int = 8090
    traefik_public: int = 8089  # Traefik's public entry point (clients without a dashboard)
    auth: int = 8700
    omni2: int = 8000
    otlp_http: int = 4318
    otlp_grpc: int = 4317
    jaeger_query: int = 16686
    jaeger_query_grpc: int = 16685
    jaeger_health: int = 13133
    frontend: int = 3001
    mcp_tools: int = 8765
    flowview: int = 16687
    jaeger_metrics: int = 8889
    prometheus: int = 16688
    # UDP: Jaeger's `jaeger` receiver (thrift compact), which jaeger-client reporters use.
    jaeger_thrift_compact: int = 6831
    # The Kafka trace pipeline (trace_pipeline=kafka): otlp_* and jaeger_health are the first
    # collector's, jaeger_query* the query service's.
    kafka: int = 9092
    kafka_controller: int = 9093
    collector2_otlp_http: int = 4328
    collector2_otlp_grpc: int = 4327
    collector2_health: int = 13134
    ingester1_health: int = 13135
    ingester2_health: int = 13136
    jaeger_storage: int = 17271  # remote_storage: reads
    jaeger_storage_writer: int = 4316  # OTLP/gRPC: writes
    jaeger_storage_health: int = 13137
    jaeger_query_health: int = 13138
    postgres: int = 15432  # the runner's PostgreSQL (database=postgres)
    omni2_2: int = 8002  # the second OMNI2 replica (omni2_replicas=2)
    # With dashboard_replicas=2, `dashboard` is Traefik's front entry point and these the
    # dashboard processes behind it.
    dashboard_1: int = 8092
    dashboard_2: int = 8093
    # The Kafka pipeline's first collector (OTLP/HTTP); otlp_http is then the balancer
    # in front of both collectors.
    collector1_otlp_http: int = 4338
    collector2_metrics: int = 8890  # the second collector's Prometheus exporter
    collector2_thrift_compact: int = 6832  # UDP, the second collector's `jaeger` receiver
    # The public OTLP/HTTP path (browsers and chat clients: traces only, client services only;
    # otlp_http/otlp_grpc are then the internal path, with the credential). With the Kafka
    # pipeline, the balancer's public entry point.
    otlp_public_http: int = 4319
    # Jaeger's own telemetry for Prometheus (the spans its filters refused); with the Kafka
    # pipeline, the first collector's.
    jaeger_telemetry: int = 8888
    # The Kafka pipeline: each collector's public receiver, and the second one's telemetry.
    collector1_otlp_public_http: int = 4339
    collector2_otlp_public_http: int = 4329
    collector2_telemetry: int = 8891

    @classmethod
    def free(cls, host: str = "127.0.0.1") -> Ports:
        """Distinct free ports, reserved for a while (see `free_ports`)."""
        return cls(*free_ports(len(fields(cls)), host))


# Free ports come from below the kernel's ephemeral range, where no outgoing connection can
# take one between its choice and the service binding it (seconds later, once the process
# has started), and are reserved for RESERVE_S in a per-user file: stacks started at the same
# time (tests on several workers, two `up --free-ports`) never choose the same ones.
RESERVE_S = 300.0
LOWEST_PORT = 10_000
_EPHEMERAL = Path("/proc/sys/net/ipv4/ip_local_port_range")


def free_port(host: str = "127.0.0.1") -> int:
    """One free port, reserved as `free_ports` reserves them."""
    return free_ports(1, host)[0]


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """`count` distinct ports free on `host` now (each held open while choosing), below the
    ephemeral range, none that this user reserved in the last RESERVE_S; falls back to ports
    the OS picks when the range below is too small."""
    lowest, ephemeral = LOWEST_PORT, _ephemeral_start()
    if ephemeral - lowest < count * 16:
        return _os_chosen(count, host)
    with ExitStack() as held, _reservations() as reserved:
        now = time.time()
        for port in [p for p, until in reserved.items() if until <= now]:
            del reserved[port]
        chosen: list[int] = []
        for _ in range(count * 64):
            port = random.randrange(lowest, ephemeral)
            if port in reserved or port in chosen:
                continue
            sock = held.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            try:
                sock.bind((host, port))
            except OSError:
                continue
            chosen.append(port)
            if len(chosen) == count:
                reserved.update(dict.fromkeys(chosen, now + RESERVE_S))
                return chosen
    raise OSError(
        f"found {len(chosen)} of {count} free ports on {host} in {lowest}-{ephemeral - 1}"
    )


def _ephemeral_start() -> int:
    """The first port the kernel hands out for bind(0) and outgoing connections."""
    try:
        return int(_EPHEMERAL.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default


def _os_chosen(count: int, host: str) -> list[int]:
    with ExitStack() as held:
        sockets = [
            held.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            for _ in range(count)
        ]
        for sock in sockets:
            sock.bind((host, 0))
        return [int(sock.getsockname()[1]) for sock in sockets]


@contextmanager
def _reservations() -> Iterator[dict[int, float]]:
    """This user's reserved ports (port: until when), read and written back under a lock.
    The file is the user's own (0600, not followed if a link); unreadable content is
    treated as no reservation."""
    path = Path(tempfile.gettempdir()) / f"omni-trace-ports-{os.getuid()}.json"
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "r+") as file:
        fcntl.flock(file, fcntl.LOCK_EX)
        try:
            loaded = json.loads(file.read() or "{}")
            reserved = {int(p): float(u) for p, u in loaded.items()}
        except (ValueError, TypeError, AttributeError):
            reserved = {}
        yield reserved
        file.seek(0)
        file.truncate()
        file.write(json.dumps({str(p): u for p, u in reserved.items()}))


# Ports only the runner's PostgreSQL uses, and only the Kafka trace pipeline (`omni-trace up`
# checks them only for those).
POSTGRES_PORTS = frozenset({"postgres"})
REPLICA_PORTS = frozenset({"omni2_2"})
DASHBOARD_REPLICA_PORTS = frozenset({"dashboard_1", "dashboard_2"})
PIPELINE_PORTS = frozenset(
    {
        "kafka",
        "kafka_controller",
        "collector1_otlp_http",
        "collector2_metrics",
        "collector2_thrift_compact",
        "collector1_otlp_public_http",
        "collector2_otlp_public_http",
        "collector2_telemetry",
        "collector2_otlp_http",
        "collector2_otlp_grpc",
        "collector2_health",
        "ingester1_health",
        "ingester2_health",
        "jaeger_storage",
        "jaeger_storage_writer",
        "jaeger_storage_health",
        "jaeger_query_health",
    }
)


# Ports only our own Jaeger listens on (not checked with an external one).
JAEGER_PORTS = frozenset(
    {
        "otlp_http",
        "otlp_grpc",
        "otlp_public_http",
        "jaeger_query",
        "jaeger_query_grpc",
        "jaeger_health",
        "jaeger_metrics",
        "jaeger_telemetry",
    }
)


def busy_ports(ports: Ports, host: str = "127.0.0.1", skip: set[str] | None = None) -> list[str]:
    """Names of the ports that something already listens on."""
    busy = []
    for f in fields(ports):
        if skip and f.name in skip:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((host, getattr(ports, f.name)))
            except OSError:
                busy.append(f"{f.name} ({getattr(ports, f.name)})")
    return busy


LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


def is_loopback(host: str) -> bool:
    """Only this machine can connect: `localhost` or a loopback address (0.0.0.0 is not)."""
    host = host.strip("[]").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
