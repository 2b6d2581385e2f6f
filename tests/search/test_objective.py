from __future__ import annotations

from typing import Any

import optuna
from optuna.trial import TrialState
import pytest
from torch import nn

import bsopt
from bsopt import Budget, Params
from bsopt.search import _objective
from bsopt.training import TrainConfig


def _study(url: str, **kwargs: object) -> optuna.Study:
    return bsopt.create_study("t", storage=url, **kwargs)  # type: ignore[arg-type]


def test_trials_store_params_and_costs(sqlite_url: str, tiny_objective: bsopt.Objective) -> None:
    study = _study(sqlite_url, pruner=optuna.pruners.NopPruner())
    bsopt.optimize(study, tiny_objective, trials=4, show_progress_bar=False)
    stored = optuna.load_study(study_name="t", storage=sqlite_url).trials
    assert [t.state for t in stored] == [TrialState.COMPLETE] * 4
    for t in stored:
        attrs = t.user_attrs
        assert attrs["effective_batch_size"] == 2 ** t.params["log2_batch_size"]
        assert attrs["lr"] == pytest.approx(t.params["lr"])
        assert attrs["samples_seen"] == 2 * 320
        assert attrs["stop_reason"] == "completed"
        # Derived from the params, not the trial number: reruns of a --jobs N study match.
        assert attrs["seed"] == bsopt.search.trial_seed(tiny_objective.seed, t.params)
        assert attrs["samples_per_second"] > 0
        assert attrs["device"] == "cpu"
        assert sorted(t.intermediate_values) == [160, 320, 480, 640]
        assert t.value == t.intermediate_values[640]


def test_a_clearly_worse_trial_of_another_batch_size_is_pruned(
    sqlite_url: str, tiny_objective: bsopt.Objective
) -> None:
    study = _study(sqlite_url, pruner=optuna.pruners.MedianPruner(n_startup_trials=2))
    for _ in range(2):
        study.enqueue_trial({"log2_batch_size": 3, "lr": 1e-2, "dropout": 0.0})
    # Batch 64 at the smallest learning rate barely moves in the first interval.
    study.enqueue_trial({"log2_batch_size": 6, "lr": 1e-4, "dropout": 0.0})
    bsopt.optimize(study, tiny_objective, trials=3, show_progress_bar=False)
    good, _, bad = study.trials
    assert good.state == TrialState.COMPLETE and bad.state == TrialState.PRUNED
    assert bad.params["log2_batch_size"] == 6 and good.params["log2_batch_size"] == 3
    assert bad.user_attrs["stop_reason"] == "pruned"
    assert bad.user_attrs["samples_seen"] == 160  # pruned at the first shared step
    assert set(bad.intermediate_values) <= set(good.intermediate_values)


def test_divergence_is_pruned_with_its_reason(
    sqlite_url: str, tiny_data: bsopt.TensorData
) -> None:
    objective = bsopt.make_objective(
        bsopt.mlp_builder(tiny_data, hidden=(16,)),
        tiny_data,
        space=bsopt.SearchSpace(batch_size=(8, 8), lr=(50.0, 50.0), optimizer="sgd"),
        budget=bsopt.Budget(10, evals=10),
        divergence_factor=2.0,
        device="cpu",
    )
    study = _study(sqlite_url, pruner=optuna.pruners.NopPruner())
    bsopt.optimize(study, objective, trials=1, show_progress_bar=False)
    trial = study.trials[0]
    assert trial.state == TrialState.PRUNED
    assert trial.user_attrs["stop_reason"] == "diverged"
    assert "training loss" in trial.user_attrs["stop_detail"]
    assert "diverged" in bsopt.runs.summary(study, storage_url=sqlite_url)


def test_objective_knows_its_direction(tiny_data: bsopt.TensorData) -> None:
    build = bsopt.mlp_builder(tiny_data)
    assert bsopt.make_objective(build, tiny_data).direction == "maximize"
    assert bsopt.make_objective(build, tiny_data, metric="loss").direction == "minimize"


