"""Pruners configured in the budget's units, so they work on bsopt's sample grid."""

from __future__ import annotations

from collections.abc import Container
import copy
import threading
import time
from typing import Any, Literal, cast, get_args

import optuna
from optuna.trial import FrozenTrial, TrialState

from bsopt.core._budget import Budget

PrunerName = Literal["median", "percentile", "halving", "hyperband", "threshold", "none"]
PRUNERS: tuple[str, ...] = get_args(PrunerName)


#: ``MedianPruner``'s trials before it prunes: the default of :func:`make_pruner` and of a
#: study created without a pruner (:func:`default_pruner`).
N_STARTUP_TRIALS = 5


def check_pruner_name(name: object) -> PrunerName:
    """``name`` if it names a pruner :func:`make_pruner` builds; else a ValueError."""
    if name not in PRUNERS:
        raise ValueError(f"pruner must be one of {', '.join(PRUNERS)}, but got {name!r}.")
    return cast(PrunerName, name)


#: How long a pruner may reuse its copy of the study's completed trials within one trial.
COMPLETED_REFRESH_SECONDS = 10.0


class _CompletedTrials:
    """The study's completed trials, read at a trial's first report and reused after it.

    Optuna's percentile (and median) pruner reads every trial of the study at each report:
    on SQLite that read is most of a report's cost (about 10 ms). Completed trials never
    change, and in one process no trial completes while another trains, so a serial study
    makes the same decisions with one read per trial. With other workers, a trial that
    completes elsewhere counts from this trial's next report after ``refresh_seconds``, or
    from the next trial.
    """

    def __init__(self, refresh_seconds: float) -> None:
        if not refresh_seconds >= 0:
            raise ValueError(f"refresh_seconds must be >= 0, but got {refresh_seconds!r}.")
        self.refresh_seconds = refresh_seconds
        self.lag: int | None = None
        self._lock = threading.Lock()
        self._key: tuple[str, int] | None = None
        self._read_at = 0.0
        self._trials: list[FrozenTrial] = []

    def view(self, study: optuna.Study, trial: FrozenTrial) -> optuna.Study:
        key = (study.study_name, trial.number)
        with self._lock:
            now = time.monotonic()
            if key != self._key or now - self._read_at >= self.refresh_seconds:
                trials = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
                if self.lag is not None:
                    # The key holds the trial's number: filter once per read.
                    trials = [t for t in trials if t.number <= trial.number - self.lag]
                self._trials = trials
                self._key, self._read_at = key, now
            trials = self._trials
        # The pruner takes a Study; this stands in for it (see _StudyWithCompleted).
        return cast(optuna.Study, _StudyWithCompleted(study, trials))

    def __getstate__(self) -> dict[str, Any]:
        return {"refresh_seconds": self.refresh_seconds, "lag": self.lag}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["refresh_seconds"])  # type: ignore[misc]
        self.lag = state.get("lag")


class _StudyWithCompleted:
    """A study whose completed trials come from a copy; everything else is the study's."""

    def __init__(self, study: optuna.Study, completed: list[FrozenTrial]) -> None:
        self._study = study
        self._completed = completed

    def get_trials(
        self, deepcopy: bool = True, states: Container[TrialState] | None = None
    ) -> list[FrozenTrial]:
        if isinstance(states, tuple) and states == (TrialState.COMPLETE,):
            return copy.deepcopy(self._completed) if deepcopy else list(self._completed)
        return self._study.get_trials(deepcopy=deepcopy, states=states)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._study, name)


