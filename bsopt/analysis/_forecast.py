"""Forecasting the batch size and learning rate of a run longer than the ones searched.

A search answers for the budget it trained: the critical batch size grows as training goes
on (McCandlish et al. 2018), and both the optimal and the critical batch size scale as power
laws in the samples trained, ``D`` (Bergsma et al. 2025, "Power Lines"). So a study whose
complete trials ran at three or more budgets (their ``samples_seen``) says how the answer
moves, and :func:`forecast` extrapolates it to the budget of the run you will do.

Per budget level, the trials give each batch size's best value over the learning rate and
that lr (:func:`profile`: a parabola in log lr through the trials near the best, never above
the best trial, and a batch whose lrs missed its best held to its neighbours'). From this
profile come the level's **batch within tolerance** (the largest batch whose value is within
``tolerance``, relative, of the level's best: the fastest batch that costs nothing; read from
a shape-preserving cubic through the profile, which bends upwards in log b), its
loss-optimal batch, the best lr at the batch within tolerance, and the critical batch of the
lr fit (:func:`~bsopt.analysis.fit_lr_scaling`). Each is fitted as a line in ``log D`` and
read at the target. The 95% intervals combine a delete-d jackknife over each level's trials
(the whole chain refitted per resample, a tenth of the trials left out, the spread taken
robustly) with the model's share: the larger of the line's lack of fit and how far the
levels' bend in ``log D`` would move the target if it went on. Only complete runs count, at
the budget they trained: an intermediate value under a decaying schedule is not a shorter
run.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
import math
from typing import Literal

import numpy as np
import optuna
from optuna.trial import FrozenTrial

from bsopt.analysis._load import (
    finite,
    is_confirm_run,
    load_study,
    trial_batch_size,
    trial_lr,
    trial_value,
)
from bsopt.core._attrs import RUNS_WITHIN_ATTR

#: Budgets (distinct ``samples_seen``) a forecast needs, and the widest interval it claims.
MIN_BUDGETS = 3
MAX_SPREAD = 4.0
# samples_seen within 2% of each other are one budget level (rounding of epoch budgets).
_SAME_BUDGET = 1.02
_RESAMPLES = 100
# Trials within this of a batch size's best trial, in log lr (±28%), fix its parabola.
_LR_WINDOW = 0.25
_Z = 1.959964  # the normal 97.5% quantile: 95% intervals
_QUANTITIES = ("batch_size", "optimal_batch_size", "lr", "critical_batch_size")


@dataclass(frozen=True)
class Level:
    """What the complete trials of one budget level say (``None``: they cannot tell)."""

    samples: int
    trials: int
    best_value: float
    batch_size: float | None
    optimal_batch_size: float | None
    lr: float | None
    critical_batch_size: float | None
    at_edge: bool = False  # the batch within tolerance is the largest one searched


@dataclass(frozen=True)
class Exponent:
    """A fitted power ``q ∝ D ** value`` with its 95% ``interval``."""

    value: float
    interval: tuple[float, float] | None


@dataclass(frozen=True)
class Forecast:
    """The batch size and learning rate forecast for a run of ``samples`` samples.

    Attributes:
        status: ``"ok"``, or ``"no fit"`` when the forecast does not hold (``reasons`` say
            why: too few budgets, no trend, or an interval wider than 4x).
        batch_size: the largest batch whose predicted value is within ``tolerance``
            (relative) of the best at ``samples``: the fastest one that costs nothing;
            ``interval`` its 95% interval.
        optimal_batch_size, lr, critical_batch_size: the loss-optimal batch, the best lr at
            ``batch_size`` and the critical batch of the lr fit at ``samples``, each with its
            ``*_interval`` (``None`` where the levels cannot tell).
        exponents: the fitted power of ``D`` of each of those four quantities.
        levels: what each searched budget said.
        samples_spent: the samples the study's finished trials trained, all levels together;
            ``direct_samples``: what as many trials at ``samples`` would have trained.
        lr_batch_exponent: how the best lr moves with the batch size at the largest budget
            searched (``lr* ∝ batch ** it``, between 0 and 1), for the neighbours of a check.
    """

    samples: int
    tolerance: float
    status: Literal["ok", "no fit"]
    reasons: tuple[str, ...]
    levels: tuple[Level, ...]
    batch_size: float | None = None
    interval: tuple[float, float] | None = None
    optimal_batch_size: float | None = None
    optimal_interval: tuple[float, float] | None = None
    lr: float | None = None
    lr_interval: tuple[float, float] | None = None
    critical_batch_size: float | None = None
    critical_interval: tuple[float, float] | None = None
    exponents: dict[str, Exponent] = field(default_factory=dict)
    samples_spent: int = 0
    direct_samples: int = 0
    lr_batch_exponent: float | None = None

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def power_of_two(self) -> int | None:
        """``batch_size`` rounded to the nearest power of two (on the log scale)."""
        if self.batch_size is None:
            return None
        return int(2 ** round(math.log2(self.batch_size)))

    @property
    def text(self) -> str:
        """The forecast in plain words."""
        return "\n".join(forecast_lines(self))


def forecast(
    study: optuna.Study | str,
    *,
    samples: int,
    tolerance: float = 0.01,
    storage: str | None = None,
    resamples: int = _RESAMPLES,
    seed: int = 0,
) -> Forecast:
    """Forecast the batch size and lr for a run of ``samples`` samples from a study whose
    complete trials ran at several budgets (user attribute ``samples_seen``).

    Works on any study whose complete trials carry ``samples_seen``, a batch size (parameter
    ``batch_size`` or ``log2_batch_size``, or the user attribute) and an lr (user attribute
    or parameter ``lr``): bsopt's, or plain Optuna's.

    Args:
        study: the study, or its name in ``storage``.
        samples: the budget of the run to forecast, in samples.
        tolerance: a batch counts as free when its value is within this fraction of the
            best, e.g. 0.01 for 1%.
        resamples: jackknife resamples for the intervals; ``seed`` seeds them.

    Raises:
        ValueError: ``samples``, ``tolerance`` or ``resamples`` out of range.
    """
    _check_args(samples, tolerance, resamples)
    loaded = load_study(study, storage=storage)
    maximize = loaded.directions[0] == optuna.study.StudyDirection.MAXIMIZE
    groups = budget_groups(usable_trials(loaded), maximize=maximize)
    spent, finished = _spent(loaded)
    if len(groups) < MIN_BUDGETS:
        reason = (
            f"too few budgets: the complete trials ran at {len(groups)} distinct budget(s) "
            f"(samples_seen), and a trend needs {MIN_BUDGETS}"
        )
        found = Forecast(
            samples,
            tolerance,
            "no fit",
            (reason,),
            tuple(_level(d, g, tolerance) for d, g in groups),
        )
    else:
        found = _fit(groups, samples, tolerance, resamples, seed)
    return replace(found, samples_spent=spent, direct_samples=finished * samples)


def _check_args(samples: object, tolerance: object, resamples: object) -> None:
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
        raise ValueError(
            f"samples must be a whole number of samples of at least 1, but got {samples!r}. "
            "Pass the budget of the full run, e.g. samples=1_000_000."
        )
    if not (isinstance(tolerance, (int, float)) and 0 <= tolerance < 1):
        raise ValueError(
            f"tolerance must be a fraction in [0, 1), but got {tolerance!r}. Use e.g. 0.01 "
            "for batches within 1% of the best value."
        )
    if isinstance(resamples, bool) or not isinstance(resamples, int) or resamples < 10:
        raise ValueError(f"resamples must be an integer of at least 10, but got {resamples!r}.")


# -- the trials -------------------------------------------------------------------------------
def usable_trials(study: optuna.Study) -> list[FrozenTrial]:
    """Trials that hold a complete run with samples, batch, lr and value: complete trials
    that ran their whole budget, and complete or pruned ones whose user attribute
    ``runs_within`` says which of their evaluations are complete runs of a smaller budget
    (:class:`~bsopt.search.BudgetLevels` with ``branch=True``)."""
    out = []
    states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    for t in study.get_trials(deepcopy=False, states=states):
        if is_confirm_run(t) or trial_batch_size(t) is None or trial_lr(t) is None:
            continue
        if _runs(t):
            out.append(t)
    return out


def _runs(trial: FrozenTrial) -> list[tuple[float, float]]:
    """``(samples, value)`` of each complete run ``trial`` holds (see :func:`usable_trials`)."""
    runs = []
    samples = finite(trial.user_attrs.get("samples_seen"))
    value = trial_value(trial)
    ran_all = trial.user_attrs.get("stop_reason") in (None, "completed")
    if trial.state == optuna.trial.TrialState.COMPLETE and ran_all and value is not None:
        if samples is not None and samples > 0:
            runs.append((float(samples), float(value)))
    within = trial.user_attrs.get(RUNS_WITHIN_ATTR)
    for step in within if isinstance(within, list) else ():
        reported = trial.intermediate_values.get(step) if isinstance(step, int) else None
        if (
            reported is not None
            and math.isfinite(reported)
            and (samples is None or step <= samples)
        ):
            runs.append((float(step), float(reported)))
    return runs


def budget_groups(
    trials: Sequence[FrozenTrial], *, maximize: bool = False
) -> list[tuple[int, np.ndarray]]:
    """The complete runs by budget level: ``(samples, rows of [batch, lr, loss])``, ``loss``
    the value made lower-is-better. Levels are ``samples_seen`` within 2% of each other."""
    sign = -1.0 if maximize else 1.0
    rows = sorted(
        (
            samples,
            float(trial_batch_size(t)),  # type: ignore[arg-type]
            float(trial_lr(t)),  # type: ignore[arg-type]
            sign * value,
        )
        for t in trials
        for samples, value in _runs(t)
    )
    groups: list[list[tuple[float, ...]]] = []
    for row in rows:
        if groups and row[0] <= groups[-1][0][0] * _SAME_BUDGET:
            groups[-1].append(row)
        else:
            groups.append([row])
    return [
        (round(float(np.median([r[0] for r in g]))), np.array([r[1:] for r in g])) for g in groups
    ]


def _spent(study: optuna.Study) -> tuple[int, int]:
    """Samples trained by the finished (complete or pruned) trials, and their number."""
    states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    spent, n = 0, 0
    for t in study.get_trials(deepcopy=False, states=states):
        samples = finite(t.user_attrs.get("samples_seen"))
        if samples is not None:
            spent += int(samples)
            n += 1
    return spent, n


# -- one budget level ---------------------------------------------------------------------------
def profile(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, bool]:
    """Each batch size's best loss over the lr, and that lr: ``(log b, loss, log lr,
    logged)``; the loss is its log (``logged``) where every value is positive, as a loss falls
    over decades while the lr moves.

    A batch size's best is the lowest point of a parabola in log lr fitted to its trials
    within ``_LR_WINDOW`` of its best trial (or through the best and its two neighbours when
    fewer lie there), so the profile does not hang on how close one trial came to the best
    lr; it is never above the best trial, which bounds the best from above. A best over the
    lrs tried is now and then well above the true best, where no lr came near: an inner value
    above the mean of its two neighbours' is taken down to that mean (the profile is smooth
    in log b).
    """
    logged = bool(np.all(rows[:, 2] > 0))
    logs_b, best, best_lr = [], [], []
    for b in np.unique(rows[:, 0]):
        at = rows[rows[:, 0] == b]
        x_all = np.log(at[:, 1])
        y_all = np.log(at[:, 2]) if logged else at[:, 2]
        xv, yv = _lr_minimum(x_all, y_all)
        logs_b.append(math.log(b))
        best.append(yv)
        best_lr.append(xv)
    loss = np.array(best)
    if len(loss) >= 3:
        loss[1:-1] = np.minimum(loss[1:-1], (loss[:-2] + loss[2:]) / 2)
    return np.array(logs_b), loss, np.array(best_lr), logged


def _lr_minimum(x_all: np.ndarray, y_all: np.ndarray) -> tuple[float, float]:
    """``(log lr, loss)`` at one batch size's best: the vertex of the least-squares parabola
    through the trials within ``_LR_WINDOW`` of the best trial when four or more lie there
    and it opens upwards with its vertex among them, else of the three-point parabola."""
    x = np.unique(x_all)
    y = np.array([y_all[x_all == v].min() for v in x])
    k = int(np.argmin(y))
    near = np.abs(x - x[k]) <= _LR_WINDOW
    if near.sum() >= 4:
        a, b, c = np.polyfit(x[near], y[near], 2)
        if a > 0 and x[near].min() <= -b / (2 * a) <= x[near].max():
            xv = -b / (2 * a)
            return float(xv), float(min(a * xv * xv + b * xv + c, y[k]))
    if 0 < k < len(x) - 1:
        return _vertex(x[k - 1 : k + 2], y[k - 1 : k + 2])
    return float(x[k]), float(y[k])


def _vertex(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """The lowest point of the parabola through three points (the middle one lowest), kept
    between the outer two and no lower than half the rise to the lower outer one."""
    (x0, x1, x2), (y0, y1, y2) = x, y
    denom = (x0 - x1) * (x0 - x2) * (x1 - x2)
    a = (x2 * (y1 - y0) + x1 * (y0 - y2) + x0 * (y2 - y1)) / denom
    b = (x2 * x2 * (y0 - y1) + x1 * x1 * (y2 - y0) + x0 * x0 * (y1 - y2)) / denom
    if a <= 0:
        return float(x1), float(y1)
    xv = min(max(-b / (2 * a), x0), x2)
    c = y1 - a * x1 * x1 - b * x1
    floor = y1 - 0.5 * (min(y0, y2) - y1)
    return float(xv), float(min(max(a * xv * xv + b * xv + c, floor), y1))


def _level(samples: int, rows: np.ndarray, tolerance: float, *, critical: bool = True) -> Level:
    """What one level's trials say (see the module docstring)."""
    x, p, log_lr, logged = profile(rows)
    best_seen = float(rows[:, 2].min())
    if len(x) < 2:
        return Level(samples, len(rows), best_seen, None, None, float(np.exp(log_lr[0])), None)
    k_best = int(np.argmin(p))
    best = float(p[k_best])
    # Relative tolerance: a ratio on a logged loss, a fraction of the best otherwise.
    limit = best + (math.log1p(tolerance) if logged else tolerance * abs(best))
    k = int(np.flatnonzero(p <= limit).max())
    at_edge = k == len(x) - 1
    log_b, log_l = float(x[k]), float(log_lr[k])
    if not at_edge and p[k + 1] > p[k]:
        log_b = _crossing(x, p, k, limit)
        t = (log_b - x[k]) / (x[k + 1] - x[k])
        log_l += t * (log_lr[k + 1] - log_lr[k])
    log_opt = float(x[k_best])
    if 0 < k_best < len(x) - 1:
        log_opt, _ = _vertex(x[k_best - 1 : k_best + 2], p[k_best - 1 : k_best + 2])
    return Level(
        samples=samples,
        trials=len(rows),
        best_value=best_seen,
        batch_size=math.exp(log_b),
        optimal_batch_size=math.exp(log_opt),
        lr=math.exp(log_l),
        critical_batch_size=_critical(x, log_lr) if critical else None,
        at_edge=at_edge,
    )


