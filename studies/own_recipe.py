"""Your own training recipe: a 1-D CNN forecasting a generated time series from windows.

    python studies/own_recipe.py --trials 30          # or: bsopt run studies/own_recipe.py

What it shows beyond ``studies/breast_cancer.py``:

* ``optimizer=grouped_adamw`` builds AdamW with two parameter groups (weight decay on the
  convolution and linear weights, none on norms and biases) and a searched ``beta2`` read
  from ``params.extra``; bsopt's warm-up and cosine schedule scale both groups;
* ``loss=huber`` takes ``(output, target, params)`` and reads the searched Huber ``delta``;
* the model returns ``(forecast, aux)``; ``output=0`` tells the named metric ``"mae"`` to read
  the forecast, while the loss sees both (it adds a small penalty on ``aux``);
* one window per item (:class:`bsopt.TensorData` of windows), so samples, epochs and the
  effective batch size count the rows the model trains on.
"""

from __future__ import annotations

from typing import Any

import optuna
import torch
from torch import nn
import torch.nn.functional as F

import bsopt

WIDTH = 32  # time steps per window


def load(seed: int = 0, n: int = 3000) -> bsopt.TensorData:
    """Windows of a noisy sum of two seasonal waves; the target is the next value.

    The last fifth of the series is the validation split (no window straddles the two)."""
    gen = torch.Generator().manual_seed(seed)
    t = torch.arange(n, dtype=torch.float32)
    series = torch.sin(t / 11) + 0.5 * torch.sin(t / 4) + 0.2 * torch.randn(n, generator=gen)
    windows = series.unfold(0, WIDTH + 1, 1)  # (n - WIDTH, WIDTH + 1), views of the series
    x, y = windows[:, :WIDTH].unsqueeze(1).contiguous(), windows[:, WIDTH].contiguous()
    cut = int(0.8 * len(x))
    return bsopt.TensorData(
        x[: cut - WIDTH], y[: cut - WIDTH], x[cut:], y[cut:], name="seasonal_windows"
    )


class Forecaster(nn.Module):
    """Two dilated convolutions with BatchNorm, pooled into one forecast."""

    def __init__(self, channels: int, dropout: float) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv1d(1, channels, 5, padding=2),
            nn.BatchNorm1d(channels),
            nn.ReLU(),
            nn.Conv1d(channels, channels, 5, padding=4, dilation=2),
            nn.BatchNorm1d(channels),
            nn.ReLU(),
            nn.Dropout(dropout),
        )
        self.head = nn.Linear(2 * channels, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.body(x)
        pooled = torch.cat([h.mean(-1), h[..., -1]], dim=-1)
        return self.head(pooled).squeeze(-1), h.pow(2).mean(dim=(1, 2))


def suggest(trial: optuna.Trial) -> dict[str, Any]:
    return {
        "channels": trial.suggest_int("channels", 8, 32, log=True),
        "delta": trial.suggest_float("delta", 0.05, 2.0, log=True),
        "beta2": trial.suggest_float("beta2", 0.9, 0.999),
    }


def build_model(params: bsopt.Params) -> nn.Module:
    return Forecaster(params.extra["channels"], params.dropout)


def grouped_adamw(params: bsopt.Params, model: nn.Module) -> torch.optim.Optimizer:
    """AdamW without weight decay on norms and biases (the one-dimensional tensors)."""
    weights = [p for p in model.parameters() if p.ndim > 1]
    others = [p for p in model.parameters() if p.ndim <= 1]
    return torch.optim.AdamW(
        [
            {"params": weights, "weight_decay": params.weight_decay},
            {"params": others, "weight_decay": 0.0},
        ],
        lr=params.lr,
        betas=(0.9, params.extra["beta2"]),
    )


def huber(
    output: tuple[torch.Tensor, torch.Tensor], target: torch.Tensor, params: bsopt.Params
) -> torch.Tensor:
    forecast, aux = output
    return F.huber_loss(forecast, target, delta=params.extra["delta"]) + 1e-4 * aux.mean()


def build_objective(*, seed: int = 0, budget: bsopt.Budget | None = None) -> bsopt.Objective:
    return bsopt.make_objective(
        build_model,
        load(seed),  # 2,342 training and 594 validation windows of 32 steps
        space=bsopt.SearchSpace(
            batch_size=(16, 256),
            lr=(3e-4, 3e-2),
            dropout=(0.0, 0.3),
            weight_decay=(1e-5, 1e-2),
            warmup=0.05,
            lr_schedule="cosine",
        ),
        suggest=suggest,
        optimizer=grouped_adamw,
        loss=huber,
        output=0,
        metric="mae",
        budget=budget or bsopt.Budget(8, "epochs", evals=8),
        seed=seed,
    )


if __name__ == "__main__":
    raise SystemExit(bsopt.cli.run_script(build_objective, name="own_recipe"))
