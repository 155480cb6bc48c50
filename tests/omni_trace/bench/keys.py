"""The key paths of a report's JSON, to compare its shape with what today's code wrote."""

from __future__ import annotations

from pathlib import Path
from typing import Any

DATA = Path(__file__).parent / "data"

# Maps keyed by what was measured (bursts by spread, processes, services, ratios by burst):
# their keys vary with the run, their values' shape does not.
MEASURED = frozenset(
    {
        "bursts",
        "ratios",
        "ratio_range",
        "peak_rss_mb",
        "held_kb_per_connection",
        "cpu_ms_per_turn_by_process",
        "by_service",
    }
)


# Keys a report has only when there was something to say (`ABSENT` fields of the report's
# dataclasses): the flow view's count of what it judged is there once it has judged messages,
# which a quick run's few may not reach in time.
OPTIONAL = frozenset({"flowview_judging"})


def shape(tree: Any) -> set[str]:
    """The key paths of a report that every report has (optional keys left out)."""
    return {
        path for path in key_paths(tree) if not OPTIONAL & set(path.replace("[]", "").split("."))
    }


def key_paths(tree: Any, at: str = "") -> set[str]:
    """Every key path of a JSON tree ("on.steady.turns"), a list's items as "[]" and the
    keys of a measured map as "*"."""
    paths: set[str] = set()
    if isinstance(tree, dict):
        measured = at.rsplit(".", 1)[-1] in MEASURED
        for key, value in tree.items():
            path = f"{at}.{'*' if measured else key}".lstrip(".")
            paths |= {path} | key_paths(value, path)
    elif isinstance(tree, list):
        for item in tree:
            paths |= key_paths(item, f"{at}[]")
    return paths
