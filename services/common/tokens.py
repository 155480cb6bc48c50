"""The JWT the dashboard issues and the auth service and OMNI2 verify.

HS256 only: the algorithm is pinned on verification, so `alg: none` and algorithm
confusion are refused. The secret comes from settings (environment), never a command line.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import jwt

ALGORITHM = "HS256"
ISSUER = "omni2-dashboard"
AUDIENCE = "omni2"


class TokenError(Exception):
    """The token was refused; `str(err)` is a reason safe to show to the client."""


@dataclass(frozen=True)
class Identity:
    user_id: str
    expires_at: int


def issue_token(user_id: str, secret: str, ttl_seconds: int = 3600) -> str:
    now = int(time.time())
    claims = {"sub": user_id, "iat": now, "exp": now + ttl_seconds, "iss": ISSUER, "aud": AUDIENCE}
    return jwt.encode(claims, secret, algorithm=ALGORITHM)


def verify_token(token: str, secret: str) -> Identity:
    try:
        claims = jwt.decode(
            token,
            secret,
            algorithms=[ALGORITHM],
            audience=AUDIENCE,
            issuer=ISSUER,
            options={"require": ["sub", "exp", "iat", "iss", "aud"]},
        )
    except jwt.ExpiredSignatureError as err:
        raise TokenError("token expired") from err
    except jwt.InvalidAlgorithmError as err:
        raise TokenError("token algorithm not allowed") from err
    except jwt.InvalidSignatureError as err:
        raise TokenError("token signature invalid") from err
    except jwt.MissingRequiredClaimError as err:
        raise TokenError(f"token lacks claim {err.claim!r}") from err
    except jwt.InvalidTokenError as err:
        raise TokenError(f"token invalid ({type(err).__name__})") from err
    sub = claims["sub"]
    if not isinstance(sub, str) or not sub:
        raise TokenError("token subject invalid")
    return Identity(user_id=sub, expires_at=int(claims["exp"]))


def bearer_token(authorization: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header, or None."""
    if not authorization:
        return None
    scheme, _, value = authorization.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()
