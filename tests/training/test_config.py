from __future__ import annotations

from typing import Any

import pytest
import torch

import bsopt
from bsopt import Budget, Params, TensorData
from bsopt.training import TrainConfig, train


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"budget": 10}, r"budget must be a bsopt.Budget, but got 10. Example: budget="),
        ({"loss": "mse"}, r"loss must be a callable or None, but got 'mse'"),
        ({"metric": "auc"}, r"metric='auc' is not a known metric. Use one of accuracy, loss"),
        ({"seed": 1.5}, r"seed must be an integer, but got 1.5"),
        ({"amp": "fp8"}, r"amp must be one of auto, bf16, fp16, off .* but got 'fp8'"),
        ({"device": "tpu"}, r"device='tpu' is not a device torch knows"),
        ({"micro_batch_size": 0}, r"micro_batch_size must be an integer >= 1 .* but got 0"),
        ({"clip_grad_norm": -1.0}, r"clip_grad_norm must be a positive finite .* got -1.0"),
        ({"divergence_factor": 1}, r"divergence_factor must be a number above 1, but got 1"),
        ({"noise_every": 0}, r"noise_every must be an integer >= 1, but got 0"),
    ],
)
def test_bad_options_are_refused_on_construction(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        TrainConfig(**options)


def test_of_changes_options_and_refuses_unknown_ones() -> None:
    base = TrainConfig(amp="off", seed=3)
    assert TrainConfig.of(base) is base
    assert TrainConfig.of(base, seed=4) == TrainConfig(amp="off", seed=4)
    with pytest.raises(TypeError, match=r"Unknown training option\(s\) devices\. The options"):
        TrainConfig.of(base, devices=2)


def test_train_takes_a_config_and_keyword_options_over_it(tiny_data: TensorData) -> None:
    def run(*args: Any, **options: Any) -> bsopt.training.TrainResult:
        torch.manual_seed(0)
        model = bsopt.training.mlp(tiny_data.n_features, tiny_data.n_classes or 1, hidden=(8,))
        return train(model, tiny_data, Params(batch_size=16, lr=0.05), *args, **options)

    config = TrainConfig(budget=Budget(1, evals=2), device="cpu", seed=1)
    by_config = run(config)
    by_keywords = run(budget=Budget(1, evals=2), device="cpu", seed=1)
    assert by_config.history == by_keywords.history
    # budget=None means no budget given: the config's, or the default of ten epochs.
    assert run(config, budget=None).samples_seen == tiny_data.n_train
    assert run(budget=None, device="cpu").samples_seen == 10 * tiny_data.n_train
    assert run(config, metric="loss").metric == "loss"
