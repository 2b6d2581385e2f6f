"""The check at the target: the forecast and its half and double batch, trained at N."""

from __future__ import annotations

from dataclasses import replace
import math
from pathlib import Path

import numpy as np
import optuna
import pytest

import bsopt
from bsopt.analysis._forecast import Forecast
from bsopt.cli import main
from bsopt.runs._forecast_check import CheckRun, ForecastCheck, check_forecast


def power_law_study(*, own: bool = False) -> optuna.Study:
    """The known-answer study of tests/analysis/test_forecast.py, in brief: the batch within
    tolerance grows as sqrt(D), the best lr as sqrt(batch) * D^0.25; ``own``: with a user's
    own parameter ``w`` beside bsopt's."""
    study = optuna.create_study()
    dists: dict[str, optuna.distributions.BaseDistribution] = {
        "log2_batch_size": optuna.distributions.IntDistribution(0, 10),
        "dropout": optuna.distributions.FloatDistribution(0.0, 0.5),
    }
    if own:
        dists["w"] = optuna.distributions.IntDistribution(1, 2)
    for samples in (2**14, 2**16, 2**18):
        for k in range(11):
            best = 0.01 * math.sqrt(2**k) * (samples / 2**14) ** 0.25
            for step in np.linspace(-2.1, 1.9, 5):
                loss = 0.5 * (1 + (2**k * 4 / math.sqrt(samples)) ** 2) * math.exp(step**2 / 2)
                study.add_trial(
                    optuna.trial.create_trial(
                        params={"log2_batch_size": k, "dropout": 0.1} | ({"w": 1} if own else {}),
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
    checked = check_forecast(
        study, tiny_objective, samples=640, tolerance=0.25, seeds=2, echo=lines.append
    )
    fc = checked.forecast
    assert fc.batch_size is not None
    center = checked.runs[1].batch_size
    assert center == fc.power_of_two
    assert [r.batch_size for r in checked.runs] == [center // 2, center, center * 2]
    # Every run trains exactly the target's samples, whatever its batch size.
    assert [r.samples_seen for r in checked.runs] == [640, 640, 640]
    # Two fresh seeds per batch, and they train differently (an accuracy on 80 validation
    # rows can still coincide): seed noise is measured.
    assert all(len(r.values) == 2 for r in checked.runs)
    assert any(r.values[0] != r.values[1] for r in checked.runs)
    assert checked.runs[1].lr == pytest.approx(fc.lr * (center / fc.batch_size) ** 0.5, rel=0.5)
    assert lines[0].startswith("Forecast for 640 samples")
    assert "Training batch size" in lines[-1]
    assert checked.text.startswith("Checked at 640 samples (25.0% tolerance, 2 seeds per batch):")
    assert checked.measured_batch_size in [r.batch_size for r in checked.runs]


def test_an_objective_with_its_own_suggest_is_checked_with_every_seed(
    tiny_objective: bsopt.Objective,
) -> None:
    # A FixedTrial keeps what was suggested: reused across seeds, the second run's suggest()
    # looked as if it had suggested bsopt's own parameters, and the check failed.
    own = tiny_objective.with_options(suggest=lambda trial: {"w": trial.suggest_int("w", 1, 2)})
    checked = check_forecast(power_law_study(own=True), own, samples=640, tolerance=0.25, seeds=2)
    assert all(len(r.values) == 2 for r in checked.runs)


def test_measured_batch_is_the_largest_within_tolerance() -> None:
    fc = Forecast(100, 0.01, "ok", (), (), batch_size=64.0, lr=0.1)
    runs = (
        CheckRun(32, 0.1, (0.900,), 100),
        CheckRun(64, 0.1, (0.895,), 100),
        CheckRun(128, 0.1, (0.8,), 100),
    )
    checked = ForecastCheck(fc, runs, maximize=True)
    assert checked.measured_batch_size == 64
    assert checked.holds
    assert "The forecast held at the target." in checked.text
    # One seed: nothing is settled, and the text says so.
    assert checked.unsettled == [64, 128]
    assert "One seed per batch: seed noise is not measured" in checked.text
    assert "Predicted batch size 64, trained as 64" in checked.text
    unsupported = ForecastCheck(replace(fc, status="no fit"), runs, maximize=True)
    assert "Extrapolated (no fit: the forecast does not hold) batch size 64" in unsupported.text
    too_small = ForecastCheck(fc, (*runs[:2], CheckRun(128, 0.1, (0.899,), 100)), maximize=True)
    assert too_small.measured_batch_size == 128
    assert not too_small.holds
    assert "too small" in too_small.text


def test_seeds_settle_the_check_only_where_their_spread_allows() -> None:
    fc = Forecast(100, 0.01, "ok", (), (), batch_size=64.0, lr=0.1)
    # Losses: 64 is 0.5% above 32 and 128 is 20% above; tight seeds settle both sides.
    tight = (
        CheckRun(32, 0.1, (1.000, 1.001, 0.999), 100),
        CheckRun(64, 0.1, (1.005, 1.006, 1.004), 100),
        CheckRun(128, 0.1, (1.200, 1.201, 1.199), 100),
    )
    checked = ForecastCheck(fc, tight, maximize=False)
    assert checked.holds
    assert checked.unsettled == []
    assert "Settled by 3 seeds" in checked.text
    # The same means with a spread of 5%: whether 64 is within 1% is not settled.
    loose = (tight[0], CheckRun(64, 0.1, (0.955, 1.005, 1.055), 100), tight[2])
    checked = ForecastCheck(fc, loose, maximize=False)
    assert checked.holds
    assert checked.unsettled == [64]
    assert "Not settled by 3 seeds" in checked.text
    assert "of batch 64 holds the tolerance" in checked.text


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


@pytest.fixture
def script(tmp_path: Path) -> Path:
    path = tmp_path / "levels.py"
    path.write_text(SCRIPT)
    return path


def _run(script: Path, url: str, trials: int) -> int:
    """``bsopt run`` of the levels script: one process, no pruning, no progress bar."""
    args = ["run", str(script), "--storage", url, "--trials", str(trials), "--jobs", "1"]
    return main([*args, "--no-progress", "--pruner", "none"])


def test_cli_run_queues_every_budget_and_batch_size_in_turn(
    script: Path, sqlite_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _run(script, sqlite_url, 4) == 0
    assert "Queued 4 trials with every (budget level, batch size) pair in turn (3 levels x 4" in (
        capsys.readouterr().out
    )
    # Extended to 7: the turn goes on where it stopped, nothing queued twice.
    assert _run(script, sqlite_url, 7) == 0
    assert "Queued 3 trials" in capsys.readouterr().out
    study = optuna.load_study(study_name="levels", storage=sqlite_url)
    cells = [(t.params["budget_level"], t.params["log2_batch_size"]) for t in study.trials]
    expected = [(level, e) for e in (3, 4, 5, 6) for level in (0.25, 0.5, 1.0)]
    assert cells == expected[:7]
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)


def test_cli_confirm_samples_checks_the_forecast_or_says_why_not(
    script: Path, sqlite_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _run(script, sqlite_url, 1) == 0
    capsys.readouterr()
    # One trial is one budget: the check is refused, in one line, before anything trains.
    assert main(["confirm", str(script), "--storage", sqlite_url, "--samples", "640"]) == 2
    captured = capsys.readouterr()
    assert captured.out.startswith("No forecast for 640 samples")
    err = captured.err.strip().splitlines()
    assert len(err) == 1
    assert "gives no batch-size forecast to check: too few budgets" in err[0]


def test_the_check_starts_from_a_complete_trial_never_a_pruned_branch_trial() -> None:
    from bsopt.runs._forecast_check import _template

    study = optuna.create_study()
    study.add_trial(
        optuna.trial.create_trial(
            params={"log2_batch_size": 3},
            distributions={"log2_batch_size": optuna.distributions.IntDistribution(0, 10)},
            state=optuna.trial.TrialState.PRUNED,
            intermediate_values={160: 0.5, 320: 0.4},
            user_attrs={"samples_seen": 320, "lr": 0.01, "runs_within": [160, 320]},
        )
    )
    with pytest.raises(ValueError, match="holds no complete trial to check"):
        _template(study)


def test_cli_confirm_samples_trains_the_seeds_asked_for(
    script: Path, sqlite_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _run(script, sqlite_url, 24) == 0  # every (level, batch size) pair twice
    capsys.readouterr()
    confirm = ["confirm", str(script), "--storage", sqlite_url, "--samples", "640"]
    assert main([*confirm, "--seeds", "2", "--tolerance", "0.25"]) == 0
    out = capsys.readouterr().out
    assert out.count("for 640 samples, 2 seeds ...") == 3
    assert "(25.0% tolerance, 2 seeds per batch):" in out


def test_seeds_below_one_are_refused_before_anything_trains(
    tiny_objective: bsopt.Objective,
) -> None:
    with pytest.raises(ValueError, match="seeds must be a whole number of at least 1, but got 0"):
        check_forecast(power_law_study(), tiny_objective, samples=640, seeds=0)
