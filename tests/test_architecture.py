"""Imports point one way: study script -> API -> objective -> space/trainer -> memory."""

from __future__ import annotations

import ast
from pathlib import Path

import bsopt

PACKAGE = Path(bsopt.__file__).parent

# Each module may import only modules listed before it (its layer or below).
LAYERS = [
    "_stop",
    "_memory",
    "_batch",
    "_budget",
    "_schedules",
    "_space",
    "_data",
    "_datasets",
    "_models",
    "_noise",
    "_optim",
    "_metrics",
    "_distributed",
    "_trainer",
    "_probe",
    "_fair",
    "_objective",
    "_lightning",
    "_transformers",
    "_pruners",
    "_storage",
    "_study",
    "_analysis",
    "_confirm",
    "_report",
    "_dashboard",
    "_workers",
    "_runner",
    "_cli",
]
NO_OPTUNA = {"_memory", "_budget", "_space", "_data", "_datasets", "_models", "_trainer"}
NO_OPTUNA |= {"_schedules", "_noise", "_optim", "_stop", "_batch", "_metrics"}
NO_OPTUNA |= {"_distributed"}
# The probe sits below the objective, which caches its result in the study.
NO_OPTUNA |= {"_probe"}


def _runtime_imports(module: str) -> set[str]:
    tree = ast.parse((PACKAGE / f"{module}.py").read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            node.body = []  # type-only imports do not count
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


def test_every_module_is_in_a_layer() -> None:
    modules = {p.stem for p in PACKAGE.glob("_*.py") if p.stem not in ("__init__", "__main__")}
    assert modules == set(LAYERS)


def test_imports_point_down_the_layers() -> None:
    for i, module in enumerate(LAYERS):
        for name in _runtime_imports(module):
            if name.startswith("bsopt._"):
                target = name.removeprefix("bsopt.")
                assert LAYERS.index(target) < i, f"{module} imports {target}, a higher layer"


def test_only_the_objective_and_above_import_optuna() -> None:
    for module in NO_OPTUNA:
        imported = _runtime_imports(module)
        assert not any(n.split(".")[0] == "optuna" for n in imported), module


def test_public_names_are_exported() -> None:
    for name in bsopt.__all__:
        assert hasattr(bsopt, name), name
