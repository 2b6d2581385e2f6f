"""How sure is the verdict? Retrain the best configurations with fresh seeds.

The best trial of each batch size is the best of many noisy draws, so its value flatters it
(the winner's curse), and the values that chose the leader cannot also test it.
:func:`confirm` retrains the top configurations of every batch size with ``seeds`` fresh
seeds each and stores those runs in their own study, ``<study>:confirm`` in the same storage
(study attribute ``confirm_of_study``; each run marked with the user attributes
``confirm_of``, the number of the trial repeated, and ``confirm_seed``). The search study is
left as it was: its best trial, Optuna's plots and importance, the dashboard and a resumed
sampler never see a rerun. It returns the analysis that now tests the search's leader
against the others on the reruns.

Running it again does only the runs still missing, so an interrupted confirm resumes.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterator, Sequence
import contextlib
from dataclasses import dataclass
import math
from typing import Any, Protocol
import warnings

import optuna
from optuna.trial import FrozenTrial, TrialState

from bsopt.analysis._analysis import BatchSizeAnalysis, analyze_batch_sizes
from bsopt.analysis._load import (
    complete_trials,
    confirm_reruns,
    load_study,
    trial_batch_size,
    trial_value,
)
from bsopt.core._attrs import (
    CONFIRM_ATTR,
    CONFIRM_SEED_ATTR,
    CONFIRM_STUDY_ATTR,
    confirm_study_name,
)
from bsopt.runs._study import (
    definition_differences,
    definition_error,
    describe_definition,
    stored_definition,
)

#: Confirm seeds start here (the search's are hashes of the objective's seed and a trial's
#: params; see bsopt.search.trial_seed).
CONFIRM_SEED_BASE = 1_000_000


class _Retrainable(Protocol):
    def retrain(self, trial: FrozenTrial, *, seed: int | None = None) -> tuple[Any, Any]: ...


Retrain = Callable[[FrozenTrial, int], float]


@dataclass(frozen=True)
class ConfirmRun:
    """One rerun: the trial it repeats, its batch size and seed, its value (``None`` when it
    did not complete) and its number in the confirm study."""

    of: int
    batch_size: int
    seed: int
    value: float | None
    number: int
    new: bool


@dataclass(frozen=True)
class ConfirmResult:
    """What :func:`confirm` did: the reruns (new and already stored) and the analysis that
    uses them; ``analysis.verdict`` says it in words."""

    runs: tuple[ConfirmRun, ...]
    analysis: BatchSizeAnalysis

    @property
    def verdict(self) -> str:
        return self.analysis.verdict


def confirm_seed(trial_number: int, k: int) -> int:
    """The seed of the ``k``-th rerun of trial ``trial_number``: fresh (never a search
    seed) and the same on every call, so that a resumed confirm skips what it did."""
    return CONFIRM_SEED_BASE + 1000 * trial_number + k


def top_trials(study: optuna.Study, top: int = 1) -> dict[int, list[FrozenTrial]]:
    """The ``top`` best completed search trials of each batch size, best first."""
    maximize = study.directions[0] == optuna.study.StudyDirection.MAXIMIZE
    by_batch: dict[int, list[FrozenTrial]] = {}
    for t in complete_trials(study):
        b = trial_batch_size(t)
        if b is not None:
            by_batch.setdefault(b, []).append(t)
    out = {}
    for b in sorted(by_batch):
        ranked = sorted(
            by_batch[b],
            key=lambda t: -(trial_value(t) or 0.0) if maximize else trial_value(t) or 0.0,
        )
        out[b] = ranked[:top]
    return out


def _values_of(objective: Any, n_objectives: int, result: Any) -> list[float] | None:
    """The objective values a bsopt objective would have returned for ``result``."""
    from bsopt.core._stop import StopReason
    from bsopt.search._objective import time_to_target

    if result.stop_reason in (StopReason.PRUNED, StopReason.DIVERGED):
        return None
    goal = getattr(objective, "goal", "metric")
    if goal == "time_to_target":
        options = objective.options
        score, _ = time_to_target(
            result,
            float(options.target),
            direction=objective.metric_direction,
            unit=options.target_unit,
            total=objective._budget_total(),
        )
        return [score]
    if n_objectives == 2:
        return [result.value, result.train_seconds]
    return [result.value]


def confirm(
    study: optuna.Study | str,
    objective: _Retrainable | None = None,
    *,
    top: int = 3,
    seeds: int = 3,
    retrain: Retrain | None = None,
    batch_sizes: Sequence[int] | None = None,
    storage: str | None = None,
    echo: Callable[[str], None] | None = None,
    jobs: int | None = 1,
    allow_definition_change: bool = False,
    show_progress_bar: bool = False,
) -> ConfirmResult:
    """Retrain the ``top`` configurations of each batch size with ``seeds`` fresh seeds,
    store the runs in the study's confirm study, and test the search's leader with them.

    Args:
        study: a study, or the name of one in ``storage``.
        objective: the :func:`~bsopt.make_objective` objective the study was searched with;
            its ``retrain(trial, seed=...)`` trains a stored configuration again, and each
            rerun is stored with the same user attributes as a search trial.
        top: configurations per batch size (its best ``top`` completed trials).
        seeds: reruns per configuration, each with a fresh seed (:func:`confirm_seed`).
        retrain: instead of ``objective``, any ``retrain(trial, seed) -> value`` (for an
            objective of your own); a NaN value records a failed rerun.
        batch_sizes: only these batch sizes (default: every one with a completed trial).
        storage: the storage URL when ``study`` is a name.
        echo: called with one line per rerun (e.g. ``print``).
        jobs: worker processes training the reruns at once (joblib), one torch thread
            each; ``None`` picks one per core for CPU objectives (1 on a GPU); 1 trains
            them in this process. The reruns are stored by this process either way, in
            the same order, and a rerun's value does not depend on ``jobs``.
        allow_definition_change: confirm with an ``objective`` whose definition (data,
            model, metric, seed; see :func:`check_confirm_definition`) differs from the
            study's; otherwise that is refused before any rerun trains.
        show_progress_bar: a progress bar of the reruns (``echo`` lines print above it).

    Each rerun is a COMPLETE trial (FAIL if it diverged) of the study
    ``<study>:confirm`` (see :func:`open_confirm_study`) with the repeated trial's params and
    the user attributes ``confirm_of`` and ``confirm_seed``; the search study is not
    written to. :func:`~bsopt.analyze_batch_sizes` of the search study finds them and tests
    the leader on them as soon as it and another batch size have reruns with a spread.
    Reruns already stored (same trial, same seed) are not trained again.

    Raises:
        ValueError: neither or both of ``objective`` and ``retrain``; ``top`` or ``seeds``
            below 1 (``seeds`` below 2 gives no interval); no completed trial to confirm;
            ``objective`` has another definition than the study.
    """
    _check_confirm_args(objective, retrain, top=top, seeds=seeds, jobs=jobs)
    loaded = _load_checked(study, storage, objective, allow_definition_change)
    chosen = _chosen(loaded, top, batch_sizes)
    done = _stored_reruns(loaded)
    plan = [
        (b, trial, confirm_seed(trial.number, k))
        for b, trials in chosen.items()
        for trial in trials
        for k in range(seeds)
    ]
    pending = [(trial, seed) for _, trial, seed in plan if (trial.number, seed) not in done]
    retrainer = _Retrainer(objective, retrain, len(loaded.directions))
    # Closed when done, so a worker pool inside it shuts down now, not at exit.
    with (
        contextlib.closing(_train_all(pending, retrainer, jobs=jobs)) as trained,
        _bar(len(pending), show=show_progress_bar) as bar,
    ):
        # echo's lines print above the bar when there is one.
        say = None if echo is None else bar.write if show_progress_bar else echo
        runs = _stored_as_done(loaded, plan, done, trained, bar.update, say)
    return ConfirmResult(tuple(runs), analyze_batch_sizes(loaded))


def _stored_as_done(
    loaded: optuna.Study,
    plan: Sequence[tuple[int, FrozenTrial, int]],
    done: dict[tuple[int, int], FrozenTrial],
    trained: Iterator[_Rerun],
    advance: Callable[[int], object],
    say: Callable[[str], None] | None,
) -> list[ConfirmRun]:
    """Every run of ``plan``: those ``done`` as stored, the others from ``trained`` (in plan
    order), each stored in the confirm study as it arrives."""
    reruns: optuna.Study | None = None
    runs: list[ConfirmRun] = []
    for b, trial, seed in plan:
        stored = done.get((trial.number, seed))
        if stored is not None:
            value = trial_value(stored)
            runs.append(ConfirmRun(trial.number, b, seed, value, stored.number, False))
            continue
        rerun = next(trained)  # in plan order, as each finishes
        reruns = reruns or open_confirm_study(loaded)
        number = _store_rerun(reruns, trial, seed, rerun)
        value_of = rerun.values[0] if rerun.values is not None else None
        runs.append(ConfirmRun(trial.number, b, seed, value_of, number, True))
        advance(1)
        if say is not None:
            shown = f"{value_of:.4g}" if value_of is not None else "failed (diverged)"
            say(
                f"[{len(runs)}/{len(plan)}] batch {b}: trial #{trial.number} with seed "
                f"{seed}: {shown}"
            )
    return runs


def _bar(total: int, *, show: bool) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, disable=not show, unit="rerun", desc="confirm", dynamic_ncols=True)


def _load_checked(
    study: optuna.Study | str,
    storage: str | None,
    objective: _Retrainable | None,
    allow_change: bool,
) -> optuna.Study:
    loaded = load_study(study, storage=storage)
    if objective is not None:
        check_confirm_definition(loaded, objective, allow_change=allow_change)
    return loaded


def check_confirm_definition(
    study: optuna.Study,
    objective: object,
    *,
    name: str | None = None,
    allow_change: bool = False,
) -> None:
    """Refuse to confirm ``study`` with an objective of another definition.

    The reruns would train on other data, another split (the seed) or another model than
    the search did, and the verdict would compare them as equals. What is compared is what
    :func:`~bsopt.runs._study.check_definition` keeps with the study; nothing is stored
    here. A study stored before bsopt kept the fingerprint is compared on its search space
    and budget only.

    Raises:
        ValueError: one line per difference, unless ``allow_change``.
    """
    described = describe_definition(objective, name=name)
    if described is None:
        return
    stored = stored_definition(study)
    differences = definition_differences(stored, described)
    if not differences or allow_change:
        return
    seed = stored.get("definition", {}).get("seed")
    raise definition_error(
        study,
        differences,
        fix=f"Confirm with the definition the study was searched with, seed {seed}: "
        "`bsopt confirm` takes that seed from the study, in Python build the objective with "
        f"build_objective(seed={seed}). Or pass --allow-definition-change "
        "(allow_definition_change=True) to confirm with this one anyway.",
    )


def definition_seed(
    study: optuna.Study, seed: int, *, echo: Callable[[str], None] | None = None
) -> int:
    """The seed to build ``study``'s objective with for ``bsopt confirm``: the one stored
    with the study (its data split and training seeds), else ``seed`` (``--seed``)."""
    stored = stored_definition(study).get("definition", {}).get("seed")
    if isinstance(stored, bool) or not isinstance(stored, int):
        if echo is not None:
            echo(
                f"bsopt: the study {study.study_name!r} keeps no seed (it was stored before "
                f"bsopt kept a study's definition); confirm builds it with --seed {seed}."
            )
        return seed
    if stored != seed and echo is not None:
        echo(
            f"bsopt: confirm builds the study with its own seed, {stored}, so the reruns use "
            f"its data split (not --seed {seed})."
        )
    return stored


def _check_confirm_args(
    objective: _Retrainable | None,
    retrain: Retrain | None,
    *,
    top: int,
    seeds: int,
    jobs: int | None,
) -> None:
    if (objective is None) == (retrain is None):
        raise ValueError(
            "Pass exactly one of objective (a bsopt objective, whose retrain() is used) and "
            "retrain (a function retrain(trial, seed) -> value)."
        )
    if objective is not None and not callable(getattr(objective, "retrain", None)):
        raise ValueError(
            f"objective must have a retrain(trial, seed=...) method (a bsopt objective), but "
            f"got {type(objective).__name__}. Pass retrain=... for an objective of your own."
        )
    for name, value, low in (("top", top, 1), ("seeds", seeds, 2)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(
                f"{name} must be an integer >= {low}, but got {value!r}."
                + (" Two seeds at least: one run has no spread." if name == "seeds" else "")
            )
    if jobs is not None and (isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1):
        raise ValueError(
            f"jobs must be an integer >= 1 or None (one per core), but got {jobs!r}. "
            "Use 1 to train the reruns in this process."
        )


def _chosen(
    loaded: optuna.Study, top: int, batch_sizes: Sequence[int] | None
) -> dict[int, list[FrozenTrial]]:
    """The trials to confirm: the ``top`` of each batch size (of ``batch_sizes`` only)."""
    chosen = top_trials(loaded, top)
    if batch_sizes is not None:
        wanted = {int(b) for b in batch_sizes}
        missing = sorted(wanted - set(chosen))
        if missing:
            raise ValueError(
                f"batch_sizes {missing} have no completed trial to confirm in study "
                f"{loaded.study_name!r}; these do: {sorted(chosen)}."
            )
        chosen = {b: ts for b, ts in chosen.items() if b in wanted}
    if not chosen:
        raise ValueError(
            f"Study {loaded.study_name!r} has no completed trial to confirm yet. Run the "
            "search first (bsopt run ... --trials N)."
        )
    return chosen


def _stored_reruns(loaded: optuna.Study) -> dict[tuple[int, int], FrozenTrial]:
    """The reruns already stored by (trial repeated, seed): a resumed confirm skips them."""
    done: dict[tuple[int, int], FrozenTrial] = {}
    for t in confirm_reruns(loaded, states=(TrialState.COMPLETE, TrialState.FAIL)):
        if CONFIRM_SEED_ATTR in t.user_attrs:
            done[(int(t.user_attrs[CONFIRM_ATTR]), int(t.user_attrs[CONFIRM_SEED_ATTR]))] = t
    return done


#: Study attributes a confirm study copies from its search study, so that the dashboard and
#: the report name its metric as the search's.
_SHARED_ATTRS = ("metric", "metric_unit", "goal", "objective_names")


def open_confirm_study(search: optuna.Study) -> optuna.Study:
    """The study holding ``search``'s reruns (``<name>:confirm``), created on first use.

    Raises:
        ValueError: a study of that name exists and holds something else.
    """
    name = confirm_study_name(search.study_name)
    storage = search._storage
    try:
        existing = optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        existing = None
    if existing is not None:
        if existing.user_attrs.get(CONFIRM_STUDY_ATTR) == search.study_name:
            return existing
        raise ValueError(
            f"The storage holds a study named {name!r} that is not the confirm study of "
            f"{search.study_name!r} (no study attribute {CONFIRM_STUDY_ATTR}="
            f"{search.study_name!r}); confirm stores its reruns under that name. Rename or "
            "delete that study (optuna delete-study --study-name ...), then confirm again."
        )
    created = optuna.create_study(
        study_name=name, storage=storage, directions=search.directions, load_if_exists=True
    )
    for key in _SHARED_ATTRS:
        if key in search.user_attrs:
            created.set_user_attr(key, search.user_attrs[key])
    if search.metric_names is not None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            created.set_metric_names(search.metric_names)
    created.set_user_attr(CONFIRM_STUDY_ATTR, search.study_name)
    return created


@dataclass(frozen=True)
class _Rerun:
    """What one rerun produced, ready to store: values (None if it failed), attributes."""

    values: list[float] | None
    attrs: dict[str, Any]
    intermediate: dict[int, float]


@dataclass(frozen=True)
class _Retrainer:
    """Trains one rerun from ``objective`` or ``retrain``; touches no storage, so it can
    run in any process."""

    objective: _Retrainable | None
    retrain: Retrain | None
    n_objectives: int

    def __call__(self, task: tuple[FrozenTrial, int]) -> _Rerun:
        trial, seed = task
        if self.retrain is not None:
            returned = float(self.retrain(trial, seed))
            return _Rerun([returned] if math.isfinite(returned) else None, {}, {})
        from bsopt.search._objective import result_attrs

        assert self.objective is not None  # _check_confirm_args: exactly one of the two
        _, result = self.objective.retrain(trial, seed=seed)
        params = self.objective.params_of(trial)  # type: ignore[attr-defined]
        return _Rerun(
            _values_of(self.objective, self.n_objectives, result),
            dict(result_attrs(result, params, seed)),
            {int(step): float(v) for step, v in result.history if math.isfinite(v)},
        )


def _in_worker(retrainer: _Retrainer, task: tuple[FrozenTrial, int]) -> _Rerun:
    # Workers share the cores: torch's default of one thread per core in each would fight.
    import torch

    torch.set_num_threads(1)
    return retrainer(task)


def _train_all(
    pending: Sequence[tuple[FrozenTrial, int]], retrainer: _Retrainer, *, jobs: int | None
) -> Generator[_Rerun, None, None]:
    """The reruns of ``pending``, in order, each as soon as it and those before it are done."""
    objective = retrainer.objective
    if jobs is None:
        from bsopt.runs._workers import TRIALS_PER_WORKER, default_jobs

        # Unlike search trials, no rerun waits for another's result: each can have a worker.
        reruns = len(pending) * TRIALS_PER_WORKER
        jobs = default_jobs(objective, reruns) if objective is not None else 1
    if jobs == 1 or len(pending) < 2:
        yield from map(retrainer, pending)
        return
    from joblib import Parallel, delayed

    from bsopt.runs._workers import can_fork

    n_jobs = min(jobs, len(pending))
    if objective is not None and can_fork(objective, [None], 1, 1):
        # Forked workers inherit the objective, data included, and start in milliseconds;
        # spawned ones would import torch and unpickle it first (seconds each).
        import multiprocessing

        global _INHERITED
        _INHERITED = retrainer
        try:
            with multiprocessing.get_context("fork").Pool(n_jobs) as pool:
                yield from pool.imap(_inherited, pending)  # in order, as each is done
        finally:
            _INHERITED = None
        return
    parallel = Parallel(n_jobs=n_jobs, return_as="generator")
    yield from parallel(delayed(_in_worker)(retrainer, task) for task in pending)


# What forked confirm workers inherit from their parent (set only while they run).
_INHERITED: _Retrainer | None = None


def _inherited(task: tuple[FrozenTrial, int]) -> _Rerun:
    assert _INHERITED is not None  # set by _train_all before the pool forks
    return _in_worker(_INHERITED, task)


def _store_rerun(reruns: optuna.Study, trial: FrozenTrial, seed: int, rerun: _Rerun) -> int:
    """Store ``rerun`` of search trial ``trial`` in the confirm study; its number there."""
    attrs = {**rerun.attrs, CONFIRM_ATTR: trial.number, CONFIRM_SEED_ATTR: seed}
    reruns.add_trial(
        optuna.trial.create_trial(
            state=TrialState.COMPLETE if rerun.values is not None else TrialState.FAIL,
            values=rerun.values,
            params=dict(trial.params),
            distributions=dict(trial.distributions),
            user_attrs=attrs,
            intermediate_values=rerun.intermediate,
        )
    )
    return reruns.get_trials(deepcopy=False)[-1].number
