"""``import bsopt`` is lazy: public names load their module on first use, nothing heavy before.

Run in fresh interpreters (``subprocess``), because this test session has long imported
torch and Optuna itself.
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path
import subprocess
import sys

import pytest

import bsopt

INIT = Path(bsopt.__file__)
HEAVY = ("torch", "optuna", "sqlalchemy", "numpy", "sklearn", "matplotlib", "scipy")


def _modules_after(code: str) -> set[str]:
    """The top-level packages imported by a fresh interpreter running ``code``."""
    listing = "print(' '.join(sorted({m.split('.')[0] for m in sys.modules})))"
    probe = f"{code}\nimport sys\n{listing}"
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=120
    )
    return set(done.stdout.split())


def _type_checking_imports() -> dict[str, str]:
    """Name -> module of the imports under ``if TYPE_CHECKING:`` in bsopt/__init__.py."""
    tree = ast.parse(INIT.read_text())
    found: dict[str, str] = {}
    for node in tree.body:
        if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING":
            for item in node.body:
                assert isinstance(item, ast.ImportFrom) and item.module, ast.unparse(item)
                for alias in item.names:
                    found[alias.asname or alias.name] = item.module
    return found


def test_import_bsopt_imports_nothing_heavy() -> None:
    loaded = _modules_after("import bsopt")
    assert "bsopt" in loaded
    assert not loaded & set(HEAVY), sorted(loaded & set(HEAVY))


def test_a_light_name_loads_only_its_module() -> None:
    # Budget lives in a module that needs neither torch nor Optuna.
    loaded = _modules_after("import bsopt\nbsopt.Budget(3, 'epochs')")
    assert not loaded & {"torch", "optuna"}, sorted(loaded & {"torch", "optuna"})


def test_the_lazy_table_and_the_type_checking_imports_name_the_same_modules() -> None:
    # Mypy and editors read the TYPE_CHECKING imports, the interpreter reads _LAZY: a name
    # added to one and not the other would type-check yet fail at run time, or the reverse.
    assert _type_checking_imports() == bsopt._LAZY


def test_every_public_name_is_the_object_its_module_defines() -> None:
    for name in bsopt.__all__:
        module = importlib.import_module(bsopt._LAZY[name])
        assert getattr(bsopt, name) is getattr(module, name), name


def test_the_integrations_load_lazily_and_stay_out_of_star_imports() -> None:
    assert {"LightningReporter", "TransformersReporter"} <= set(bsopt._LAZY)
    assert "LightningReporter" not in bsopt.__all__
    assert "TransformersReporter" not in bsopt.__all__
    assert "LightningReporter" in dir(bsopt)


def test_star_import_gives_every_public_name() -> None:
    namespace: dict[str, object] = {}
    exec("from bsopt import *", namespace)
    assert set(bsopt.__all__) <= set(namespace)


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'make_objectve'"):
        bsopt.make_objectve  # noqa: B018
