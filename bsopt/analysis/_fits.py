"""Fits of the batch size: how the best learning rate moves with it (with a critical batch
size beyond which it stops moving), and McCandlish's steps-against-samples trade-off."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
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
        critical_interval: the kinks the data cannot tell from the best one: the
            ``confidence`` profile interval of ``critical_batch_size`` (kinks whose F-test
            against the best kink is not significant); ``None`` without a kink.
        censored: the batch sizes whose best lr is only a bound (their best trial sat at the
            end of the lrs tried there, see :func:`best_lr_per_batch`); the fit places them
            where the line says, within their bounds, instead of at the bound.
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
    critical_interval: tuple[float, float] | None = None
    censored: tuple[int, ...] = ()

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
    b, a = _plain_line(x, y)
    residual = y - (a + b * x)
    rss = float(residual @ residual)
    sxx = float(((x - x.mean()) ** 2).sum())
    stderr = math.sqrt(rss / max(len(x) - 2, 1) / sxx)
    return b, a, stderr, rss


def _plain_line(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Least squares ``y = a + b x``: ``(b, a)``, in closed form (it runs for every kink
    tried, and scipy's ``linregress`` costs a millisecond a call)."""
    if np.ptp(y) == 0:
        return 0.0, float(y[0])  # exactly: rounding would print a flat line as "-0.00"
    xc = x - x.mean()
    b = float(xc @ y) / float(xc @ xc)
    return b, float(y.mean()) - b * float(x.mean())


@dataclass(frozen=True)
class BestLr:
    """The best learning rate seen at one batch size, and how far the trials pin it down.

    ``low`` and ``high`` bound the lr that is best at this batch size when the best trial
    sat at an end of the lrs tried there: the largest lr that trained (``high`` is then the
    smallest lr above it that diverged or failed, or infinity) or the smallest lr tried
    (``low`` is 0). Otherwise both equal ``lr``: worse trials on either side bracket it, as
    closely as the search sampled. A search that samples a batch size sparsely (TPE spends
    few trials on batch sizes it judges poor) leaves its best trial short of the real
    optimum, mostly on the side of large lrs, which the stability limit makes dangerous.

    Attributes:
        batch_size: the batch size.
        lr: the lr of the best trial at this batch size.
        low, high: bounds of the best lr, as above.
        trials: trials at this batch size (diverged and failed ones included).
    """

    batch_size: int
    lr: float
    low: float
    high: float
    trials: int

    @property
    def censored(self) -> bool:
        """Whether ``lr`` is only a bound of the best lr."""
        return self.low < self.lr or self.high > self.lr


def best_lr_per_batch(
    trials: Iterable[tuple[float, float, float]], *, maximize: bool = False
) -> list[BestLr]:
    """The :class:`BestLr` of each batch size from ``(batch_size, lr, value)`` of every
    trial, sorted by batch size.

    A value that is not finite (NaN or ±inf) marks a trial that diverged or failed: it is
    never the best, but it bounds the best lr from above. Pass a pruned trial likewise when
    it was stopped for diverging; a batch size with no finite value is left out.
    """
    per: dict[int, list[tuple[float, float]]] = {}
    for b, lr, value in trials:
        if b > 0 and lr > 0 and math.isfinite(lr):
            per.setdefault(int(b), []).append((float(lr), float(value)))
    out = []
    for b in sorted(per):
        rows = sorted(per[b])
        good = [(lr, v) for lr, v in rows if math.isfinite(v)]
        if not good:
            continue
        sign = -1.0 if maximize else 1.0
        i = min(range(len(good)), key=lambda j: sign * good[j][1])
        lr = good[i][0]
        tried = [x for x, _ in good]
        # At an end of the lrs tried (and only if other lrs were tried) the best is a bound.
        low = 0.0 if lr == min(tried) < max(tried) else lr
        high = lr
        if lr == max(tried) > min(tried):
            high = min((x for x, _ in rows if x > lr), default=math.inf)
        out.append(BestLr(b, lr, low, high, len(rows)))
    return out