class PercentilePruner(optuna.pruners.PercentilePruner):
    """Optuna's percentile pruner reading the study's completed trials once per trial.

    Same arguments and decisions as :class:`optuna.pruners.PercentilePruner`, plus
    ``refresh_seconds`` (see :data:`COMPLETED_REFRESH_SECONDS`).
    """

    def __init__(
        self, *args: Any, refresh_seconds: float = COMPLETED_REFRESH_SECONDS, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self._completed = _CompletedTrials(refresh_seconds)

    def prune(self, study: optuna.Study, trial: FrozenTrial) -> bool:
        return super().prune(self._completed.view(study, trial), trial)

    def order_by_number(self, lag: int) -> None:
        """Judge trial ``n`` by the completed trials numbered up to ``n - lag`` only (with
        :class:`~bsopt.search._samplers.OrderedSampler`: its decisions then do not depend
        on which worker finished first)."""
        self._completed.lag = lag


class MedianPruner(PercentilePruner, optuna.pruners.MedianPruner):
    """Optuna's median pruner reading the study's completed trials once per trial.

    Takes :class:`optuna.pruners.MedianPruner`'s arguments, plus ``refresh_seconds``.
    """


def make_pruner(
    name: PrunerName,
    budget: Budget,
    n_train: int,
    *,
    direction: Literal["maximize", "minimize"] = "maximize",
    n_startup_trials: int = N_STARTUP_TRIALS,
    percentile: float = 25.0,
    threshold: float | None = None,
    reduction_factor: int = 3,
    warmup_evals: int | None = None,
) -> optuna.pruners.BasePruner:
    """An Optuna pruner whose warm-up and resources are points of ``budget``'s grid.

    Args:
        name: ``"median"`` (default choice: prunes below the median of earlier trials at the
            same step, after ``n_startup_trials`` trials and once a quarter of the budget is
            spent), ``"percentile"`` (keeps the top ``percentile`` percent), ``"halving"``
            (asynchronous successive halving), ``"hyperband"``, ``"threshold"`` (prunes
            values worse than ``threshold``) or ``"none"``.
        budget, n_train: the budget and training-set size trials will use; the pruner's
            steps are samples seen (or training milliseconds for a time budget).
        direction: the study's direction; only the threshold pruner needs it.
        reduction_factor: keep 1 of every ``reduction_factor`` trials per rung (halving,
            Hyperband). The smallest resource is the first evaluation, the largest the budget.
        warmup_evals: evaluations before the median, percentile and threshold pruners may
            stop a trial; default a quarter of them (at least one).
    """
    check_pruner_name(name)
    grid = budget.grid(n_train)
    points = grid.points
    if warmup_evals is None:
        # Early evaluations are noisy, and large batches (fewer updates so far) would
        # otherwise be pruned for starting slowly.
        warmup_evals = min(max(1, len(points) // 4), len(points) - 1)
    if not 0 <= warmup_evals < len(points) or isinstance(warmup_evals, bool):
        raise ValueError(
            f"warmup_evals must be in [0, {len(points) - 1}] for a budget of {len(points)} "
            f"evaluations, but got {warmup_evals!r}."
        )
    # Pruners compare at step >= n_warmup_steps: the evaluation after the warm-up is the
    # first that can be pruned.
    warmup = points[warmup_evals] if warmup_evals else 0
    if name == "median":
        return MedianPruner(n_startup_trials=n_startup_trials, n_warmup_steps=warmup)
    if name == "percentile":
        if not 0.0 < percentile < 100.0:
            raise ValueError(f"percentile must be in (0, 100), but got {percentile}.")
        return PercentilePruner(
            percentile, n_startup_trials=n_startup_trials, n_warmup_steps=warmup
        )
    if name == "halving":
        return optuna.pruners.SuccessiveHalvingPruner(
            min_resource=points[0], reduction_factor=reduction_factor
        )
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(
            min_resource=points[0], max_resource=grid.total, reduction_factor=reduction_factor
        )
    if name == "threshold":
        if threshold is None:
            raise ValueError(
                "The threshold pruner needs threshold=<value>: trials whose metric is worse "
                "than it are stopped."
            )
        if direction == "maximize":
            return optuna.pruners.ThresholdPruner(lower=threshold, n_warmup_steps=warmup)
        return optuna.pruners.ThresholdPruner(upper=threshold, n_warmup_steps=warmup)
    return optuna.pruners.NopPruner()  # "none", the last name left


def default_pruner() -> optuna.pruners.BasePruner:
    """The pruner of a study created without one: ``"median"`` with no warm-up.

    Without a budget there is no grid to warm up on; :func:`make_pruner` gives the same
    pruner with its warm-up in the budget's units.
    """
    return MedianPruner(n_startup_trials=N_STARTUP_TRIALS, n_warmup_steps=0)
