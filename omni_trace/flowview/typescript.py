"""The page's API types (frontend/src/api_types.ts), generated from the flow view's models.

    scripts/flow-types           rewrite frontend/src/api_types.ts
    scripts/flow-types --check   exit 1 if it differs from what the models say

tests/frontend/test_flow_types.py runs the check, so a model changed without the file (or the
file edited by hand) fails the suite.
"""

from __future__ import annotations

import argparse
import sys
import types
from typing import Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel

from omni_trace.flowview.models import EXPORTED
from omni_trace.stack.paths import REPO_ROOT

API_TYPES_TS = REPO_ROOT / "frontend" / "src" / "api_types.ts"

HEADER = """\
// Generated from omni_trace/flowview/models.py by scripts/flow-types: do not edit by hand.
// The flow view's JSON API (omni_trace/flowview/api.py) answers through those models;
// tests/frontend/test_flow_types.py fails when this file and they differ.
"""

_SCALARS: dict[Any, str] = {
    str: "string",
    int: "number",
    float: "number",
    bool: "boolean",
    type(None): "null",
    Any: "unknown",
}


class UnsupportedType(TypeError):
    """A model field whose type has no TypeScript rendering here: extend `ts_type`."""


def ts_type(annotation: Any) -> str:
    """A field's TypeScript type."""
    if annotation in _SCALARS:
        return _SCALARS[annotation]
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation.__name__
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is Literal:
        return " | ".join(f'"{a}"' if isinstance(a, str) else str(a).lower() for a in args)
    if origin in (Union, types.UnionType):
        return " | ".join(ts_type(a) for a in args)
    if origin is list:
        inner = ts_type(args[0])
        return f"({inner})[]" if " | " in inner else f"{inner}[]"
    if origin is dict and args[0] is str:
        return f"Record<string, {ts_type(args[1])}>"
    if origin is tuple and args and args[-1] is not Ellipsis:
        return f"[{', '.join(ts_type(a) for a in args)}]"
    raise UnsupportedType(f"no TypeScript for {annotation!r}")


def interface(model: type[BaseModel]) -> str:
    lines = []
    if model.__doc__:
        lines += [f"// {line.strip()}" for line in model.__doc__.strip().splitlines()]
    lines.append(f"export interface {model.__name__} {{")
    for name, field in model.model_fields.items():
        optional = "" if field.is_required() else "?"
        lines.append(f"  {name}{optional}: {ts_type(field.annotation)};")
    lines.append("}")
    return "\n".join(lines)


def render() -> str:
    return HEADER + "".join(f"\n{interface(model)}\n" for model in EXPORTED)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/flow-types", description=__doc__)
    parser.add_argument("--check", action="store_true", help="compare, do not write")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        current = API_TYPES_TS.read_text() if API_TYPES_TS.exists() else ""
        if current != text:
            print(f"{API_TYPES_TS} differs from the models: run scripts/flow-types")
            return 1
        return 0
    API_TYPES_TS.write_text(text)
    print(f"wrote {API_TYPES_TS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