def _censored_line(
    x: np.ndarray, y: np.ndarray, low: np.ndarray, high: np.ndarray
) -> tuple[float, float, float, float, np.ndarray]:
    """:func:`_line` where a point known only within ``[low, high]`` counts only by how far
    the line passes outside its bounds, and takes the line's value clipped to them: a best
    lr that is only a lower bound does not drag the line below it. Also returns the points
    as fitted (the censored ones placed on the line or their nearest bound)."""
    bounded = low < high
    fitted = y.copy()
    if bounded.any():
        # Least squares on the distance to each point's bounds is convex and piecewise
        # quadratic: guess which censored points the line misses, fit to those bounds,
        # repeat until the guess holds (a few rounds; each is a plain line fit).
        b, a = _plain_line(x, y)
        for _ in range(50):
            new = np.where(bounded, np.clip(a + b * x, low, high), y)
            missed = ~bounded | (new != a + b * x)
            if missed.sum() >= 2 and np.ptp(x[missed]) > 0:
                b, a = _plain_line(x[missed], new[missed])
            if float(np.abs(new - fitted).max()) < 1e-12:
                break
            fitted = new
    b, a, se, rss = _line(x, fitted)
    return b, a, se, rss, fitted


def _check_fit_options(confidence: float, kink_alpha: float) -> None:
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), but got {confidence!r}.")
    if not 0 <= kink_alpha < 1:
        raise ValueError(
            f"kink_alpha must be in [0, 1) (0 never fits two regimes), but got {kink_alpha!r}."
        )


def _as_best(point: tuple[float, float] | BestLr) -> BestLr:
    if isinstance(point, BestLr):
        return point
    b, lr = point
    return BestLr(int(b), float(lr), float(lr), float(lr), 1)


def fit_lr_scaling(
    points: Sequence[tuple[float, float] | BestLr],
    *,
    confidence: float = CONFIDENCE,
    kink_alpha: float = 0.05,
) -> LrFit | None:
    """Fit ``lr* ∝ batch_size ** slope`` to ``(batch_size, lr)`` pairs in log-log space, and
    look for a critical batch size beyond which the best lr stays flat.

    ``points`` may also be the :class:`BestLr` of :func:`best_lr_per_batch` (the better
    input: it says which best lrs are only bounds, and the fit treats them so). The
    two-regime fit (slope up to a kink, flat beyond) is chosen over one line only when an
    F-test says it fits better at level ``kink_alpha``, with at least two batch sizes on each
    side of the kink and a rising slope below it; its kink comes with a ``confidence``
    interval. Returns ``None`` with fewer than two distinct batch sizes.
    """
    _check_fit_options(confidence, kink_alpha)
    best = sorted(
        (p for p in map(_as_best, points) if p.batch_size > 0 and p.lr > 0),
        key=lambda p: (p.batch_size, p.lr),
    )
    distinct = sorted({float(p.batch_size) for p in best})
    if len(distinct) < 2:
        return None
    x = np.log([float(p.batch_size) for p in best])
    y = np.log([p.lr for p in best])
    with np.errstate(divide="ignore"):
        bounds = (np.log([p.low for p in best]), np.log([p.high for p in best]))
    stored = tuple((p.batch_size, p.lr) for p in best)
    censored = tuple(p.batch_size for p in best if p.censored)
    if len(best) == 2:
        slope = float((y[1] - y[0]) / (x[1] - x[0]))
        return LrFit(
            slope, None, float(y[0] - slope * x[0]), stored, line_slope=slope, censored=censored
        )
    slope, intercept, stderr, rss_line, _ = _censored_line(x, y, *bounds)
    q = t_quantile(confidence, len(best) - 2)
    line = LrFit(
        slope,
        stderr,
        intercept,
        stored,
        interval=(slope - q * stderr, slope + q * stderr),
        line_slope=slope,
        confidence=confidence,
        censored=censored,
    )
    if len(distinct) < 4:
        return line
    return _two_regimes(line, x, (y, *bounds), np.log(distinct), rss_line, kink_alpha)


