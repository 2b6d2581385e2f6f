"""Each trial's training seed comes from the objective's seed and the trial's params only."""

from __future__ import annotations

from typing import Any

import optuna
from optuna.trial import TrialState
import pytest

import bsopt
from bsopt.search import _objective
from bsopt.search._objective import trial_seed

PARAMS: dict[str, object] = {"log2_batch_size": 5, "lr": 0.0123456789, "dropout": 0.25}


def test_the_seed_depends_on_the_params_and_the_objective_seed_only() -> None:
    seed = trial_seed(0, PARAMS)
    assert 0 <= seed <= 2**31 - 1
    assert trial_seed(0, dict(reversed(PARAMS.items()))) == seed  # order does not matter
    assert trial_seed(0, {**PARAMS, "lr": 0.0123456789 * (1 + 1e-15)}) == seed  # float noise
    assert trial_seed(1, PARAMS) != seed
    assert trial_seed(0, {**PARAMS, "lr": 0.0124}) != seed
    assert trial_seed(0, {**PARAMS, "log2_batch_size": 6}) != seed
    assert trial_seed(0, {**PARAMS, "width": 64}) != seed
    # A stable hash, not Python's salted hash(): the same number in every process and version.
    assert seed == 1633662559


def test_categorical_and_odd_values_hash() -> None:
    values: list[object] = [None, True, "adam", 3, 3.0, float("nan"), float("inf")]
    seeds = {trial_seed(0, {"x": value}) for value in values}
    assert len(seeds) == len(values)


def _sampled(objective: bsopt.Objective, seed: int) -> dict[str, Any]:
    """Whole params as the objective's space names them, drawn at random."""
    trial = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed)).ask()
    objective.params_of(trial)
    return trial.params


def test_trials_store_the_hashed_seed_whatever_their_number(
    sqlite_url: str, tiny_objective: bsopt.Objective
) -> None:
    study = bsopt.create_study("seeds", storage=sqlite_url, pruner=optuna.pruners.NopPruner())
    other, config = (_sampled(tiny_objective, seed) for seed in (1, 2))
    study.enqueue_trial(other)
    study.enqueue_trial(config)
    study.enqueue_trial(config)  # a retry with the same params reproduces the run
    bsopt.optimize(study, tiny_objective, trials=3, show_progress_bar=False)
    stored = optuna.load_study(study_name="seeds", storage=sqlite_url).trials
    assert [t.state for t in stored] == [TrialState.COMPLETE] * 3
    for t in stored:
        assert t.user_attrs["seed"] == trial_seed(tiny_objective.seed, t.params)
    first, again = stored[1:]
    assert first.user_attrs["seed"] == again.user_attrs["seed"] != stored[0].user_attrs["seed"]
    assert first.value == again.value
    assert first.intermediate_values == again.intermediate_values
    # retrain uses the stored seed and gives the stored value on the CPU.
    _, result = tiny_objective.retrain(first)
    assert result.value == first.value


class _Captured(Exception):
    pass


def test_retrain_falls_back_to_the_old_rule_without_a_stored_seed(
    monkeypatch: pytest.MonkeyPatch, tiny_data: bsopt.TensorData
) -> None:
    objective = bsopt.make_objective(
        bsopt.mlp_builder(tiny_data, hidden=(8,)), tiny_data, seed=5, device="cpu"
    )
    seen: list[int] = []

    def fake_train(model: Any, data: Any, params: Any, config: Any, **kw: Any) -> Any:
        seen.append(config.seed)
        raise _Captured

    monkeypatch.setattr(_objective, "train", fake_train)
    study = optuna.create_study()
    for _ in range(3):
        study.tell(study.ask(), 0.0)
    old = study.ask()  # trial 3, stored by an older bsopt: no seed attribute
    with pytest.raises(_Captured):
        objective.retrain(old)
    stored = study.ask()
    stored.set_user_attr("seed", 1234)
    with pytest.raises(_Captured):
        objective.retrain(stored)
    with pytest.raises(_Captured):
        objective.retrain(stored, seed=77)
    assert seen == [5 + 3, 1234, 77]
