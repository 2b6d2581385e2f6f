"""One study, one experiment: the definition kept with a study and checked before training.

Every test drives the real command (``bsopt.cli.main``) on a real SQLite file, with study
scripts like the ones users write.
"""

from __future__ import annotations

import functools
from pathlib import Path
import re
import sqlite3
import textwrap

import optuna
import pytest
import torch

import bsopt
from bsopt.cli import main
from bsopt.core._attrs import CONFIRM_ATTR
from bsopt.runs._runner import (
    BUILTIN_STUDIES,
    build_from_ref,
    definition_name,
    load_study_definition,
)
from bsopt.runs._study import definition_differences
from bsopt.search._objective import data_fingerprint

SCRIPT = textwrap.dedent(
    """
    import os

    import bsopt


    def build_objective(*, seed=0):
        if os.environ.get("BUILT_WITH"):  # which seed each build got, for the test to read
            with open(os.environ["BUILT_WITH"], "a") as log:
                log.write(f"{seed}\\n")
        data = bsopt.make_synthetic(ROWS, n_features=8, n_classes=3, seed=seed)
        return bsopt.make_objective(
            bsopt.mlp_builder(data, hidden=(16,)), data,
            space=bsopt.SearchSpace(batch_size=(8, 64)),
            budget=bsopt.Budget(1, evals=2), seed=seed, device="cpu",
        )
    """
)
QUIET = ["--no-progress", "--pruner", "none", "--jobs", "1"]
HASH = r"[0-9a-f]{16}"


def _script(folder: Path, name: str = "tiny.py", *, rows: int = 400) -> Path:
    path = folder / name
    path.write_text(SCRIPT.replace("ROWS", str(rows)))
    return path


def _run(script: Path | str, url: str, *args: str, command: str = "run") -> int:
    return main([command, str(script), "--storage", url, *QUIET, *args])


def _trials(url: str, name: str) -> int:
    return len(optuna.load_study(study_name=name, storage=url).trials)


def _attrs(url: str, name: str) -> dict[str, object]:
    return optuna.load_study(study_name=name, storage=url).user_attrs


def _refusal(err: str) -> list[str]:
    """The differences a refusal lists, one per line."""
    lines = err.splitlines()
    assert "nothing was trained" in lines[0] and "--allow-definition-change" in lines[-1], err
    return [line.strip() for line in lines[1:-1]]


def test_the_first_run_stores_the_fingerprint(tmp_path: Path, sqlite_url: str) -> None:
    assert _run(_script(tmp_path), sqlite_url, "--study", "s", "--seed", "1", "--trials", "1") == 0
    definition = _attrs(sqlite_url, "s")["definition"]
    assert isinstance(definition, dict)
    assert set(definition) == {"study", "data", "model", "metric", "seed"}
    assert definition["study"] == "tiny.py" and definition["metric"] == "accuracy"
    assert definition["seed"] == 1
    data, model = definition["data"], definition["model"]
    assert {k: data[k] for k in ("name", "train_rows", "val_rows", "classes")} == {
        "name": "synthetic", "train_rows": 320, "val_rows": 80, "classes": 3,
    }  # fmt: skip
    assert re.fullmatch(HASH, data["sample"])
    # An 8-16-3 MLP: (8 * 16 + 16) + (16 * 3 + 3) parameters.
    assert model["class"] == "Sequential" and model["parameters"] == 195
    assert re.fullmatch(HASH, model["shapes"])