Kink = tuple[float, float, float, float, float]  # slope, intercept, stderr, rss, c


def _kinks(x: np.ndarray, data: tuple[np.ndarray, ...], logs: np.ndarray) -> list[Kink]:
    """Every kink ``c`` (in log B) whose fit of ``y`` on ``min(x, c)`` has a rising slope:
    ``(slope, intercept, stderr, rss, c)``."""
    # Search c between the second and the second-to-last batch size, so that each regime
    # holds two of them at least.
    grid = np.unique(np.concatenate([np.linspace(logs[1], logs[-2], 200), logs[1:-1]]))
    out = []
    for c in grid:
        z = np.minimum(x, c)
        if np.ptp(z) == 0:
            continue
        b, a, se, rss, _ = _censored_line(z, *data)
        if b > 0:
            out.append((b, a, se, rss, float(c)))
    return out


def _middle_of_best(kinks: list[Kink]) -> Kink:
    """The kink of least residual; where several tie (a best lr that is only a bound leaves
    the kink free over a range: the line passes inside its bounds wherever it bends), the
    one in the middle of the tied range in log B rather than its low end."""
    least = min(k[3] for k in kinks)
    tied = [k for k in kinks if k[3] <= least * (1 + 1e-6) + 1e-12]
    middle = (min(k[4] for k in tied) + max(k[4] for k in tied)) / 2
    return min(tied, key=lambda k: abs(k[4] - middle))


def _kink_interval(
    kinks: list[Kink], best: Kink, dof: int, confidence: float
) -> tuple[float, float]:
    """The profile interval of the kink: every kink whose residual is not significantly above
    the best kink's at level ``1 - confidence`` (F-test, one parameter: the kink's place)."""
    from scipy import stats

    limit = best[3] * (1 + float(stats.f.ppf(confidence, 1, dof)) / dof)
    inside = [k[4] for k in kinks if k[3] <= limit]
    return float(math.exp(min(inside))), float(math.exp(max(inside)))


def _two_regimes(
    line: LrFit,
    x: np.ndarray,
    data: tuple[np.ndarray, ...],
    logs: np.ndarray,
    rss_line: float,
    kink_alpha: float,
) -> LrFit:
    """``line``, or the broken power law when an F-test prefers it at level ``kink_alpha``.
    ``data`` holds the log best lrs and their log bounds."""
    kinks = _kinks(x, data, logs)
    if not kinks:
        return line
    from scipy import stats

    best = _middle_of_best(kinks)
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
        critical_interval=_kink_interval(kinks, best, dof, line.confidence),
        kink_p_value=p_value,
    )


@dataclass(frozen=True)
class CriticalBatchFit:
    """McCandlish et al. (2018)'s trade-off between optimizer steps and samples to a target,

        (S / S_min − 1) (E / E_min − 1) = 1,  i.e.  E(B) = E_min + S_min · B,

    fitted to the fewest samples ``E(B)`` each batch size ``B`` needed to reach the target.
    ``critical_batch_size`` = ``E_min / S_min``: below it a larger batch saves steps at
    little extra data; above it each doubling of the batch roughly doubles the samples.
    ``points`` are the pairs fitted; ``censored`` the batch sizes left out because they
    reached the target at their first evaluation (their samples to target are only an upper
    bound: the curve could lie anywhere below).
    """

    s_min: float
    e_min: float
    critical_batch_size: float
    points: tuple[tuple[int, int], ...]
    censored: tuple[int, ...] = ()


