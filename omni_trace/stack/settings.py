"""Settings of the omni-trace commands, from the environment (prefix OMNI_TRACE_)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from otel.names import CLIENTS

# A service name the collector's filters can hold in their list (no comma, quote or `$`).
_SERVICE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/@+-]{0,127}")


class StackSettings(BaseSettings):
    # The service's own variable names work too (OMNI2_MODEL_TOKEN_DELAY_MS, ...), so what the
    # README lists for a service reaches it under `omni-trace up`.
    model_config = SettingsConfigDict(
        env_prefix="OMNI_TRACE_", extra="ignore", populate_by_name=True, hide_input_in_errors=True
    )

    host: str = Field(default="127.0.0.1", description="Address every service binds to.")
    jaeger_bin: Path | None = Field(
        default=None,
        validation_alias=AliasChoices("JAEGER_BIN", "OMNI_TRACE_JAEGER_BIN"),
        description="A prebuilt Jaeger v2 binary instead of building one.",
    )
    prometheus_bin: Path | None = Field(
        default=None,
        description="Prometheus for the flow view's hop chart (default: `prometheus` on PATH, "
        "Debian's package).",
    )
    jaeger_query_url: str | None = Field(
        default=None, description="Use this running Jaeger's query API instead of starting one."
    )
    jaeger_otlp_endpoint: str | None = Field(
        default=None,
        description="OTLP/HTTP base URL of that running Jaeger: the services, Traefik and "
        "the clients all export there (it has no public path of ours: no credential is made, "
        "an OTEL_EXPORTER_OTLP_HEADERS of your environment reaches the services and Traefik).",
    )
    public_trace_services: Annotated[tuple[str, ...], NoDecode] = Field(
        default=CLIENTS,
        description="The client services whose spans the public OTLP path takes (comma "
        "separated); a span of any other service.name sent there is refused and counted.",
    )
    legacy_trace_services: Annotated[tuple[str, ...], NoDecode] = Field(
        default=("usage-ledger",),
        description="The services whose spans Jaeger's `jaeger` receiver (UDP, jaeger-client, "
        "no credential) takes (comma separated).",
    )
    model_token_delay_ms: float = Field(
        default=15.0,
        ge=0,
        validation_alias=AliasChoices(
            "model_token_delay_ms",
            "OMNI_TRACE_MODEL_TOKEN_DELAY_MS",
            "OMNI2_MODEL_TOKEN_DELAY_MS",
        ),
        description="Offline model: pause between streamed tokens.",
    )
    database_url: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices(
            "database_url", "OMNI_TRACE_DATABASE_URL", "OMNI2_DATABASE_URL"
        ),
        description="OMNI2's database (SQLAlchemy async URL); default SQLite in the run dir.",
    )
    database: Literal["sqlite", "postgres"] = Field(
        default="sqlite",
        description="OMNI2's database when database_url is not given: SQLite in the run dir, "
        "or a PostgreSQL server the runner starts (Debian's binaries; its cluster kept with "
        "the run dir) and stops.",
    )
    omni2_replicas: int = Field(
        default=1,
        ge=1,
        le=2,
        description="OMNI2 processes behind Traefik's load balancer (health-checked); with 2 "
        "they share the per-user connection limit through the database.",
    )
    dashboard_replicas: int = Field(
        default=1,
        ge=1,
        le=2,
        description="Dashboard processes; with 2, Traefik's `front` entry point takes the "
        "dashboard's address and balances between them (a WebSocket stays on its replica).",
    )
    trace_pipeline: Literal["memory", "kafka"] = Field(
        default="memory",
        description="memory: one Jaeger holding traces in memory. kafka: the scale-out "
        "pipeline: two collectors (OTLP in, Kafka out), a Kafka broker, two ingesters, a "
        "persistent Badger store shared through Jaeger's remote storage, and a query service.",
    )
    jaeger_max_traces: int = Field(
        default=100_000,
        ge=100,
        description="memory pipeline: traces the one Jaeger holds before it evicts the "
        "oldest (its config's memory.max_traces; the README's Security section sizes it "
        "against what one user can make a minute). Tests start it small to see eviction.",
    )
    ready_timeout_s: float = Field(default=60.0, gt=0, description="Wait for each service.")
    conversation_sample_ratio: float | None = Field(
        default=None,
        ge=0,
        le=1,
        description="Kafka pipeline: conversation-consistent tail sampling in the ingesters "
        "(docs/sampling.md). A conversation is kept with this probability, whole; failed, "
        "refused, slow and broken messages always. Unset: every trace is kept.",
    )
    tail_sampling_wait_s: float = Field(
        default=10.0,
        gt=0,
        description="How long an ingester holds a trace before deciding: longer than the "
        "slowest answer.",
    )
    slow_first_token_ms: float = Field(
        default=2000.0,
        gt=0,
        description="Tail sampling keeps every message whose first token took this long.",
    )
    # Budgets of Prometheus' alerting rules (config/prometheus/alerts.yml, rendered by
    # omni_trace/stack/alerts.py; compose/.env holds the same names for the compose stack).
    alert_first_token_p95_s: float = Field(
        default=2.0,
        gt=0,
        description="Alert ChatFirstTokenSlow when a layer's p95 time to first token over the "
        "last 5 minutes exceeds this many seconds.",
    )
    alert_error_ratio: float = Field(
        default=0.05,
        gt=0,
        le=1,
        description="Alert ChatLayerErrors when this share of a layer's spans over the last 5 "
        "minutes ended with an error status.",
    )
    scale: bool = Field(
        default=False,
        description="The scale-out profile: the Kafka trace pipeline, the runner's PostgreSQL, "
        "2 OMNI2 replicas and 2 dashboard replicas. A setting given on its own still wins.",
    )

    @field_validator("public_trace_services", "legacy_trace_services", mode="before")
    @classmethod
    def _service_names(cls, value: object) -> object:
        names = [n.strip() for n in value.split(",")] if isinstance(value, str) else value
        if not isinstance(names, list | tuple) or not names:
            raise ValueError("at least one service name")
        for name in names:
            if not isinstance(name, str) or not _SERVICE_NAME.fullmatch(name):
                raise ValueError(
                    f"{name!r} is not a service name the collector can match (letters, digits "
                    "and . _ : / @ + -, at most 128)"
                )
        return tuple(names)

    @model_validator(mode="after")
    def _scale_profile(self) -> StackSettings:
        if self.scale:
            given = self.model_fields_set
            defaults = {
                "trace_pipeline": "kafka",
                "database": "postgres",
                "omni2_replicas": 2,
                "dashboard_replicas": 2,
            }
            for name, value in defaults.items():
                if name not in given:
                    setattr(self, name, value)
        if self.conversation_sample_ratio is not None and self.trace_pipeline != "kafka":
            raise ValueError(
                "conversation sampling is done by the Kafka pipeline's ingesters: "
                "add --trace-pipeline kafka (or --scale)"
            )
        return self