def test_another_built_in_study_is_refused_with_each_difference(
    sqlite_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # The case: synthetic trials into a digits study.
    assert _run("digits", sqlite_url, "--study", "digits", "--trials", "1") == 0
    stored = _attrs(sqlite_url, "digits")["definition"]
    capsys.readouterr()
    assert _run("synthetic", sqlite_url, "--study", "digits", "--trials", "2") == 2
    differences = _refusal(capsys.readouterr().err)
    assert differences[:6] == [
        "study definition: digits -> synthetic",
        "data: digits -> synthetic",
        "data: 1437 train rows -> 1600",
        "data: 360 validation rows -> 400",
        "data: 10 classes -> 4",
        differences[5],
    ]
    assert re.fullmatch(rf"data: other rows \(sample hash {HASH} -> {HASH}\)", differences[5])
    assert differences[6:] == ["model: 9610 parameters -> 5764"]
    # A worker is refused the same way; nothing trained, nothing stored.
    assert _run("synthetic", sqlite_url, "--study", "digits", "--trials", "2",
                command="worker") == 2  # fmt: skip
    assert _refusal(capsys.readouterr().err) == differences
    assert _trials(sqlite_url, "digits") == 1
    assert _attrs(sqlite_url, "digits")["definition"] == stored


def test_the_override_continues_with_the_new_definition(
    tmp_path: Path, sqlite_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["--study", "s", "--trials"]
    assert _run(_script(tmp_path), sqlite_url, *args, "1") == 0
    smaller = _script(tmp_path, "smaller.py", rows=300)
    assert _run(smaller, sqlite_url, *args, "2") == 2
    assert "data: 320 train rows -> 240" in _refusal(capsys.readouterr().err)
    assert _run(smaller, sqlite_url, *args, "2", "--allow-definition-change") == 0
    assert "definition changed on request: study definition: tiny.py -> smaller.py" in (
        capsys.readouterr().out
    )
    definition = _attrs(sqlite_url, "s")["definition"]
    assert isinstance(definition, dict) and definition["data"]["train_rows"] == 240
    assert _trials(sqlite_url, "s") == 2
    assert _run(smaller, sqlite_url, *args, "3") == 0  # the new definition is the study's now


def test_another_seed_is_refused_as_another_data_split(
    tmp_path: Path, sqlite_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    script = _script(tmp_path)
    assert _run(script, sqlite_url, "--study", "s", "--seed", "1", "--trials", "1") == 0
    capsys.readouterr()
    assert _run(script, sqlite_url, "--study", "s", "--seed", "2", "--trials", "2") == 2
    differences = _refusal(capsys.readouterr().err)
    assert len(differences) == 2
    assert re.fullmatch(rf"data: other rows \(sample hash {HASH} -> {HASH}\)", differences[0])
    assert differences[1] == "seed (data split and training): 1 -> 2"
    assert _trials(sqlite_url, "s") == 1


def test_a_plain_optuna_study_is_not_adopted_silently(
    tmp_path: Path, sqlite_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    plain = optuna.create_study(storage=sqlite_url, study_name="plain", direction="maximize")
    x = optuna.distributions.FloatDistribution(0.0, 1.0)
    for value in (0.1, 0.2, 0.3):
        plain.tell(plain.ask({"x": x}), value)
    script = _script(tmp_path)
    assert _run(script, sqlite_url, "--study", "plain", "--trials", "4") == 2
    err = capsys.readouterr().err
    assert "The study 'plain' holds 3 finished trials that bsopt did not make" in err
    assert "Use a new --study name, or pass --allow-definition-change" in err
    assert _trials(sqlite_url, "plain") == 3 and "definition" not in _attrs(sqlite_url, "plain")
    # On request they are adopted: they count toward the total, and the definition is kept.
    assert _run(script, sqlite_url, "--study", "plain", "--trials", "4",
                "--allow-definition-change") == 0  # fmt: skip
    assert "adopted the 3 finished trials of 'plain'" in capsys.readouterr().out
    assert _trials(sqlite_url, "plain") == 4 and "definition" in _attrs(sqlite_url, "plain")


def test_a_study_stored_before_the_fingerprint_gets_it_on_resume_and_says_so_once(
    tmp_path: Path, sqlite_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    script = _script(tmp_path)
    assert _run(script, sqlite_url, "--study", "old", "--trials", "1") == 0
    # What an older bsopt stored: the search space and the budget, no fingerprint.
    with sqlite3.connect(sqlite_url.removeprefix("sqlite:///")) as db:
        db.execute("DELETE FROM study_user_attributes WHERE key = 'definition'")
    assert "definition" not in _attrs(sqlite_url, "old")
    capsys.readouterr()
    assert _run(script, sqlite_url, "--study", "old", "--trials", "2") == 0
    said = "was stored before bsopt kept a study's data, model, metric and seed"
    assert capsys.readouterr().out.count(said) == 1
    assert _attrs(sqlite_url, "old")["definition"]
    assert _run(script, sqlite_url, "--study", "old", "--trials", "3") == 0
    assert said not in capsys.readouterr().out
    assert _trials(sqlite_url, "old") == 3


def test_confirm_uses_the_studys_own_seed_and_data_split(
    tmp_path: Path, sqlite_url: str, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    script = _script(tmp_path)
    assert _run(script, sqlite_url, "--study", "s", "--seed", "1", "--trials", "3") == 0
    built = tmp_path / "built.txt"
    monkeypatch.setenv("BUILT_WITH", str(built))
    capsys.readouterr()
    confirm = ["confirm", str(script), "--storage", sqlite_url, "--study", "s", "--jobs", "1"]
    # No --seed (so 0): confirm builds the study with its own seed, 1, and says so.
    assert main([*confirm, "--seeds", "2"]) == 0
    out = capsys.readouterr().out
    assert "confirm builds the study with its own seed, 1, so the reruns use its data split" in (
        out
    )
    assert built.read_text().split() == ["1"]
    study = optuna.load_study(study_name="s", storage=sqlite_url)
    reruns = optuna.load_study(study_name="s:confirm", storage=sqlite_url)
    assert all(CONFIRM_ATTR in t.user_attrs for t in reruns.trials) and reruns.trials
    # The data it confirmed on are the stored ones: same rows, same sample hash.
    _, build = load_study_definition(str(script))
    stored = study.user_attrs["definition"]
    assert build(seed=1).fingerprint()["data"] == stored["data"]
    assert build(seed=0).fingerprint()["data"] != stored["data"]


def test_confirm_with_another_definition_is_refused(
    tmp_path: Path, sqlite_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _run(_script(tmp_path), sqlite_url, "--study", "s", "--trials", "2") == 0
    before = _trials(sqlite_url, "s")
    other = _script(tmp_path, "other.py", rows=300)
    capsys.readouterr()
    confirm = ["confirm", str(other), "--storage", sqlite_url, "--study", "s", "--jobs", "1"]
    assert main([*confirm, "--seeds", "2"]) == 2
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert "study definition: tiny.py -> other.py" in err and "train rows -> 240" in err
    assert "`bsopt confirm` takes that seed from the study" in lines[-1]
    assert "--allow-definition-change" in lines[-1]
    assert _trials(sqlite_url, "s") == before  # no rerun trained or stored
    assert "s:confirm" not in optuna.get_all_study_names(storage=sqlite_url)
    assert main([*confirm, "--seeds", "2", "--allow-definition-change"]) == 0
    assert _trials(sqlite_url, "s") == before  # reruns go to their own study
    assert _trials(sqlite_url, "s:confirm") > 0


def test_fingerprint_keys_unknown_on_one_side_are_not_compared() -> None:
    fingerprint = {
        "study": "tiny.py",
        "data": {"train_rows": 320, "sample": "a"},
        "model": {"class": "Sequential", "parameters": 195, "shapes": "s"},
        "seed": 0,
    }
    stored = {"budget": {"amount": 1}, "definition": fingerprint}
    unnamed = {k: v for k, v in fingerprint.items() if k != "study"}
    assert definition_differences(stored, {"definition": unnamed}) == []  # no name, no budget
    wider = {**unnamed, "model": {"class": "Sequential", "parameters": 300, "shapes": "t"}}
    # Other shapes go without saying when the parameter count differs.
    assert definition_differences(stored, {"definition": wider}) == [
        "model: 195 parameters -> 300"
    ]
    reshaped = {**unnamed, "model": {"class": "Sequential", "parameters": 195, "shapes": "t"}}
    assert definition_differences(stored, {"definition": reshaped}) == [
        "model: other parameter shapes (hash s -> t)"
    ]


def test_the_study_definition_has_one_name_however_it_is_loaded(tmp_path: Path) -> None:
    script = _script(tmp_path)
    # bsopt run and bsopt confirm load it; worker processes get it by its path.
    assert definition_name(load_study_definition(str(script))[1]) == "tiny.py"
    assert definition_name(functools.partial(build_from_ref, str(script))) == "tiny.py"
    assert definition_name(load_study_definition("digits")[1]) == "digits"
    assert definition_name(functools.partial(build_from_ref, "digits")) == "digits"
    assert definition_name(BUILTIN_STUDIES["synthetic"]) == "synthetic"
    assert definition_name(lambda *, seed: None) is None  # unknown: not compared


def test_a_data_set_that_transforms_at_random_hashes_alike() -> None:
    class Noisy(torch.utils.data.Dataset[tuple[torch.Tensor, torch.Tensor]]):
        def __len__(self) -> int:
            return 40

        def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
            return torch.full((4,), float(i)) + torch.randn(4), torch.tensor(i % 2)

    def data() -> bsopt.DatasetData:
        return bsopt.DatasetData(Noisy(), Noisy(), n_classes=2, num_workers=0)

    first = data_fingerprint(data())
    assert first == data_fingerprint(data()) and "sample" in first
    assert first["train_rows"] == 40 and first["classes"] == 2
