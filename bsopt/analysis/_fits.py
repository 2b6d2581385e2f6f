"""Fits of the batch size: how the best learning rate moves with it (with a critical batch
size beyond which it stops moving), and McCandlish's steps-against-samples trade-off."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
import math

import numpy as np

from bsopt.analysis._stats import CONFIDENCE, t_quantile
from bsopt.analysis._text import names

#: The usual lr–batch scaling rules, by exponent.
RULES = (
    (1.0, "the linear rule (lr ∝ batch)"),
    (0.5, "the square-root rule (lr ∝ √batch)"),
    (0.0, "no coupling (the best lr does not move with the batch size)"),
)


@dataclass(frozen=True)
class LrFit:
    """How the best learning rate moves with the batch size, fitted in log-log space.

    One line, ``log lr* = intercept + slope · log B``, or — when the data support it — two
    regimes (a broken power law): that line up to ``critical_batch_size`` and flat beyond it,
    where a larger batch no longer allows a larger learning rate. ``slope``, ``stderr``,
    ``interval`` and ``intercept`` describe the sloped part (the whole range when there is no
    kink).

    Attributes:
        points: the ``(batch_size, best lr)`` pairs fitted.
        stderr: the slope's standard error (``None`` with two points: a line through two
            points has no residual).
        interval: the slope's ``confidence`` t-interval (``n - 2`` degrees of freedom for one
            line, ``n - 3`` for two regimes); ``None`` with ``stderr``.
        critical_batch_size: where the best lr stops growing; ``None`` when one line fits as
            well (or there are too few batch sizes to tell: four are needed).
        kink_p_value: the F-test p-value of two regimes against one line (``None`` when not
            tested). The kink's place is searched, which makes it somewhat optimistic.
        line_slope: the slope of the single line, also when two regimes were chosen.
    """

    slope: float
    stderr: float | None
    intercept: float
    points: tuple[tuple[int, float], ...]
    interval: tuple[float, float] | None = None
    critical_batch_size: float | None = None
    kink_p_value: float | None = None
    line_slope: float | None = None
    confidence: float = CONFIDENCE

    def lr_at(self, batch_size: float) -> float:
        """The fitted best learning rate at ``batch_size``."""
        x = math.log(batch_size)
        if self.critical_batch_size is not None:
            x = min(x, math.log(self.critical_batch_size))
        return float(math.exp(self.intercept + self.slope * x))

    def rule(self) -> str:
        """The scaling rule the slope's interval singles out, in words; a rule is named only
        when the interval holds its exponent and excludes the others."""
        if self.interval is None:
            return "too few batch sizes to judge the rule (a line through two points)"
        low, high = self.interval
        span = f"{100 * self.confidence:.0f}% interval [{low:.2f}, {high:.2f}]"
        inside = [text for alpha, text in RULES if low <= alpha <= high]
        if len(inside) == 1:
            return f"consistent with {inside[0]} ({span} excludes the other rules)"
        if inside:
            short = [text.split(" (")[0] for text in inside]
            return f"the data cannot tell apart {names(short)} ({span})"
        return f"matches none of the usual rules 0, 0.5, 1 ({span})"


def _line(x: np.ndarray, y: np.ndarray) -> tuple[float, float, float, float]:
    """Least squares ``y = a + b x``: ``(b, a, stderr of b, residual sum of squares)``."""
    from scipy import stats

    fit = stats.linregress(x, y)
    residual = y - (fit.intercept + fit.slope * x)
    rss = float((residual**2).sum())
    stderr = float(fit.stderr)
    if not math.isfinite(stderr):
        # linregress leaves it NaN when y is constant (no correlation to speak of); the
        # slope's standard error is then that of a perfect fit.
        sxx = float(((x - x.mean()) ** 2).sum())
        stderr = math.sqrt(rss / max(len(x) - 2, 1) / sxx)
    return float(fit.slope), float(fit.intercept), stderr, rss


def _check_fit_options(confidence: float, kink_alpha: float) -> None:
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), but got {confidence!r}.")
    if not 0 <= kink_alpha < 1:
        raise ValueError(
            f"kink_alpha must be in [0, 1) (0 never fits two regimes), but got {kink_alpha!r}."
        )


def fit_lr_scaling(
    points: Sequence[tuple[float, float]],
    *,
    confidence: float = CONFIDENCE,
    kink_alpha: float = 0.05,
) -> LrFit | None:
    """Fit ``lr* ∝ batch_size ** slope`` to ``(batch_size, lr)`` pairs in log-log space, and
    look for a critical batch size beyond which the best lr stays flat.

    The two-regime fit (slope up to a kink, flat beyond) is chosen over one line only when an
    F-test says it fits better at level ``kink_alpha``, with at least two batch sizes on each
    side of the kink and a rising slope below it. Returns ``None`` with fewer than two
    distinct batch sizes.
    """
    _check_fit_options(confidence, kink_alpha)
    pts = sorted((float(b), float(lr)) for b, lr in points if b > 0 and lr > 0)
    distinct = sorted({b for b, _ in pts})
    if len(distinct) < 2:
        return None
    x = np.log([b for b, _ in pts])
    y = np.log([lr for _, lr in pts])
    stored = tuple((int(b), lr) for b, lr in pts)
    if len(pts) == 2:
        slope = float((y[1] - y[0]) / (x[1] - x[0]))
        return LrFit(slope, None, float(y[0] - slope * x[0]), stored, line_slope=slope)
    slope, intercept, stderr, rss_line = _line(x, y)
    q = t_quantile(confidence, len(pts) - 2)
    line = LrFit(
        slope,
        stderr,
        intercept,
        stored,
        interval=(slope - q * stderr, slope + q * stderr),
        line_slope=slope,
        confidence=confidence,
    )
    if len(distinct) < 4:
        return line
    return _two_regimes(line, x, y, np.log(distinct), rss_line, kink_alpha)


def _best_kink(
    x: np.ndarray, y: np.ndarray, logs: np.ndarray
) -> tuple[float, float, float, float, float] | None:
    """The kink ``c`` (in log B) whose fit of ``y`` on ``min(x, c)`` leaves the least
    residual with a rising slope: ``(slope, intercept, stderr, rss, c)``, or ``None``."""
    # Search c between the second and the second-to-last batch size, so that each regime
    # holds two of them at least.
    grid = np.unique(np.concatenate([np.linspace(logs[1], logs[-2], 200), logs[1:-1]]))
    best: tuple[float, float, float, float, float] | None = None
    for c in grid:
        z = np.minimum(x, c)
        if np.ptp(z) == 0:
            continue
        b, a, se, rss = _line(z, y)
        if b > 0 and (best is None or rss < best[3]):
            best = (b, a, se, rss, float(c))
    return best


def _two_regimes(
    line: LrFit,
    x: np.ndarray,
    y: np.ndarray,
    logs: np.ndarray,
    rss_line: float,
    kink_alpha: float,
) -> LrFit:
    """``line``, or the broken power law when an F-test prefers it at level ``kink_alpha``."""
    best = _best_kink(x, y, logs)
    if best is None:
        return line
    from scipy import stats

    b, a, se, rss, c = best
    dof = len(x) - 3
    if rss <= 1e-12 * max(rss_line, 1e-300):
        p_value = 0.0 if rss_line > 0 else 1.0
    else:
        f_stat = (rss_line - rss) / (rss / dof)
        p_value = float(stats.f.sf(f_stat, 1, dof))
    if p_value >= kink_alpha:
        return replace(line, kink_p_value=p_value)
    se = se * math.sqrt((len(x) - 2) / dof)  # one more parameter fitted: the kink
    q = t_quantile(line.confidence, dof)
    return replace(
        line,
        slope=b,
        stderr=se,
        intercept=a,
        interval=(b - q * se, b + q * se),
        critical_batch_size=float(math.exp(c)),
        kink_p_value=p_value,
    )


@dataclass(frozen=True)
class CriticalBatchFit:
    """McCandlish et al. (2018)'s trade-off between optimizer steps and samples to a target,

        (S / S_min − 1) (E / E_min − 1) = 1,  i.e.  E(B) = E_min + S_min · B,

    fitted to the fewest samples ``E(B)`` each batch size ``B`` needed to reach the target.
    ``critical_batch_size`` = ``E_min / S_min``: below it a larger batch saves steps at
    little extra data; above it each doubling of the batch roughly doubles the samples.
    """

    s_min: float
    e_min: float
    critical_batch_size: float
    points: tuple[tuple[int, int], ...]


def fit_critical_batch(
    points: Sequence[tuple[float, float]], *, max_error: float = 0.25
) -> CriticalBatchFit | None:
    """Fit :class:`CriticalBatchFit` to ``(batch_size, samples to target)`` pairs.

    Least squares on relative errors. ``None`` with fewer than three distinct sample counts,
    when the fit gives no positive ``S_min`` and ``E_min`` (the samples do not grow with the
    batch size, or do not level off below it, inside the range tried), or when the curve
    misses the points by more than ``max_error`` (root mean square of relative errors).
    """
    pts = sorted((float(b), float(e)) for b, e in points if b > 0 and e > 0)
    if len({b for b, _ in pts}) < 3:
        return None
    b = np.array([p[0] for p in pts])
    e = np.array([p[1] for p in pts])
    # E = E_min + S_min B, each residual weighted by 1 / E (relative error).
    design = np.stack([np.ones_like(b), b], axis=1) / e[:, None]
    coef, *_ = np.linalg.lstsq(design, np.ones_like(e), rcond=None)
    e_min, s_min = float(coef[0]), float(coef[1])
    if not (e_min > 0 and s_min > 0) or len(set(e)) < 3:
        return None
    # Samples measured on a coarse evaluation grid often fit no curve at all: say nothing
    # rather than a number the points do not support.
    relative = (e_min + s_min * b) / e - 1
    if float(np.sqrt(np.mean(relative**2))) > max_error:
        return None
    return CriticalBatchFit(
        s_min, e_min, e_min / s_min, tuple((int(bb), int(ee)) for bb, ee in pts)
    )
