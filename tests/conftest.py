from __future__ import annotations

from pathlib import Path

import optuna
import pytest
import torch

import bsopt


@pytest.fixture(autouse=True)
def _quiet_and_single_threaded(monkeypatch: pytest.MonkeyPatch) -> None:
    # Two intra-op threads on a 2-core CI machine stall whenever anything else runs.
    torch.set_num_threads(1)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    monkeypatch.delenv("BSOPT_STORAGE", raising=False)


@pytest.fixture
def tiny_data() -> bsopt.TensorData:
    """400 samples of a 3-class problem: 320 train, 80 validation."""
    return bsopt.make_synthetic(400, n_features=8, n_classes=3, seed=0)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'bsopt.db'}"


@pytest.fixture
def tiny_objective(tiny_data: bsopt.TensorData) -> bsopt.Objective:
    return bsopt.make_objective(
        bsopt.mlp_builder(tiny_data, hidden=(16,)),
        tiny_data,
        space=bsopt.SearchSpace(batch_size=(8, 64)),
        budget=bsopt.Budget(2, evals=4),
        device="cpu",
    )
