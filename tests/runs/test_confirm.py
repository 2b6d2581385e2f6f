"""bsopt.confirm: reruns with fresh seeds, stored in their own study, and the verdict they
give."""

from __future__ import annotations

from pathlib import Path
import statistics

import optuna
from optuna.distributions import FloatDistribution, IntDistribution
from optuna.trial import FrozenTrial
import pytest
from scipy import stats

import bsopt
from bsopt.runs._confirm import CONFIRM_SEED_BASE, confirm_seed, top_trials
from bsopt.runs._runner import load_study_definition


def _planted(storage: str) -> optuna.Study:
    """Search values where 32 looks best (0.98, a lucky trial) and 64 second (0.975)."""
    study = optuna.create_study(storage=storage, study_name="planted", direction="maximize")
    study.set_user_attr("metric", "accuracy")
    dist = {"log2_batch_size": IntDistribution(4, 8), "lr": FloatDistribution(1e-3, 1e-1)}
    for exponent, values in {5: [0.98, 0.95, 0.94], 6: [0.975, 0.96, 0.955]}.items():
        for v in values:
            study.add_trial(
                optuna.trial.create_trial(
                    value=v,
                    params={"log2_batch_size": exponent, "lr": 0.01},
                    distributions=dist,
                    user_attrs={"samples_per_second": 1000.0 * 2**exponent},
                )
            )
    return study


# The "true" mean of each configuration when retrained, and the spread over seeds.
TRUE_MEAN = {32: 0.966, 64: 0.975}


def _retrain(trial: FrozenTrial, seed: int) -> float:
    batch = int(2 ** trial.params["log2_batch_size"])
    offset = [-0.002, 0.001, 0.0, 0.002, -0.001][(seed - CONFIRM_SEED_BASE) % 1000]
    return TRUE_MEAN[batch] + offset


def test_confirm_tests_the_search_leader_and_leaves_the_search_study_alone(
    sqlite_url: str,
) -> None:
    study = _planted(sqlite_url)
    before = bsopt.analyze_batch_sizes(study)
    assert before.best_batch_size == 32  # the winner's curse: one lucky trial
    assert before.findings.headline.kind == "leading"  # selected, not tested
    best_before = study.best_trial.number
    calls: list[tuple[int, int]] = []

    def retrain(trial: FrozenTrial, seed: int) -> float:
        calls.append((trial.number, seed))
        return _retrain(trial, seed)

    result = bsopt.confirm(study, retrain=retrain, top=1, seeds=5)
    # The best trial of each batch size (#0 at 32, #3 at 64), five fresh seeds each.
    assert sorted({n for n, _ in calls}) == [0, 3] and len(calls) == 10
    assert {s for _, s in calls} == {confirm_seed(n, k) for n in (0, 3) for k in range(5)}
    assert all(run.new for run in result.runs) and len(result.runs) == 10
    analysis = result.analysis
    assert analysis.basis == "confirm" and analysis.n_confirm == 10
    # The search selected 32; the reruns test it, and 64 does better.
    assert analysis.best_batch_size == 32 and analysis.stats(64).status == "better"
    s64 = analysis.stats(64)
    assert s64.compared_mean == pytest.approx(0.975)
    # The 95% t-interval with 4 degrees of freedom, by hand.
    values = [0.975 + o for o in (-0.002, 0.001, 0.0, 0.002, -0.001)]
    half = stats.t.ppf(0.975, 4) * statistics.stdev(values) / 5**0.5
    assert s64.interval == pytest.approx((0.975 - half, 0.975 + half))
    assert result.verdict.startswith(
        "**Not settled**: the search selected 32, but in the confirm reruns 64 did better"
    )
    # Stored in their own study, marked, with the repeated trial's params.
    search = optuna.load_study(study_name="planted", storage=sqlite_url)
    reruns = optuna.load_study(study_name="planted:confirm", storage=sqlite_url)
    assert reruns.user_attrs["confirm_of_study"] == "planted"
    assert reruns.user_attrs["metric"] == "accuracy" and reruns.directions == search.directions
    assert len(reruns.trials) == 10 and {t.user_attrs["confirm_of"] for t in reruns.trials} == {
        0,
        3,
    }
    assert all(t.params == search.trials[t.user_attrs["confirm_of"]].params for t in reruns.trials)
    # The search study is as it was: trials, best trial, Optuna's importance.
    assert len(search.trials) == 6 and search.best_trial.number == best_before
    assert set(optuna.importance.get_param_importances(search)) <= {"log2_batch_size", "lr"}
    # The search statistics leave them out.
    assert analysis.stats(32).best == 0.98 and analysis.stats(32).n_complete == 3


def test_confirm_names_a_best_batch_size_when_the_reruns_separate_it(sqlite_url: str) -> None:
    study = _planted(sqlite_url)

    def lucky_was_right(trial: FrozenTrial, seed: int) -> float:
        batch = int(2 ** trial.params["log2_batch_size"])
        return _retrain(trial, seed) + (0.02 if batch == 32 else 0.0)

    result = bsopt.confirm(study, retrain=lucky_was_right, top=1, seeds=5)
    assert result.analysis.stats(64).status == "worse"
    assert result.verdict.startswith("Best batch size for this model: **32** (")


