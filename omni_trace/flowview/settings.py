from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from omni_trace.stack.paths import FRONTEND_DIST
from omni_trace.stack.ports import LOOPBACK_HOSTS, is_loopback
from omni_trace.traces.spec import ChainSpec, SpecError, load_spec

MIN_TOKEN_BYTES = 16
TOKEN_HINT = 'make one with: python3 -c "import secrets; print(secrets.token_urlsafe(32))"'


class FlowViewSettings(BaseSettings):
    """Environment: FLOWVIEW_HOST, FLOWVIEW_PORT, FLOWVIEW_JAEGER_QUERY_URL,
    FLOWVIEW_PROMETHEUS_URL, FLOWVIEW_JAEGER_UI_URL, FLOWVIEW_DIST_DIR, FLOWVIEW_ALLOWED_HOSTS,
    FLOWVIEW_ACCESS_TOKEN, FLOWVIEW_MAX_AUDITS, FLOWVIEW_VERDICT_CACHE, FLOWVIEW_SPEC,
    OMNI_LOG_LEVEL."""

    # hide_input_in_errors: a refused token must not be printed in the error that refuses it.
    model_config = SettingsConfigDict(
        env_prefix="FLOWVIEW_", extra="ignore", hide_input_in_errors=True
    )

    host: str = "127.0.0.1"
    port: int = 16687
    jaeger_query_url: str = Field(
        default="http://127.0.0.1:16686",
        description="Where the traces are read (Jaeger's query API).",
    )
    prometheus_url: str = Field(
        default="", description="Prometheus with Jaeger's span metrics; empty: no hop chart."
    )
    jaeger_ui_url: str = Field(
        default="",
        description="A Jaeger with its web UI (compose's), which the page links each trace to; "
        "empty: no such links (the Jaeger built here has no UI).",
    )
    dist_dir: Path = Field(
        default=FRONTEND_DIST, description="The built page (frontend/dist: flow.html, flow.js)."
    )
    allowed_hosts: str = Field(
        default="",
        description="Comma-separated names the flow view answers to (the request's Host, port "
        "ignored); any other gets 421, so a web page cannot read it by DNS rebinding. Empty: "
        "127.0.0.1, localhost, [::1] and FLOWVIEW_HOST.",
    )
    access_token: SecretStr | None = Field(
        default=None,
        description="Asked of every request but /healthz (`Authorization: Bearer <token>`, or "
        "as the password of basic auth, so a browser can log in); required when FLOWVIEW_HOST "
        f"is not a loopback address; at least {MIN_TOKEN_BYTES} bytes.",
    )
    max_audits: int = Field(
        default=3,
        ge=1,
        description="Requests that read Jaeger at once (each audit searches every layer); one "
        "more is answered 503 with Retry-After, so Jaeger keeps answering the stack.",
    )
    verdict_cache: int = Field(
        default=10_000,
        ge=0,
        description="Settled messages whose chain report and summary are kept (least recently "
        "used dropped first), so no audit analyses them again.",
    )
    spec: Path | None = Field(
        default=None,
        description="The chain spec (YAML, docs/toolkit.md) the view judges messages by, for "
        "a stack of another shape; empty: this project's stack (omni2).",
    )
    log_level: str = Field(default="INFO", validation_alias="OMNI_LOG_LEVEL")
    max_frame_bytes: int = Field(
        default=64 * 1024, description="No WebSocket here; the limit of any."
    )

    @field_validator("spec")
    @classmethod
    def _a_spec(cls, value: Path | None) -> Path | None:
        # Refused at start with the spec's own words, not at the first page.
        if value is not None:
            try:
                load_spec(value)
            except SpecError as err:
                raise ValueError(str(err)) from None
        return value

    def chain_spec(self) -> ChainSpec | None:
        return load_spec(self.spec) if self.spec is not None else None

    @field_validator("access_token")
    @classmethod
    def _long_enough(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or value.get_secret_value() == "":
            return None
        if len(value.get_secret_value().encode()) < MIN_TOKEN_BYTES:
            raise ValueError(f"must be at least {MIN_TOKEN_BYTES} bytes; {TOKEN_HINT}")
        return value

    @model_validator(mode="after")
    def _token_off_loopback(self) -> FlowViewSettings:
        # Bound beyond this machine, anyone who can reach the port could read every trace.
        if self.access_token is None and not is_loopback(self.host):
            raise ValueError(
                f"FLOWVIEW_ACCESS_TOKEN is required when FLOWVIEW_HOST ({self.host}) is not a "
                f"loopback address; {TOKEN_HINT}"
            )
        return self

    def host_names(self) -> list[str]:
        """The Host names answered: FLOWVIEW_ALLOWED_HOSTS, else loopback and the bound host."""
        listed = [h.strip() for h in self.allowed_hosts.split(",") if h.strip()]
        # 0.0.0.0 or :: bind every address: no name a browser reaches the view by.
        bound = [] if self.host.strip("[]") in ("0.0.0.0", "::", "") else [self.host]
        return listed or list(dict.fromkeys([*LOOPBACK_HOSTS, *bound]))

    def token(self) -> str | None:
        return self.access_token.get_secret_value() if self.access_token else None
