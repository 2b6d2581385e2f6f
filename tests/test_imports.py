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


STAGES = ["core", "training", "store", "search", "runs", "analysis", "report", "integrations"]
PACKAGES = ["bsopt", *(f"bsopt.{stage}" for stage in STAGES)]


def _type_checking_imports(package: str) -> dict[str, str]:
    """Name -> module of the imports under ``if TYPE_CHECKING:`` in a package's __init__."""
    init = INIT.parent.joinpath(*package.split(".")[1:], "__init__.py")
    tree = ast.parse(init.read_text())
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


@pytest.mark.parametrize("package", PACKAGES)
def test_the_lazy_table_and_the_type_checking_imports_name_the_same_modules(
    package: str,
) -> None:
    # Mypy and editors read the TYPE_CHECKING imports, the interpreter reads _LAZY: a name
    # added to one and not the other would type-check yet fail at run time, or the reverse.
    lazy = importlib.import_module(package)._LAZY
    names = {name: module for name, module in lazy.items() if module != f"{package}.{name}"}
    assert _type_checking_imports(package) == names


@pytest.mark.parametrize("package", PACKAGES)
def test_every_public_name_is_the_object_its_module_defines(package: str) -> None:
    imported = importlib.import_module(package)
    for name in imported.__all__:
        module = importlib.import_module(imported._LAZY[name])
        assert getattr(imported, name) is getattr(module, name), name


def test_the_stages_are_reached_from_the_top() -> None:
    for stage in STAGES:
        assert getattr(bsopt, stage) is importlib.import_module(f"bsopt.{stage}")


def test_the_top_level_names_about_thirty() -> None:
    # The names a study script needs; the rest live in their stage (docs/architecture.md).
    assert 25 <= len(bsopt.__all__) <= 35, len(bsopt.__all__)


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


def _cli_modules(argv: list[str], cwd: Path) -> set[str]:
    """The modules a fresh ``bsopt ARGV`` process has imported when it ends."""
    code = (
        "import sys\n"
        "from bsopt.cli import main\n"
        "try:\n"
        f"    main({argv!r})\n"
        "except SystemExit:\n"
        "    pass\n"
        "print('\\nMODULES', ' '.join(sorted(sys.modules)))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=cwd
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return set(done.stdout.rsplit("MODULES", 1)[1].split())


def _finished_study(url: str) -> None:
    """A small digits-like study written with Optuna alone (no bsopt objective, no torch)."""
    import optuna

    study = optuna.create_study(study_name="light", storage=url, direction="maximize")
    study.set_user_attr("metric", "accuracy")
    dists = {
        "log2_batch_size": optuna.distributions.IntDistribution(4, 8),
        "lr": optuna.distributions.FloatDistribution(1e-4, 1e-1, log=True),
    }
    for k in range(10):
        log2 = 4 + k % 5
        study.add_trial(
            optuna.trial.create_trial(
                params={"log2_batch_size": log2, "lr": 10 ** (-3 + (k % 3) / 2)},
                distributions=dists,
                value=0.9 + 0.01 * (k % 5),
                intermediate_values={100 * (i + 1): 0.5 + 0.1 * i for i in range(4)},
                user_attrs={"effective_batch_size": 2**log2, "samples_seen": 400},
            )
        )


@pytest.mark.parametrize("argv", [["--help"], ["studies", "--storage", "sqlite:///s.db"]])
def test_commands_that_do_not_train_import_neither_torch_nor_the_trainer(
    argv: list[str], tmp_path: Path
) -> None:
    _finished_study(f"sqlite:///{tmp_path / 's.db'}")
    loaded = _cli_modules(argv, tmp_path)
    assert "bsopt.cli" in loaded
    assert "torch" not in loaded and "bsopt.training._trainer" not in loaded


@pytest.mark.slow
def test_bsopt_report_imports_neither_torch_nor_the_trainer(tmp_path: Path) -> None:
    _finished_study(f"sqlite:///{tmp_path / 's.db'}")
    argv = ["report", "--study", "light", "--storage", "sqlite:///s.db", "--out", "out"]
    loaded = _cli_modules(argv, tmp_path)
    assert (tmp_path / "out" / "report.html").is_file()  # the report was really written
    assert "torch" not in loaded and "bsopt.training._trainer" not in loaded


def test_the_help_lists_the_built_in_studies_without_building_them(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bsopt", "run", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert done.returncode == 0 and "digits" in done.stdout and "synthetic" in done.stdout
