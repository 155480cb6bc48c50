"""Login password hashes: Argon2id through argon2-cffi, the one place that hashes or verifies.

OMNI2 hashes the demo users' passwords when it seeds them, `omni-trace users add/passwd`
hashes the ones an operator sets, and the dashboard verifies at `/api/login`. All three share
these parameters (argon2-cffi's defaults, RFC 9106's low-memory profile).
"""

from __future__ import annotations

import functools
import secrets

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

# Bounds a login body and a password set from the CLI: a hash costs the same for any length,
# but there is no reason to accept megabytes.
MAX_PASSWORD_CHARS = 1024
MIN_PASSWORD_CHARS = 8

_HASHER = PasswordHasher()


def hash_password(password: str) -> str:
    return _HASHER.hash(password)


def verify_password(stored_hash: str, password: str) -> bool:
    """True when `password` matches; False on a mismatch or an unreadable stored hash."""
    try:
        return _HASHER.verify(stored_hash, password)
    except (VerificationError, InvalidHashError):
        return False


@functools.cache
def dummy_hash() -> str:
    """A hash of a random password nobody knows, made with the same parameters as real ones.

    A login for an unknown name (or a user without a password) is verified against it, so it
    costs one verification like a known name does and the answer time does not tell them apart.
    """
    return hash_password(secrets.token_urlsafe(32))


def password_problem(password: str) -> str | None:
    """Why a password cannot be set, or None when it can."""
    if len(password) < MIN_PASSWORD_CHARS:
        return f"a password needs at least {MIN_PASSWORD_CHARS} characters"
    if len(password) > MAX_PASSWORD_CHARS:
        return f"a password has at most {MAX_PASSWORD_CHARS} characters"
    return None