def test_a_confirm_study_name_taken_by_another_study_is_refused(sqlite_url: str) -> None:
    study = _planted(sqlite_url)
    optuna.create_study(storage=sqlite_url, study_name="planted:confirm")
    with pytest.raises(ValueError, match="holds a study named 'planted:confirm' that is not"):
        bsopt.confirm(study, retrain=_retrain, top=1, seeds=2)
    assert len(study.trials) == 6


def test_confirm_again_trains_only_what_is_missing(sqlite_url: str) -> None:
    study = _planted(sqlite_url)
    bsopt.confirm(study, retrain=_retrain, top=1, seeds=3)
    calls: list[int] = []

    def counting(trial: FrozenTrial, seed: int) -> float:
        calls.append(seed)
        return _retrain(trial, seed)

    again = bsopt.confirm(study, retrain=counting, top=1, seeds=3)
    assert calls == [] and not any(run.new for run in again.runs) and len(again.runs) == 6
    more = bsopt.confirm(study, retrain=counting, top=1, seeds=4)
    assert sorted(calls) == [confirm_seed(0, 3), confirm_seed(3, 3)]
    assert sum(run.new for run in more.runs) == 2
    reruns = optuna.load_study(study_name="planted:confirm", storage=sqlite_url)
    assert len(study.trials) == 6 and len(reruns.trials) == 8


def test_a_rerun_that_fails_is_stored_as_failed(sqlite_url: str) -> None:
    study = _planted(sqlite_url)

    def diverges_at_32(trial: FrozenTrial, seed: int) -> float:
        return float("nan") if trial.params["log2_batch_size"] == 5 else _retrain(trial, seed)

    result = bsopt.confirm(study, retrain=diverges_at_32, top=1, seeds=2)
    assert [r.value for r in result.runs if r.batch_size == 32] == [None, None]
    reruns = optuna.load_study(study_name="planted:confirm", storage=sqlite_url)
    failed = [t for t in reruns.trials if t.state == optuna.trial.TrialState.FAIL]
    assert len(failed) == 2 and all(t.user_attrs["confirm_of"] == 0 for t in failed)
    assert result.analysis.basis == "search"  # one batch size with reruns: nothing to compare


@pytest.mark.slow
def test_confirm_with_a_real_objective_on_sqlite(
    tiny_objective: bsopt.Objective, sqlite_url: str
) -> None:
    study = bsopt.create_study(
        "tiny-confirm", storage=sqlite_url, direction=tiny_objective.direction, seed=0
    )
    bsopt.optimize(study, tiny_objective, trials=6, show_progress_bar=False)
    tops = top_trials(study, 1)
    lines: list[str] = []
    result = bsopt.confirm(study, tiny_objective, top=1, seeds=2, echo=lines.append)
    assert len(result.runs) == 2 * len(tops) and len(lines) == len(result.runs)
    assert lines[0].startswith(f"[1/{len(result.runs)}] batch ")
    reloaded = optuna.load_study(study_name="tiny-confirm:confirm", storage=sqlite_url)
    reruns = [t for t in reloaded.trials if "confirm_of" in t.user_attrs]
    assert len(reruns) == len(result.runs)
    for t in reruns:
        # Stored like a search trial: its curve on the sample grid and bsopt's attributes.
        assert t.intermediate_values and t.user_attrs["samples_per_second"] > 0
        assert t.user_attrs["seed"] == t.user_attrs["confirm_seed"] >= CONFIRM_SEED_BASE
    if len(tops) >= 2:
        assert result.analysis.basis == "confirm"
        assert "rerun with fresh seeds" in result.verdict


@pytest.mark.slow
def test_reruns_in_worker_processes_store_what_one_process_would(
    tiny_objective: bsopt.Objective, tmp_path: Path
) -> None:
    # Two identical searches; one confirmed in this process, one by two joblib workers.
    stored: dict[int, list[tuple[int, int, float | None]]] = {}
    for jobs in (1, 2):
        url = f"sqlite:///{tmp_path / f'jobs{jobs}.db'}"
        study = bsopt.create_study("jobs", storage=url, direction=tiny_objective.direction, seed=0)
        bsopt.optimize(study, tiny_objective, trials=6, show_progress_bar=False)
        lines: list[str] = []
        result = bsopt.confirm(study, tiny_objective, top=1, seeds=2, echo=lines.append, jobs=jobs)
        assert [line.split(":")[0] for line in lines] == [
            f"[{i}/{len(result.runs)}] batch {run.batch_size}"
            for i, run in enumerate(result.runs, 1)
        ]  # one line per rerun, in the plan's order, as each is stored
        stored[jobs] = [
            (t.user_attrs["confirm_of"], t.user_attrs["confirm_seed"], t.value)
            for t in optuna.load_study(study_name="jobs:confirm", storage=url).trials
            if "confirm_of" in t.user_attrs
        ]
    assert len(stored[1]) >= 2 and stored[2] == stored[1]


