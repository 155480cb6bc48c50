"""Logging for every process: one format, secrets masked on every handler."""

from __future__ import annotations

import logging
import logging.config
from typing import Any

from otel.redaction import RedactingLogFilter

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def logging_config(level: str = "INFO") -> dict[str, Any]:
    """A dictConfig that routes uvicorn's loggers (access log included) through the filter."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"redact": {"()": RedactingLogFilter}},
        "formatters": {"plain": {"format": FORMAT}},
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "formatter": "plain",
                "filters": ["redact"],
                "stream": "ext://sys.stderr",
            }
        },
        "root": {"level": level, "handlers": ["stderr"]},
        "loggers": {
            name: {"level": level, "handlers": [], "propagate": True}
            for name in ("uvicorn", "uvicorn.error", "uvicorn.access")
        }
        # websockets: a line per frame. aiosqlite: every statement with its bound parameters
        # (the users' and the model's words) at DEBUG, so never below WARNING.
        | {
            name: {"level": "WARNING", "handlers": [], "propagate": True}
            for name in ("websockets", "aiosqlite")
        },
    }


def configure_logging(level: str = "INFO") -> None:
    logging.config.dictConfig(logging_config(level))
