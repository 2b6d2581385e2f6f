"""The check at the target: the forecast and its half and double batch, trained at N."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import optuna
import pytest

import bsopt
from bsopt.analysis._forecast import Forecast
from bsopt.cli import main
from bsopt.runs._forecast_check import CheckRun, ForecastCheck, check_forecast


def power_law_study() -> optuna.Study:
    """The known-answer study of tests/analysis/test_forecast.py, in brief: the batch within
    tolerance grows as sqrt(D), the best lr as sqrt(batch) * D^0.25."""
    study = optuna.create_study()
    dists = {
        "log2_batch_size": optuna.distributions.IntDistribution(0, 10),
        "dropout": optuna.distributions.FloatDistribution(0.0, 0.5),
    }
    for samples in (2**14, 2**16, 2**18):
        for k in range(11):
            best = 0.01 * math.sqrt(2**k) * (samples / 2**14) ** 0.25
            for step in np.linspace(-2.1, 1.9, 5):
                loss = 0.5 * (1 + (2**k * 4 / math.sqrt(samples)) ** 2) * math.exp(step**2 / 2)
                study.add_trial(
                    optuna.trial.create_trial(
                        params={"log2_batch_size": k, "dropout": 0.1},
                        distributions=dists,
                        value=loss,
                        user_attrs={"samples_seen": samples, "lr": best * math.exp(step)},
                    )
                )
    return study


def test_the_forecast_and_its_neighbours_train_at_the_target(
    tiny_objective: bsopt.Objective,
) -> None:
    study = power_law_study()
    lines: list[str] = []
    checked = check_forecast(study, tiny_objective, samples=640, tolerance=0.25, echo=lines.append)
    fc = checked.forecast
    assert fc.batch_size is not None
    center = checked.runs[1].batch_size
    assert center == fc.power_of_two
    assert [r.batch_size for r in checked.runs] == [center // 2, center, center * 2]
    # Every run trains exactly the target's samples, whatever its batch size.
    assert [r.samples_seen for r in checked.runs] == [640, 640, 640]
    assert checked.runs[1].lr == pytest.approx(fc.lr * (center / fc.batch_size) ** 0.5, rel=0.5)
    assert lines[0].startswith("Forecast for 640 samples")
    assert "Training batch size" in lines[-1]
    assert checked.text.startswith("Checked at 640 samples (25.0% tolerance):")
    assert checked.measured_batch_size in [r.batch_size for r in checked.runs]


def test_measured_batch_is_the_largest_within_tolerance() -> None:
    fc = Forecast(100, 0.01, "ok", (), (), batch_size=64.0, lr=0.1)
    runs = (
        CheckRun(32, 0.1, 0.900, 100),
        CheckRun(64, 0.1, 0.895, 100),
        CheckRun(128, 0.1, 0.8, 100),
    )
    checked = ForecastCheck(fc, runs, maximize=True)
    assert checked.measured_batch_size == 64
    assert checked.holds
    assert "The forecast held at the target in these runs (one seed each)." in checked.text
    too_small = ForecastCheck(fc, (*runs[:2], CheckRun(128, 0.1, 0.899, 100)), maximize=True)
    assert too_small.measured_batch_size == 128
    assert not too_small.holds
    assert "too small" in too_small.text


def test_no_forecast_is_refused_before_training(tiny_objective: bsopt.Objective) -> None:
    study = optuna.create_study()
    with pytest.raises(ValueError, match="gives no batch-size forecast to check: too few budgets"):
        check_forecast(study, tiny_objective, samples=640)


SCRIPT = """
import bsopt
from bsopt.search import BudgetLevels


def build_objective(*, seed=0):
    data = bsopt.make_synthetic(400, n_features=8, n_classes=3, seed=seed)
    objective = bsopt.make_objective(
        bsopt.mlp_builder(data, hidden=(16,)), data,
        space=bsopt.SearchSpace(batch_size=(8, 64)), budget=bsopt.Budget(2, evals=2),
        device="cpu", seed=seed,
    )
    return BudgetLevels(objective, (0.25, 0.5, 1.0))
"""


def test_cli_confirm_samples_checks_the_forecast_or_says_why_not(
    tmp_path: Path, sqlite_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    script = tmp_path / "levels.py"
    script.write_text(SCRIPT)
    run = ["run", str(script), "--storage", sqlite_url, "--trials", "1", "--no-progress"]
    assert main([*run, "--pruner", "none", "--jobs", "1"]) == 0
    capsys.readouterr()
    # One trial is one budget: the check is refused, in one line, before anything trains.
    assert main(["confirm", str(script), "--storage", sqlite_url, "--samples", "640"]) == 2
    captured = capsys.readouterr()
    assert captured.out.startswith("No forecast for 640 samples")
    err = captured.err.strip().splitlines()
    assert len(err) == 1
    assert "gives no batch-size forecast to check: too few budgets" in err[0]
