"""Trials at several budgets: each trains exactly its level's samples."""

from __future__ import annotations

import optuna
import pytest

import bsopt
from bsopt.search import BudgetLevels


def test_each_trial_trains_exactly_its_levels_samples(tiny_objective: bsopt.Objective) -> None:
    levels = BudgetLevels(tiny_objective, (0.25, 0.5, 1.0))
    n_train = tiny_objective.data.n_train  # 320; the budget is 2 epochs
    assert [levels.samples_at(lv) for lv in levels.levels] == [160, 320, 640]
    study = optuna.create_study(direction=levels.direction, pruner=optuna.pruners.NopPruner())
    for level in (1.0, 0.25, 0.5):
        study.enqueue_trial({"budget_level": level})
    study.optimize(levels, n_trials=3)
    trials = study.trials
    assert [t.state for t in trials] == [optuna.trial.TrialState.COMPLETE] * 3
    seen = {t.params["budget_level"]: t.user_attrs["samples_seen"] for t in trials}
    assert seen == {1.0: 2 * n_train, 0.25: n_train // 2, 0.5: n_train}
    # Each level reports on its own grid: its last evaluation is at its own budget.
    assert {max(t.intermediate_values) for t in trials} == {160, 320, 640}
    assert "fraction 0.25, 0.5, 1 of it (160, 320, 640 samples" in levels.describe()


def test_retrain_trains_the_trials_own_level(tiny_objective: bsopt.Objective) -> None:
    levels = BudgetLevels(tiny_objective, (0.25, 1.0))
    study = optuna.create_study(direction=levels.direction)
    study.enqueue_trial({"budget_level": 0.25})
    study.optimize(levels, n_trials=1)
    _, result = levels.retrain(study.trials[0])
    assert result.samples_seen == 160
    assert result.value == pytest.approx(study.trials[0].value)


@pytest.mark.parametrize(
    ("levels", "match"),
    [
        ((0.5,), "two or more distinct fractions"),
        ((0.5, 0.5), "two or more distinct fractions"),
        ((0.0, 0.5), r"fractions in \(0, 1\]"),
        ((0.5, 2.0), r"fractions in \(0, 1\]"),
        ("ab", "a sequence of numbers"),
    ],
)
def test_bad_levels_are_refused(
    tiny_objective: bsopt.Objective, levels: object, match: str
) -> None:
    with pytest.raises(ValueError, match=match):
        BudgetLevels(tiny_objective, levels)  # type: ignore[arg-type]


def test_a_level_too_small_to_evaluate_is_refused(tiny_objective: bsopt.Objective) -> None:
    with pytest.raises(ValueError, match=r"Budget level 0\.001 .* is too small"):
        BudgetLevels(tiny_objective, (0.001, 0.5))


def test_a_seconds_budget_is_refused(tiny_objective: bsopt.Objective) -> None:
    timed = tiny_objective.with_options(budget=bsopt.Budget(1, "seconds"))
    with pytest.raises(ValueError, match="needs an epochs or samples budget"):
        BudgetLevels(timed, (0.5, 1.0))


def test_enqueue_takes_the_levels_in_turn(tiny_objective: bsopt.Objective) -> None:
    levels = BudgetLevels(tiny_objective, (0.25, 0.5, 1.0))
    study = optuna.create_study()
    levels.enqueue(study, 7)
    waiting = study.get_trials(states=(optuna.trial.TrialState.WAITING,))
    queued = [t.system_attrs["fixed_params"]["budget_level"] for t in waiting]
    assert queued == [0.25, 0.5, 1.0] * 2 + [0.25]
    with pytest.raises(ValueError, match="trials must be a whole number of at least 1"):
        levels.enqueue(study, 0)


def test_enqueue_takes_every_level_and_batch_size_in_turn(
    tiny_objective: bsopt.Objective,
) -> None:
    levels = BudgetLevels(tiny_objective, (0.5, 1.0))
    study = optuna.create_study()
    levels.enqueue(study, 4, batch_sizes=[32, 8])
    study.optimize(levels, n_trials=4)
    cells = [
        (t.params["budget_level"], 2 ** t.params["log2_batch_size"], t.user_attrs["samples_seen"])
        for t in study.trials
    ]
    full = levels.samples_at(1.0)
    assert cells == [(0.5, 8, full // 2), (1.0, 8, full), (0.5, 32, full // 2), (1.0, 32, full)]
    with pytest.raises(ValueError, match=r"batch_sizes holds 12, which the search space cannot"):
        levels.enqueue(study, 2, batch_sizes=[8, 12])
    with pytest.raises(ValueError, match="batch_sizes must be a non-empty sequence"):
        levels.enqueue(study, 2, batch_sizes=[])


def test_a_users_suggest_gets_no_warning_about_the_level(
    tiny_objective: bsopt.Objective, recwarn: pytest.WarningsRecorder
) -> None:
    own = tiny_objective.with_options(suggest=lambda trial: {"w": trial.suggest_int("w", 1, 2)})
    levels = BudgetLevels(own, (0.25, 0.5))
    study = optuna.create_study(direction=levels.direction)
    study.optimize(levels, n_trials=1)
    said = [str(w.message) for w in recwarn.list]
    assert not [m for m in said if "budget_level" in m]
    # The user's own unread value is still reported.
    assert [m for m in said if "'w' reached params.extra" in m]


def _loss_objective(tiny_objective: bsopt.Objective) -> bsopt.Objective:
    # The loss, not the accuracy: a float that shows any difference in training.
    return tiny_objective.with_options(metric="loss")


def test_a_branch_trials_first_evaluations_are_the_shorter_runs(
    tiny_objective: bsopt.Objective,
) -> None:
    objective = _loss_objective(tiny_objective)
    levels = BudgetLevels(objective, (0.25, 0.5, 1.0), branch=True)
    study = optuna.create_study(pruner=optuna.pruners.NopPruner())
    study.enqueue_trial({"log2_batch_size": 4, "lr": 0.01, "dropout": 0.0})
    study.optimize(levels, n_trials=1)
    [trial] = study.trials
    assert "budget_level" not in trial.params
    assert trial.user_attrs["samples_seen"] == levels.samples_at(1.0) == 640
    assert trial.user_attrs["runs_within"] == [160, 320]
    # Each smaller level trained on its own (same params, seed and evaluation interval)
    # ends exactly where the branch trial stood at that many samples.
    fixed = optuna.trial.FixedTrial(trial.params, number=trial.number)
    seed = trial.user_attrs["seed"]
    for level, samples in ((0.25, 160), (0.5, 320)):
        _, short = levels._at[level].retrain(fixed, seed=seed)
        assert short.samples_seen == samples
        assert trial.intermediate_values[samples] == short.value
    # Without branching the evaluation points differ (a level's own grid), and so do the
    # runs: what branch=True's shared grid is for.
    own = BudgetLevels(objective, (0.25, 0.5, 1.0))
    _, short = own._at[0.25].retrain(fixed, seed=seed)
    _, long = own._at[1.0].retrain(fixed, seed=seed)
    assert dict(long.history)[160] != short.value


def test_the_forecast_reads_every_level_from_branch_trials(
    tiny_objective: bsopt.Objective,
) -> None:
    from bsopt.analysis._forecast import budget_groups, usable_trials

    levels = BudgetLevels(_loss_objective(tiny_objective), (0.25, 0.5, 1.0), branch=True)
    study = optuna.create_study(pruner=optuna.pruners.NopPruner())
    levels.enqueue(study, 4, batch_sizes=[8, 16])
    study.optimize(levels, n_trials=4)
    groups = budget_groups(usable_trials(study))
    assert [(samples, len(rows)) for samples, rows in groups] == [(160, 4), (320, 4), (640, 4)]
    assert [2 ** t.params["log2_batch_size"] for t in study.trials] == [8, 16, 8, 16]


def test_a_pruned_branch_trial_keeps_the_runs_it_finished(
    tiny_objective: bsopt.Objective,
) -> None:
    from bsopt.analysis._forecast import budget_groups, usable_trials

    levels = BudgetLevels(_loss_objective(tiny_objective), (0.25, 0.5, 1.0), branch=True)

    class PruneAfter(optuna.pruners.BasePruner):
        def prune(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
            return max(trial.intermediate_values) >= 320

    study = optuna.create_study(pruner=PruneAfter())
    study.optimize(levels, n_trials=1)
    [trial] = study.trials
    assert trial.state == optuna.trial.TrialState.PRUNED
    assert [(samples, len(rows)) for samples, rows in budget_groups(usable_trials(study))] == [
        (160, 1),
        (320, 1),
    ]


@pytest.mark.parametrize(
    ("space", "levels", "match"),
    [
        ({"lr_schedule": "cosine"}, (0.25, 0.5, 1.0), "needs lr_schedule='constant'"),
        ({"warmup": 0.1}, (0.25, 0.5, 1.0), "needs warmup=0.0"),
        ({"batch_schedule": "grow"}, (0.25, 0.5, 1.0), "needs batch_schedule='constant'"),
        ({}, (0.3, 0.5, 1.0), "every level to be a whole multiple of the smallest"),
    ],
)
def test_branching_is_refused_where_a_longer_run_does_not_start_as_a_shorter_one(
    tiny_objective: bsopt.Objective,
    space: dict[str, object],
    levels: tuple[float, ...],
    match: str,
) -> None:
    import dataclasses

    objective = tiny_objective.with_options(
        space=dataclasses.replace(tiny_objective.space, **space)
    )
    with pytest.raises(ValueError, match=match):
        BudgetLevels(objective, levels, branch=True)
