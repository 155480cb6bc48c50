"""The services keep to themselves: the dashboard and OMNI2 share the database through
services/db and the rest through services/common; neither imports the other.

Every module of each service is parsed (not imported), and its `import` and `from` statements
and dotted module names in strings (importlib's) are checked.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

SERVICES = Path(__file__).resolve().parents[2] / "services"
SEPARATE = {"dashboard": "omni2", "omni2": "dashboard"}
_DOTTED = re.compile(r"^services\.[a-z_0-9]+(\.[a-z_0-9]+)*$")


def imported_modules(path: Path) -> set[str]:
    """The modules a file names in its imports, and dotted `services.` names in its strings."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level > 0:
            package = path.relative_to(SERVICES.parent).parent.parts
            base = package[: len(package) - (node.level - 1)]
            found.add(".".join((*base, *(node.module.split(".") if node.module else ()))))
        elif isinstance(node, ast.Constant) and _DOTTED.match(str(node.value)):
            found.add(str(node.value))
    return found


def service_imports(service: str) -> dict[str, set[str]]:
    files = sorted((SERVICES / service).rglob("*.py"))
    assert files, f"no Python files under services/{service}"
    return {str(path.relative_to(SERVICES.parent)): imported_modules(path) for path in files}


@pytest.mark.parametrize("service", sorted(SEPARATE))
def test_a_service_never_imports_the_other(service: str) -> None:
    other = f"services.{SEPARATE[service]}"
    crossings = {
        path: sorted(m for m in modules if m == other or m.startswith(f"{other}."))
        for path, modules in service_imports(service).items()
    }
    assert {path: found for path, found in crossings.items() if found} == {}


@pytest.mark.parametrize("service", sorted(SEPARATE))
def test_both_services_use_the_shared_database_package(service: str) -> None:
    # The walk sees what it must: each service reaches the database through services.db.
    modules = set().union(*service_imports(service).values())
    assert any(m == "services.db" or m.startswith("services.db.") for m in modules)


def test_the_walk_finds_a_crossing(tmp_path: Path) -> None:
    # A module that imports the other service, in each form the walk reads.
    module = tmp_path / "crossing.py"
    module.write_text(
        "import services.omni2.chat\n"
        "from services.omni2 import settings\n"
        "PROVIDER = 'services.omni2.providers.openai'\n"
    )
    found = imported_modules(module)
    assert {"services.omni2.chat", "services.omni2", "services.omni2.providers.openai"} <= found
