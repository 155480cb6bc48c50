"""Where the traces go: the one Jaeger (trace_pipeline=memory), or the Kafka trace pipeline
(trace_pipeline=kafka): Kafka and Jaeger's scale-out roles, all from the one Jaeger binary,
with a Traefik balancing the OTLP paths over the collectors. The JAEGER_* names are those the
configs under config/jaeger read (omni_trace/stack/environment.py checks what they take)."""

from __future__ import annotations

import base64
import hashlib
from urllib.parse import urlsplit

from omni_trace.stack.configs import jaeger_ui_config_file, otlp_balancer_config
from omni_trace.stack.jaeger_build import ensure_jaeger
from omni_trace.stack.kafka import (
    TOPIC,
    broker_command,
    broker_properties,
    ensure_kafka,
    format_storage,
)
from omni_trace.stack.paths import CONFIG_DIR
from omni_trace.stack.plan.process import Process, Ready, all_ready, http_ok, http_status, tcp_open
from omni_trace.stack.plan.run import OTLP_USER, Run

_SCALE = CONFIG_DIR / "jaeger" / "scale"


def jaeger(run: Run) -> Process:
    """The one Jaeger: both OTLP paths, the query API, Badger in memory."""
    host, p, info = run.host, run.ports, run.info
    binary = ensure_jaeger(run.progress, run.settings.jaeger_bin)
    return Process(
        "jaeger",
        [str(binary), f"--config={CONFIG_DIR / 'jaeger' / 'config.yaml'}"],
        {
            **paths_env(run),
            "JAEGER_OTLP_HTTP": f"{host}:{p.otlp_http}",
            "JAEGER_OTLP_GRPC": f"{host}:{p.otlp_grpc}",
            "JAEGER_OTLP_PUBLIC_HTTP": f"{host}:{p.otlp_public_http}",
            "JAEGER_QUERY_HTTP": f"{host}:{p.jaeger_query}",
            "JAEGER_QUERY_GRPC": f"{host}:{p.jaeger_query_grpc}",
            "JAEGER_HEALTH": f"{host}:{p.jaeger_health}",
            "JAEGER_METRICS": f"{host}:{p.jaeger_metrics}",
            "JAEGER_TELEMETRY_HOST": host,
            "JAEGER_TELEMETRY_PORT": str(p.jaeger_telemetry),
            "JAEGER_THRIFT_COMPACT": info.jaeger_thrift_compact,
            "JAEGER_UI_CONFIG": jaeger_ui_config_file(run),
            "JAEGER_MAX_TRACES": str(run.settings.jaeger_max_traces),
        },
        http_ok(f"{info.jaeger_query_url}/api/services"),
    )


def paths_env(run: Run) -> dict[str, str]:
    """What every Jaeger process with the two paths (the one Jaeger, each collector) is
    told: the credential's hash, the chat page's origin, the services each path takes."""
    return {
        "JAEGER_OTLP_HTPASSWD": htpasswd_line(OTLP_USER, run.secrets.otlp_password),
        # The chat page exports its spans to the public path: only its origin may.
        "JAEGER_CORS_ORIGIN": run.info.frontend_url,
        "JAEGER_PUBLIC_SERVICES": ",".join(run.settings.public_trace_services),
        "JAEGER_LEGACY_SERVICES": ",".join(run.settings.legacy_trace_services),
    }


def htpasswd_line(user: str, password: str) -> str:
    """An htpasswd line Jaeger's basicauth reads: `{SHA}`, one SHA-1 per request compared in
    constant time (bcrypt would cost milliseconds of CPU per export; the password is a random
    32-byte token, so a fast hash gives nothing away). Jaeger's environment holds no password."""
    digest = base64.b64encode(hashlib.sha1(password.encode()).digest()).decode()
    return f"{user}:{{SHA}}{digest}"


class _Roles:
    """Jaeger processes in their scale-out roles, from the one binary."""

    def __init__(self, run: Run) -> None:
        host, p = run.host, run.ports
        self.run = run
        self.binary = str(ensure_jaeger(run.progress, run.settings.jaeger_bin))
        self.shared = {
            "KAFKA_BROKERS": run.info.kafka_brokers,
            "KAFKA_TOPIC": TOPIC,
            "JAEGER_REMOTE_STORAGE": f"{host}:{p.jaeger_storage}",
            "JAEGER_STORAGE_WRITER": f"{host}:{p.jaeger_storage_writer}",
        }

    def role(self, name: str, *configs: str, ready: Ready | None = None, **env: str) -> Process:
        """A Jaeger process in one role (its configs merged, later ones over earlier);
        ready when its health check (or `ready`) says."""
        health = self.run.info.jaeger_parts[name]
        return Process(
            name,
            [self.binary, *(f"--config={_SCALE / config}" for config in configs)],
            {**self.shared, "JAEGER_HEALTH": urlsplit(health).netloc, **env},
            ready or http_ok(health),
        )


