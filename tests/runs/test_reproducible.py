"""A seeded ``bsopt run`` trains each configuration with the same seed in every rerun.

The training seed is hashed from the study's seed and the trial's params, not the trial's
number, which with ``--jobs N`` depends on which worker asks first. What the sampler proposes
for trial n depends on (seed, n) and the trials up to n - N only, once finished (the ordered
sampler), and the pruner judges by the same trials, so two ``--jobs 2`` runs give the same
trials, number for number.
"""

from __future__ import annotations

from pathlib import Path

import optuna
from optuna.trial import FrozenTrial, TrialState

from bsopt.cli import main
from bsopt.runs._runner import synthetic
from bsopt.search._objective import trial_seed

QUIET = ["--seed", "0", "--no-progress"]
Config = tuple[tuple[str, object], ...]


def _config(trial: FrozenTrial) -> Config:
    return tuple(
        (name, round(v, 9) if isinstance(v, float) else v)
        for name, v in sorted(trial.params.items())
    )


def _run(tmp_path: Path, name: str, *args: str) -> list[FrozenTrial]:
    url = f"sqlite:///{tmp_path / name}.db"
    assert main(["run", "synthetic", "--trials", "6", "--storage", url, *QUIET, *args]) == 0
    trials = optuna.load_study(study_name="synthetic", storage=url).trials
    finished = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(finished) == 6
    for t in finished:
        assert t.user_attrs["seed"] == trial_seed(0, t.params)
    return finished


def _by_config(trials: list[FrozenTrial]) -> dict[Config, FrozenTrial]:
    return {_config(t): t for t in trials}


def test_a_seeded_in_process_run_is_exactly_reproducible(tmp_path: Path) -> None:
    a, b = (_run(tmp_path, name, "--jobs", "1") for name in ("a", "b"))
    assert [(t.number, _config(t), t.state, t.value, t.user_attrs["seed"]) for t in a] == [
        (t.number, _config(t), t.state, t.value, t.user_attrs["seed"]) for t in b
    ]


def test_configurations_under_other_trial_numbers_train_alike(tmp_path: Path) -> None:
    # The same six configurations under other trial numbers, as when --jobs 2 workers take
    # the numbers in another order: with the seed taken from the number they would train
    # with other seeds and get other values. (Queued trials are run with --jobs 1: on SQLite
    # two worker processes can both pop one queued trial, and the second to finish it fails.)
    objective = synthetic(seed=0)
    sampler = optuna.samplers.RandomSampler(seed=3)
    scratch = optuna.create_study(sampler=sampler)
    configs = []
    for _ in range(6):
        trial = scratch.ask()
        objective.params_of(trial)
        configs.append(trial.params)
    runs = []
    for name, order in (("fwd", configs), ("rev", configs[::-1])):
        url = f"sqlite:///{tmp_path / name}.db"
        study = optuna.create_study(study_name="synthetic", storage=url, direction="maximize")
        for params in order:
            study.enqueue_trial(params)
        args = ["--storage", url, "--jobs", "1", "--pruner", "none", *QUIET]
        assert main(["run", "synthetic", "--trials", "6", *args]) == 0
        trials = optuna.load_study(study_name="synthetic", storage=url).trials
        runs.append({_config(t): (t.number, t.value, t.user_attrs["seed"]) for t in trials})
    fwd, rev = runs
    assert len(fwd) == 6 and fwd.keys() == rev.keys()
    for config, (number, value, seed) in fwd.items():
        assert rev[config][0] == 5 - number
        assert rev[config][1:] == (value, seed)


def _outcome(trials: list[FrozenTrial]) -> list[tuple[int, Config, str, float | None]]:
    return sorted((t.number, _config(t), t.state.name, t.value) for t in trials)


def test_two_job_runs_give_the_same_trials(tmp_path: Path) -> None:
    # The ordered sampler samples trial n from (seed, n) and the trials up to n - 2 once
    # they have finished, and the pruner judges by the same trials: timing decides nothing.
    a, b = (_run(tmp_path, name, "--jobs", "2") for name in ("a", "b"))
    assert _outcome(a) == _outcome(b)
    assert len({_config(t) for t in a}) == 6  # six configurations, not one repeated


def test_the_ordered_sampler_shows_trial_n_only_the_trials_up_to_n_minus_lag() -> None:
    from bsopt.search._samplers import OrderedSampler

    seen: dict[int, list[int]] = {}

    class Recording(optuna.samplers.RandomSampler):
        def sample_independent(self, study, trial, name, dist):  # type: ignore[no-untyped-def]
            seen[trial.number] = [t.number for t in study.get_trials(deepcopy=False)]
            return super().sample_independent(study, trial, name, dist)

    study = optuna.create_study(sampler=OrderedSampler(lambda s: Recording(seed=s), 0, lag=3))
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=5)
    # Each list holds the trial itself and those at least three numbers before it.
    assert seen == {0: [0], 1: [1], 2: [2], 3: [0, 3], 4: [0, 1, 4]}
    again = optuna.create_study(sampler=OrderedSampler(lambda s: Recording(seed=s), 0, lag=3))
    again.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=5)
    assert [t.params for t in again.trials] == [t.params for t in study.trials]


def test_two_job_runs_agree_on_every_configuration_both_ran(tmp_path: Path) -> None:
    a, b = (_by_config(_run(tmp_path, name, "--jobs", "2")) for name in ("a", "b"))
    for config in a.keys() & b.keys():
        x, y = a[config], b[config]
        assert x.user_attrs["seed"] == y.user_attrs["seed"]
        # Pruning depends on what the other worker had reported by then: the curves agree
        # where both trained, and the values where both completed.
        steps = x.intermediate_values.keys() & y.intermediate_values.keys()
        assert steps
        assert all(x.intermediate_values[s] == y.intermediate_values[s] for s in steps)
        if x.state == y.state == TrialState.COMPLETE:
            assert x.value == y.value
