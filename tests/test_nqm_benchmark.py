"""The noisy quadratic model of benchmarks/bench_coupling.py: its closed form is exact."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest


def _load_nqm() -> ModuleType:
    # benchmarks/ is not a package: load the module from its file.
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "nqm.py"
    spec = importlib.util.spec_from_file_location("bench_nqm", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


nqm = _load_nqm()


def test_one_coordinate_by_hand() -> None:
    # h = 1, lr = 0.5, B = 4, two steps (8 samples): a = 0.25, noise = 0.25 / 4 = 0.0625.
    # m1 = 0.25 + 0.0625 = 0.3125; m2 = 0.25 * 0.3125 + 0.0625 = 0.140625; loss = m2 / 2.
    h = np.array([1.0])
    assert nqm.expected_loss(0.5, 4, 8, h) == pytest.approx(0.0703125, rel=1e-12)


def test_closed_form_matches_the_recursion() -> None:
    h = nqm.curvatures(50)
    lr, batch, samples = 0.7, 16, 16 * 300
    m = np.ones_like(h)
    for _ in range(samples // batch):
        m = (1 - lr * h) ** 2 * m + lr * lr * h / batch
    assert nqm.expected_loss(lr, batch, samples, h) == pytest.approx(0.5 * np.sum(h * m), rel=1e-9)


def test_divergence_is_a_large_finite_value() -> None:
    h = nqm.curvatures(10)  # max h = 1: lr >= 2 makes |1 - lr h| >= 1
    assert nqm.expected_loss(2.0, 8, 800, h) == float("inf")
    assert nqm.log_loss(2.5, 8, 800, h) == nqm.DIVERGED
    assert nqm.log_loss(1.9, 8, 800, h) < nqm.DIVERGED


def test_best_lr_scales_linearly_below_the_critical_batch() -> None:
    h = nqm.curvatures(1000)
    lrs = np.logspace(-3, 1, 401)
    _, per_batch = nqm.grid_optimum([8, 16, 32, 4096], lrs, 2**18, h)
    ratios = [per_batch[b][0] / b for b in (8, 16, 32)]
    assert max(ratios) / min(ratios) < 1.05  # lr / B constant: linear scaling
    assert per_batch[4096][0] < 2.0  # capped by the stability limit 2 / max h
    assert per_batch[4096][0] / 4096 < 0.2 * ratios[0]  # far below linear extrapolation
