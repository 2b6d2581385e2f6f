"""The gradient noise scale B_simple = tr(Σ) / |G|², estimated during training.

McCandlish et al. (2018, "An Empirical Model of Large-Batch Training") show that the batch
size beyond which larger batches stop saving optimizer steps is about the noise scale. With
the squared norms of a gradient measured at two batch sizes, b_small < b_big,

    E|G_b|² = |G|² + tr(Σ) / b,

so the two measurements give unbiased estimates

    |G|²  ≈ (b_big |G_big|² - b_small |G_small|²) / (b_big - b_small)
    tr(Σ) ≈ (|G_small|² - |G_big|²) / (1 / b_small - 1 / b_big).

Single measurements are very noisy, so each term is smoothed by an exponential moving
average before the ratio is taken (the ratio of averages, not the average of ratios).
"""

from __future__ import annotations

import math


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


class NoiseScale:
    """Smoothed estimate of B_simple from repeated two-batch-size measurements.

    Args:
        smoothing: weight of the past in each moving average (0 keeps only the newest).
    """

    def __init__(self, smoothing: float = 0.95) -> None:
        if not 0.0 <= smoothing < 1.0:
            raise ValueError(f"smoothing must be in [0, 1), but got {smoothing}.")
        self.smoothing = smoothing
        self._grad_sq = 0.0
        self._trace = 0.0
        self._weight = 0.0
        self.measurements = 0

    def update(self, small_sq: float, b_small: int, big_sq: float, b_big: int) -> None:
        grad_sq, trace = noise_scale_terms(small_sq, b_small, big_sq, b_big)
        if not (math.isfinite(grad_sq) and math.isfinite(trace)):
            return
        s = self.smoothing
        self._grad_sq = s * self._grad_sq + (1 - s) * grad_sq
        self._trace = s * self._trace + (1 - s) * trace
        self._weight = s * self._weight + (1 - s)  # bias correction, as in Adam
        self.measurements += 1

    @property
    def value(self) -> float:
        """B_simple, or NaN before a measurement or while |G|² is not yet positive."""
        if self._weight == 0 or self._grad_sq <= 0:
            return math.nan
        return (self._trace / self._weight) / (self._grad_sq / self._weight)
