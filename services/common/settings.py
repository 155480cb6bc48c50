"""Settings shared by every service: the JWT secret, frame limits and logging, from the
environment. No secret has a default: a service without one refuses to start."""

from __future__ import annotations

import sys
from typing import TypeVar

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

MIN_SECRET_BYTES = 32
SECRET_HINT = 'make one with: python3 -c "import secrets; print(secrets.token_urlsafe(32))"'


class CommonSettings(BaseSettings):
    # hide_input_in_errors: a refused secret must not be printed in the error that refuses it.
    model_config = SettingsConfigDict(env_prefix="", extra="ignore", hide_input_in_errors=True)

    jwt_secret: SecretStr = Field(
        validation_alias="OMNI_JWT_SECRET",
        description="HMAC secret shared by the dashboard (issuer), auth and OMNI2 (verifiers); "
        f"at least {MIN_SECRET_BYTES} bytes. `omni-trace up` makes a fresh one per run.",
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


S = TypeVar("S", bound=BaseSettings)


def load_settings(cls: type[S]) -> S:
    """The service's settings from the environment, or a clear message and exit code 2."""
    try:
        return cls()
    except ValidationError as err:
        lines = [f"{cls.__name__}: invalid configuration"]
        for error in err.errors():
            where = ".".join(str(part) for part in error["loc"]) or "settings"
            if where == "OMNI_JWT_SECRET":
                lines.append(f"  OMNI_JWT_SECRET: {error['msg']}; {SECRET_HINT}")
            else:
                lines.append(f"  {where}: {error['msg']}")
        print("\n".join(lines), file=sys.stderr)
        raise SystemExit(2) from None
