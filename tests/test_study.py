from __future__ import annotations

import optuna
from optuna.trial import TrialState
import pytest

import bsopt


def test_resume_reaches_the_total_instead_of_adding(
    sqlite_url: str, tiny_objective: bsopt.Objective
) -> None:
    study = bsopt.create_study("r", storage=sqlite_url)
    assert bsopt.optimize(study, tiny_objective, trials=3, show_progress_bar=False) == 3
    again = bsopt.create_study("r", storage=sqlite_url)  # a new process would do this
    assert bsopt.optimize(again, tiny_objective, trials=5, show_progress_bar=False) == 2
    assert bsopt.optimize(again, tiny_objective, trials=5, show_progress_bar=False) == 0
    assert len(again.get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED))) == 5


def test_interrupted_run_resumes_to_the_same_total(
    sqlite_url: str, tiny_objective: bsopt.Objective
) -> None:
    calls = {"n": 0}

    def interrupted(trial: optuna.Trial) -> float:
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt  # what Ctrl-C raises in the middle of a trial
        return tiny_objective(trial)

    study = bsopt.create_study("i", storage=sqlite_url)
    with pytest.raises(KeyboardInterrupt):
        bsopt.optimize(study, interrupted, trials=4, show_progress_bar=False)
    states = [t.state for t in study.trials]
    assert states == [TrialState.COMPLETE, TrialState.COMPLETE, TrialState.FAIL]

    resumed = bsopt.create_study("i", storage=sqlite_url)
    bsopt.optimize(resumed, tiny_objective, trials=4, show_progress_bar=False)
    counts = bsopt._study.count_trials(resumed)
    assert counts["COMPLETE"] + counts["PRUNED"] == 4 and counts["FAIL"] == 1


def test_study_with_the_other_direction_is_refused_and_kept(
    sqlite_url: str, tiny_objective: bsopt.Objective
) -> None:
    study = bsopt.create_study("d", storage=sqlite_url, direction="maximize")
    bsopt.optimize(study, tiny_objective, trials=2, show_progress_bar=False)
    with pytest.raises(
        ValueError,
        match=r"study 'd' already exists .* optimises maximize, "
        r"but direction='minimize' was asked for",
    ):
        bsopt.create_study("d", storage=sqlite_url, direction="minimize")
    kept = optuna.load_study(study_name="d", storage=sqlite_url)
    assert len(kept.trials) == 2 and kept.direction.name == "MAXIMIZE"


def test_bad_study_arguments(sqlite_url: str, tiny_objective: bsopt.Objective) -> None:
    with pytest.raises(ValueError, match=r"study name must be a non-empty string"):
        bsopt.create_study(" ", storage=sqlite_url)
    with pytest.raises(ValueError, match=r"direction must be 'maximize' or 'minimize'"):
        bsopt.create_study("x", storage=sqlite_url, direction="up")  # type: ignore[arg-type]
    study = bsopt.create_study("x", storage=sqlite_url)
    with pytest.raises(ValueError, match=r"trials \(the total to reach\) must be an integer"):
        bsopt.optimize(study, tiny_objective, trials=0)


def test_summary_names_best_params_and_where_data_live(
    sqlite_url: str, tiny_objective: bsopt.Objective
) -> None:
    study = bsopt.create_study("s", storage=sqlite_url)
    bsopt.optimize(study, tiny_objective, trials=2, show_progress_bar=False)
    text = bsopt.summary(study, storage_url=sqlite_url)
    best = study.best_trial
    assert f"Best trial #{best.number}: {best.value:.4f}" in text
    assert f"batch_size     {best.params['batch_size']}" in text
    assert "log2_batch_size" not in text
    assert f"optuna-dashboard {sqlite_url}" in text
