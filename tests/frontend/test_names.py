"""The page's names (frontend/src/names.ts) are the ones otel/names.py and the protocol define."""

from __future__ import annotations

import re

import pytest

from omni_trace.paths import REPO_ROOT
from otel import names
from services.common import protocol

NAMES_TS = REPO_ROOT / "frontend" / "src" / "names.ts"


def ts_table(name: str) -> dict[str, str]:
    """Entries of `export const <name> = { KEY: value, ... }` in names.ts."""
    text = NAMES_TS.read_text()
    block = re.search(rf"export const {name} = \{{(.*?)\}} as const;", text, re.S)
    assert block, f"names.ts has no table {name}"
    return dict(re.findall(r"^\s*(\w+): \"?([^\",]+)\"?,", block.group(1), re.M))


@pytest.mark.parametrize("table", ["Service", "SpanName", "Attr", "Event"])
def test_names_match_otel_names(table: str) -> None:
    python = getattr(names, table)
    entries = ts_table(table)
    assert entries, table
    for key, value in entries.items():
        assert getattr(python, key, None) == value, f"{table}.{key}: names.ts says {value!r}"


def test_close_codes_match_the_protocol() -> None:
    for key, value in ts_table("CloseCode").items():
        assert int(protocol.CloseCode[key]) == int(value), key


def test_browser_service_name() -> None:
    assert ts_table("Service")["CHAT_BROWSER"] == names.Service.CHAT_BROWSER == "chat-browser"
