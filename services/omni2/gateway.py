"""Identity at OMNI2 comes only from the gateway.

Traefik's ForwardAuth puts the verified user in `x-user-id` and forwards the client's bearer
token. We accept a connection only when both are present and agree, so a client that reaches
OMNI2 directly with a forged `x-user-id` is refused.
"""

from __future__ import annotations

from collections.abc import Mapping

from services.common.protocol import CloseCode
from services.common.refusal import Refusal
from services.common.tokens import (
    DEFAULT_LEEWAY_S,
    Identity,
    TokenError,
    bearer_token,
    verify_token,
)

USER_ID_HEADER = "x-user-id"


def gateway_identity(
    headers: Mapping[str, str], secret: str, leeway_s: float = DEFAULT_LEEWAY_S
) -> Identity:
    """The verified identity of a connection, or Refusal with a reason for the client."""
    user_id = headers.get(USER_ID_HEADER)
    token = bearer_token(headers.get("authorization"))
    if not user_id or token is None:
        raise Refusal(
            CloseCode.FORBIDDEN,
            "connection did not come through the gateway (no verified identity)",
            "not_via_gateway",
        )
    try:
        identity = verify_token(token, secret, leeway_s)
    except TokenError as err:
        raise Refusal(
            CloseCode.UNAUTHENTICATED, f"authentication failed: {err}", "bad_token"
        ) from err
    if identity.user_id != user_id:
        raise Refusal(
            CloseCode.FORBIDDEN, "identity header does not match the token", "identity_mismatch"
        )
    return identity
