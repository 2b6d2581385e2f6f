"""The noisy quadratic model (NQM): a problem whose ideal lr-batch relationship is known.

Zhang et al. (2019, "Which algorithmic choices matter at which batch sizes? Insights from a
noisy quadratic model") model training as SGD on ``L(θ) = ½ Σ h_i θ_i²`` whose stochastic
gradient at batch size ``B`` has noise covariance ``H / B``. Each coordinate is independent,
so its second moment follows the exact recursion

    E[θ_i²]_{t+1} = (1 − lr·h_i)² E[θ_i²]_t + lr²·h_i / B,

a geometric series with ratio ``a_i = (1 − lr·h_i)²``: after ``T`` steps

    E[θ_i²]_T = a_i^T m_0 + (lr² h_i / B) (1 − a_i^T) / (1 − a_i).

The expected loss is ``½ Σ h_i E[θ_i²]_T``. With a fixed sample budget ``S`` a trial takes
``T = S // B`` steps, so small batches take many noisy steps and large batches few clean
ones: below a critical batch the best lr grows linearly with ``B`` (the noise floor depends
on lr / B only); above it the stability limit ``lr < 2 / max h`` caps the lr and a larger
batch only wastes samples.

Not part of bsopt: a known-answer problem for ``benchmarks/bench_coupling.py``.
"""

from __future__ import annotations

import numpy as np

# log10 loss returned for a run whose second moments grow without bound.
DIVERGED = 10.0


def curvatures(d: int = 1000) -> np.ndarray:
    """``h_i = 1 / i`` for ``i = 1..d``: the spectrum used by Zhang et al."""
    return 1.0 / np.arange(1, d + 1, dtype=np.float64)


def expected_loss(
    lr: float, batch_size: int, samples: int, h: np.ndarray, *, m0: float = 1.0
) -> float:
    """The exact expected loss after ``samples // batch_size`` SGD steps (inf if diverged)."""
    steps = samples // batch_size
    a = (1.0 - lr * h) ** 2
    if np.any(a >= 1.0):
        # |1 − lr·h| ≥ 1 for some coordinate: its second moment never shrinks (the noise
        # term keeps adding), so the loss grows without bound as T grows.
        return float("inf")
    a_t = a**steps
    noise = lr * lr * h / batch_size
    m = a_t * m0 + noise * (1.0 - a_t) / (1.0 - a)
    return float(0.5 * np.sum(h * m))


def log_loss(lr: float, batch_size: int, samples: int, h: np.ndarray) -> float:
    """``log10`` of :func:`expected_loss`, with divergence mapped to :data:`DIVERGED`."""
    loss = expected_loss(lr, batch_size, samples, h)
    if not np.isfinite(loss) or loss <= 0:
        return DIVERGED
    return min(float(np.log10(loss)), DIVERGED)


def grid_optimum(
    batch_sizes: list[int], lrs: np.ndarray, samples: int, h: np.ndarray
) -> tuple[float, dict[int, tuple[float, float]]]:
    """The best log10 loss over a grid, and per batch size its best ``(lr, log10 loss)``."""
    per_batch: dict[int, tuple[float, float]] = {}
    for b in batch_sizes:
        values = [log_loss(float(lr), b, samples, h) for lr in lrs]
        i = int(np.argmin(values))
        per_batch[b] = (float(lrs[i]), values[i])
    best = min(v for _, v in per_batch.values())
    return best, per_batch


def target_fraction(
    batch_sizes: list[int],
    lr_range: tuple[float, float],
    threshold: float,
    samples: int,
    h: np.ndarray,
    *,
    alpha: float = 0.0,
    reference: int = 1,
    points: int = 2001,
) -> float:
    """The share of the search box (batch uniform over ``batch_sizes``, lr or base lr
    log-uniform over ``lr_range``) whose log10 loss is at most ``threshold``.

    It is the chance that one random-search trial reaches the target. With the lr coupled
    as ``base · (B / reference)^alpha``, each batch's good band of log lrs is only shifted,
    so the share is the same as uncoupled unless a band is pushed past the range's ends.
    """
    grid = np.logspace(np.log10(lr_range[0]), np.log10(lr_range[1]), points)
    hits = 0
    for b in batch_sizes:
        scale = (b / reference) ** alpha
        hits += sum(log_loss(float(x) * scale, b, samples, h) <= threshold for x in grid)
    return hits / (points * len(batch_sizes))


def critical_batch(samples: int, h: np.ndarray, *, lrs: np.ndarray | None = None) -> float:
    """The NQM's critical batch size for the best lr: where the linear regime's best lr
    (``lr* = c · B``, measured at small batches) reaches the flat regime's (the best lr at
    very large batches, capped by stability). The two-regime fit should find about this."""
    grid = np.logspace(-5, np.log10(2.0 / float(h.max())), 801) if lrs is None else lrs
    small = [2, 4, 8]
    large = [2**15, 2**16]
    _, per_batch = grid_optimum(small + large, grid, samples, h)
    slope = float(np.median([per_batch[b][0] / b for b in small]))
    cap = max(per_batch[b][0] for b in large)
    return cap / slope


def random_search(
    batch_sizes: list[int],
    trials_per_batch: int,
    lr_range: tuple[float, float],
    samples: int,
    h: np.ndarray,
    *,
    seed: int = 0,
) -> list[tuple[int, float, float]]:
    """``(batch size, lr, log10 loss)`` of a seeded random search: ``trials_per_batch``
    log-uniform learning rates at each batch size."""
    rng = np.random.default_rng(seed)
    out = []
    for b in batch_sizes:
        for lr in np.exp(rng.uniform(np.log(lr_range[0]), np.log(lr_range[1]), trials_per_batch)):
            out.append((b, float(lr), log_loss(float(lr), b, samples, h)))
    return out
