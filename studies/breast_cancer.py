"""Your own hyperparameters, loss and metric: an MLP on scikit-learn's breast cancer data.

    python studies/breast_cancer.py --trials 30          # or: bsopt run studies/breast_cancer.py

What it shows beyond ``studies/digits.py``:

* ``suggest=`` searches the network's width and depth (and, conditionally, a second width)
  jointly with batch size, learning rate, dropout and weight decay; the values reach
  ``build_model`` as ``params.extra`` and are stored as ordinary trial parameters;
* ``loss=`` trains with a class-weighted cross-entropy (the classes are 37% / 63%);
* ``metric="roc_auc"`` ranks trials by validation ROC-AUC, computed by scikit-learn on the
  whole validation split.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import optuna
from sklearn.datasets import load_breast_cancer
import torch
from torch import nn
import torch.nn.functional as F

import bsopt


def load(seed: int = 0) -> bsopt.TensorData:
    bunch = load_breast_cancer()
    return bsopt.from_arrays(
        bunch.data, bunch.target.astype(np.int64), seed=seed, name="breast_cancer"
    )


def suggest(trial: optuna.Trial) -> dict[str, Any]:
    depth = trial.suggest_int("depth", 1, 3)
    own: dict[str, Any] = {"depth": depth, "width": trial.suggest_int("width", 8, 128, log=True)}
    if depth > 1:  # a conditional parameter: only deeper networks taper
        own["taper"] = trial.suggest_float("taper", 0.25, 1.0)
    return own


def build_model(params: bsopt.Params) -> nn.Module:
    width, depth = params.extra["width"], params.extra["depth"]
    layers: list[nn.Module] = []
    features = 30
    for i in range(depth):
        out = max(4, round(width * params.extra.get("taper", 1.0) ** i))
        layers += [nn.Linear(features, out), nn.ReLU(), nn.Dropout(params.dropout)]
        features = out
    layers.append(nn.Linear(features, 2))
    return nn.Sequential(*layers)


def weighted_loss(data: bsopt.TensorData) -> bsopt.training.LossFn:
    # Inverse class frequency, so the minority class weighs as much as the majority.
    counts = torch.bincount(data.y_train, minlength=2).float()
    weights = counts.sum() / (2 * counts)

    def loss(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(output, target, weight=weights.to(output.device))

    return loss


def build_objective(*, seed: int = 0) -> bsopt.Objective:
    data = load(seed)  # 455 training and 114 validation samples, 30 features
    return bsopt.make_objective(
        build_model,
        data,
        space=bsopt.SearchSpace(
            batch_size=(8, 128), lr=(1e-4, 3e-2), dropout=(0.0, 0.5), weight_decay=(1e-5, 1e-1)
        ),
        suggest=suggest,
        loss=weighted_loss(data),
        metric="roc_auc",
        budget=bsopt.Budget(20, "epochs", evals=10),
        seed=seed,
    )


if __name__ == "__main__":
    raise SystemExit(bsopt.cli.run_script(build_objective, name="breast_cancer"))