def test_batch_size_larger_than_the_training_set_is_refused_up_front(
    tiny_data: bsopt.TensorData,
) -> None:
    with pytest.raises(
        ValueError,
        match=r"largest batch_size \(512\) is larger than the "
        r"training set \(320 samples\).*high <= 320",
    ):
        bsopt.make_objective(
            bsopt.mlp_builder(tiny_data), tiny_data, space=bsopt.SearchSpace(batch_size=(16, 512))
        )


def test_objective_argument_errors(tiny_data: bsopt.TensorData) -> None:
    with pytest.raises(TypeError, match=r"build_model must be callable"):
        bsopt.make_objective(None, tiny_data)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"metric='auc' is not a known metric. Use one of"):
        bsopt.make_objective(bsopt.mlp_builder(tiny_data), tiny_data, metric="auc")  # type: ignore[arg-type]


def test_users_own_model_through_the_public_api(
    sqlite_url: str, tiny_data: bsopt.TensorData
) -> None:
    from torch import nn

    built: list[bsopt.Params] = []

    def build_model(params: bsopt.Params) -> nn.Module:
        built.append(params)
        return nn.Sequential(
            nn.Linear(8, 32), nn.ReLU(), nn.Dropout(params.dropout), nn.Linear(32, 3)
        )

    objective = bsopt.make_objective(
        build_model,
        tiny_data,
        budget=bsopt.Budget(1, evals=1),
        space=bsopt.SearchSpace(batch_size=(16, 64)),
    )
    study = bsopt.create_study("mine", storage=sqlite_url, direction=objective.direction)
    built.clear()  # make_objective built one model to check it before any trial
    bsopt.optimize(study, objective, trials=2, show_progress_bar=False)
    assert len(built) == 2
    assert [p.dropout for p in built] == [t.params["dropout"] for t in study.trials]


class _Captured(Exception):
    pass


def test_the_objectives_options_reach_train_in_trials_and_retrain(
    tiny_data: bsopt.TensorData, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[TrainConfig] = []

    def fake_train(
        model: nn.Module, data: object, params: Params, config: TrainConfig, **kw: Any
    ) -> None:
        seen.append(config)
        raise _Captured

    options = {"amp": "off", "clip_grad_norm": 0.5, "divergence_factor": 3.0}
    objective = bsopt.make_objective(
        bsopt.mlp_builder(tiny_data, hidden=(8,)),
        tiny_data,
        budget=Budget(1, evals=1),
        device="cpu",
        measure_noise_scale=True,
        noise_every=2,
        seed=5,
        **options,
    )
    monkeypatch.setattr(_objective, "train", fake_train)
    params = Params(batch_size=16, lr=0.05)
    with pytest.raises(_Captured):
        objective._run(params, 7, 8)
    trial = optuna.create_study().ask()
    with pytest.raises(_Captured):
        objective.retrain(trial)
    trained, retrained = seen
    for config in seen:
        assert type(config) is TrainConfig
        assert (config.amp, config.clip_grad_norm, config.divergence_factor) == (
            "off",
            0.5,
            3.0,
        )
        assert config.measure_noise_scale and config.noise_every == 2
        assert config.budget == Budget(1, evals=1) and config.device == "cpu"
    assert (trained.seed, trained.micro_batch_size) == (7, 8)
    assert (retrained.seed, retrained.micro_batch_size) == (5 + trial.number, None)


def test_an_objectives_options_give_a_plain_train_config() -> None:
    options = _objective.ObjectiveOptions(amp="off", clip_grad_norm=1.0, devices=1)
    plain = TrainConfig.of(options, micro_batch_size=8)
    assert type(plain) is TrainConfig
    assert plain == TrainConfig(amp="off", clip_grad_norm=1.0, micro_batch_size=8)
