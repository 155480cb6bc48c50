"""The JWT the dashboard issues and the auth service and OMNI2 verify.

HS256 only: the algorithm is pinned on verification, so `alg: none` and algorithm
confusion are refused. The secret comes from settings (environment), never a command line.

Each token carries its user's token generation (`gen`): logout, a password change and a block
raise the user's generation in OMNI2's database, and OMNI2 refuses a token of an older one
(services/omni2/revocation.py), at connect and on open connections. Verification allows a
small clock leeway (OMNI_TOKEN_LEEWAY_S): a node a second behind the issuer still takes a
fresh token, whose `iat` is then in its future.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import jwt

ALGORITHM = "HS256"
ISSUER = "omni2-dashboard"
AUDIENCE = "omni2"
GENERATION = "gen"
DEFAULT_LEEWAY_S = 30.0


class TokenError(Exception):
    """The token was refused; `str(err)` is a reason safe to show to the client."""


@dataclass(frozen=True)
class Identity:
    user_id: str
    expires_at: int
    # The user's token generation when the token was issued (0: a token without `gen`).
    generation: int = 0


def issue_token(
    user_id: str,
    secret: str,
    ttl_seconds: int = 3600,
    *,
    generation: int = 0,
    now: float | None = None,
) -> str:
    """A token for `user_id`; `now` is the issuer's clock (tests move it to skew it)."""
    issued = int(time.time() if now is None else now)
    claims = {
        "sub": user_id,
        "iat": issued,
        "exp": issued + ttl_seconds,
        "iss": ISSUER,
        "aud": AUDIENCE,
        GENERATION: generation,
    }
    return jwt.encode(claims, secret, algorithm=ALGORITHM)


def verify_token(token: str, secret: str, leeway_s: float = DEFAULT_LEEWAY_S) -> Identity:
    """The token's identity, or TokenError. `leeway_s` allows for clocks apart: a token
    issued up to that much in this node's future (its clock behind the issuer's) passes.
    The expiry is exact: a leeway there would only lengthen every token's life."""
    try:
        claims = jwt.decode(
            token,
            secret,
            algorithms=[ALGORITHM],
            audience=AUDIENCE,
            issuer=ISSUER,
            options={"require": ["sub", "exp", "iat", "iss", "aud"], "verify_iat": False},
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
    _check_issued_at(claims["iat"], leeway_s)
    sub = claims["sub"]
    if not isinstance(sub, str) or not sub:
        raise TokenError("token subject invalid")
    generation = claims.get(GENERATION, 0)
    if not isinstance(generation, int) or isinstance(generation, bool) or generation < 0:
        raise TokenError("token generation invalid")
    return Identity(user_id=sub, expires_at=int(claims["exp"]), generation=generation)


def _check_issued_at(iat: object, leeway_s: float) -> None:
    if not isinstance(iat, int | float) or isinstance(iat, bool):
        raise TokenError("token issued-at (iat) invalid")
    if iat > time.time() + leeway_s:
        raise TokenError(
            f"token issued in the future (more than {leeway_s:g} s ahead of this server's clock)"
        )


def bearer_token(authorization: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header, or None."""
    if not authorization:
        return None
    scheme, _, value = authorization.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()


def verify_bearer(authorization: str | None, secret: str, leeway_s: float) -> Identity:
    """The identity of an `Authorization: Bearer` header's token, or TokenError."""
    token = bearer_token(authorization)
    if token is None:
        raise TokenError("missing bearer token")
    return verify_token(token, secret, leeway_s)
