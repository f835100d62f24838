"""Every named SQL block the code asks for exists in the `.sql` file its module loaded.

A mistyped `QUERIES["..."]` used to fail only when that line ran (some only under faults);
this reads every module that loads named blocks and checks each literal name it uses.
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = [p for base in ("imuflow", "services", "contracts") for p in sorted((ROOT / base).rglob("*.py"))]


def _query_modules() -> list[Path]:
    return [p for p in SHIPPED if "db.load_queries(" in p.read_text()]


def _names_used(path: Path, table: str) -> set[str]:
    """Literal keys of `table[...]` subscripts in the module."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if (
            isinstance(node, ast.Subscript)
            and isinstance(node.value, ast.Name)
            and node.value.id == table
            and isinstance(node.slice, ast.Constant)
            and isinstance(node.slice.value, str)
        ):
            names.add(node.slice.value)
    return names


def test_the_modules_that_load_queries_are_found() -> None:
    found = {p.relative_to(ROOT).as_posix() for p in _query_modules()}
    assert {"imuflow/outbox.py", "services/ingest/repository.py", "services/parser/repository.py"} <= found


@pytest.mark.parametrize("path", _query_modules(), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_query_name_used_exists(path: Path) -> None:
    module = importlib.import_module(path.relative_to(ROOT).with_suffix("").as_posix().replace("/", "."))
    tables = {
        name: value for name, value in vars(module).items() if name.isupper() and isinstance(value, dict)
    }
    loaded = {
        name: table
        for name, table in tables.items()
        if table and all(isinstance(v, str) for v in table.values())
    }
    assert loaded, f"{path} loads named blocks but keeps none in a module constant"
    for name, table in loaded.items():
        missing = _names_used(path, name) - set(table)
        assert not missing, f"{path}: {name} has no block named {sorted(missing)}"