@dataclass(frozen=True)
class NoCriticalBatchFit:
    """Why :func:`try_fit_critical_batch` fitted no curve.

    Attributes:
        reason: one sentence, e.g. "only 2 batch sizes reached the target after their first
            evaluation (3 are needed); 16, 32 and 64 reached it at the first one, so their
            samples to target are only upper bounds".
        points: the ``(batch_size, samples to target)`` pairs given (censored ones included).
        censored: the batch sizes that reached the target at their first evaluation.
    """

    reason: str
    points: tuple[tuple[int, int], ...]
    censored: tuple[int, ...] = ()


def fit_critical_batch(
    points: Sequence[tuple[float, float]],
    *,
    censored: Iterable[float] = (),
    max_error: float = 0.25,
) -> CriticalBatchFit | None:
    """:func:`try_fit_critical_batch`, with ``None`` where it gives no fit."""
    fit = try_fit_critical_batch(points, censored=censored, max_error=max_error)
    return fit if isinstance(fit, CriticalBatchFit) else None


def try_fit_critical_batch(
    points: Sequence[tuple[float, float]],
    *,
    censored: Iterable[float] = (),
    max_error: float = 0.25,
) -> CriticalBatchFit | NoCriticalBatchFit:
    """Fit :class:`CriticalBatchFit` to ``(batch_size, samples to target)`` pairs, or say why
    not (:class:`NoCriticalBatchFit`).

    ``censored`` names the batch sizes whose samples to target is the first evaluation: the
    target was reached before anything was measured, so the count is an upper bound, not a
    measurement, and the fit leaves them out. Least squares on relative errors. No fit with
    fewer than three distinct batch sizes and sample counts left, when the fit gives no
    positive ``S_min`` and ``E_min`` (the samples do not grow with the batch size, or do not
    level off below it, inside the range tried), or when the curve misses the points by more
    than ``max_error`` (root mean square of relative errors).
    """
    every = sorted((float(b), float(e)) for b, e in points if b > 0 and e > 0)
    stored = tuple((int(b), int(e)) for b, e in every)
    cut = {float(b) for b in censored}
    left_out = tuple(sorted({int(b) for b, _ in every if b in cut}))
    pts = [(b, e) for b, e in every if b not in cut]

    def refuse(reason: str) -> NoCriticalBatchFit:
        return NoCriticalBatchFit(reason, stored, left_out)

    if len({b for b, _ in pts}) < 3 or len({e for _, e in pts}) < 3:
        reached = f"only {len(pts)} batch size{'' if len(pts) == 1 else 's'} reached the target"
        if left_out:
            return refuse(
                f"{reached} after their first evaluation (3 are needed); "
                f"{names([str(b) for b in left_out])} reached it at the first one, so their "
                "samples to target are only upper bounds"
            )
        return refuse(f"{reached} with distinct sample counts (3 are needed)")
    b = np.array([p[0] for p in pts])
    e = np.array([p[1] for p in pts])
    # E = E_min + S_min B, each residual weighted by 1 / E (relative error).
    design = np.stack([np.ones_like(b), b], axis=1) / e[:, None]
    coef, *_ = np.linalg.lstsq(design, np.ones_like(e), rcond=None)
    e_min, s_min = float(coef[0]), float(coef[1])
    if not (e_min > 0 and s_min > 0):
        return refuse(
            "the samples to target do not grow with the batch size, or do not level off "
            "below it, inside the range tried (no positive S_min and E_min)"
        )
    # Samples measured on a coarse evaluation grid often fit no curve at all: say nothing
    # rather than a number the points do not support.
    error = float(np.sqrt(np.mean(((e_min + s_min * b) / e - 1) ** 2)))
    if error > max_error:
        return refuse(
            f"the curve misses the samples to target by {error:.0%} (root mean square), "
            f"more than max_error={max_error:.0%}"
        )
    fitted = tuple((int(bb), int(ee)) for bb, ee in pts)
    return CriticalBatchFit(s_min, e_min, e_min / s_min, fitted, left_out)
