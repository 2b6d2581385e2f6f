"""The check at the target: train the forecast configuration at the full budget.

``bsopt confirm STUDY --samples N`` forecasts the batch size and lr for ``N`` samples
(:func:`~bsopt.forecast`), then trains that configuration and its neighbours at half and
double the batch for ``N`` samples each, ``--seeds`` fresh seeds per batch, through the
objective's own ``retrain`` with the budget set to ``N`` samples, and prints what was
predicted against what was measured: the forecast holds when its batch's mean is within the
tolerance of the best of the three and double its batch's is not, and the check is settled
when every batch's distance from the best is on one side of the tolerance at 95% (Welch).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
import math
import statistics
from typing import Any
import warnings

import optuna

from bsopt.analysis._forecast import Forecast, forecast, usable_trials
from bsopt.analysis._load import trial_value
from bsopt.analysis._stats import t_interval, welch_interval
from bsopt.core._budget import Budget
from bsopt.core._space import BATCH_PARAM, EXPONENT_PARAM, LR_SCALING_EXPONENTS
from bsopt.runs._confirm import confirm_seed

_LEVEL_PARAM = "budget_level"


@dataclass(frozen=True)
class CheckRun:
    """One configuration trained at the target with one or more seeds: its batch size, lr,
    the values measured (one per seed) and the samples each run trained."""

    batch_size: int
    lr: float
    values: tuple[float, ...]
    samples_seen: int

    @property
    def value(self) -> float:
        """The mean over the seeds."""
        return statistics.fmean(self.values)


@dataclass(frozen=True)
class ForecastCheck:
    """The forecast and the three runs that check it (half, forecast, double the batch)."""

    forecast: Forecast
    runs: tuple[CheckRun, ...]
    maximize: bool

    def _loss(self, run: CheckRun) -> list[float]:
        return [-v for v in run.values] if self.maximize else list(run.values)

    @property
    def _best(self) -> CheckRun:
        return min(self.runs, key=lambda r: statistics.fmean(self._loss(r)))

    @property
    def _slack(self) -> float:
        return self.forecast.tolerance * abs(self._best.value)

    @property
    def measured_batch_size(self) -> int:
        """The largest batch of the three whose mean is within the tolerance of their best."""
        best = statistics.fmean(self._loss(self._best))
        free = [
            r.batch_size
            for r in self.runs
            if statistics.fmean(self._loss(r)) - best <= self._slack
        ]
        return max(free)

    @property
    def holds(self) -> bool:
        """Whether the measured batch within tolerance is the forecast one."""
        return self.measured_batch_size == self.runs[1].batch_size

    @property
    def unsettled(self) -> list[int]:
        """Batches whose distance from the best the seeds cannot place on one side of the
        tolerance: the 95% Welch interval of the difference holds the tolerance. All but the
        best with one seed each (no spread to judge from)."""
        best = self._best
        out = []
        for run in self.runs:
            if run is best:
                continue
            gap = welch_interval(self._loss(run), self._loss(best))
            if gap is None or gap[0] <= self._slack < gap[1]:
                out.append(run.batch_size)
        return out

    @property
    def text(self) -> str:
        fc = self.forecast
        seeds = min(len(r.values) for r in self.runs)
        lines = [
            f"Checked at {fc.samples:,} samples ({fc.tolerance:.1%} tolerance, {seeds} "
            f"seed{'s' if seeds > 1 else ''} per batch):",
            f"  {'batch':>7} {'lr':>10} {'value':>10} {'95% interval':>21}",
        ]
        for run, label in zip(self.runs, ("half", "forecast", "double"), strict=True):
            span = t_interval(run.values)
            shown = "" if span is None else f"{span[0]:.4g} to {span[1]:.4g}"
            lines.append(
                f"  {run.batch_size:>7} {run.lr:>10.3g} {run.value:>10.4g} {shown:>21}  {label}"
            )
        measured = self.measured_batch_size
        shown = f"{fc.batch_size:.0f}" if fc.batch_size is not None else "-"
        interval = "" if fc.interval is None else f" ({fc.interval[0]:.0f}-{fc.interval[1]:.0f})"
        said = "Predicted" if fc.ok else "Extrapolated (no fit: the forecast does not hold)"
        lines.append(
            f"{said} batch size {shown}{interval}, trained as {self.runs[1].batch_size}; "
            f"measured: {measured} is the largest of the three whose mean is within tolerance "
            "of the best."
        )
        if self.holds:
            lines.append("The forecast held at the target.")
        elif measured > self.runs[1].batch_size:
            lines.append("The forecast was too small: double the batch came within the tolerance.")
        else:
            lines.append("The forecast was too large: half the batch was better by more than it.")
        unsettled = self.unsettled
        if seeds < 2:
            lines.append(
                "One seed per batch: seed noise is not measured, so this is not settled "
                "(--seeds 3 measures it)."
            )
        elif unsettled:
            lines.append(
                f"Not settled by {seeds} seeds: the 95% interval of the distance from the best "
                f"of batch {_count(unsettled)} holds the tolerance; more seeds would tell."
            )
        else:
            lines.append(
                f"Settled by {seeds} seeds: each batch's distance from the best is on one side "
                "of the tolerance at 95%."
            )
        return "\n".join(lines)


def _count(batches: list[int]) -> str:
    return " and ".join(str(b) for b in batches)


def check_forecast(
    study: optuna.Study,
    objective: Any,
    *,
    samples: int,
    tolerance: float = 0.01,
    seeds: int = 3,
    echo: Callable[[str], None] | None = None,
) -> ForecastCheck:
    """Forecast for ``samples`` from ``study``, train the forecast and its half and double
    batch for ``samples`` samples with ``objective`` (its other hyperparameters from the best
    complete trial of the largest budget searched), ``seeds`` fresh seeds each, and compare.

    Raises:
        ValueError: ``seeds`` below 1; the study gives no batch forecast, or holds no complete
            trial to start from.
    """
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise ValueError(
            f"seeds must be a whole number of at least 1, but got {seeds!r}: the runs per "
            "batch at the target (3 measures seed noise; 1 is quicker and says it is not)."
        )
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
            echo(
                f"Training batch size {batch}, lr {lr:.3g} for {samples:,} samples, "
                f"{seeds} seed{'s' if seeds > 1 else ''} ..."
            )
        runs.append(_train(full, template, batch, lr, seeds))
    maximize = study.directions[0] == optuna.study.StudyDirection.MAXIMIZE
    return ForecastCheck(fc, tuple(runs), maximize)


def _template(study: optuna.Study) -> optuna.trial.FrozenTrial:
    """The best complete trial at the largest budget searched: the other hyperparameters."""
    complete = optuna.trial.TrialState.COMPLETE
    trials = [
        t for t in usable_trials(study) if t.state == complete and trial_value(t) is not None
    ]
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


def _train(
    objective: Any, template: optuna.trial.FrozenTrial, batch: int, lr: float, seeds: int
) -> CheckRun:
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
    values, samples_seen = [], 0
    for k in range(seeds):
        # A FixedTrial keeps what was suggested: a new one per run, so that a user's own
        # suggest() sees a fresh trial every time.
        fixed = optuna.trial.FixedTrial(params, number=template.number)
        with warnings.catch_warnings():
            # A forecast may lie outside the searched ranges: that is what it is for.
            warnings.simplefilter("ignore", UserWarning)
            # Fresh seeds (never a search seed), the same for every batch: paired runs.
            _, result = objective.retrain(fixed, seed=confirm_seed(template.number, k))
        values.append(float(result.value))
        samples_seen = int(result.samples_seen)
    return CheckRun(batch, lr, tuple(values), samples_seen)
