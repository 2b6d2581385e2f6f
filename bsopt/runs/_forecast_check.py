"""The check at the target: train the forecast configuration at the full budget.

``bsopt confirm STUDY --samples N`` forecasts the batch size and lr for ``N`` samples
(:func:`~bsopt.forecast`), then trains that configuration and its neighbours at half and
double the batch for ``N`` samples each, through the objective's own ``retrain`` with the
budget set to ``N`` samples, and prints what was predicted against what was measured: the
forecast holds when its batch is within the tolerance of the best of the three and double it
is not.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
import math
from typing import Any
import warnings

import optuna

from bsopt.analysis._forecast import Forecast, forecast, usable_trials
from bsopt.analysis._load import trial_value
from bsopt.core._budget import Budget
from bsopt.core._space import BATCH_PARAM, EXPONENT_PARAM, LR_SCALING_EXPONENTS

_LEVEL_PARAM = "budget_level"


@dataclass(frozen=True)
class CheckRun:
    """One configuration trained at the target: its batch size, lr and measured value."""

    batch_size: int
    lr: float
    value: float
    samples_seen: int


@dataclass(frozen=True)
class ForecastCheck:
    """The forecast and the three runs that check it (half, forecast, double the batch)."""

    forecast: Forecast
    runs: tuple[CheckRun, ...]
    maximize: bool

    @property
    def measured_batch_size(self) -> int:
        """The largest batch of the three whose value is within the tolerance of their best."""
        values = [r.value for r in self.runs]
        best = max(values) if self.maximize else min(values)
        slack = self.forecast.tolerance * abs(best)
        free = [r.batch_size for r in self.runs if abs(r.value - best) <= slack]
        return max(free)

    @property
    def holds(self) -> bool:
        """Whether the measured batch within tolerance is the forecast one."""
        return self.measured_batch_size == self.runs[1].batch_size

    @property
    def text(self) -> str:
        fc = self.forecast
        lines = [
            f"Checked at {fc.samples:,} samples ({fc.tolerance:.1%} tolerance):",
            f"  {'batch':>7} {'lr':>10} {'value':>10}",
        ]
        for run, label in zip(self.runs, ("half", "forecast", "double"), strict=True):
            lines.append(f"  {run.batch_size:>7} {run.lr:>10.3g} {run.value:>10.4g}  {label}")
        measured = self.measured_batch_size
        shown = f"{fc.batch_size:.0f}" if fc.batch_size is not None else "-"
        interval = "" if fc.interval is None else f" ({fc.interval[0]:.0f}-{fc.interval[1]:.0f})"
        lines.append(
            f"Predicted batch size {shown}{interval}, trained as {self.runs[1].batch_size}; "
            f"measured: {measured} is the largest of the three within tolerance of their best."
        )
        # One run per batch: the words say what these runs did, not what a seed would repeat.
        if self.holds:
            lines.append("The forecast held at the target in these runs (one seed each).")
        elif measured > self.runs[1].batch_size:
            lines.append(
                "The forecast was too small in these runs: double the batch came within the "
                "tolerance of the best (one seed each; rerun with other seeds to be sure)."
            )
        else:
            lines.append(
                "The forecast was too large in these runs: half the batch was better by more "
                "than the tolerance (one seed each; rerun with other seeds to be sure)."
            )
        return "\n".join(lines)


def check_forecast(
    study: optuna.Study,
    objective: Any,
    *,
    samples: int,
    tolerance: float = 0.01,
    echo: Callable[[str], None] | None = None,
) -> ForecastCheck:
    """Forecast for ``samples`` from ``study``, train the forecast and its half and double
    batch for ``samples`` samples with ``objective`` (its other hyperparameters from the best
    complete trial of the largest budget searched), and compare.

    Raises:
        ValueError: the study gives no batch forecast, or holds no complete trial to start
            from.
    """
    fc = forecast(study, samples=samples, tolerance=tolerance)
    if echo is not None:
        echo(fc.text)
    if fc.batch_size is None or fc.lr is None:
        raise ValueError(
            f"The study {study.study_name!r} gives no batch-size forecast to check: "
            + "; ".join(fc.reasons)
        )
    template = _template(study)
    full = objective.with_options(budget=Budget(samples, "samples", evals=objective.budget.evals))
    n_train = int(full.data.n_train)
    center = _on_grid(fc.batch_size, full, n_train)
    slope = fc.lr_batch_exponent if fc.lr_batch_exponent is not None else 0.5
    runs = []
    for batch in (max(1, center // 2), center, min(n_train, center * 2)):
        lr = fc.lr * (batch / fc.batch_size) ** slope
        if echo is not None:
            echo(f"Training batch size {batch}, lr {lr:.3g} for {samples:,} samples ...")
        runs.append(_train(full, template, batch, lr))
    maximize = study.directions[0] == optuna.study.StudyDirection.MAXIMIZE
    return ForecastCheck(fc, tuple(runs), maximize)


def _template(study: optuna.Study) -> optuna.trial.FrozenTrial:
    """The best complete trial at the largest budget searched: the other hyperparameters."""
    trials = usable_trials(study)
    if not trials:
        raise ValueError(f"The study {study.study_name!r} holds no complete trial to check.")
    largest = max(t.user_attrs["samples_seen"] for t in trials)
    at_top = [t for t in trials if t.user_attrs["samples_seen"] >= largest / 1.02]
    sign = -1.0 if study.directions[0] == optuna.study.StudyDirection.MAXIMIZE else 1.0
    return min(at_top, key=lambda t: sign * trial_value(t))  # type: ignore[operator]


def _on_grid(batch: float, objective: Any, n_train: int) -> int:
    """``batch`` as the objective's space can train it: a power of two on the default grid."""
    if objective.space.batch_grid == "pow2":
        rounded = 2 ** round(math.log2(batch))
    else:
        rounded = round(batch)
    return int(min(max(rounded, 1), n_train))


def _train(objective: Any, template: optuna.trial.FrozenTrial, batch: int, lr: float) -> CheckRun:
    params = {k: v for k, v in template.params.items() if k != _LEVEL_PARAM}
    if EXPONENT_PARAM in params:
        params[EXPONENT_PARAM] = round(math.log2(batch))
    if BATCH_PARAM in params:
        params[BATCH_PARAM] = batch
    space = objective.space
    if "base_lr" in params:
        rule = params.get("lr_scaling", space.lr_scaling)
        alpha = LR_SCALING_EXPONENTS[str(rule)]
        params["base_lr"] = lr / (batch / space.reference) ** alpha
    else:
        params["lr"] = lr
    seed = int(template.user_attrs.get("seed", objective.seed))
    fixed = optuna.trial.FixedTrial(params, number=template.number)
    with warnings.catch_warnings():
        # A forecast may lie outside the searched ranges: that is what it is for.
        warnings.simplefilter("ignore", UserWarning)
        _, result = objective.retrain(fixed, seed=seed)
    return CheckRun(batch, lr, float(result.value), int(result.samples_seen))