def _crossing(x: np.ndarray, p: np.ndarray, k: int, limit: float) -> float:
    """Where the profile crosses ``limit`` between batch ``k`` and the next, in log b.

    A profile bends upwards in log b, so a straight line between the two batch sizes would
    put the crossing too early, by up to a third of the step between them; a shape-preserving
    cubic through the neighbours (PCHIP) follows the bend and adds no wiggle.
    """
    from scipy.interpolate import PchipInterpolator

    lo, hi = max(0, k - 1), min(len(x), k + 3)
    grid = np.linspace(float(x[k]), float(x[k + 1]), 257)
    # p[k] <= limit < p[k + 1], and the cubic passes through both: it crosses in between.
    above = np.flatnonzero(PchipInterpolator(x[lo:hi], p[lo:hi])(grid) > limit)
    return float(grid[max(int(above[0]) - 1, 0)]) if len(above) else float(grid[-1])


def _critical(logs_b: np.ndarray, log_lr: np.ndarray) -> float | None:
    """The critical batch of the lr fit over the batch sizes' best lrs."""
    from bsopt.analysis._fits import fit_lr_scaling

    fit = fit_lr_scaling(list(zip(np.exp(logs_b), np.exp(log_lr), strict=True)))
    return None if fit is None else fit.critical_batch_size


