"""Which way a WebSocket handshake came in, by the keys only our own processes hold.

A dashboard sends its key to Traefik's gateway entry point; Traefik's public entry point
(for clients that reach the gateway without a dashboard) strips the client's trace context
and adds the edge key. ForwardAuth refuses a gateway handshake with neither, and OMNI2 reads
them to know who decided what is traced: the dashboard (its sampled flag travels through
Traefik), or nobody yet (OMNI2 decides, whatever flags the client sent).
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping

from pydantic import SecretStr

from otel.names import Entry
from services.common.settings import GatewayKeys

DASHBOARD_KEY_HEADER = "X-Omni-Dashboard-Key"
EDGE_KEY_HEADER = "X-Omni-Edge-Key"


def _holds(value: str | None, key: SecretStr) -> bool:
    return value is not None and hmac.compare_digest(
        value.encode(), key.get_secret_value().encode()
    )


def entry_of(headers: Mapping[str, str], keys: GatewayKeys) -> str:
    """`Entry.DASHBOARD`, `Entry.GATEWAY` or `Entry.DIRECT` (`headers` case-insensitive)."""
    if _holds(headers.get(DASHBOARD_KEY_HEADER), keys.dashboard_key):
        return Entry.DASHBOARD
    if _holds(headers.get(EDGE_KEY_HEADER), keys.edge_key):
        return Entry.GATEWAY
    return Entry.DIRECT
