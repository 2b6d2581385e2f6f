"""Search batch size, learning rate and dropout for an MLP on scikit-learn's digits.

    python studies/digits.py --trials 30            # run, or resume, to 30 finished trials
    python studies/digits.py --trials 30 --storage postgresql+psycopg://user@host/db

This is the example to copy: it uses only bsopt's public API. Replace the data and the
model with your own; ``bsopt run studies/digits.py`` runs it the same way.
"""

from __future__ import annotations

from torch import nn

import bsopt


def build_model(params: bsopt.Params) -> nn.Module:
    # The trial's dropout is a searched hyperparameter: the model must use it.
    return nn.Sequential(
        nn.Linear(64, 128),
        nn.ReLU(),
        nn.Dropout(params.dropout),
        nn.Linear(128, 10),
    )


def build_objective(*, seed: int = 0) -> bsopt.Objective:
    data = bsopt.load_digits(seed=seed)  # 1,437 training and 360 validation images
    return bsopt.make_objective(
        build_model,
        data,
        space=bsopt.SearchSpace(batch_size=(16, 256), lr=(1e-4, 1e-1), dropout=(0.0, 0.5)),
        budget=bsopt.Budget(10, "epochs", evals=10),
        metric="accuracy",
        seed=seed,
    )


if __name__ == "__main__":
    raise SystemExit(bsopt.cli.run_script(build_objective, name="digits"))
