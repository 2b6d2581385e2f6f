"""Imports point one way, by stage: each stage imports only the stages its rule names.

Stages (see docs/architecture.md): core -> training and store -> search -> runs; analysis
reads storage only, report renders analysis, integrations are callbacks over search, and
the command line sits on top of everything.
"""

from __future__ import annotations

import ast
from pathlib import Path

import bsopt

PACKAGE = Path(bsopt.__file__).parent
SHARED = {"_lazy"}  # the lazy-loading helper every __init__ uses, below every stage

# Stage -> the stages it may import (besides itself and SHARED).
MAY_IMPORT: dict[str, set[str]] = {
    "core": set(),
    "training": {"core"},
    "store": {"core"},
    "search": {"core", "training", "store"},
    "analysis": {"core", "store"},
    "report": {"core", "store", "analysis"},
    "runs": {"core", "training", "store", "search", "analysis", "report"},
    "integrations": {"core", "training", "search"},
    # The command line may also read the top package (its __version__).
    "cli": {"bsopt", "core", "training", "store", "search", "analysis", "report", "runs"},
}
# Stages that must load without these packages at run time.
NO_TORCH = {"core", "store", "analysis", "report"}
NO_OPTUNA = {"core", "training"}


def _stage_of(path: Path) -> str:
    relative = path.relative_to(PACKAGE)
    return relative.parts[0] if len(relative.parts) > 1 else relative.stem


def _modules() -> list[Path]:
    return [p for p in PACKAGE.rglob("*.py") if p.parent != PACKAGE or p.stem == "cli"]


def _runtime_imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            node.body = []  # type-only imports do not count
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            if node.module == "bsopt":
                names.update(f"bsopt.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


def test_every_module_belongs_to_a_stage_with_a_rule() -> None:
    stages = {_stage_of(p) for p in _modules()}
    assert stages == set(MAY_IMPORT), stages ^ set(MAY_IMPORT)
    flat = {p.stem for p in PACKAGE.glob("*.py")} - {"__init__", "__main__", "cli"} - SHARED
    assert not flat, f"modules outside a stage: {sorted(flat)}"


def test_each_stage_imports_only_the_stages_its_rule_allows() -> None:
    broken = []
    for path in _modules():
        stage = _stage_of(path)
        for name in _runtime_imports(path):
            parts = name.split(".")
            if parts[0] != "bsopt":
                continue
            target = parts[1] if len(parts) > 1 else "bsopt"
            if name == "bsopt.__version__":
                target = "bsopt"
            if target in SHARED or target == stage:
                continue
            if target not in MAY_IMPORT[stage]:
                broken.append(f"{path.relative_to(PACKAGE)} imports {name}")
    assert not broken, broken


def test_the_light_stages_import_neither_torch_nor_optuna_where_ruled() -> None:
    for path in _modules():
        stage = _stage_of(path)
        roots = {name.split(".")[0] for name in _runtime_imports(path)}
        if stage in NO_TORCH:
            assert "torch" not in roots, f"{path.relative_to(PACKAGE)} imports torch"
        if stage in NO_OPTUNA:
            assert "optuna" not in roots, f"{path.relative_to(PACKAGE)} imports optuna"


def test_public_names_are_exported() -> None:
    for name in bsopt.__all__:
        assert hasattr(bsopt, name), name


def test_no_function_is_over_80_lines() -> None:
    # Long functions were where behaviour hid; 80 lines, docstring included, is the house rule.
    long = []
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = (node.end_lineno or node.lineno) - node.lineno + 1
                if length > 80:
                    long.append(f"{path.relative_to(PACKAGE)}::{node.name} {length}")
    assert not long, long
