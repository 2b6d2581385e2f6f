"""Bad input gets one line naming the parameter, the rule, the value and the fix.

Each test below is one item of docs/reliability.md's "Bad input" table. API mistakes raise a
``ValueError`` before any trial trains; command-line mistakes print ``... error: ...`` and
exit with status 2, without a traceback, and leave the storage as it was.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import optuna
import pytest
import torch
from torch import nn

import bsopt
from bsopt.cli import _parser, main


def _objective(data: bsopt.TensorData, model: nn.Module) -> bsopt.Objective:
    return bsopt.make_objective(
        lambda params: model, data, budget=bsopt.Budget(1, evals=1), device="cpu"
    )


def test_a_model_that_does_not_fit_the_inputs_is_named_before_training(
    tiny_data: bsopt.TensorData,
) -> None:
    # tiny_data has 8 features per sample; this model takes 10.
    with pytest.raises(
        ValueError,
        match=r"The model does not fit the data's input size: the model's first layer takes "
        r"10 features, the data has 8 input features per sample .*mat1 and mat2 shapes cannot "
        r"be multiplied.* nn\.Linear\(data\.n_features, \.\.\.\)",
    ):
        _objective(tiny_data, nn.Linear(10, 3))


@pytest.mark.parametrize("outputs", [1, 2])
def test_a_head_with_fewer_outputs_than_classes_is_named_before_training(
    tiny_data: bsopt.TensorData, outputs: int
) -> None:
    # 1 output made cross-entropy raise IndexError ("Target 2 is out of bounds"); 2 did not.
    with pytest.raises(
        ValueError,
        match=rf"The model outputs {outputs} value\(s\) per sample, but the data has 3 classes "
        r"\(labels 0 to 2\).* Give the model's last layer 3 outputs \(data\.n_classes\)\.",
    ):
        _objective(tiny_data, nn.Linear(8, outputs))


@pytest.mark.parametrize("seed", ["-1", str(2**70), "2**70", "4294967296"])
def test_a_seed_outside_32_bits_is_refused_on_the_command_line(
    seed: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["run", "digits", "--seed", seed])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert f"--seed: the seed must be an integer in [0, 2**32 - 1], got {seed!r}" in err
    assert "random_state" not in err and "Traceback" not in err
    assert _parser().parse_args(["run", "digits", "--seed", str(2**32 - 1)]).seed == 2**32 - 1


@pytest.mark.parametrize("target", ["inf", "-inf", "nan", "ten"])
def test_a_report_target_that_is_not_a_finite_number_is_refused(
    target: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite:///{tmp_path / 'bsopt.db'}"
    with pytest.raises(SystemExit) as exit_info:
        main(["report", "--storage", url, "--study", "s", f"--target={target}"])
    assert exit_info.value.code == 2
    assert f"--target: must be a finite number, got {target!r}" in capsys.readouterr().err
    assert not (tmp_path / "bsopt.db").exists()
    with pytest.raises(ValueError, match=r"target must be a finite number .* but got nan"):
        bsopt.write_report("s", tmp_path / "out", storage=url, target=float("nan"))


@pytest.mark.parametrize("command", ["studies", "run"])
def test_a_folder_given_as_the_sqlite_file_is_refused(
    command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [command, "--storage", f"sqlite:///{tmp_path}"]
    argv += ["digits", "--trials", "1"] if command == "run" else []
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err == (
        f"bsopt: error: The storage path {str(tmp_path)!r} is a folder, not a database file. "
        f"Name a file in it, e.g. sqlite:///{tmp_path / 'bsopt.db'}.\n"
    )
    assert list(tmp_path.iterdir()) == []


def test_a_search_range_of_strings_is_named_with_the_fix() -> None:
    with pytest.raises(
        ValueError,
        match=r"lr must be a number or a \(low, high\) pair of numbers, but got \('a', 'b'\)\. "
        r"Give numbers, e.g\. lr=\(1e-4, 1e-1\)\.",
    ):
        bsopt.SearchSpace(lr=("a", "b"))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("x", "y", "message"),
    [
        (np.zeros((0, 4)), np.zeros(0, dtype=int), r"needs at least 10 samples .* but got 0\."),
        (np.ones((3, 4)), np.array([0, 1, 0]), r"needs at least 10 samples .* but got 3\."),
        (np.array([["a", "b"]] * 20), np.arange(20) % 2,
         r"x must hold numbers, but got dtype <U1 \(first value 'a'\)\. Convert it first"),
        (np.ones((20, 2)), np.array(["cat", "dog"] * 10), r"y must hold numbers, but got dtype"),
        (np.ones((20, 2)), np.array([0] * 19 + [1]),
         r"Every class needs at least 2 samples, .* class\(es\) 1 have only 1\."),
        (np.ones((20, 2)), np.arange(20) % 10,
         r"val_fraction=0\.2 of 20 samples leaves 4 validation samples, fewer than the 10 "
         r"classes.* Raise val_fraction"),
    ],
)  # fmt: skip
def test_from_arrays_refuses_data_it_cannot_split(
    x: np.ndarray, y: np.ndarray, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        bsopt.from_arrays(x, y)


def test_validation_classes_missing_from_training_are_listed() -> None:
    x = torch.zeros(6, 2)
    with pytest.raises(
        ValueError,
        match=r"The validation labels hold classes that no training sample has: 2, 3\. ",
    ):
        bsopt.TensorData(x, torch.tensor([0, 1] * 3), x[:3], torch.tensor([0, 2, 3]))


def test_studies_lists_a_two_objective_study_with_both_best_values(
    sqlite_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # As studies/digits_cost.py stores it: accuracy up, training seconds down.
    study = optuna.create_study(
        study_name="cost", storage=sqlite_url, directions=["maximize", "minimize"]
    )
    for values in ([0.9, 3.0], [0.8, 1.0]):
        study.tell(study.ask(), values)
    optuna.create_study(study_name="empty", storage=sqlite_url, directions=["maximize"] * 2)
    assert main(["studies", "--storage", sqlite_url]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[2].split() == ["cost", "maximize", "minimize", "2", "0", "0", "0", "0.9000",
                                "/", "1.0000"]  # fmt: skip
    assert lines[3].split()[-1] == "-"


def test_studies_on_a_missing_file_says_so_and_creates_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "typo.db"
    assert main(["studies", "--storage", f"sqlite:///{path}"]) == 2
    assert capsys.readouterr().err == (
        f"bsopt: error: There is no storage at {str(path)!r}: the file does not exist, and this "
        "command only reads, so it creates none. Check the path (--storage or BSOPT_STORAGE), "
        "or start a study there with: bsopt run digits --storage URL.\n"
    )
    assert list(tmp_path.iterdir()) == []
