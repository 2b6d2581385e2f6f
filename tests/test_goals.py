"""Cost-aware goals: time to target and (metric, training time)."""

from __future__ import annotations

import math

import optuna
from optuna.trial import TrialState
import pytest

import bsopt
from bsopt.search._objective import time_to_target
from bsopt.training._trainer import TrainResult


def _result(history: list[tuple[int, float]]) -> TrainResult:
    return TrainResult(
        value=history[-1][1],
        metric="accuracy",
        stop_reason="completed",
        history=history,
        history_seconds=[0.5 * (i + 1) for i in range(len(history))],
        samples_seen=0,
        optimizer_steps=0,
        epochs=0.0,
        train_seconds=0.0,
        eval_seconds=0.0,
        wall_seconds=0.0,
        batch_size=8,
        micro_batch_size=8,
        accumulation_steps=1,
        peak_memory_mb=0.0,
        device="cpu",
        amp="off",
    )


def test_time_to_target_known_answers() -> None:
    run = _result([(100, 0.5), (200, 0.8), (300, 0.9)])
    kw = {"direction": "maximize", "total": 300.0}
    assert time_to_target(run, 0.8, unit="samples", **kw) == (200.0, True)  # type: ignore[arg-type]
    assert time_to_target(run, 0.85, unit="seconds", **kw) == (1.5, True)  # type: ignore[arg-type]
    score, reached = time_to_target(run, 0.95, unit="samples", **kw)  # type: ignore[arg-type]
    assert not reached and score == pytest.approx(300 * (1 + 0.05 / 0.95))
    loss_run = _result([(100, 2.0), (200, 0.4)])
    assert time_to_target(loss_run, 0.5, unit="samples", direction="minimize", total=200.0) == (
        200.0,
        True,
    )


def test_a_trial_that_never_reaches_the_target_ranks_last(
    sqlite_url: str, tiny_data: bsopt.TensorData
) -> None:
    objective = bsopt.make_objective(
        bsopt.mlp_builder(tiny_data, hidden=(16,)),
        tiny_data,
        space=bsopt.SearchSpace(batch_size=(8, 64)),
        budget=bsopt.Budget(4, evals=8),
        goal="time_to_target",
        target=0.7,
        device="cpu",
    )
    assert objective.direction == "minimize"
    study = bsopt.create_study(
        "ttt", storage=sqlite_url, direction=objective.direction, pruner=optuna.pruners.NopPruner()
    )
    study.enqueue_trial({"log2_batch_size": 3, "lr": 1e-2, "dropout": 0.0})
    study.enqueue_trial({"log2_batch_size": 6, "lr": 1e-4, "dropout": 0.0})
    bsopt.optimize(study, objective, trials=2, show_progress_bar=False)
    fast, slow = study.trials
    assert [fast.state, slow.state] == [TrialState.COMPLETE, TrialState.COMPLETE]
    assert fast.user_attrs["reached_target"] and not slow.user_attrs["reached_target"]
    assert fast.user_attrs["stop_reason"] == "reached target"
    assert fast.value < 4 * 320 < slow.value  # the miss scores beyond the whole budget
    assert fast.user_attrs["samples_seen"] == fast.value  # training stopped at the target
    assert fast.intermediate_values[fast.value] == 0.0  # no distance left to go


def test_metric_and_time_is_a_two_objective_study(
    sqlite_url: str, tiny_data: bsopt.TensorData
) -> None:
    objective = bsopt.make_objective(
        bsopt.mlp_builder(tiny_data, hidden=(16,)),
        tiny_data,
        space=bsopt.SearchSpace(batch_size=(8, 64)),
        budget=bsopt.Budget(1, evals=2),
        goal="metric_and_time",
        device="cpu",
    )
    assert objective.directions == ["maximize", "minimize"]
    with pytest.raises(
        ValueError,
        match=r"returns two values; create the study with "
        r"directions=objective.directions",
    ):
        _ = objective.direction
    study = bsopt.create_study("mo", storage=sqlite_url, directions=objective.directions)
    bsopt.optimize(study, objective, trials=3, show_progress_bar=False)
    for t in study.trials:
        accuracy, seconds = t.values
        assert 0 <= accuracy <= 1
        assert seconds == pytest.approx(t.user_attrs["train_seconds"], abs=1e-3)
        assert t.intermediate_values == {}  # nothing reported: Optuna cannot prune these
    assert "Pareto-optimal trials" in bsopt.runs.summary(study, storage_url=sqlite_url)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"goal": "fastest"}, r"goal must be one of metric, time_to_target, metric_and_time"),
        ({"goal": "time_to_target"}, r"needs target=<validation metric to reach>"),
        ({"goal": "time_to_target", "target": math.nan}, r"got target=nan"),
        (
            {"goal": "time_to_target", "target": 0.9, "target_unit": "seconds"},
            r"target_unit='seconds' needs a time budget",
        ),
        (
            {"goal": "time_to_target", "target": 0.9, "target_unit": "steps"},
            r"target_unit must be 'samples' or 'seconds', but got 'steps'",
        ),
    ],
)
def test_bad_goal_settings(
    tiny_data: bsopt.TensorData, kwargs: dict[str, object], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        bsopt.make_objective(bsopt.mlp_builder(tiny_data), tiny_data, **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("script", ["digits_time_to_target", "digits_cost"])
def test_goal_study_scripts_load(script: str) -> None:
    from pathlib import Path

    from bsopt.runs._runner import load_study_definition

    path = Path(__file__).resolve().parents[1] / "studies" / f"{script}.py"
    name, build = load_study_definition(str(path))
    objective = build(seed=0)
    assert name == script and objective.goal in ("time_to_target", "metric_and_time")
