"""Intervals: the t-interval of a mean and Welch's interval of a difference of means."""

from __future__ import annotations

from collections.abc import Sequence
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
