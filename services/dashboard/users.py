"""Demo accounts the dashboard can log in (the OMNI2 user database comes in its own issue)."""

from __future__ import annotations

import hmac

# user -> password. Development defaults, printed by `omni-trace demo`; not secrets.
DEMO_USERS: dict[str, str] = {
    "alice": "alice-demo",
    "bob": "bob-demo",
}


def check_password(user: str, password: str) -> bool:
    expected = DEMO_USERS.get(user)
    return expected is not None and hmac.compare_digest(expected.encode(), password.encode())
