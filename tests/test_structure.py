"""The package's shape: who may import whom, and sizes a reader takes in at a glance."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "tdsclip"
ENTRY_POINTS = (
    "train",
    "eval",
    "predict",
    "convert",
    "summary",
    "benchmark",
    "results",
    "visualize",
)

# Subpackage -> the tdsclip modules it must never import (at any depth, lazily included).
FORBIDDEN = {
    "models": (
        "tdsclip.data",
        "tdsclip.engine",
        "tdsclip.bench",
        *(f"tdsclip.{e}" for e in ENTRY_POINTS),
    ),
    "data": (
        "tdsclip.models",
        "tdsclip.engine",
        "tdsclip.bench",
        *(f"tdsclip.{e}" for e in ENTRY_POINTS),
    ),
    "engine": ("tdsclip.bench", *(f"tdsclip.{e}" for e in ENTRY_POINTS)),
    # Reports read files and draw; what they need of a config comes from their callers.
    "report": (
        "tdsclip.models",
        "tdsclip.data",
        "tdsclip.engine",
        "tdsclip.bench",
        *(f"tdsclip.{e}" for e in ENTRY_POINTS),
    ),
}


def modules(sub: str = "") -> list[Path]:
    return sorted((PACKAGE / sub).rglob("*.py"))


def imported(path: Path) -> set[str]:
    """Every module name an ``import`` or ``from ... import`` in the file names."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names |= {f"{node.module}.{alias.name}" for alias in node.names}
    return names


@pytest.mark.parametrize("sub", sorted(FORBIDDEN))
def test_subpackages_import_only_what_the_layering_allows(sub):
    bad = [
        f"{path.relative_to(PACKAGE)} imports {name}"
        for path in modules(sub)
        for name in sorted(imported(path))
        if any(name == f or name.startswith(f + ".") for f in FORBIDDEN[sub])
    ]
    assert not bad, "\n".join(bad)


def test_the_import_check_sees_lazy_imports(tmp_path):
    source = tmp_path / "m.py"
    source.write_text("def f():\n    from tdsclip.engine import trainer\n")
    assert "tdsclip.engine.trainer" in imported(source)


def test_files_and_functions_stay_short():
    long_files = [
        f"{p.relative_to(PACKAGE)}: {n} lines"
        for p in modules()
        if (n := len(p.read_text().splitlines())) > 500
    ]
    long_functions = []
    for path in modules():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                start = min([node.lineno, *(d.lineno for d in node.decorator_list)])
                if (length := node.end_lineno - start + 1) > 80:
                    where = f"{path.relative_to(PACKAGE)}:{node.lineno}"
                    long_functions.append(f"{where} {node.name}: {length} lines")
    assert not long_files, long_files
    assert not long_functions, long_functions


@pytest.mark.parametrize("name", ENTRY_POINTS)
def test_entry_points_are_thin(name):
    path = PACKAGE / f"{name}.py"
    assert len(path.read_text().splitlines()) < 100
    assert "__main__" in path.read_text()  # `python -m tdsclip.<name>` runs it
