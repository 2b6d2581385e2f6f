from __future__ import annotations

import os
from pathlib import Path
import re
import sqlite3
import subprocess
import sys
import textwrap
from typing import Any

import optuna
import pytest
from sqlalchemy import event
from sqlalchemy.engine import Engine

import bsopt
from bsopt.cli import main

ROOT = Path(__file__).resolve().parents[1]

STUDY_SCRIPT = textwrap.dedent(
    """
    import bsopt

    def build_objective(*, seed=0):
        data = bsopt.make_synthetic(400, n_features=8, n_classes=3, seed=seed)
        return bsopt.make_objective(
            bsopt.mlp_builder(data, hidden=(16,)), data,
            space=bsopt.SearchSpace(batch_size=(8, 64)),
            budget=bsopt.Budget(1, evals=2), seed=seed, device="cpu",
        )
    """
)


@pytest.fixture
def script(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.py"
    path.write_text(STUDY_SCRIPT)
    return path


def test_run_a_study_script_and_resume_to_the_total(
    script: Path, sqlite_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["run", str(script), "--storage", sqlite_url, "--no-progress", "--seed", "1"]
    assert main([*args, "--trials", "3"]) == 0
    out = capsys.readouterr().out
    assert "Study 'tiny' in sqlite:///" in out and "0 of 3 trials finished" in out
    assert "Best trial #" in out and "batch_size" in out and "optuna-dashboard" in out
    assert main([*args, "--trials", "4"]) == 0
    assert "3 of 4 trials finished" in capsys.readouterr().out
    study = optuna.load_study(study_name="tiny", storage=sqlite_url)
    assert len(study.trials) == 4


def test_study_flag_renames_the_study(script: Path, sqlite_url: str) -> None:
    assert (
        main(
            [
                "run",
                str(script),
                "--storage",
                sqlite_url,
                "--study",
                "other",
                "--trials",
                "1",
                "--no-progress",
                "--pruner",
                "none",
            ]
        )
        == 0
    )
    assert optuna.get_all_study_names(sqlite_url) == ["other"]


def test_studies_lists_counts_and_best(
    script: Path, sqlite_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    main(["run", str(script), "--storage", sqlite_url, "--trials", "2", "--no-progress"])
    capsys.readouterr()
    assert main(["studies", "--storage", sqlite_url]) == 0
    out = capsys.readouterr().out
    best = optuna.load_study(study_name="tiny", storage=sqlite_url).best_value
    row = next(line for line in out.splitlines() if line.startswith("tiny"))
    _, direction, complete, pruned, fail, running, _ = row.split()
    assert (direction, int(complete) + int(pruned), fail, running) == ("maximize", 2, "0", "0")
    assert row.endswith(f"{best:.4f}")


def test_unknown_study_is_a_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "imagenet", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "bsopt: error: Unknown study 'imagenet'. Use a built-in study" in err
    assert "Traceback" not in err


def test_script_without_build_objective(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "empty.py"
    path.write_text("x = 1\n")
    assert main(["run", str(path)]) == 2
    assert "defines no build_objective(*, seed) function" in capsys.readouterr().err


def test_bad_storage_is_a_clear_error_without_password(
    script: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = "postgresql+psycopg://bob:hunter2@127.0.0.1:1/db"
    assert main(["run", str(script), "--storage", url, "--trials", "1"]) == 2
    err = capsys.readouterr().err
    assert "Cannot open the storage 'postgresql+psycopg://bob:***@127.0.0.1:1/db'" in err
    assert "hunter2" not in err


def test_other_direction_is_refused_and_the_study_is_kept(
    script: Path, sqlite_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    optuna.create_study(study_name="tiny", storage=sqlite_url, direction="minimize")
    assert main(["run", str(script), "--storage", sqlite_url, "--trials", "1"]) == 2
    assert "already exists in this storage and optimises minimize" in capsys.readouterr().err
    assert optuna.load_study(study_name="tiny", storage=sqlite_url).direction.name == "MINIMIZE"


def test_trials_must_be_positive(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["run", "digits", "--trials", "0"])
    assert exit_info.value.code == 2
    assert "--trials: must be at least 1, got 0" in capsys.readouterr().err


def test_env_storage_is_used_when_no_flag(
    script: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"sqlite:///{tmp_path / 'env.db'}"
    monkeypatch.setenv("BSOPT_STORAGE", url)
    assert main(["run", str(script), "--trials", "1", "--no-progress"]) == 0
    assert optuna.get_all_study_names(url) == ["tiny"]


@pytest.mark.slow
def test_the_digits_example_runs_as_documented(tmp_path: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("BSOPT_STORAGE", None)
    done = subprocess.run(
        [sys.executable, str(ROOT / "studies" / "digits.py"), "--trials", "2", "--no-progress"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert "Study 'digits' in sqlite:///storage/bsopt.db: 0 of 2 trials finished." in done.stdout
    assert "Best trial #" in done.stdout
    assert (tmp_path / "storage" / "bsopt.db").is_file()
    study = optuna.load_study(
        study_name="digits", storage=f"sqlite:///{tmp_path / 'storage' / 'bsopt.db'}"
    )
    assert len(study.trials) == 2


def test_the_command_exits_early_with_its_status_and_the_wal_folded_in(
    tmp_path: Path,
) -> None:
    # The command skips the interpreter's teardown; exit handlers still close the storage.
    db = tmp_path / "fast.db"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    args = [sys.executable, "-m", "bsopt", "run", "synthetic", "--trials", "2", "--jobs", "1"]
    done = subprocess.run(
        [*args, "--storage", f"sqlite:///{db}", "--no-progress"],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.rstrip().endswith(f"optuna-dashboard sqlite:///{db}")  # all flushed
    assert db.is_file() and not (tmp_path / "fast.db-wal").exists()
    missing = str(tmp_path / "missing.py")
    bad = subprocess.run(
        [sys.executable, "-m", "bsopt", "run", missing, "--storage", f"sqlite:///{db}"],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert bad.returncode == 2  # main's status, passed through the early exit
    assert bad.stderr.startswith(f"bsopt: error: Unknown study {missing!r}.")


def test_module_help_lists_commands() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bsopt", "--help"], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0
    assert "run STUDY" in done.stdout and "studies" in done.stdout
    assert bsopt.__version__ == "0.1.0"


def test_help_lists_each_command_once_and_each_default_once(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit):
        bsopt.cli.main(["--help"])
    top = capsys.readouterr().out
    for command in ("run", "worker", "proxy", "studies", "probe", "report", "confirm"):
        assert len(re.findall(rf"^  {command}\b", top, flags=re.M)) == 1, command
    for command in ("run", "report", "confirm", "dashboard"):
        with pytest.raises(SystemExit):
            bsopt.cli.main([command, "--help"])
        text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
        assert "(default: None)" not in text and "(default: False)" not in text, command
        assert not re.search(r"\(default: [^)]*\) \(default:", text), command


def test_version_prints_the_package_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        bsopt.cli.main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"bsopt {bsopt.__version__}"


# --- user mistakes: one line, exit 2, no traceback ----------------------------------------


def test_empty_study_name_is_refused(
    script: Path, sqlite_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["run", str(script), "--storage", sqlite_url, "--study", "", "--trials", "1"])
    assert exit_info.value.code == 2
    assert "--study: The study name must be a non-empty string, but got ''" in (
        capsys.readouterr().err
    )
    assert optuna.get_all_study_names(sqlite_url) == []


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("def build_objective(*, seed:\n", r"has a syntax error at line 1: "),
        ("import bsopt\nraise RuntimeError('no GPU here')\n", r"raised RuntimeError while being "
         r"imported \(line 2\): no GPU here\. Fix it"),
        ("def build_objective(*, seed):\n    return {}['model']\n", r"build_objective\(seed=0\) "
         r"of the study script .* raised KeyError \(line 2\): 'model'"),
    ],
)  # fmt: skip
def test_broken_study_scripts_are_one_line_errors(
    tmp_path: Path, sqlite_url: str, source: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "broken.py"
    path.write_text(source)
    assert main(["run", str(path), "--storage", sqlite_url, "--trials", "1"]) == 2
    err = capsys.readouterr().err
    assert re.search(message, err), err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_resume_with_a_changed_space_is_refused_unless_allowed(
    script: Path, tmp_path: Path, sqlite_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["--storage", sqlite_url, "--study", "s", "--no-progress", "--pruner", "none"]
    assert main(["run", str(script), *args, "--trials", "1"]) == 0
    changed = tmp_path / "changed.py"
    changed.write_text(STUDY_SCRIPT.replace("batch_size=(8, 64)", "batch_size=(128, 256)"))
    capsys.readouterr()
    assert main(["run", str(changed), *args, "--trials", "2"]) == 2
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert "  batch_size [8, 64] -> [128, 256]" in lines
    assert "  study definition: tiny.py -> changed.py" in lines
    assert "--allow-definition-change" in lines[-1]
    # --allow-space-change, the flag's older name, still works.
    assert main(["run", str(changed), *args, "--trials", "2", "--allow-space-change"]) == 0
    study = optuna.load_study(study_name="s", storage=sqlite_url)
    assert study.user_attrs["search_space"]["batch_size"] == [128, 256]
    assert len(study.trials) == 2


# --- storage faults ----------------------------------------------------------------------


def _sqlite_path(url: str) -> str:
    return url.removeprefix("sqlite:///")


@pytest.mark.slow
def test_a_full_disk_is_one_line_and_keeps_finished_trials(
    script: Path, sqlite_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["run", str(script), "--storage", sqlite_url, "--no-progress", "--pruner", "none"]
    args += ["--jobs", "1"]  # in this process, where the fault is injected
    assert main([*args, "--trials", "2"]) == 0
    kept = [t.params for t in optuna.load_study(study_name="tiny", storage=sqlite_url).trials]
    with sqlite3.connect(_sqlite_path(sqlite_url)) as db:
        pages = db.execute("PRAGMA page_count").fetchone()[0]

    def limit(connection: Any, _record: Any) -> None:
        # SQLite's own size limit: past it, every write fails as on a full disk.
        connection.execute(f"PRAGMA max_page_count = {pages}")

    event.listen(Engine, "connect", limit)
    try:
        capsys.readouterr()
        assert main([*args, "--trials", "40"]) == 2
    finally:
        event.remove(Engine, "connect", limit)
    err = capsys.readouterr().err
    assert "database or disk is full" in err and "free space and run the same command" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    trials = optuna.load_study(study_name="tiny", storage=sqlite_url).trials
    assert [t.params for t in trials[:2]] == kept
    assert all(t.state.name == "COMPLETE" for t in trials[:2])


def test_a_damaged_database_is_one_line(
    script: Path, sqlite_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["run", str(script), "--storage", sqlite_url, "--trials", "1", "--no-progress"]
    assert main(args) == 0
    path = _sqlite_path(sqlite_url)
    with sqlite3.connect(path) as db:
        page_size = db.execute("PRAGMA page_size").fetchone()[0]
    with open(path, "r+b") as f:  # overwrite the pages after the header page
        f.seek(page_size)
        f.write(b"\xa5" * page_size * 3)
    capsys.readouterr()
    assert main(["studies", "--storage", sqlite_url]) == 2
    err = capsys.readouterr().err
    assert "malformed" in err and "is damaged" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


DELETING_SCRIPT = STUDY_SCRIPT + textwrap.dedent(
    """
    import os

    _build = build_objective


    class Deleting(bsopt.Objective):
        def __call__(self, trial):
            if trial.number == 3:  # what `rm storage/bsopt.db` in another terminal does
                os.remove(os.environ["TINY_DELETE"])
            return super().__call__(trial)


    def build_objective(*, seed=0):
        objective = _build(seed=seed)
        object.__setattr__(objective, "__class__", Deleting)  # a frozen dataclass
        return objective
    """
)


@pytest.mark.slow
def test_a_database_deleted_mid_run_is_one_line(
    tmp_path: Path, sqlite_url: str, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    path = Path(_sqlite_path(sqlite_url))
    script = tmp_path / "tiny.py"
    script.write_text(DELETING_SCRIPT)
    monkeypatch.setenv("TINY_DELETE", str(path))
    args = ["run", str(script), "--storage", sqlite_url, "--no-progress", "--pruner", "none"]
    assert main([*args, "--trials", "30"]) == 2
    err = capsys.readouterr().err
    assert "deleted or moved while in use" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    assert not path.exists()
