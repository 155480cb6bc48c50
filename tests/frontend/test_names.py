"""The page's names (frontend/src/names.ts) are the ones otel/names.py and the protocol define."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from functools import cache
from typing import Any

import pytest

from omni_trace.stack.paths import REPO_ROOT
from otel import names
from services.common import protocol

NAMES_TS = REPO_ROOT / "frontend" / "src" / "names.ts"
ESBUILD = REPO_ROOT / "frontend" / "node_modules" / ".bin" / "esbuild"


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


@cache
def ts_values() -> dict[str, Any]:
    """names.ts's close-code tables as the page sees them: bundled by esbuild, run by node."""
    node = shutil.which("node")
    if node is None or not ESBUILD.exists():
        pytest.fail("node and frontend/node_modules are needed: run scripts/bootstrap")
    script = (
        'import { CLOSE_MEANINGS, CloseCode } from "./names";\n'
        "console.log(JSON.stringify({ CLOSE_MEANINGS, CloseCode }));\n"
    )
    bundle = subprocess.run(
        [str(ESBUILD), "--bundle", "--platform=node", "--format=esm", "--log-level=warning"],
        input=script, cwd=NAMES_TS.parent, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    run = subprocess.run(
        [node, "--input-type=module"], input=bundle, capture_output=True, text=True, check=True
    )
    return dict(json.loads(run.stdout))


def test_close_codes_match_the_protocol_both_ways() -> None:
    page = {name: int(code) for name, code in ts_values()["CloseCode"].items()}
    python = {code.name: int(code) for code in protocol.CloseCode}
    assert page == python, "names.ts CloseCode and protocol.CloseCode differ"


def test_close_meanings_match_the_protocol_both_ways() -> None:
    page = {int(code): meaning for code, meaning in ts_values()["CLOSE_MEANINGS"].items()}
    missing = sorted(set(protocol.CLOSE_MEANINGS) - set(page))
    extra = sorted(set(page) - set(protocol.CLOSE_MEANINGS))
    assert not missing, f"codes in protocol.CLOSE_MEANINGS but not in names.ts: {missing}"
    assert not extra, f"codes in names.ts CLOSE_MEANINGS but not in protocol.py: {extra}"
    for code, meaning in protocol.CLOSE_MEANINGS.items():
        assert page[code] == {"final": meaning.final, "label": meaning.label}, code


def test_every_close_code_has_a_meaning() -> None:
    assert set(protocol.CLOSE_MEANINGS) == {int(code) for code in protocol.CloseCode}


def test_every_refusal_is_final() -> None:
    """4xx-style codes are refusals (asking again fails the same way); 45xx are outages."""
    for code, meaning in protocol.CLOSE_MEANINGS.items():
        if 4400 <= code < 4500 or code in (1008, 1009):
            assert meaning.final, code
        if code >= 4500 or code in (1000, 1001, 1011):
            assert not meaning.final, code


def test_browser_service_name() -> None:
    assert ts_table("Service")["CHAT_BROWSER"] == names.Service.CHAT_BROWSER == "chat-browser"