def test_an_own_retrain_runs_in_spawned_workers_with_the_same_results(tmp_path: Path) -> None:
    # retrain= is not a bsopt objective: it cannot be inherited, so joblib spawns workers.
    results = []
    for jobs in (1, 2):
        study = _planted(f"sqlite:///{tmp_path / f'own{jobs}.db'}")
        result = bsopt.confirm(study, retrain=_retrain, top=1, seeds=3, jobs=jobs)
        results.append([(run.of, run.seed, run.value) for run in result.runs])
    assert len(results[0]) == 6 and results[1] == results[0]


def test_confirm_arguments_are_checked(sqlite_url: str) -> None:
    study = _planted(sqlite_url)
    with pytest.raises(ValueError, match="Pass exactly one of objective"):
        bsopt.confirm(study)
    with pytest.raises(ValueError, match="seeds must be an integer >= 2, but got 1"):
        bsopt.confirm(study, retrain=_retrain, seeds=1)
    with pytest.raises(ValueError, match=r"batch_sizes \[128\] have no completed trial"):
        bsopt.confirm(study, retrain=_retrain, batch_sizes=[128])
    with pytest.raises(ValueError, match=r"jobs must be an integer >= 1 or None .* got 0"):
        bsopt.confirm(study, retrain=_retrain, jobs=0)
    with pytest.raises(ValueError, match="must have a retrain"):
        bsopt.confirm(study, object())  # type: ignore[arg-type]
    empty = optuna.create_study(storage=sqlite_url, study_name="empty")
    with pytest.raises(ValueError, match="has no completed trial to confirm yet"):
        bsopt.confirm(empty, retrain=_retrain)


@pytest.mark.slow
def test_cli_confirm(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    script = tmp_path / "tiny_study.py"
    script.write_text(
        "import bsopt\n\n\n"
        "def build_objective(*, seed: int = 0) -> bsopt.Objective:\n"
        "    data = bsopt.make_synthetic(400, n_features=8, n_classes=3, seed=0)\n"
        "    return bsopt.make_objective(\n"
        "        bsopt.mlp_builder(data, hidden=(16,)), data,\n"
        "        space=bsopt.SearchSpace(batch_size=(8, 16)),\n"
        "        budget=bsopt.Budget(1, evals=2), device='cpu', seed=seed)\n"
    )
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    _, build = load_study_definition(str(script))
    objective = build(seed=0)
    study = bsopt.create_study("cli", storage=url, direction=objective.direction, seed=0)
    bsopt.optimize(study, objective, trials=4, show_progress_bar=False)
    capsys.readouterr()
    args = ["confirm", str(script), "--storage", url, "--study", "cli", "--seeds", "2"]
    assert bsopt.cli.main(args) == 0
    out = capsys.readouterr().out
    assert "batch 8: trial #" in out or "batch 16: trial #" in out
    assert "confirm rerun" in out
    assert bsopt.cli.main([*args[:-1], "1"]) == 2
    assert "seeds must be an integer >= 2" in capsys.readouterr().err


def test_confirm_reruns_do_not_count_towards_the_search_total(sqlite_url: str) -> None:
    study = _planted(sqlite_url)  # 6 finished search trials
    bsopt.confirm(study, retrain=_retrain, top=1, seeds=2)  # 4 reruns, in planted:confirm
    assert len(study.trials) == 6
    ran = bsopt.optimize(
        study,
        lambda trial: trial.suggest_float("lr", 1e-3, 1e-1),
        trials=7,
        show_progress_bar=False,
    )
    assert ran == 1  # the total counts search trials only: 6 + 1
    from bsopt.runs._workers import decide

    assert decide(study.trials, 7, me=None) == "stop"
    assert decide(study.trials, 8, me=None) == "run"


def test_confirm_with_an_objective_of_another_seed_is_refused(sqlite_url: str) -> None:
    def objective_with(seed: int) -> bsopt.Objective:
        data = bsopt.make_synthetic(400, n_features=8, n_classes=3, seed=seed)
        return bsopt.make_objective(
            bsopt.mlp_builder(data, hidden=(16,)), data,
            space=bsopt.SearchSpace(batch_size=(8, 64)), budget=bsopt.Budget(1, evals=2),
            device="cpu", seed=seed,
        )  # fmt: skip

    searched = objective_with(1)
    study = bsopt.create_study("seeded", storage=sqlite_url, direction=searched.direction)
    bsopt.optimize(study, searched, trials=2, show_progress_bar=False)
    with pytest.raises(ValueError, match=r"study 'seeded' was created with another definition"
                       ) as refused:  # fmt: skip
        bsopt.confirm(study, objective_with(0), seeds=2, jobs=1)
    lines = str(refused.value).splitlines()
    assert "  seed (data split and training): 1 -> 0" in lines
    assert any(line.startswith("  data: other rows (sample hash") for line in lines)
    assert "build_objective(seed=1)" in lines[-1] and "allow_definition_change=True" in lines[-1]
    assert len(study.trials) == 2  # nothing trained, nothing stored
    # The objective of the study's own seed (its data split) confirms.
    assert len(bsopt.confirm(study, objective_with(1), seeds=2, jobs=1).runs) >= 2
