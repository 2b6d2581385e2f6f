"""One session: the run settings, checked once, reach every path; one way to open a study."""

from __future__ import annotations

import dataclasses
import inspect
from pathlib import Path
import subprocess

import pytest

import bsopt
from bsopt.runs._runner import run, synthetic
from bsopt.runs._session import RunSettings, open_study, settings_of
from bsopt.runs._workers import attach_worker, run_workers

FIELDS = {f.name: f.default for f in dataclasses.fields(RunSettings)}
# Each public function's own arguments, besides the settings.
OWN = {
    run: {"build_objective", "echo"},
    attach_worker: {"build_objective", "worker", "create", "dry_run", "echo"},
    run_workers: {"build_objective", "objective"},
}
# Defaults a public function documents as its own.
OWN_DEFAULTS = {(attach_worker, "sampler_seed"): None}


@pytest.mark.parametrize("function", list(OWN), ids=lambda f: f.__name__)
def test_every_keyword_of_the_public_functions_is_a_setting(function: object) -> None:
    parameters = inspect.signature(function).parameters  # type: ignore[arg-type]
    for name, parameter in parameters.items():
        if name in OWN[function]:  # type: ignore[index]
            continue
        assert name in FIELDS, f"{name} would not reach RunSettings"
        if parameter.default is not inspect.Parameter.empty:
            expected = OWN_DEFAULTS.get((function, name), FIELDS[name])  # type: ignore[arg-type]
            assert parameter.default == expected, name


def test_settings_of_takes_the_fields_and_leaves_the_rest() -> None:
    arguments = {"study_name": "s", "trials": 3, "echo": print, "worker": 2, "jobs": None}
    settings = settings_of(arguments, sampler_seed=7)
    assert (settings.study_name, settings.trials, settings.jobs) == ("s", 3, None)
    assert settings.sampler_seed == 7


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"study_name": ""}, r"study name must be a non-empty string, but got ''"),
        ({"trials": 0}, r"trials \(the total to reach\) must be an integer >= 1, got 0"),
        ({"pruner": "asha"}, r"pruner must be one of median, percentile, .* but got 'asha'"),
        ({"jobs": 0}, r"jobs must be an integer >= 1 or None \(pick\), but got 0\. Use 1"),
        ({"devices": 0}, r"devices must be an integer >= 1, but got 0\."),
        ({"seed": 1.5}, r"seed must be an integer, but got 1\.5\. Pass a whole number"),
        ({"heartbeat_interval": 0}, r"heartbeat_interval must be an integer >= 1 or None"),
        (
            {"heartbeat_interval": 5, "grace_period": 5},
            r"grace_period \(5 s\) must be longer than heartbeat_interval \(5 s\).*"
            r"Try grace_period=10\.",
        ),
        ({"poll_interval": 0}, r"poll_interval must be > 0 seconds, got 0\."),
    ],
)
def test_bad_settings_are_refused_when_made(changes: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RunSettings(**{"study_name": "s", "trials": 1, **changes})  # type: ignore[arg-type]


def test_replace_checks_again() -> None:
    settings = RunSettings("s", 2)
    assert settings.replace(jobs=4).jobs == 4
    with pytest.raises(ValueError, match=r"jobs must be an integer >= 1"):
        settings.replace(jobs=-1)


def test_open_study_creates_loads_and_refuses_a_missing_study(sqlite_url: str) -> None:
    settings = RunSettings("opened", 1, storage=sqlite_url, pruner="none", jobs=None)
    with pytest.raises(ValueError, match=r"There is no study 'opened' in sqlite:///"):
        open_study(synthetic, settings, create=False, echo=None)
    created = open_study(synthetic, settings, echo=None)
    assert created is not None
    assert created.study.study_name == "opened" and created.url == sqlite_url
    assert created.study.user_attrs["budget"]  # the definition is kept with the study
    joined = open_study(synthetic, settings, create=False, worker=1, echo=None)
    assert joined is not None and joined.study._study_id == created.study._study_id


def test_a_public_keyword_reaches_the_worker(sqlite_url: str) -> None:
    with pytest.raises(ValueError, match=r"poll_interval must be > 0 seconds, got -1"):
        bsopt.attach_worker(synthetic, study_name="s", trials=1, poll_interval=-1)


def test_a_read_only_storage_is_refused_before_any_trial(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # An immutable file (chattr +i): even root cannot write it, so it opens read-only.
    database = tmp_path / "frozen.db"
    url = f"sqlite:///{database}"
    assert bsopt.cli.main(["run", "synthetic", "--trials", "1", "--storage", url,
                           "--no-progress", "--jobs", "1"]) == 0  # fmt: skip
    bsopt.store.close_connections(bsopt.open_storage(url))
    for leftover in (database.with_name("frozen.db-wal"), database.with_name("frozen.db-shm")):
        leftover.unlink(missing_ok=True)
    before = database.read_bytes()
    if subprocess.run(["chattr", "+i", str(database)], capture_output=True).returncode != 0:
        pytest.skip("chattr +i is not available here (needs root and a file system with it)")
    try:
        capsys.readouterr()
        code = bsopt.cli.main(["run", "synthetic", "--trials", "3", "--storage", url,
                               "--no-progress", "--jobs", "1"])  # fmt: skip
        err = capsys.readouterr().err
    finally:
        subprocess.run(["chattr", "-i", str(database)], check=True)
    assert code == 2
    assert "can only be read: its file or folder is read-only (or immutable)" in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert database.read_bytes() == before
