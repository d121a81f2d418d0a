"""The architecture's rules that import-linter cannot see: Faust and the private names of faust and
aiokafka stay inside ``app/runtime`` (the one package pinned to their exact releases)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PRODUCT = ("app", "agents", "models")
RUNTIME = ROOT / "app" / "runtime"
LIBRARIES = ("faust", "mode", "aiokafka")


def _modules(*folders: str) -> list[Path]:
    return sorted(p for folder in folders for p in (ROOT / folder).rglob("*.py"))


def _outside_runtime(*folders: str) -> list[Path]:
    return [p for p in _modules(*folders) if RUNTIME not in p.parents]


def _our_private_names() -> set[str]:
    """Every ``_name`` our own code defines: functions, classes, module names and ``self._x``."""
    names: set[str] = set()
    for path in _modules(*PRODUCT, "benchmarks", "tests"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                names.add(node.name)
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                names.add(node.id)
            elif isinstance(node, ast.arg):
                names.add(node.arg)
            elif (
                isinstance(node, ast.Attribute)
                and isinstance(node.ctx, ast.Store)
                and isinstance(node.value, ast.Name)
                and node.value.id in ("self", "cls")
            ):
                names.add(node.attr)
    return {n for n in names if n.startswith("_")}


def _private_touches(path: Path, ours: set[str]) -> list[str]:
    """Imports of private library names, and ``x._name`` reads of a name our code does not define."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in LIBRARIES:
            if any(part.startswith("_") for part in (node.module or "").split(".")):
                found.append(f"line {node.lineno}: from {node.module}")
            found += [f"line {node.lineno}: import {a.name}" for a in node.names if a.name.startswith("_")]
        elif (
            isinstance(node, ast.Attribute)
            and node.attr.startswith("_")
            and not node.attr.startswith("__")
            and node.attr not in ours
        ):
            found.append(f"line {node.lineno}: ._{node.attr.lstrip('_')}")
    return found


def test_no_module_outside_the_runtime_touches_private_names_of_faust_or_aiokafka() -> None:
    ours = _our_private_names()
    offenders = {
        str(path.relative_to(ROOT)): hits
        for path in _outside_runtime(*PRODUCT, "benchmarks")
        if (hits := _private_touches(path, ours))
    }
    assert offenders == {}


def test_the_rule_sees_a_private_read_and_a_private_import(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text(
        "from aiokafka.producer import _private\n"
        "async def f(consumer):\n"
        "    return await consumer._client.fetch_all_metadata()\n"
    )
    hits = _private_touches(sample, _our_private_names())
    assert any("_private" in hit for hit in hits) and any("._client" in hit for hit in hits)


@pytest.mark.parametrize("path", _outside_runtime(*PRODUCT), ids=lambda p: str(p.relative_to(ROOT)))
def test_only_the_runtime_imports_faust(path: Path) -> None:
    imported = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
    assert not imported & {"faust", "mode"}, f"{path.relative_to(ROOT)} imports Faust; go through app.runtime"
