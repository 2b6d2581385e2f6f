"""The noise-scale estimator on problems with known answers."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from bsopt.training._noise import MeasureBudget, NoiseScale, noise_scale_terms


def _per_sample_gradients(d: int, noise_ratio: float, n: int, seed: int) -> np.ndarray:
    """Exact per-sample gradients of linear regression, ½ (x·w − y)², at a fixed weight.

    x ~ N(0, I_d), y = x·w* + ε with ε ~ N(0, noise_ratio), w − w* a unit vector: then
    B_simple = tr(Σ) / |G|² ≈ (d + 1 + d · noise_ratio) / (1 + d · noise_ratio / n) (the last
    factor: the n samples' own mean of ε·x adds to G). The n samples are the population, so
    its exact value is computed from these gradients themselves.
    """
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=gen, dtype=torch.float64)
    eps = math.sqrt(noise_ratio) * torch.randn(n, generator=gen, dtype=torch.float64)
    offset = torch.randn(d, generator=gen, dtype=torch.float64)
    offset = offset / offset.norm()  # w − w*; take w* = 0, so y = ε
    # One copy of w per sample: the gradient of the summed loss with respect to row i is
    # sample i's own gradient, exactly, in one backward pass.
    w = offset.expand(n, d).clone().requires_grad_(True)
    loss = 0.5 * ((x * w).sum(dim=1) - eps) ** 2
    (per,) = torch.autograd.grad(loss.sum(), w)
    return per.numpy()


def _b_simple(per: np.ndarray) -> float:
    mean = per.mean(axis=0)
    return float(((per - mean) ** 2).sum(axis=1).mean() / (mean**2).sum())


def _feed(
    per: np.ndarray, batch: int, measurements: int, seed: int, estimator: NoiseScale
) -> None:
    """Sample batches with replacement; the first half is the small batch, as the trainer
    measures it (its first micro-batch, then the whole batch)."""
    rng = np.random.default_rng(seed)
    small = (batch + 1) // 2
    for start in range(0, measurements, 64):
        chunk = min(64, measurements - start)
        batches = per[rng.integers(len(per), size=(chunk, batch))]
        small_sq = (batches[:, :small].mean(axis=1) ** 2).sum(axis=1)
        big_sq = (batches.mean(axis=1) ** 2).sum(axis=1)
        for s, b in zip(small_sq, big_sq, strict=True):
            estimator.update(float(s), small, float(b), batch)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("d", "noise_ratio", "expected", "measurements"),
    [
        # B_simple ≈ 50 is the hard case: at batch 7 the small batch holds 4 samples, and a
        # per-measurement estimate of |G|² has a spread ~4x |G|² itself. Measured over 30
        # seeds at 8,000 measurements: sd of log(estimate) 0.14, so 40,000 are fed here.
        (45, 4 / 45, 50, 40_000),
        # B_simple ≈ 2,000 at batch 250: sd of log(estimate) ~0.05 at 2,000 measurements.
        (400, 11.0, 2000, 4_000),
    ],
)
def test_linear_regression_noise_scale_within_20_percent_at_an_eighth_of_it(
    d: int, noise_ratio: float, expected: float, measurements: int
) -> None:
    per = _per_sample_gradients(d, noise_ratio, 4000, seed=0)
    truth = _b_simple(per)
    assert truth == pytest.approx(expected, rel=0.15)  # the construction is as designed
    batch = math.ceil(truth / 8)
    estimator = NoiseScale()
    _feed(per, batch, measurements, seed=1, estimator=estimator)
    assert estimator.measurements == measurements
    assert estimator.value == pytest.approx(truth, rel=0.20)
    interval = estimator.interval
    assert interval is not None and interval[0] < truth < interval[1]
    # The interval says how sure: a few percent to a few tens of percent here.
    assert 0.02 < interval[1] / interval[0] - 1 < 0.6


def test_few_measurements_far_below_the_noise_scale_are_never_negative() -> None:
    # Batch 8 against B_simple ≈ 2,000 (1/250 of it), 6 measurements per trial: the terms are
    # mostly noise. Every value is NaN ("not enough signal") or positive; the interval is
    # None exactly when the value is NaN, or when the blocks disagree in sign.
    per = _per_sample_gradients(400, 11.0, 4000, seed=0)
    values = []
    for seed in range(200):
        estimator = NoiseScale()
        _feed(per, 8, 6, seed=seed, estimator=estimator)
        value = estimator.value
        values.append(value)
        assert math.isnan(value) or value > 0
        if math.isnan(value):
            assert not estimator.enough_signal and estimator.interval is None
            assert estimator.as_dict()["noise_scale"] is None
    assert any(math.isnan(v) for v in values)  # the case this test is about happened


def test_terms_are_exact_on_their_expectations() -> None:
    # E|G_b|² = |G|² + tr(Σ)/b: with |G|² = 2 and tr(Σ) = 64 the estimates are exact.
    grad_sq, trace = noise_scale_terms(2 + 64 / 8, 8, 2 + 64 / 128, 128)
    assert grad_sq == pytest.approx(2.0)
    assert trace == pytest.approx(64.0)


def test_the_average_follows_the_latest_half_of_the_estimates() -> None:
    # 100 exact measurements of B = 32, then 100 of B = 256 (|G|² = 1 throughout): the
    # average runs over the latest half, so it reads the new regime exactly, and the
    # window grows with the number of estimates instead of a fixed decay.
    estimator = NoiseScale()
    for trace in [32.0] * 100 + [256.0] * 100:
        estimator.update(1 + trace / 8, 8, 1 + trace / 64, 64)
    assert estimator.value == pytest.approx(256.0)
    assert estimator.interval == pytest.approx((256.0, 256.0))
    for _ in range(200):
        estimator.update(1 + 32 / 8, 8, 1 + 32 / 64, 64)
    assert estimator.value == pytest.approx(32.0)
    assert estimator.measurements == 400


def test_not_enough_signal_before_the_minimum_number_of_measurements() -> None:
    estimator = NoiseScale(min_measurements=4)
    assert math.isnan(estimator.value) and estimator.interval is None
    for _ in range(3):
        estimator.update(1 + 64 / 8, 8, 1 + 64 / 64, 64)
    assert math.isnan(estimator.value)
    estimator.update(1 + 64 / 8, 8, 1 + 64 / 64, 64)
    assert estimator.value == pytest.approx(64.0)
    assert estimator.as_dict() == {
        "noise_scale": pytest.approx(64.0),
        "noise_scale_interval": None,  # two estimates per block needed, three blocks
        "noise_scale_measurements": 4,
    }


def test_a_negative_average_is_not_enough_signal() -> None:
    # |G_small|² below |G_big|²: the tr(Σ) estimate is negative; no value is reported.
    estimator = NoiseScale(min_measurements=1)
    estimator.update(1.0, 8, 2.0, 64)
    assert estimator.trace < 0 and not estimator.enough_signal
    assert math.isnan(estimator.value) and estimator.interval is None


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match=r"Need 0 < b_small < b_big .* got 32 and 32"):
        noise_scale_terms(1.0, 32, 1.0, 32)
    with pytest.raises(ValueError, match=r"window must be in \(0, 1\]"):
        NoiseScale(window=0)
    with pytest.raises(ValueError, match="min_measurements must be at least 1, but got 0"):
        NoiseScale(min_measurements=0)
    with pytest.raises(ValueError, match="blocks must be an integer >= 3, but got 2"):
        NoiseScale(blocks=2)


def test_split_terms_are_exact_on_their_expectations() -> None:
    # Two parts of 8 and 24 samples, |G|² = 2, tr(Σ) = 64, and parts of noise a and c with
    # E|a|² = 64/8, E|c|² = 64/24 and E a·c = 0: the estimates are exact on expectations.
    estimator = NoiseScale(min_measurements=1)
    whole = 2 + 64 / 32  # E|g|² of all 32
    estimator.update_split(2 + 64 / 8, 8, 2 + 64 / 24, 24, whole)
    assert estimator.grad_sq == pytest.approx(2.0)
    assert estimator.trace == pytest.approx(64.0)
    assert estimator.value == pytest.approx(32.0)


def _feed_without_replacement(
    per: np.ndarray, batch: int, measurements: int, seed: int, estimator: NoiseScale
) -> None:
    """Batches drawn as the trainer draws them: an epoch at a time, without replacement;
    each batch split in two halves."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(per))
    at = 0
    for _ in range(measurements):
        if at + batch > len(order):
            order, at = rng.permutation(len(per)), 0
        rows = per[order[at : at + batch]]
        at += batch
        half = batch // 2
        first, rest, whole = rows[:half].mean(0), rows[half:].mean(0), rows.mean(0)
        estimator.update_split(
            float(first @ first), half, float(rest @ rest), batch - half, float(whole @ whole)
        )


def test_a_finite_training_set_drawn_without_replacement_is_corrected() -> None:
    # B_simple ≈ 2,000 over 4,000 samples: without replacement a batch varies less, by
    # tr(Σ) / N, and the uncorrected estimate reads B / (1 − B / N) ≈ 2x the truth.
    per = _per_sample_gradients(400, 11.0, 4000, seed=0)
    truth = _b_simple(per)
    corrected = NoiseScale(population=len(per))
    plain = NoiseScale()
    _feed_without_replacement(per, 250, 3000, seed=1, estimator=corrected)
    _feed_without_replacement(per, 250, 3000, seed=1, estimator=plain)
    assert corrected.value == pytest.approx(truth, rel=0.20)
    assert plain.value > 1.5 * truth
    interval = corrected.interval
    assert interval is not None and interval[0] < truth < interval[1]


def test_the_trainer_recovers_a_closed_form_noise_scale_within_20_percent() -> None:
    # Linear regression at a fixed weight (SGD at lr 1e-12): the per-sample gradients of
    # (x·w − y)² are known, so B_simple over the training set is exact. Measured by the
    # trainer itself (at every step here, so that the test does not hang on timing).
    import bsopt

    d, n, noise = 400, 8192, 4.3
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(n + 64, d, generator=gen)
    y = math.sqrt(noise) * torch.randn(n + 64, 1, generator=gen)
    w = torch.randn(d, generator=gen)
    w = w / w.norm()
    xt, yt = x[:n].double(), y[:n, 0].double()
    per = 2 * (xt @ w.double() - yt)[:, None] * xt
    truth = _b_simple(per.numpy())
    assert truth == pytest.approx(1600, rel=0.2)  # the construction is as designed
    model = torch.nn.Linear(d, 1, bias=False)
    with torch.no_grad():
        model.weight.copy_(w[None, :])
    result = bsopt.training.train(
        model,
        bsopt.TensorData(x[:n], y[:n], x[n:], y[n:]),
        bsopt.Params(batch_size=200, lr=1e-12, optimizer="sgd"),
        budget=bsopt.Budget(400 * 200, "samples", evals=1),
        metric=lambda out, y: float(((out - y) ** 2).mean()),  # no scikit-learn to import
        direction="minimize",
        device="cpu",
        noise_every=1,
    )
    summary = result.noise_summary
    assert summary["noise_scale_measurements"] >= 400  # every step (the grid may cut one)
    assert summary["noise_scale"] == pytest.approx(truth, rel=0.20)
    low, high = summary["noise_scale_interval"]
    assert low < truth < high


def test_the_budget_keeps_measuring_within_its_share_of_the_time() -> None:
    # Plain steps take 1 s per 100 samples; a measured one takes 1.5 s (0.5 s more). The
    # first step takes 30 s (one-off costs): it must not make measurements look cheap.
    budget = MeasureBudget(0.05)
    assert not budget.due()  # the first step is never measured
    budget.record(30.0, 100, False)
    assert not budget.due()  # nor the second: no plain step to compare with yet
    measured = 0
    for _ in range(2000):
        due = budget.due()
        budget.record(1.5 if due else 1.0, 100, due)
        measured += due
    assert budget.cost == pytest.approx(0.5 * measured)
    assert budget.cost <= 0.05 * budget.total
    # 0.5 m <= 5% of (2030 + 0.5 m) s: m <= 213, about one step in 9.5.
    assert 195 <= measured <= 213


def test_the_interval_is_at_the_analysis_level() -> None:
    from bsopt.analysis._stats import CONFIDENCE

    assert NoiseScale().confidence == CONFIDENCE == 0.95


def test_bad_budget_and_population() -> None:
    with pytest.raises(ValueError, match=r"share must be in \(0, 1\] .* but got 0"):
        MeasureBudget(0)
    with pytest.raises(ValueError, match=r"population must be an integer >= 2 .* but got 1"):
        NoiseScale(population=1)
    with pytest.raises(ValueError, match="Need two non-empty parts, got 0 and 8"):
        NoiseScale().update_split(1.0, 0, 1.0, 8, 1.0)


def test_on_by_default_at_a_fixed_rhythm() -> None:
    # On by default, at the same steps in every run (a trial repeats exactly); None opts in
    # to the clock-driven budget.
    from bsopt.training import TrainConfig

    config = TrainConfig()
    assert config.measure_noise_scale and config.noise_every == 24
    assert TrainConfig(noise_every=None).noise_every is None
    with pytest.raises(ValueError, match="noise_every must be an integer >= 1, but got 0"):
        TrainConfig(noise_every=0)
