from __future__ import annotations

from collections.abc import Callable
import copy
import math
import time
from typing import Any

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

import bsopt
from bsopt import Budget, DatasetData, Params, TensorData
from bsopt.training import TrainingData, TrainResult, train
from bsopt.training._distributed import start_group


def _model(data: TensorData, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return bsopt.training.mlp(data.n_features, data.n_classes or 1, hidden=(16,))


def _cpu_train(
    data: TrainingData, params: Params, *, like: TensorData | None = None, **options: Any
) -> TrainResult:
    """One run on the CPU of a fresh model (seed 0) for ``data``, or for ``like``."""
    model = _model(like or data)  # type: ignore[arg-type]
    return train(model, data, params, device="cpu", **options)


def _steps_reported(data: TensorData, batch_size: int, budget: Budget) -> list[int]:
    steps: list[int] = []

    def report(step: int, value: float) -> bool:
        steps.append(step)
        return False

    _cpu_train(data, Params(batch_size=batch_size, lr=1e-2), budget=budget, report=report)
    return steps


def test_small_and_large_batches_report_at_identical_steps(tiny_data: TensorData) -> None:
    budget = Budget(3, evals=5)
    small = _steps_reported(tiny_data, 16, budget)
    large = _steps_reported(tiny_data, 256, budget)
    assert small == large == list(budget.grid(tiny_data.n_train).points)


def test_batches_are_split_at_grid_points() -> None:
    # 100 samples, batch 32, evaluation every 50: 32 | 18 (split) | 14 (rest), 32 | 4 (split).
    x = torch.randn(120, 4)
    y = torch.arange(120) % 2
    data = TensorData(x[:100], y[:100], x[100:], y[100:])
    result = train(
        nn.Linear(4, 2),
        data,
        Params(batch_size=32, lr=0.1),
        budget=Budget(100, "samples", evals=2),
        device="cpu",
    )
    assert result.samples_seen == 100
    assert result.optimizer_steps == 5
    assert [s for s, _ in result.history] == [50, 100]


def test_result_records_what_the_run_cost(tiny_data: TensorData) -> None:
    result = _cpu_train(tiny_data, Params(batch_size=32, lr=1e-2), budget=Budget(2, evals=2))
    assert result.stop_reason == "completed"
    assert result.samples_seen == 2 * tiny_data.n_train
    assert result.epochs == pytest.approx(2.0)
    assert result.optimizer_steps == 2 * math.ceil(tiny_data.n_train / 32)
    assert result.train_seconds > 0 and result.samples_per_second > 0
    assert result.wall_seconds >= result.train_seconds + result.eval_seconds
    assert result.device == "cpu" and result.amp == "off"
    assert result.peak_memory_mb > 0
    assert 0.0 <= result.value <= 1.0
    assert result.value == result.history[-1][1]


def test_training_learns(tiny_data: TensorData) -> None:
    result = _cpu_train(tiny_data, Params(batch_size=16, lr=1e-2), budget=Budget(10, evals=2))
    assert result.history[-1][1] > 0.7  # chance is 1/3 on three balanced classes


def test_same_seed_gives_the_same_run(tiny_data: TensorData) -> None:
    runs = [
        _cpu_train(
            tiny_data, Params(batch_size=32, lr=1e-2), seed=7, budget=Budget(2, evals=2)
        ).history
        for _ in range(2)
    ]
    assert runs[0] == runs[1]


def test_accumulated_micro_batches_give_the_full_batch_gradient(tiny_data: TensorData) -> None:
    # One SGD step (no momentum) over one batch of 64: the weights after it depend only on
    # the gradient, so full-batch and 4 x 16 accumulation must agree to float32 rounding.
    model = _model(tiny_data)
    twin = copy.deepcopy(model)
    params = Params(batch_size=64, lr=0.5, optimizer="sgd", momentum=0.0)
    budget = Budget(64, "samples", evals=1)
    full = train(model, tiny_data, params, budget=budget, device="cpu", seed=3)
    acc = train(twin, tiny_data, params, budget=budget, device="cpu", seed=3, micro_batch_size=16)
    assert (full.accumulation_steps, acc.accumulation_steps) == (1, 4)
    assert acc.micro_batch_size == 16 and acc.optimizer_steps == 1
    for a, b in zip(model.parameters(), twin.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)


def test_report_returning_true_stops_as_pruned(tiny_data: TensorData) -> None:
    result = _cpu_train(
        tiny_data,
        Params(batch_size=32, lr=1e-2),
        budget=Budget(4, evals=4),
        report=lambda step, value: step >= 640,
    )
    assert result.stop_reason == "pruned"
    assert [s for s, _ in result.history] == [320, 640]
    assert result.samples_seen == 640


def test_nan_loss_stops_at_once_as_diverged(tiny_data: TensorData) -> None:
    poisoned = TensorData(
        tiny_data.x_train.clone(), tiny_data.y_train, tiny_data.x_val, tiny_data.y_val
    )
    poisoned.x_train[5, 0] = float("nan")
    result = _cpu_train(poisoned, Params(batch_size=320, lr=1e-2), budget=Budget(4, evals=4))
    assert result.stop_reason == "diverged"
    assert "non-finite training loss" in result.stop_detail
    assert result.optimizer_steps == 1 and result.history == []


def test_exploding_loss_stops_as_diverged(tiny_data: TensorData) -> None:
    params = Params(batch_size=8, lr=50.0, optimizer="sgd", momentum=0.9)
    result = _cpu_train(tiny_data, params, budget=Budget(20, evals=20), divergence_factor=2.0)
    assert result.stop_reason.startswith("diverged")
    assert result.samples_seen < 20 * tiny_data.n_train


def test_time_budget_stops_within_one_interval(tiny_data: TensorData) -> None:
    budget = Budget(0.6, "seconds", evals=3)
    start = time.perf_counter()
    result = train(
        _model(tiny_data), tiny_data, Params(batch_size=8, lr=1e-2), budget=budget, device="cpu"
    )
    assert [s for s, _ in result.history] == [200, 400, 600]
    assert 0.6 <= result.train_seconds < 0.6 + 0.2  # limit + one evaluation interval
    assert time.perf_counter() - start < 5


def test_dataset_path_trains_on_the_same_grid(tiny_data: TensorData) -> None:
    data = DatasetData(
        TensorDataset(tiny_data.x_train, tiny_data.y_train),
        TensorDataset(tiny_data.x_val, tiny_data.y_val),
        n_classes=3,
        num_workers=0,
    )
    result = _cpu_train(
        data, Params(batch_size=64, lr=1e-2), like=tiny_data, budget=Budget(2, evals=4)
    )
    assert [s for s, _ in result.history] == [160, 320, 480, 640]
    assert result.samples_seen == 640


def test_regression_with_loss_metric() -> None:
    torch.manual_seed(0)
    x = torch.randn(300, 3)
    y = x @ torch.tensor([1.0, -2.0, 0.5])
    data = TensorData(x[:240], y[:240], x[240:], y[240:])
    result = train(
        nn.Linear(3, 1),
        data,
        Params(batch_size=16, lr=0.05),
        metric="loss",
        budget=Budget(20, evals=2),
        device="cpu",
    )
    assert result.history[-1][1] < 0.05 * result.history[0][1] + 1e-3


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"params": Params(batch_size=1000, lr=0.1)},
            r"batch_size=1000 is larger than the training set \(320 samples\)",
        ),
        ({"metric": "f1"}, r"metric='f1' is not a known metric. Use one of accuracy, loss"),
        ({"micro_batch_size": 0}, r"micro_batch_size must be an integer >= 1 .* but got 0"),
        ({"amp": "fp8"}, r"amp must be one of auto, bf16, fp16, off .* but got 'fp8'"),
        ({"divergence_factor": 1.0}, r"divergence_factor must be a number above 1, but got 1.0"),
    ],
)
def test_bad_training_arguments(
    tiny_data: TensorData, change: dict[str, object], message: str
) -> None:
    kwargs: dict[str, object] = {
        "params": Params(batch_size=8, lr=0.1),
        "device": "cpu",
        "budget": Budget(1, evals=1),
    }
    kwargs.update(change)
    with pytest.raises(ValueError, match=message):
        train(_model(tiny_data), tiny_data, **kwargs)  # type: ignore[arg-type]


