"""The project's tracing library: setup, propagation carriers, redaction, names."""

from otel.names import Attr, Event, LinkRole, Service, SpanName
from otel.setup import create_tracer_provider, setup_tracing, shutdown_tracing

__all__ = [
    "Attr",
    "Event",
    "LinkRole",
    "Service",
    "SpanName",
    "create_tracer_provider",
    "setup_tracing",
    "shutdown_tracing",
]
