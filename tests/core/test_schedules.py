from __future__ import annotations

import math

import pytest
import torch

import bsopt
from bsopt import Budget, Params
from bsopt.core._schedules import batch_size_at, lr_factor
from bsopt.training import train


@pytest.mark.parametrize(
    ("progress", "schedule", "warmup", "expected"),
    [
        (0.05, "constant", 0.1, 0.5),  # halfway through warm-up
        (0.5, "constant", 0.1, 1.0),
        (0.0, "cosine", 0.0, 1.0),
        (0.5, "cosine", 0.0, 0.5),
        (1.0, "cosine", 0.0, 0.0),
        (0.55, "cosine", 0.1, 0.5),  # cosine runs over the 90% after warm-up
        (0.49, "step", 0.0, 1.0),
        (0.5, "step", 0.0, 0.1),
        (0.8, "step", 0.0, 0.01),
        (0.0, "onecycle", 0.0, 1 / 25),
        (0.3, "onecycle", 0.0, 1.0),
        (0.15, "onecycle", 0.0, 1 / 25 + (1 - 1 / 25) * 0.5),
        (1.0, "onecycle", 0.0, 1e-4),
    ],
)
def test_lr_factor_known_values(
    progress: float, schedule: str, warmup: float, expected: float
) -> None:
    assert lr_factor(progress, schedule, warmup) == pytest.approx(expected, abs=1e-12)


def test_grow_doubles_at_half_and_three_quarters_on_the_grid() -> None:
    sizes = [batch_size_at(i, 8, schedule="grow", final=64) for i in range(8)]
    assert sizes == [16, 16, 16, 16, 32, 32, 64, 64]


def test_ramp_reaches_the_sampled_batch_at_half_the_budget() -> None:
    sizes = [batch_size_at(i, 4, schedule="ramp", final=64) for i in range(4)]
    assert sizes == [8, 36, 64, 64]


def test_adaptive_follows_the_noise_scale_within_bounds() -> None:
    kw = {"schedule": "adaptive", "final": 256, "minimum": 16}
    assert batch_size_at(0, 4, noise_scale=math.nan, **kw) == 16  # type: ignore[arg-type]
    assert batch_size_at(1, 4, noise_scale=87.4, **kw) == 87  # type: ignore[arg-type]
    assert batch_size_at(2, 4, noise_scale=3000.0, **kw) == 256  # type: ignore[arg-type]
    assert batch_size_at(2, 4, noise_scale=2.0, **kw) == 16  # type: ignore[arg-type]


def test_bad_schedule_names() -> None:
    with pytest.raises(ValueError, match=r"lr_schedule must be one of constant, cosine, step"):
        lr_factor(0.5, "linear")
    with pytest.raises(ValueError, match=r"warmup must be a fraction in \[0, 1\), but got 1.0"):
        lr_factor(0.5, "constant", 1.0)
    with pytest.raises(ValueError, match=r"batch_schedule must be one of constant, grow"):
        batch_size_at(0, 4, schedule="double", final=8)


def test_trainer_changes_the_batch_only_at_evaluation_points(
    tiny_data: bsopt.TensorData,
) -> None:
    torch.manual_seed(0)
    model = bsopt.training.mlp(8, 3, hidden=(16,))
    params = Params(batch_size=64, lr=1e-2, batch_schedule="grow", batch_min=8)
    result = train(model, tiny_data, params, budget=Budget(4, evals=8), device="cpu")
    assert result.batch_history == [16, 16, 16, 16, 32, 32, 64, 64]
    assert [s for s, _ in result.history] == [160 * k for k in range(1, 9)]
    # 4 intervals of 160 at 16 (10 steps each), 2 at 32 (5 each), 2 at 64 (3 each: 64+64+32)
    assert result.optimizer_steps == 40 + 10 + 6


def test_lr_schedule_reaches_the_optimizer(tiny_data: bsopt.TensorData) -> None:
    def run(schedule: str) -> list[tuple[int, float]]:
        torch.manual_seed(0)
        model = bsopt.training.mlp(8, 3, hidden=(16,))
        params = Params(batch_size=16, lr=5e-2, lr_schedule=schedule)
        return train(
            model,
            tiny_data,
            params,
            budget=Budget(3, evals=3),
            seed=1,
            device="cpu",
            metric="loss",
        ).history

    constant, cosine = run("constant"), run("cosine")
    assert constant[0] != cosine[0]


def test_adaptive_schedule_measures_the_noise_scale(tiny_data: bsopt.TensorData) -> None:
    torch.manual_seed(0)
    params = Params(batch_size=128, lr=1e-2, batch_schedule="adaptive", batch_min=8)
    result = train(
        bsopt.training.mlp(8, 3, hidden=(16,)),
        tiny_data,
        params,
        budget=Budget(4, evals=4),
        device="cpu",
        noise_every=1,
    )
    assert len(result.noise_history) == 4
    # Once the model converges the signal can vanish: then the estimate is NaN ("not enough
    # signal"), never a negative or made-up number.
    assert math.isfinite(result.noise_history[0]) or math.isfinite(result.noise_history[1])
    assert all(math.isnan(v) or v > 0 for v in result.noise_history)
    assert result.batch_history[0] == 8  # no estimate yet: start at the minimum
    assert all(8 <= b <= 128 for b in result.batch_history)