# -- across levels ------------------------------------------------------------------------------
def _line_at(
    log_d: Sequence[float], log_q: Sequence[float], at: float
) -> tuple[float, float, float]:
    """``(slope, value at at, bend)`` of the least-squares line of ``log_q`` on ``log_d``;
    ``bend`` is how far a parabola fitted instead would move the value at ``at`` (0 with
    fewer than three levels)."""
    x = np.asarray(log_d) - float(np.mean(log_d))
    y = np.asarray(log_q)
    to = at - float(np.mean(log_d))
    slope, intercept = np.polyfit(x, y, 1)
    straight = float(intercept + slope * to)
    bend = float(np.polyval(np.polyfit(x, y, 2), to)) - straight if len(x) >= 3 else 0.0
    return float(slope), straight, bend


def _fits(levels: Sequence[Level], at: float) -> dict[str, tuple[float, float, float]]:
    """Each quantity's ``(exponent, log value at at, bend)``, where every level has it."""
    out = {}
    log_d = [math.log(lv.samples) for lv in levels]
    for name in _QUANTITIES:
        values = [getattr(lv, name) for lv in levels]
        if all(v is not None and v > 0 for v in values):
            out[name] = _line_at(log_d, [math.log(v) for v in values], at)
    return out


def _fit(
    groups: list[tuple[int, np.ndarray]], samples: int, tolerance: float, n: int, seed: int
) -> Forecast:
    levels = tuple(_level(d, rows, tolerance) for d, rows in groups)
    at = math.log(samples)
    point = _fits(levels, at)
    draws, tries = _resample(groups, point, tolerance, at, n, seed)
    values: dict[str, float | None] = {}
    intervals: dict[str, tuple[float, float] | None] = {}
    exponents: dict[str, Exponent] = {}
    for name, (slope, log_value, bend) in point.items():
        values[name] = math.exp(log_value)
        intervals[name] = None
        exponents[name] = Exponent(slope, None)
        if 2 * len(draws[name]) < tries[name]:
            continue
        got = np.array(draws[name]) - np.array([slope, log_value])
        lof_slope, lof_value = _lack_of_fit(levels, name, at)
        # Robust spreads (MAD): a best over the lr jumps now and then when a resample leaves
        # out the trial nearest the best lr. A power law is what the levels are fitted to,
        # not what they prove: the model's share is the larger of the line's lack of fit and
        # how far the levels' bend in log D, if it went on, would move the value at the
        # target (an 8x extrapolation magnifies a bend the levels barely show, so a forecast
        # is claimed only when they lie close to a line).
        se_slope = math.hypot(_mad(got[:, 0]), lof_slope)
        model = max(_Z * lof_value, abs(bend))
        half = math.hypot(_Z * _mad(got[:, 1]), model)
        intervals[name] = (math.exp(log_value - half), math.exp(log_value + half))
        exponents[name] = Exponent(slope, (slope - _Z * se_slope, slope + _Z * se_slope))
    reasons = _reasons(levels, exponents.get("batch_size"), intervals.get("batch_size"))
    return Forecast(
        samples=samples,
        tolerance=tolerance,
        status="no fit" if reasons else "ok",
        reasons=reasons,
        levels=levels,
        batch_size=values.get("batch_size"),
        interval=intervals.get("batch_size"),
        optimal_batch_size=values.get("optimal_batch_size"),
        optimal_interval=intervals.get("optimal_batch_size"),
        lr=values.get("lr"),
        lr_interval=intervals.get("lr"),
        critical_batch_size=values.get("critical_batch_size"),
        critical_interval=intervals.get("critical_batch_size"),
        exponents=exponents,
    )