def kafka_pipeline(run: Run) -> dict[str, Process]:
    """Kafka, the storage, the query service, two ingesters, two collectors, the balancer."""
    roles = _Roles(run)
    host, p = run.host, run.ports
    processes = {
        "kafka": _kafka(run),
        "jaeger-storage": roles.role(
            "jaeger-storage", "storage.yaml", JAEGER_BADGER_DIR=str(run.run_dir / "jaeger-badger")
        ),
        # Ready once it answers a search: the storage behind it is reachable.
        "jaeger-query": roles.role(
            "jaeger-query",
            "query.yaml",
            ready=http_ok(f"{run.info.jaeger_query_url}/api/services"),
            JAEGER_QUERY_HTTP=f"{host}:{p.jaeger_query}",
            JAEGER_QUERY_GRPC=f"{host}:{p.jaeger_query_grpc}",
        ),
    }
    for n in (1, 2):
        processes[f"jaeger-ingester-{n}"] = _ingester(run, roles, n)
    for n, ports in _collector_ports(run).items():
        processes[f"jaeger-collector-{n}"] = _collector(run, roles, n, ports)
    processes["otlp-balancer"] = _otlp_balancer(run)
    return processes


def _kafka(run: Run) -> Process:
    libs = ensure_kafka(run.progress)
    data = run.run_dir / "kafka"
    config = run.config_dir / "kafka.properties"
    config.write_text(
        broker_properties(data, run.host, run.ports.kafka, run.ports.kafka_controller)
    )
    format_storage(libs, config, data)
    return Process("kafka", broker_command(libs, config), {}, tcp_open(run.host, run.ports.kafka))


def _ingester(run: Run, roles: _Roles, n: int) -> Process:
    sampling = run.settings.conversation_sample_ratio is not None
    ingester = roles.role(
        f"jaeger-ingester-{n}",
        "ingester.yaml",
        *(["tail-sampling.yaml"] if sampling else []),
        JAEGER_TAIL_DECISION_WAIT=f"{run.settings.tail_sampling_wait_s:g}s",
        JAEGER_SLOW_FIRST_TOKEN_MS=f"{run.settings.slow_first_token_ms:g}",
    )
    # The receiver's franz-go consumer can stop for good when its group session fails while
    # the broker is away (twmb/franz-go#1173; seen in test_scale_faults): the Sarama consumer
    # rejoins.
    ingester.argv.append("--feature-gates=-receiver.kafkareceiver.UseFranzGo")
    return ingester


def _collector_ports(run: Run) -> dict[int, tuple[int, int, int, int, int]]:
    """Each collector's (internal OTLP/HTTP, OTLP/gRPC, public OTLP/HTTP, UDP, telemetry)."""
    p = run.ports
    return {
        1: (
            p.collector1_otlp_http,
            p.otlp_grpc,
            p.collector1_otlp_public_http,
            p.jaeger_thrift_compact,
            p.jaeger_telemetry,
        ),
        2: (
            p.collector2_otlp_http,
            p.collector2_otlp_grpc,
            p.collector2_otlp_public_http,
            p.collector2_thrift_compact,
            p.collector2_telemetry,
        ),
    }


def _collector(run: Run, roles: _Roles, n: int, ports: tuple[int, int, int, int, int]) -> Process:
    host = run.host
    http, grpc, public, thrift, telemetry = ports
    collector = roles.role(
        f"jaeger-collector-{n}",
        "collector.yaml",
        JAEGER_OTLP_HTTP=f"{host}:{http}",
        JAEGER_OTLP_GRPC=f"{host}:{grpc}",
        JAEGER_OTLP_PUBLIC_HTTP=f"{host}:{public}",
        JAEGER_METRICS=run.metrics_targets[n - 1],
        JAEGER_TELEMETRY_HOST=host,
        JAEGER_TELEMETRY_PORT=str(telemetry),
        JAEGER_THRIFT_COMPACT=f"{host}:{thrift}",
    )
    collector.env.update(paths_env(run))  # the two paths' settings
    return collector


def _otlp_balancer(run: Run) -> Process:
    collectors = _collector_ports(run).values()
    return Process(
        "otlp-balancer",
        [str(run.traefik), f"--configFile={otlp_balancer_config(run)}"],
        {
            "OTLP_COLLECTOR_URLS": ",".join(f"http://{run.host}:{c[0]}" for c in collectors),
            "OTLP_COLLECTOR_PUBLIC_URLS": ",".join(f"http://{run.host}:{c[2]}" for c in collectors),
        },
        # The collectors' answers to a GET through both routes (the public receiver's 405, the
        # internal one's 401: it asks for the credential): loaded, and one is up.
        all_ready(
            http_status(f"{run.info.otlp_http_endpoint}/v1/traces", 405),
            http_status(f"{run.info.otlp_internal_endpoint}/v1/traces", 401),
        ),
    )
