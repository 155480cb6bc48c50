"""The dashboard's connection to Traefik: handshake with the bearer token, and its refusals."""

from __future__ import annotations

import json

from pydantic import SecretStr
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidHandshake, InvalidStatus, InvalidURI

from services.common.protocol import CloseCode
from services.common.provenance import DASHBOARD_KEY_HEADER
from services.common.refusal import Refusal

MAX_FRAME_BYTES = 1 << 20


def _reason_from_body(body: bytes | bytearray | None) -> str:
    """The auth service answers 401 with {"reason": ...}; Traefik passes that body on."""
    try:
        data = json.loads(body or b"")
    except ValueError:
        return ""
    if isinstance(data, dict):
        return str(data.get("reason") or data.get("detail") or data.get("error") or "")[:80]
    return ""


def refusal_for_status(status: int, body: bytes | bytearray | None) -> Refusal:
    reason = _reason_from_body(body)
    if status == 401:
        return Refusal(
            CloseCode.UNAUTHENTICATED,
            f"authentication failed: {reason or 'token refused'}",
            "unauthenticated",
        )
    if status == 403:
        return Refusal(CloseCode.FORBIDDEN, f"forbidden: {reason or status}", "forbidden")
    return Refusal(
        CloseCode.GATEWAY_UNREACHABLE,
        f"chat service unavailable (gateway answered HTTP {status})",
        f"http_{status}",
    )


async def connect_upstream(
    url: str, token: str, open_timeout: float, key: SecretStr
) -> ClientConnection:
    """Open the WebSocket to Traefik with the dashboard's key: it lets the handshake in, and
    tells OMNI2 that the trace context's sampled flag is this dashboard's decision. The
    handshake is the session's `upstream connect` span, its context in the headers
    (otel.websocket.client); a refusal says why, in the client's terms."""
    headers = {
        "Authorization": f"Bearer {token}",
        DASHBOARD_KEY_HEADER: key.get_secret_value(),
    }
    try:
        return await connect(
            url,
            additional_headers=headers,
            open_timeout=open_timeout,
            max_size=MAX_FRAME_BYTES,
            compression=None,  # small frames: deflate costs CPU and saves nothing
            ping_interval=20,
            ping_timeout=20,
            close_timeout=2,
        )
    except InvalidStatus as err:
        raise refusal_for_status(err.response.status_code, err.response.body) from None
    except TimeoutError:
        raise Refusal(
            CloseCode.GATEWAY_TIMEOUT, "chat gateway did not answer in time", "timeout"
        ) from None
    except (OSError, InvalidHandshake, InvalidURI) as err:
        raise Refusal(
            CloseCode.GATEWAY_UNREACHABLE, "chat gateway unreachable", type(err).__name__
        ) from None
