"""Pruners configured in the budget's units, so they work on bsopt's sample grid."""

from __future__ import annotations

from typing import Literal

import optuna

from bsopt._budget import Budget

PrunerName = Literal["median", "percentile", "halving", "hyperband", "threshold", "none"]
PRUNERS: tuple[str, ...] = ("median", "percentile", "halving", "hyperband", "threshold", "none")


def make_pruner(
    name: PrunerName,
    budget: Budget,
    n_train: int,
    *,
    direction: Literal["maximize", "minimize"] = "maximize",
    n_startup_trials: int = 5,
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
        return optuna.pruners.MedianPruner(
            n_startup_trials=n_startup_trials, n_warmup_steps=warmup
        )
    if name == "percentile":
        if not 0.0 < percentile < 100.0:
            raise ValueError(f"percentile must be in (0, 100), but got {percentile}.")
        return optuna.pruners.PercentilePruner(
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
    if name == "none":
        return optuna.pruners.NopPruner()
    raise ValueError(f"pruner must be one of {', '.join(PRUNERS)}, but got {name!r}.")
