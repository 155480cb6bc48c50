"""Demo accounts the dashboard can log in.

Who they are (role, limits, blocked, inactive) is OMNI2's business: its database seeds the
same users (services/omni2/db/seed.py), and OMNI2 refuses the blocked and inactive ones.
"""

from __future__ import annotations

import hmac

# user -> password. Development defaults, printed by `omni-trace demo`; not secrets.
DEMO_USERS: dict[str, str] = {
    "alice": "alice-demo",
    "bob": "bob-demo",
    "carol": "carol-demo",  # chat only, no tools
    "mallory": "mallory-demo",  # blocked in OMNI2
    "ivan": "ivan-demo",  # inactive in OMNI2
    "tim": "tim-demo",  # tiny daily token limit in OMNI2
}


def check_password(user: str, password: str) -> bool:
    expected = DEMO_USERS.get(user)
    return expected is not None and hmac.compare_digest(expected.encode(), password.encode())
