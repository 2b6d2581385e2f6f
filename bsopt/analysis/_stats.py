"""Intervals: the t-interval of a mean, Welch's interval of a difference of means, the mean
of several rerun configurations, and Holm's correction across comparisons."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
import math
import statistics

#: Confidence level of every interval the analysis states.
CONFIDENCE = 0.95


def t_quantile(confidence: float, df: float) -> float:
    """The two-sided ``confidence`` quantile of Student's t with ``df`` degrees of freedom."""
    from scipy import stats

    return float(stats.t.ppf(0.5 + confidence / 2, df))


def t_interval(
    values: Sequence[float], *, confidence: float = CONFIDENCE
) -> tuple[float, float] | None:
    """The two-sided t-interval of the mean of ``values`` (``n - 1`` degrees of freedom).

    ``None`` with fewer than two values: one value has no spread to judge from.
    """
    n = len(values)
    if n < 2:
        return None
    mean = statistics.fmean(values)
    half = t_quantile(confidence, n - 1) * statistics.stdev(values) / math.sqrt(n)
    return (mean - half, mean + half)


def welch_interval(
    a: Sequence[float], b: Sequence[float], *, confidence: float = CONFIDENCE
) -> tuple[float, float] | None:
    """The t-interval of ``mean(a) - mean(b)`` without assuming equal variances (Welch, with
    Welch–Satterthwaite degrees of freedom). ``None`` unless both have two values or more."""
    if len(a) < 2 or len(b) < 2:
        return None
    va = statistics.variance(a) / len(a)
    vb = statistics.variance(b) / len(b)
    diff = statistics.fmean(a) - statistics.fmean(b)
    se = math.sqrt(va + vb)
    if se == 0:
        return (diff, diff)
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    half = t_quantile(confidence, df) * se
    return (diff - half, diff + half)


@dataclass(frozen=True)
class Estimate:
    """The mean of a batch size's configurations (each the mean of its reruns, weighted
    alike), the variance of that mean from the spread within configurations, and its
    Welch–Satterthwaite degrees of freedom. The configurations are fixed (chosen by the
    search); only the seeds vary, so the spread between configurations is not noise."""

    mean: float
    variance: float
    df: float
    n: int


def grouped_estimate(groups: Sequence[Sequence[float]]) -> Estimate | None:
    """The :class:`Estimate` of the mean over ``groups`` (one per configuration).

    A configuration with a single value counts in the mean and borrows the pooled spread of
    the others. ``None`` unless some configuration has two values or more.
    """
    groups = [list(g) for g in groups if len(g) > 0]
    spread = [(statistics.variance(g), len(g)) for g in groups if len(g) > 1]
    if not spread:
        return None
    pooled = sum(v * (n - 1) for v, n in spread) / sum(n - 1 for _, n in spread)
    k = len(groups)
    terms = []  # each configuration's share of the variance and its degrees of freedom
    for g in groups:
        v = statistics.variance(g) if len(g) > 1 else pooled
        dof = len(g) - 1 if len(g) > 1 else sum(n - 1 for _, n in spread)
        terms.append((v / len(g) / k**2, dof))
    variance = sum(c for c, _ in terms)
    denominator = sum(c * c / d for c, d in terms)
    df = variance**2 / denominator if denominator > 0 else float(sum(d for _, d in terms))
    mean = statistics.fmean(statistics.fmean(g) for g in groups)
    return Estimate(mean, variance, df, sum(len(g) for g in groups))


def estimate_interval(
    e: Estimate | None, *, confidence: float = CONFIDENCE
) -> tuple[float, float] | None:
    """The two-sided t-interval of ``e.mean`` (``None`` without an estimate)."""
    if e is None:
        return None
    half = t_quantile(confidence, e.df) * math.sqrt(e.variance) if e.variance > 0 else 0.0
    return (e.mean - half, e.mean + half)


@dataclass(frozen=True)
class Difference:
    """``a.mean - b.mean`` with its Welch interval and two-sided p-value (unadjusted;
    :func:`holm` adjusts a family of them)."""

    value: float
    interval: tuple[float, float]
    p_value: float


def difference_of(a: Estimate, b: Estimate, *, confidence: float = CONFIDENCE) -> Difference:
    """Welch's comparison of two estimates (unadjusted; :func:`holm` adjusts a family)."""
    from scipy import stats

    diff = a.mean - b.mean
    var = a.variance + b.variance
    if var <= 0:
        p = 1.0 if diff == 0 else 0.0
        return Difference(diff, (diff, diff), p)
    df = var**2 / (a.variance**2 / a.df + b.variance**2 / b.df)
    se = math.sqrt(var)
    half = t_quantile(confidence, df) * se
    p = float(2 * stats.t.sf(abs(diff) / se, df))
    return Difference(diff, (diff - half, diff + half), p)


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values, in the order given: rejecting where the adjusted
    value is below ``alpha`` keeps the chance of any false rejection in the family below
    ``alpha``, whatever the dependence between the tests."""
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    adjusted = [0.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted
