from __future__ import annotations

import optuna
from optuna.trial import TrialState
import pytest

import bsopt
from bsopt import Budget, make_pruner


def test_median_warms_up_for_a_quarter_of_the_budget() -> None:
    pruner = make_pruner("median", Budget(10, evals=10), 100)
    assert isinstance(pruner, optuna.pruners.MedianPruner)
    assert pruner._n_warmup_steps == 300  # the third evaluation: 3 of 10 epochs of 100
    assert pruner._n_startup_trials == 5


def test_hyperband_resources_are_grid_points() -> None:
    pruner = make_pruner("hyperband", Budget(9, evals=9), 100)
    assert isinstance(pruner, optuna.pruners.HyperbandPruner)
    assert (pruner._min_resource, pruner._max_resource) == (100, 900)


def test_every_named_pruner_is_built() -> None:
    expected = {
        "median": optuna.pruners.MedianPruner,
        "percentile": optuna.pruners.PercentilePruner,
        "halving": optuna.pruners.SuccessiveHalvingPruner,
        "hyperband": optuna.pruners.HyperbandPruner,
        "threshold": optuna.pruners.ThresholdPruner,
        "none": optuna.pruners.NopPruner,
    }
    for name in bsopt._pruners.PRUNERS:
        pruner = make_pruner(name, Budget(4, evals=4), 50, threshold=0.5)  # type: ignore[arg-type]
        assert isinstance(pruner, expected[name])


@pytest.mark.parametrize(
    ("name", "kwargs", "message"),
    [
        ("asha", {}, r"pruner must be one of median, percentile, .* but got 'asha'"),
        ("threshold", {}, r"threshold pruner needs threshold=<value>"),
        ("percentile", {"percentile": 100.0}, r"percentile must be in \(0, 100\), but got 100"),
    ],
)
def test_bad_pruner_settings(name: str, kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make_pruner(name, Budget(4, evals=4), 50, **kwargs)  # type: ignore[arg-type]


def test_threshold_follows_the_direction(sqlite_url: str) -> None:
    low = make_pruner("threshold", Budget(1, evals=1), 10, threshold=0.5)
    high = make_pruner("threshold", Budget(1, evals=1), 10, threshold=0.5, direction="minimize")
    study = optuna.create_study(storage=sqlite_url)
    trial = study.ask()
    trial.report(0.4, 10)
    frozen = study.trials[0]
    assert low.prune(study, frozen) and not high.prune(study, frozen)


def test_hyperband_runs_several_brackets_with_mixed_batch_sizes(
    sqlite_url: str, tiny_data: bsopt.TensorData
) -> None:
    budget = Budget(9, evals=9)
    objective = bsopt.make_objective(
        bsopt.mlp_builder(tiny_data, hidden=(8,)),
        tiny_data,
        space=bsopt.SearchSpace(batch_size=(8, 128)),
        budget=budget,
        device="cpu",
    )
    pruner = make_pruner("hyperband", budget, tiny_data.n_train)
    study = bsopt.create_study("hb", storage=sqlite_url, pruner=pruner)
    bsopt.optimize(study, objective, trials=14, show_progress_bar=False)
    trials = study.trials
    brackets = {pruner._get_bracket_id(study, t) for t in trials}
    assert pruner._n_brackets == 3 and len(brackets) >= 2
    assert len({t.params["batch_size"] for t in trials}) >= 3
    pruned = [t for t in trials if t.state == TrialState.PRUNED]
    assert pruned, "Hyperband should stop some of 14 trials"
    grid = set(budget.grid(tiny_data.n_train).points)
    for t in trials:
        assert set(t.intermediate_values) <= grid  # every report lands on the shared grid


def test_warmup_evals_sets_the_first_prunable_step() -> None:
    assert make_pruner("median", Budget(10, evals=10), 100, warmup_evals=1)._n_warmup_steps == 200
    assert make_pruner("median", Budget(10, evals=10), 100, warmup_evals=0)._n_warmup_steps == 0
    with pytest.raises(ValueError, match=r"warmup_evals must be in \[0, 9\] .* got 10"):
        make_pruner("median", Budget(10, evals=10), 100, warmup_evals=10)