def _mad(deviations: np.ndarray) -> float:
    """The standard deviation a normal sample with these deviations from its centre has."""
    return float(1.4826 * np.median(np.abs(deviations)))


def _lack_of_fit(levels: Sequence[Level], name: str, at: float) -> tuple[float, float]:
    """Standard errors of the exponent and of the line at ``at`` from the levels' scatter
    about the line (zero with two levels: a line through two points has no residual)."""
    log_d = np.log([lv.samples for lv in levels])
    log_q = np.log([getattr(lv, name) for lv in levels])
    if len(levels) < 3:
        return 0.0, 0.0
    slope, intercept = np.polyfit(log_d, log_q, 1)
    rss = float(np.sum((log_q - intercept - slope * log_d) ** 2))
    sigma2 = rss / (len(levels) - 2)
    sxx = float(np.sum((log_d - log_d.mean()) ** 2))
    return (
        math.sqrt(sigma2 / sxx),
        math.sqrt(sigma2 * (1 / len(levels) + (at - log_d.mean()) ** 2 / sxx)),
    )


def _resample(
    groups: list[tuple[int, np.ndarray]],
    point: dict[str, tuple[float, float, float]],
    tolerance: float,
    at: float,
    n: int,
    seed: int,
) -> tuple[dict[str, list[tuple[float, float]]], dict[str, int]]:
    """``(exponent, log value at at)`` of each quantity for ``n`` delete-d jackknife
    resamples, spread as the full sample's would be, and the resamples tried for each.

    Each resample leaves out a tenth of each level's trials (without replacement) and its
    deviation from the full estimate is scaled by ``sqrt((m - d) / d)``. Resampling with
    replacement would drop a third of the learning rates tried at each batch size, and a best
    over the lr is then much worse than the full search's: the intervals would measure the
    resampling, not the study. The critical batch (a costly fit) is resampled 20 times."""
    rng = np.random.default_rng(seed)
    draws: dict[str, list[tuple[float, float]]] = {name: [] for name in _QUANTITIES}
    left_out = [max(1, len(rows) // 10) for _, rows in groups]
    scale = float(
        np.mean([math.sqrt((len(g[1]) - d) / d) for g, d in zip(groups, left_out, strict=True)])
    )
    for i in range(n):
        levels = []
        for (d, rows), out in zip(groups, left_out, strict=True):
            kept = rng.choice(len(rows), len(rows) - out, replace=False)
            levels.append(_level(d, rows[kept], tolerance, critical=i < 20))
        for name, (slope, value, _) in _fits(levels, at).items():
            if name in point:
                p_slope, p_value, _ = point[name]
                draws[name].append(
                    (p_slope + scale * (slope - p_slope), p_value + scale * (value - p_value))
                )
    tries = {name: n for name in _QUANTITIES} | {"critical_batch_size": min(n, 20)}
    return draws, tries


def _reasons(
    levels: Sequence[Level],
    exponent: Exponent | None,
    interval: tuple[float, float] | None,
) -> tuple[str, ...]:
    """Why the batch forecast does not hold, in plain words (empty when it does)."""
    if exponent is None:
        return ("no trend: a budget level has a single batch size, so no batch within tolerance",)
    reasons = []
    edges = [lv.samples for lv in levels if lv.at_edge]
    if edges:
        reasons.append(
            f"the batch within tolerance is the largest searched at {_count(edges)} "
            "samples: widen the batch-size range upwards"
        )
    if exponent.interval is None or interval is None:
        reasons.append("too few resamples could be fitted for an interval")
        return tuple(reasons)
    batches = [lv.batch_size for lv in levels if lv.batch_size is not None]
    steps = np.diff(np.log(batches)) * np.sign(exponent.value)
    if len(batches) == len(levels) and np.any(steps <= 0):
        shown = ", ".join(f"{b:.0f}" for b in batches)
        reasons.append(
            f"no steady trend: the batch within tolerance does not move one way over the "
            f"budgets ({shown}), so a power law is not supported"
        )
    lo, hi = exponent.interval
    if lo <= 0 <= hi:
        reasons.append(
            f"no trend: the batch within tolerance grows as D^{exponent.value:.2f}, with an "
            f"interval ({lo:.2f}, {hi:.2f}) that holds 0"
        )
    spread = interval[1] / interval[0]
    if spread > MAX_SPREAD:
        reasons.append(
            f"the interval is {spread:.1f}x wide (more than {MAX_SPREAD:g}x): more trials "
            "per budget, or budgets closer to the target, would narrow it, unless one run's "
            "value moves with the seed by more than the tolerance (bsopt confirm shows how "
            "much): then only a coarser tolerance would"
        )
    return tuple(reasons)


def _count(values: Sequence[int]) -> str:
    return ", ".join(f"{v:,}" for v in values)


# -- words ------------------------------------------------------------------------------------
def _span(interval: tuple[float, float] | None, fmt: str) -> str:
    return "" if interval is None else f" (95% interval {interval[0]:{fmt}}-{interval[1]:{fmt}})"


def forecast_lines(fc: Forecast) -> list[str]:
    """The forecast as lines of plain text: the verdict, the figures, the levels."""
    lines = []
    if fc.ok and fc.batch_size is not None:
        lines.append(
            f"Forecast for {fc.samples:,} samples: batch size {fc.batch_size:.0f}"
            f"{_span(fc.interval, '.0f')}, the largest within {fc.tolerance:.1%} of the best "
            f"value; as a power of two: {fc.power_of_two}."
        )
    else:
        lines.append(f"No forecast for {fc.samples:,} samples: the fit does not hold.")
        lines += [f"  - {reason}" for reason in fc.reasons]
        if fc.batch_size is not None:
            lines.append(
                f"  (the unsupported extrapolation says batch size {fc.batch_size:.0f}"
                f"{_span(fc.interval, '.0f')})"
            )
    if fc.lr is not None:
        lines.append(
            f"Learning rate at that batch size: {fc.lr:.3g}{_span(fc.lr_interval, '.3g')}"
        )
    if fc.optimal_batch_size is not None:
        lines.append(
            f"Loss-optimal batch size: {fc.optimal_batch_size:.0f}"
            f"{_span(fc.optimal_interval, '.0f')}"
        )
    if fc.critical_batch_size is not None:
        lines.append(
            f"Critical batch size (lr fit): {fc.critical_batch_size:.0f}"
            f"{_span(fc.critical_interval, '.0f')}"
        )
    for name, exp in fc.exponents.items():
        shown = "" if exp.interval is None else f" ({exp.interval[0]:.2f}, {exp.interval[1]:.2f})"
        lines.append(f"Exponent of {name.replace('_', ' ')} in D: {exp.value:.2f}{shown}")
    for lv in fc.levels:
        batch = "-" if lv.batch_size is None else f"{lv.batch_size:.0f}"
        lr = "-" if lv.lr is None else f"{lv.lr:.3g}"
        lines.append(
            f"  searched at {lv.samples:,} samples: {lv.trials} complete trials, batch within "
            f"tolerance {batch}{' (largest searched)' if lv.at_edge else ''}, lr {lr}"
        )
    if fc.direct_samples:
        lines.append(
            f"Cost: {fc.samples_spent:,} samples trained, "
            f"{fc.samples_spent / fc.direct_samples:.1%} of the {fc.direct_samples:,} that as "
            f"many trials at {fc.samples:,} samples would train."
        )
    return lines