def test_accuracy_on_regression_targets_is_refused() -> None:
    x = torch.randn(50, 2)
    data = TensorData(x[:40], x[:40, 0], x[40:], x[40:, 0])
    with pytest.raises(ValueError, match=r"metric='accuracy' needs class labels"):
        train(nn.Linear(2, 1), data, Params(batch_size=8, lr=0.1), device="cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only error")
def test_cuda_asked_for_without_cuda(tiny_data: TensorData) -> None:
    with pytest.raises(ValueError, match=r"device='cuda' was asked for, but CUDA is not"):
        train(_model(tiny_data), tiny_data, Params(batch_size=8, lr=0.1), device="cuda")


class _NoFollower:
    """The follower of a one-rank group, which starts no other rank."""

    def prepare(self, rank: int) -> Callable[[Any], None]:
        raise RuntimeError("a one-rank group starts no other ranks")


def test_a_one_rank_group_trains_with_the_noise_scale_on() -> None:
    # One rank has no smaller batch to compare its gradient with: it measures nothing
    # instead of failing (it raised "Need 0 < b_small < b_big" before).
    data = bsopt.make_synthetic(400, n_features=8, n_classes=3, seed=0)
    torch.manual_seed(0)
    model = bsopt.training.mlp(8, 3, hidden=(16,))
    params = bsopt.Params(batch_size=32, lr=0.01)
    group = start_group(1, _NoFollower())
    try:
        result = bsopt.training.train(
            model, data, params, world=group.world, budget=bsopt.Budget(1, evals=1),
            measure_noise_scale=True, noise_every=1,
        )  # fmt: skip
    finally:
        group.close()
    assert result.world_size == 1 and result.samples_seen == data.n_train
    assert result.noise_history == [] or all(math.isnan(v) for v in result.noise_history)
