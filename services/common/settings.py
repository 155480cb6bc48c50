"""Settings shared by every service: the JWT secret, frame limits and logging, from the
environment. No secret has a default: a service without one refuses to start."""

from __future__ import annotations

import sys
from typing import TypeVar

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

MIN_SECRET_BYTES = 32
SECRETS = ("OMNI_JWT_SECRET", "OMNI_DASHBOARD_KEY", "OMNI_EDGE_KEY")
SECRET_HINT = 'make one with: python3 -c "import secrets; print(secrets.token_urlsafe(32))"'


class CommonSettings(BaseSettings):
    # hide_input_in_errors: a refused secret must not be printed in the error that refuses it.
    model_config = SettingsConfigDict(env_prefix="", extra="ignore", hide_input_in_errors=True)

    jwt_secret: SecretStr = Field(
        validation_alias="OMNI_JWT_SECRET",
        description="HMAC secret shared by the dashboard (issuer), auth and OMNI2 (verifiers); "
        f"at least {MIN_SECRET_BYTES} bytes. `omni-trace up` makes a fresh one per run.",
    )
    token_leeway_s: float = Field(
        default=30.0,
        ge=0,
        le=300,
        validation_alias="OMNI_TOKEN_LEEWAY_S",
        description="Clock difference allowed when a token is verified: a token issued up to "
        "this far in the verifier's future (its clock behind the dashboard's) is accepted.",
    )
    log_level: str = Field(default="INFO", validation_alias="OMNI_LOG_LEVEL")
    max_frame_bytes: int = Field(
        default=64 * 1024,
        ge=1024,
        description="Largest WebSocket frame accepted; a larger one closes with 1009.",
    )

    @field_validator("jwt_secret")
    @classmethod
    def _long_enough(cls, value: SecretStr) -> SecretStr:
        if len(value.get_secret_value().encode()) < MIN_SECRET_BYTES:
            raise ValueError(f"must be at least {MIN_SECRET_BYTES} bytes")
        return value


def _secret_long_enough(value: SecretStr) -> SecretStr:
    if len(value.get_secret_value().encode()) < MIN_SECRET_BYTES:
        raise ValueError(f"must be at least {MIN_SECRET_BYTES} bytes")
    return value


class FrameLimits(BaseSettings):
    """A connection's frame limits at the first hop we run: the dashboard, and OMNI2 for a
    client that reaches it without one (each service's own prefix: DASHBOARD_, OMNI2_)."""

    frames_per_second: float = Field(
        default=20, gt=0, description="Frames a client may send per second (every frame)."
    )
    frame_burst: int = Field(default=40, ge=1, description="Frames allowed in one burst.")
    abuse_frames: int = Field(
        default=200,
        ge=1,
        description="Frames refused (net of the refill at frames_per_second) before the "
        "connection is closed with 1008.",
    )
    max_pending_messages: int = Field(
        default=16,
        ge=1,
        description="Messages a connection may have awaiting an answer (the one being "
        "answered counts); one more is refused with `too_many_pending`.",
    )


class ChurnLimits(BaseSettings):
    """What one user's churn may cost the trace store, at the first hop we run (each
    service's own prefix: DASHBOARD_, OMNI2_). services/common/churn.py says why."""

    connects_per_minute: float = Field(
        default=20, gt=0, description="Connections a user may open per minute (refill)."
    )
    connect_burst: int = Field(
        default=30,
        ge=1,
        description="Connections a user may open at once; one more than the rate allows is "
        "refused with 4429 and a reason. Keyed by the token's user, or by the client's "
        "address when the token is not valid.",
    )
    traced_refusals_per_minute: float = Field(
        default=10, gt=0, description="Refused connects of a user traced one by one, per minute."
    )
    traced_refusal_burst: int = Field(
        default=10,
        ge=1,
        description="Refused connects traced one by one at once; past that budget they are "
        "counted and written as one `chat.refused` span per user every refusal_flush_s.",
    )
    refusal_flush_s: float = Field(
        default=5.0, gt=0, le=300, description="How often the counted refusals are written."
    )


class DashboardKey(BaseSettings):
    """The key by which a handshake proves it comes from one of our dashboards: it sends it
    to Traefik's gateway entry point, whose ForwardAuth and OMNI2 check it; only then does
    OMNI2 take the trace context's sampled flag as the dashboard's decision."""

    model_config = SettingsConfigDict(env_prefix="", extra="ignore", hide_input_in_errors=True)

    dashboard_key: SecretStr = Field(
        validation_alias="OMNI_DASHBOARD_KEY",
        description=f"Shared by the dashboards, auth and OMNI2; at least {MIN_SECRET_BYTES} "
        "bytes. `omni-trace up` makes a fresh one per run.",
    )

    _dashboard_key_long_enough = field_validator("dashboard_key")(_secret_long_enough)


class GatewayKeys(DashboardKey):
    """... and the key Traefik's public entry point adds to what it lets in (it strips the
    client's trace context first): a handshake with neither came straight to OMNI2."""

    edge_key: SecretStr = Field(
        validation_alias="OMNI_EDGE_KEY",
        description=f"Shared by Traefik, auth and OMNI2; at least {MIN_SECRET_BYTES} bytes. "
        "`omni-trace up` makes a fresh one per run.",
    )

    _edge_long_enough = field_validator("edge_key")(_secret_long_enough)


S = TypeVar("S", bound=BaseSettings)


def load_settings(cls: type[S]) -> S:
    """The service's settings from the environment, or a clear message and exit code 2."""
    try:
        return cls()
    except ValidationError as err:
        lines = [f"{cls.__name__}: invalid configuration"]
        for error in err.errors():
            where = ".".join(str(part) for part in error["loc"]) or "settings"
            if where in SECRETS:
                lines.append(f"  {where}: {error['msg']}; {SECRET_HINT}")
            else:
                lines.append(f"  {where}: {error['msg']}")
        print("\n".join(lines), file=sys.stderr)
        raise SystemExit(2) from None
