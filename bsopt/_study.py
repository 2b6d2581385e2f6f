"""Creating, resuming and summarising studies in persistent storage."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Sequence
import logging
from typing import Literal

import optuna
from optuna.study import MaxTrialsCallback
from optuna.trial import FrozenTrial, TrialState

from bsopt._storage import mask_url, open_storage, resolve_storage_url

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
Direction = Literal["maximize", "minimize"]


def create_study(
    name: str,
    *,
    storage: str | optuna.storages.BaseStorage | None = None,
    direction: Direction = "maximize",
    directions: Sequence[Direction] | None = None,
    sampler: optuna.samplers.BaseSampler | None = None,
    pruner: optuna.pruners.BasePruner | None = None,
    seed: int | None = 0,
) -> optuna.Study:
    """Create the study ``name``, or load it if it exists (so a rerun resumes it).

    Args:
        name: the study name in the storage.
        storage: a URL or an Optuna storage; ``None`` resolves ``$BSOPT_STORAGE`` then
            ``sqlite:///storage/bsopt.db``. URLs are opened with heartbeats and retries.
        direction: ``"maximize"`` or ``"minimize"``; pass ``objective.direction``.
        directions: for a multi-objective study, one direction per value (pass
            ``objective.directions``); replaces ``direction``.
        sampler: default ``TPESampler(seed=seed)`` (Optuna 5: multivariate, constant liar).
        pruner: default ``MedianPruner(n_startup_trials=5, n_warmup_steps=0)``; see
            :func:`~bsopt.make_pruner`.
        seed: the sampler's seed; a resumed study gets a fresh sampler with the same seed.

    Raises:
        ValueError: the stored study optimises in the other direction.
    """
    if not name or not name.strip():
        raise ValueError("The study name must be a non-empty string.")
    wanted = list(directions) if directions is not None else [direction]
    for d in wanted:
        if d not in ("maximize", "minimize"):
            raise ValueError(f"direction must be 'maximize' or 'minimize', but got {d!r}.")
    if storage is None or isinstance(storage, str):
        storage = open_storage(storage)
    study = optuna.create_study(
        storage=storage,
        study_name=name,
        directions=wanted,
        sampler=sampler or optuna.samplers.TPESampler(seed=seed),
        pruner=pruner or optuna.pruners.MedianPruner(n_startup_trials=5),
        load_if_exists=True,
    )
    stored = [d.name.lower() for d in study.directions]
    if stored != wanted:
        asked = wanted[0] if len(wanted) == 1 else wanted
        raise ValueError(
            f"The study {name!r} already exists in this storage and optimises "
            f"{' and '.join(stored)}, but direction={asked!r} was asked for. Its trials "
            "are kept as they are: use another study name, or the same goal as before."
        )
    return study


def count_trials(study: optuna.Study) -> Counter[str]:
    """Trials by state name (``"COMPLETE"``, ``"PRUNED"``, ``"FAIL"``, ...)."""
    return Counter(t.state.name for t in study.get_trials(deepcopy=False))


def n_finished(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=FINISHED))


def optimize(
    study: optuna.Study,
    objective: Callable[[optuna.Trial], float | Sequence[float]],
    *,
    trials: int,
    timeout: float | None = None,
    callbacks: Iterable[Callable[[optuna.Study, FrozenTrial], None]] = (),
    show_progress_bar: bool = True,
    catch: Sequence[type[Exception]] = (),
) -> int:
    """Run ``objective`` until ``study`` holds ``trials`` finished trials in total.

    Finished means COMPLETE or PRUNED. Running the same call again after an interruption
    continues to the same total instead of adding ``trials`` more; workers in other
    processes sharing the study stop at the same total. Returns the trials run here.
    """
    if isinstance(trials, bool) or not isinstance(trials, int) or trials < 1:
        raise ValueError(f"trials (the total to reach) must be an integer >= 1, got {trials!r}.")
    remaining = trials - n_finished(study)
    if remaining <= 0:
        return 0
    before = len(study.get_trials(deepcopy=False))
    logger = optuna.logging.get_logger("optuna")
    level = logger.level
    if show_progress_bar:
        # Per-trial log lines would break the bar; the summary reports the result instead.
        optuna.logging.set_verbosity(logging.WARNING)
    try:
        study.optimize(
            objective,
            n_trials=remaining,
            timeout=timeout,
            catch=tuple(catch),
            callbacks=[MaxTrialsCallback(trials, states=FINISHED), *callbacks],
            show_progress_bar=show_progress_bar,
        )
    finally:
        optuna.logging.set_verbosity(level or logging.INFO)
    return len(study.get_trials(deepcopy=False)) - before


def summary(study: optuna.Study, *, storage_url: str | None = None) -> str:
    """A plain-text summary: trial counts by state, the best trial and where the data live."""
    counts = count_trials(study)
    lines = [
        f"Study {study.study_name!r}: "
        + ", ".join(f"{n} {state.lower()}" for state, n in sorted(counts.items()))
    ]
    pruned = study.get_trials(deepcopy=False, states=(TrialState.PRUNED,))
    reasons = Counter(str(t.user_attrs.get("stop_reason", "pruned")) for t in pruned)
    reasons = Counter({("by the pruner" if r == "pruned" else r): n for r, n in reasons.items()})
    if reasons:
        lines.append(
            "Pruned by reason: " + ", ".join(f"{r} {n}" for r, n in reasons.most_common())
        )
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if len(study.directions) == 1 and complete:
        best = study.best_trial
        attrs = best.user_attrs
        lines.append(f"Best trial #{best.number}: {best.value:.4f}")
        shown = {k: v for k, v in best.params.items() if k != "log2_batch_size"}
        for key, value in shown.items():
            text = f"{value:.4g}" if isinstance(value, float) else str(value)
            lines.append(f"  {key:<14} {text}")
        if "samples_per_second" in attrs:
            lines.append(
                f"  trained {attrs.get('samples_seen', 0):,} samples in "
                f"{attrs.get('train_seconds', 0):.2f} s ({attrs['samples_per_second']:,.0f} "
                f"samples/s, {attrs.get('optimizer_steps', 0):,} optimizer steps)"
            )
    elif complete:
        front = sorted(study.best_trials, key=lambda t: t.values[0])
        lines.append(f"{len(front)} Pareto-optimal trials (value 1, value 2):")
        for t in front[:10]:
            values = ", ".join(f"{v:.4g}" for v in t.values)
            lines.append(f"  #{t.number:<4} batch_size {t.params.get('batch_size')}: {values}")
    else:
        lines.append("No completed trial yet.")
    url = mask_url(resolve_storage_url(storage_url))
    lines.append(f"Storage: {url}")
    lines.append(f"Browse it:  optuna-dashboard {url}")
    return "\n".join(lines)
