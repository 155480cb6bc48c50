"""The page's API types (frontend/src/api_types.ts) are the flow view's models
(omni_trace/flowview/models.py), both ways: a model changed without regenerating the file, or
the file edited by hand, fails here (scripts/flow-types rewrites it)."""

from __future__ import annotations

import re

from omni_trace.flowview import models
from omni_trace.flowview.typescript import API_TYPES_TS, main, render
from omni_trace.stack.paths import REPO_ROOT
from omni_trace.traces.spec import default_spec

FLOWVIEW_TS = REPO_ROOT / "frontend" / "src" / "flowview"


def ts_interfaces(text: str) -> dict[str, dict[str, str]]:
    """`export interface Name { field: type; }` blocks: each one's fields and their types."""
    found = {}
    for name, body in re.findall(r"export interface (\w+) \{\n(.*?)\n\}", text, re.S):
        found[name] = dict(re.findall(r"^  (\w+\??): (.+);$", body, re.M))
    return found


def test_the_committed_types_are_the_generated_ones() -> None:
    assert API_TYPES_TS.read_text() == render(), "run scripts/flow-types"
    assert main(["--check"]) == 0


def test_every_model_and_field_is_in_the_page_s_types_and_nothing_else() -> None:
    page = ts_interfaces(API_TYPES_TS.read_text())
    python = {m.__name__: m for m in models.EXPORTED}
    assert set(page) == set(python), "interfaces in api_types.ts and models.EXPORTED differ"
    for name, model in python.items():
        fields = {key.rstrip("?") for key in page[name]}
        assert fields == set(model.model_fields), name
        for key in page[name]:
            required = model.model_fields[key.rstrip("?")].is_required()
            assert key.endswith("?") != required, f"{name}.{key}: optional on one side only"


def test_the_pages_name_no_hop_of_the_spec_themselves() -> None:
    """Hop columns come from /api/config's spec: no hop key of the default spec in the code."""
    hops = set(default_spec().hops) - {"model", "tools", "total"}
    for source in sorted(FLOWVIEW_TS.rglob("*.ts")):
        literals = set(re.findall(r"[\"'`]([a-z0-9_]+)[\"'`]", source.read_text()))
        assert not literals & hops, f"{source.name} names hops {sorted(literals & hops)}"
