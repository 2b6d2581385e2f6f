"""The noise-scale estimator on synthetic gradients with known mean and covariance."""

from __future__ import annotations

import pytest
import torch

from bsopt._noise import NoiseScale, noise_scale_terms


def _batch_grad(mean: torch.Tensor, sigma: float, b: int, gen: torch.Generator) -> torch.Tensor:
    # The mean of b per-sample gradients, each mean + N(0, sigma² I).
    return mean + sigma * torch.randn(b, mean.numel(), generator=gen).mean(dim=0)


def test_terms_are_exact_on_their_expectations() -> None:
    # E|G_b|² = |G|² + tr(Σ)/b: with |G|² = 2 and tr(Σ) = 64 the estimates are exact.
    grad_sq, trace = noise_scale_terms(2 + 64 / 8, 8, 2 + 64 / 128, 128)
    assert grad_sq == pytest.approx(2.0)
    assert trace == pytest.approx(64.0)


def test_estimator_recovers_a_known_noise_scale() -> None:
    # d = 100, |G|² = 1, σ² = 0.64 per coordinate: tr(Σ) = 64, so B_simple = 64.
    gen = torch.Generator().manual_seed(0)
    d = 100
    mean = torch.ones(d) / d**0.5
    sigma = 0.8
    estimator = NoiseScale(smoothing=0.99)
    for _ in range(3000):
        per_sample = mean + sigma * torch.randn(256, d, generator=gen)
        small = per_sample[:32].mean(dim=0)
        big = per_sample.mean(dim=0)
        estimator.update(float(small.pow(2).sum()), 32, float(big.pow(2).sum()), 256)
    # Tolerance: the smoothed estimate's relative spread here is a few percent.
    assert estimator.value == pytest.approx(64.0, rel=0.10)
    assert estimator.measurements == 3000


def test_estimator_before_any_measurement_is_nan() -> None:
    import math

    assert math.isnan(NoiseScale().value)


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match=r"Need 0 < b_small < b_big .* got 32 and 32"):
        noise_scale_terms(1.0, 32, 1.0, 32)
    with pytest.raises(ValueError, match=r"smoothing must be in \[0, 1\), but got 1"):
        NoiseScale(smoothing=1)
