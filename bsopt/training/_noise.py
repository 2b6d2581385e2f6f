"""The gradient noise scale B_simple = tr(Σ) / |G|², estimated during training.

McCandlish et al. (2018, "An Empirical Model of Large-Batch Training") show that the batch
size beyond which larger batches stop saving optimizer steps is about the noise scale. With
the squared norms of a gradient measured at two batch sizes, b_small < b_big,

    E|G_b|² = |G|² + tr(Σ) / b,

so each pair of measurements gives unbiased estimates

    |G|²  ≈ (b_big |G_big|² - b_small |G_small|²) / (b_big - b_small)
    tr(Σ) ≈ (|G_small|² - |G_big|²) / (1 / b_small - 1 / b_big).

One pair is very noisy (either estimate can be negative), so :class:`NoiseScale` keeps the two
estimates as separate averages and divides only at the end: the ratio of averages, not the
average of ratios. The average runs over the most recent half of the estimates, so the
smoothing follows their number (early on every estimate counts; later the window follows the
noise scale as it grows during training) instead of a fixed decay. An interval comes from a
delete-one-block jackknife over that window (blocks of consecutive estimates, so that their
correlation along training does not make it too narrow). When the averages do not give a
positive ratio, or there are too few estimates, the value is NaN: "not enough signal", never a
negative number.
"""

from __future__ import annotations

import itertools
import math
import statistics


def noise_scale_terms(
    small_sq: float, b_small: int, big_sq: float, b_big: int
) -> tuple[float, float]:
    """Unbiased estimates ``(|G|², tr(Σ))`` from squared gradient norms at two batch sizes."""
    if not 0 < b_small < b_big:
        raise ValueError(
            f"Need 0 < b_small < b_big for a noise-scale estimate, got {b_small} and {b_big}."
        )
    grad_sq = (b_big * big_sq - b_small * small_sq) / (b_big - b_small)
    trace = (small_sq - big_sq) / (1 / b_small - 1 / b_big)
    return grad_sq, trace


def _t_quantile(confidence: float, df: int) -> float:
    from scipy import stats

    return float(stats.t.ppf(0.5 + confidence / 2, df))


class NoiseScale:
    """B_simple from repeated two-batch-size measurements, with an interval.

    Args:
        min_measurements: estimates needed before :attr:`value` is a number.
        window: the share of the most recent estimates averaged (default: the latest half).
        blocks: the most blocks of the jackknife behind :attr:`interval`.
        confidence: the level of :attr:`interval`.

    Feed it with :meth:`update`; read :attr:`value` (NaN while there is not enough signal),
    :attr:`interval` (``None`` likewise) and :attr:`measurements`.
    """

    def __init__(
        self,
        *,
        min_measurements: int = 4,
        window: float = 0.5,
        blocks: int = 10,
        confidence: float = 0.9,
    ) -> None:
        if isinstance(min_measurements, bool) or not isinstance(min_measurements, int):
            raise ValueError(f"min_measurements must be an integer, but got {min_measurements!r}.")
        if min_measurements < 1:
            raise ValueError(f"min_measurements must be at least 1, but got {min_measurements}.")
        if not 0.0 < window <= 1.0:
            raise ValueError(f"window must be in (0, 1] (a share of the estimates), got {window}.")
        if isinstance(blocks, bool) or not isinstance(blocks, int) or blocks < 3:
            raise ValueError(f"blocks must be an integer >= 3, but got {blocks!r}.")
        if not 0.0 < confidence < 1.0:
            raise ValueError(f"confidence must be in (0, 1), e.g. 0.9, but got {confidence}.")
        self.min_measurements = min_measurements
        self.window = window
        self.blocks = blocks
        self.confidence = confidence
        self._grad_sq: list[float] = []
        self._trace: list[float] = []

    @property
    def measurements(self) -> int:
        """The number of (finite) measurements taken so far."""
        return len(self._grad_sq)

    def update(self, small_sq: float, b_small: int, big_sq: float, b_big: int) -> None:
        """Add one measurement: the squared gradient norms ``small_sq`` of a batch of
        ``b_small`` samples and ``big_sq`` of a batch of ``b_big`` (the first usually part
        of the second). Non-finite norms are skipped."""
        grad_sq, trace = noise_scale_terms(small_sq, b_small, big_sq, b_big)
        if not (math.isfinite(grad_sq) and math.isfinite(trace)):
            return
        self._grad_sq.append(grad_sq)
        self._trace.append(trace)

    def _recent(self) -> tuple[list[float], list[float]]:
        n = len(self._grad_sq)
        size = min(n, max(self.min_measurements, math.ceil(self.window * n)))
        return self._grad_sq[n - size :], self._trace[n - size :]

    @property
    def grad_sq(self) -> float:
        """The averaged estimate of |G|² (NaN before any measurement)."""
        g, _ = self._recent()
        return statistics.fmean(g) if g else math.nan

    @property
    def trace(self) -> float:
        """The averaged estimate of tr(Σ) (NaN before any measurement)."""
        _, s = self._recent()
        return statistics.fmean(s) if s else math.nan

    @property
    def enough_signal(self) -> bool:
        """Whether :attr:`value` is a number: enough measurements, and both averaged
        estimates positive."""
        return self.measurements >= self.min_measurements and self.grad_sq > 0 and self.trace > 0

    @property
    def value(self) -> float:
        """B_simple = tr(Σ) / |G|² over the recent estimates; NaN when there is not enough
        signal (too few measurements, or an average that is not positive)."""
        if not self.enough_signal:
            return math.nan
        return self.trace / self.grad_sq

    @property
    def interval(self) -> tuple[float, float] | None:
        """A ``confidence`` interval of :attr:`value` from a delete-one-block jackknife of the
        log ratio over the recent estimates; ``None`` without enough signal, with fewer than
        three blocks of two estimates, or when a block left out leaves no positive ratio."""
        if not self.enough_signal:
            return None
        g, s = self._recent()
        m = min(self.blocks, len(g) // 2)
        if m < 3:
            return None
        edges = [round(i * len(g) / m) for i in range(m + 1)]
        sums_g = [sum(g[a:b]) for a, b in itertools.pairwise(edges)]
        sums_s = [sum(s[a:b]) for a, b in itertools.pairwise(edges)]
        total_g, total_s = sum(sums_g), sum(sums_s)
        logs = []
        for bg, bs in zip(sums_g, sums_s, strict=True):
            rest_g, rest_s = total_g - bg, total_s - bs
            if rest_g <= 0 or rest_s <= 0:
                return None
            logs.append(math.log(rest_s / rest_g))
        centre = math.log(total_s / total_g)
        mean = statistics.fmean(logs)
        se = math.sqrt((m - 1) / m * sum((x - mean) ** 2 for x in logs))
        half = _t_quantile(self.confidence, m - 1) * se
        return (math.exp(centre - half), math.exp(centre + half))

    def as_dict(self) -> dict[str, float | int | list[float] | None]:
        """What a trial should store: ``noise_scale`` (``None`` without enough signal),
        ``noise_scale_interval`` (``[low, high]`` or ``None``) and
        ``noise_scale_measurements``."""
        interval = self.interval
        return {
            "noise_scale": self.value if self.enough_signal else None,
            "noise_scale_interval": list(interval) if interval is not None else None,
            "noise_scale_measurements": self.measurements,
        }
