"""One batch-size parameter per trial: Optuna's importance and ``best_params`` see it once, and
studies stored with the exponent and a single-point ``batch_size`` beside it still read alike."""

from __future__ import annotations

from collections.abc import Iterable
import warnings

import optuna
from optuna.distributions import FloatDistribution, IntDistribution
from optuna.trial import FrozenTrial, TrialState

import bsopt
from bsopt.analysis import analyze_batch_sizes, param_importances
from bsopt.analysis._load import trial_batch_size
from bsopt.runs._study import summary

BATCH_NAMES = {"batch_size", "log2_batch_size"}


def _batch_params(names: Iterable[str]) -> set[str]:
    return BATCH_NAMES & set(names)


def test_a_real_study_has_one_batch_size_parameter(
    sqlite_url: str, tiny_objective: bsopt.Objective
) -> None:
    # tiny_objective: make_objective on make_synthetic data, batch sizes 8 to 64, on the CPU.
    objective = tiny_objective
    study = bsopt.create_study("one", storage=sqlite_url, pruner=optuna.pruners.NopPruner())
    for exponent in (3, 6, 4, 5):  # every batch size, so each has a trial to analyse
        study.enqueue_trial({"log2_batch_size": exponent})
    bsopt.optimize(study, objective, trials=6, show_progress_bar=False)
    stored = optuna.load_study(study_name="one", storage=sqlite_url)
    trials = stored.get_trials(states=(TrialState.COMPLETE,))
    assert len(trials) == 6
    for t in trials:
        assert _batch_params(t.params) == {"log2_batch_size"}
        assert trial_batch_size(t) == t.user_attrs["effective_batch_size"]
        rebuilt = bsopt.params_from_trial(t, objective.space)
        assert rebuilt.batch_size == 2 ** t.params["log2_batch_size"]
    assert _batch_params(stored.best_params) == {"log2_batch_size"}
    # Ordered, as TPE, the importance evaluators, the plots and the dashboard read it.
    assert stored.best_trial.distributions["log2_batch_size"] == IntDistribution(3, 6)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # PED-ANOVA warns on so few trials
        importances = optuna.importance.get_param_importances(stored)
    assert _batch_params(importances) == {"log2_batch_size"}
    assert {s.batch_size for s in analyze_batch_sizes(stored).per_batch} == {8, 16, 32, 64}
    text = summary(stored, storage_url=sqlite_url)
    best_batch = 2 ** stored.best_params["log2_batch_size"]
    assert f"batch_size     {best_batch}" in text and "log2_batch_size" not in text
    assert text.count("batch_size ") == 1


# --- a study stored before: log2_batch_size searched, batch_size recorded beside it --------

# Three trials per batch size: 32 looks best, 64 second, 16 last.
_VALUES = {4: [0.90, 0.88, 0.87], 5: [0.97, 0.95, 0.94], 6: [0.96, 0.955, 0.95]}


def _stored(url: str, name: str, *, with_record: bool) -> optuna.Study:
    """The same trials, with (as bsopt stored them before) or without the single-point
    ``batch_size`` parameter beside the searched exponent."""
    study = optuna.create_study(storage=url, study_name=name, direction="maximize")
    study.set_user_attr("metric", "accuracy")
    for exponent, values in _VALUES.items():
        for k, value in enumerate(values):
            lr = 10 ** (-3 + k / 2)
            params: dict[str, object] = {"log2_batch_size": exponent, "lr": lr, "dropout": 0.0}
            dists = {
                "log2_batch_size": IntDistribution(4, 6),
                "lr": FloatDistribution(1e-3, 1e-1, log=True),
                "dropout": FloatDistribution(0.0, 0.0),
            }
            if with_record:
                params["batch_size"] = 2**exponent
                dists["batch_size"] = IntDistribution(2**exponent, 2**exponent, log=True)
            study.add_trial(
                optuna.trial.create_trial(
                    value=value,
                    params=params,
                    distributions=dists,
                    user_attrs={"effective_batch_size": 2**exponent, "lr": lr},
                )
            )
    return study


def _table(study: optuna.Study) -> list[tuple[object, ...]]:
    return [
        (s.batch_size, s.n_complete, s.best, s.best_trial, s.best_lr, s.mean, s.status)
        for s in analyze_batch_sizes(study).per_batch
    ]


def test_a_study_stored_with_both_parameters_analyses_the_same(sqlite_url: str) -> None:
    old = _stored(sqlite_url, "old", with_record=True)
    new = _stored(sqlite_url, "new", with_record=False)
    assert set(old.best_params) == {"log2_batch_size", "batch_size", "lr", "dropout"}
    assert [trial_batch_size(t) for t in old.trials] == [trial_batch_size(t) for t in new.trials]
    assert _table(old) == _table(new)
    verdict = analyze_batch_sizes(old).verdict
    assert verdict.replace("**old**", "**new**") == analyze_batch_sizes(new).verdict
    assert analyze_batch_sizes(old).best_batch_size == 32
    old_imp, new_imp = param_importances(old, seeds=1), param_importances(new, seeds=1)
    assert {r.param for r in old_imp.rows} == {"batch_size", "lr"}
    assert old_imp.rows == new_imp.rows
    old_text = summary(old, storage_url=sqlite_url)
    assert "batch_size     32" in old_text and "log2_batch_size" not in old_text
    assert old_text.count("batch_size ") == 1


def test_a_stored_trial_of_either_form_rebuilds_its_params(sqlite_url: str) -> None:
    space = bsopt.SearchSpace(batch_size=(16, 64), lr=(1e-3, 1e-1), dropout=(0.0, 0.0))
    for name, with_record in (("old", True), ("new", False)):
        study = _stored(sqlite_url, name, with_record=with_record)
        for t in study.trials:
            params = bsopt.params_from_trial(t, space)
            assert params.batch_size == t.user_attrs["effective_batch_size"]
            assert params.lr == t.params["lr"]


def test_confirm_finds_the_batch_size_of_an_old_study(sqlite_url: str) -> None:
    study = _stored(sqlite_url, "old", with_record=True)
    seen: list[int] = []

    def retrain(trial: FrozenTrial, seed: int) -> float:
        seen.append(2 ** trial.params["log2_batch_size"])
        return 0.9 + seed % 7 / 1000

    result = bsopt.confirm(study, retrain=retrain, seeds=2)
    assert sorted({r.batch_size for r in result.runs}) == [16, 32, 64] == sorted(set(seen))
    reruns = optuna.load_study(study_name="old:confirm", storage=sqlite_url).trials
    assert {trial_batch_size(t) for t in reruns} == {16, 32, 64}
