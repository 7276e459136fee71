"""The floors of the code only point down, and only the top composes the stand-in in.

    incomaker_elt.cli / run / console         the command line and the main job (top)
    incomaker_elt.orchestration               Dagster: assets, checks, dbt, the serving copy
    incomaker_elt.ingestion | .standin        the API client and loads | the stand-in API
    incomaker_elt.contract                    settings, the catalogue, paging, the currency

Every import statement of the package counts, inside functions too.
"""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "incomaker_elt"
FLOORS = {"contract": 0, "ingestion": 1, "standin": 1, "orchestration": 2}
TOP = 3


def floor_of(module: str) -> tuple[int, str]:
    """The floor of a module of the package, and its part (`contract`, `ingestion`... or `top`)."""
    parts = module.split(".")
    part = parts[1] if len(parts) > 1 else ""
    return (FLOORS[part], part) if part in FLOORS else (TOP, "top")


def module_name(path: Path) -> str:
    parts = list(path.with_suffix("").parts)
    parts = parts[len(parts) - 1 - parts[::-1].index("incomaker_elt") :]
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every import of the package in a file, relative imports resolved."""
    found = []
    package = module_name(path).rsplit(".", 0 if path.name == "__init__.py" else 1)[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            # `from incomaker_elt.x import y` may name a module y: count it as x.y.
            found += [(node.lineno, f"{base}.{alias.name}") for alias in node.names]
    return [(line, name) for line, name in found if name.startswith("incomaker_elt.")]


MODULES = sorted(PACKAGE.rglob("*.py"))


def test_the_package_is_where_the_test_looks() -> None:
    names = {module_name(path) for path in MODULES}
    assert {"incomaker_elt.contract.settings", "incomaker_elt.standin.service"} <= names
    assert len(names) > 60


def violations(module: str, imported: list[tuple[int, str]]) -> list[str]:
    own_floor, own_part = floor_of(module)
    wrong = []
    for line, name in imported:
        floor, part = floor_of(name)
        if floor > own_floor:
            wrong.append(f"line {line}: {name} is above {own_part}")
        elif floor == own_floor and part != own_part:
            wrong.append(f"line {line}: {name} is beside {own_part} (side by side, apart)")
        elif part == "standin" and own_part not in ("standin", "top"):
            wrong.append(f"line {line}: {name} is the stand-in, composed in only at the top")
    return wrong


@pytest.mark.parametrize("path", MODULES, ids=module_name)
def test_imports_point_down_and_the_standin_is_composed_in_only_at_the_top(path: Path) -> None:
    wrong = violations(module_name(path), imports(path))
    assert not wrong, f"{module_name(path)} imports against the floors:\n" + "\n".join(wrong)


def test_the_rule_refuses_what_it_should(tmp_path: Path) -> None:
    upward = tmp_path / "incomaker_elt" / "contract" / "upward.py"
    upward.parent.mkdir(parents=True)
    upward.write_text(
        "import os\n"
        "def later():\n"
        "    from incomaker_elt.orchestration import definitions\n"
        "from . import catalogue\n"
    )
    found = imports(upward)
    assert (3, "incomaker_elt.orchestration.definitions") in found
    assert (4, "incomaker_elt.contract.catalogue") in found
    assert violations("incomaker_elt.contract.upward", found) == [
        "line 3: incomaker_elt.orchestration.definitions is above contract"
    ]
    assert violations("incomaker_elt.ingestion.fetch", [(1, "incomaker_elt.standin.world")])
    assert violations("incomaker_elt.standin.cli", [(1, "incomaker_elt.ingestion.client")])
    assert violations("incomaker_elt.orchestration.x", [(1, "incomaker_elt.standin.service")])
    assert not violations("incomaker_elt.run", [(1, "incomaker_elt.standin.cli")])
    assert not violations("incomaker_elt.orchestration.x", [(1, "incomaker_elt.contract.paging")])
