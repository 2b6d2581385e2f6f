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
    for name in bsopt.search._pruners.PRUNERS:
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
    assert len({t.params["log2_batch_size"] for t in trials}) >= 3
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


def _finished_study(url: str, name: str, finals: list[float]) -> optuna.Study:
    study = optuna.create_study(
        study_name=name, storage=url, direction="maximize", load_if_exists=True
    )
    for final in finals:
        trial = study.ask()
        for step in range(1, 6):
            trial.report(final * step / 5, step)
        study.tell(trial, final)
    return study


def test_median_reads_completed_trials_once_per_trial_with_optunas_decisions(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    study = _finished_study(sqlite_url, "median", [0.2, 0.4, 0.6, 0.8, 1.0, 0.5])
    ours = bsopt.search._pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=2)
    optunas = optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=2)
    reads: list[object] = []
    get_trials = study.get_trials

    def counted(*args: object, **kwargs: object) -> list[optuna.trial.FrozenTrial]:
        reads.append(kwargs.get("states"))
        return get_trials(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(study, "get_trials", counted)
    decisions = []
    for values in ([0.1, 0.3, 0.5, 0.7, 0.9], [0.2, 0.2, 0.1, 0.1, 0.1]):
        trial = study.ask()
        for step, value in enumerate(values, start=1):
            trial.report(value, step)
            frozen = get_trials(deepcopy=False)[-1]
            decisions.append((ours.prune(study, frozen), optunas.prune(study, frozen)))
        study.tell(trial, values[-1])
    assert [a for a, _ in decisions] == [b for _, b in decisions]
    assert any(a for a, _ in decisions) and not all(a for a, _ in decisions)
    # Optuna's pruner read the study 10 times (counted too); ours twice, once per trial.
    assert len(reads) == 10 + 2


def test_a_trial_completed_elsewhere_counts_after_the_refresh(sqlite_url: str) -> None:
    study = _finished_study(sqlite_url, "refresh", [0.5] * 5)
    pruner = bsopt.search._pruners.MedianPruner(n_startup_trials=6, refresh_seconds=3600)
    fresh = bsopt.search._pruners.MedianPruner(n_startup_trials=6, refresh_seconds=0)
    trial = study.ask()
    trial.report(0.1, 1)
    first = study.get_trials(deepcopy=False)[trial.number]
    assert not pruner.prune(study, first) and not fresh.prune(study, first)  # 5 < 6 startup
    _finished_study(sqlite_url, "refresh", [0.6])  # another worker completes a sixth
    trial.report(0.1, 2)
    second = study.get_trials(deepcopy=False)[trial.number]
    assert fresh.prune(study, second)  # sees six completed trials: 0.1 is below the median
    assert not pruner.prune(study, second)  # still its copy of five, until the next trial


def test_read_once_pruners_pickle() -> None:
    import pickle

    pruner = make_pruner("percentile", Budget(4, evals=4), 50)
    copy = pickle.loads(pickle.dumps(pruner))
    assert isinstance(copy, optuna.pruners.PercentilePruner)
    assert copy._completed.refresh_seconds == pruner._completed.refresh_seconds


def test_a_negative_refresh_is_refused() -> None:
    with pytest.raises(ValueError, match=r"refresh_seconds must be >= 0, but got -1"):
        bsopt.search._pruners.MedianPruner(refresh_seconds=-1)
