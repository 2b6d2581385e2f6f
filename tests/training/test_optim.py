from __future__ import annotations

import pytest
import torch
from torch import nn

import bsopt
from bsopt import Params
from bsopt.training._optim import LARS, make_optimizer, trust_ratio


def test_trust_ratio_hand_computation() -> None:
    # ‖w‖ = 5, ‖g‖ = 1, λ = 0.01, η = 0.001: 0.001 * 5 / (1 + 0.05)
    assert trust_ratio(5.0, 1.0, weight_decay=0.01, coefficient=0.001) == pytest.approx(
        0.005 / 1.05, rel=1e-6
    )
    assert trust_ratio(0.0, 1.0, weight_decay=0.0, coefficient=0.001) == 1.0


def test_lars_step_matches_the_hand_computation() -> None:
    weight = nn.Parameter(torch.tensor([[3.0, 4.0]]))
    bias = nn.Parameter(torch.tensor([1.0]))
    weight.grad = torch.tensor([[0.6, 0.8]])
    bias.grad = torch.tensor([0.5])
    LARS([weight, bias], lr=2.0, momentum=0.0, weight_decay=0.01).step()
    ratio = 0.001 * 5 / (1 + 0.01 * 5)
    expected = torch.tensor([[3.0, 4.0]]) - 2.0 * ratio * (
        torch.tensor([[0.6, 0.8]]) + 0.01 * torch.tensor([[3.0, 4.0]])
    )
    torch.testing.assert_close(weight.detach(), expected)
    # One-dimensional tensors take a plain SGD step.
    torch.testing.assert_close(bias.detach(), torch.tensor([1.0 - 2.0 * 0.5]))


def test_lars_momentum_accumulates() -> None:
    w = nn.Parameter(torch.tensor([[1.0, 0.0]]))
    opt = LARS([w], lr=1.0, momentum=0.5, trust_coefficient=1.0)
    for _ in range(2):
        w.grad = torch.tensor([[0.0, 1.0]])
        opt.step()
    # Step 1: ratio ‖w‖/‖g‖ = 1, moves by 1. Step 2: ratio √2, buffer 0.5·1 + √2.
    assert float(w.detach()[0, 1]) == pytest.approx(-(1 + 0.5 + 2**0.5), rel=1e-6)


def test_make_optimizer_names() -> None:
    model = nn.Linear(2, 2)
    assert isinstance(make_optimizer(model, Params(batch_size=8, lr=0.1)), torch.optim.AdamW)
    sgd = make_optimizer(model, Params(batch_size=8, lr=0.1, optimizer="sgd"))
    assert isinstance(sgd, torch.optim.SGD) and sgd.defaults["nesterov"]
    assert isinstance(make_optimizer(model, Params(batch_size=8, lr=1.0, optimizer="lars")), LARS)
    with pytest.raises(ValueError, match=r"lr must be positive"):
        LARS(model.parameters(), lr=0.0)


def test_build_optimizer_takes_a_name_or_a_function_with_groups() -> None:
    import warnings

    from bsopt.training._optim import build_optimizer, optimizer_name

    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.LayerNorm(4))
    params = bsopt.Params(32, 0.5)
    assert isinstance(build_optimizer(model, params, "sgd"), torch.optim.SGD)
    assert isinstance(build_optimizer(model, params), torch.optim.AdamW)  # params.optimizer

    def lars_groups(p: bsopt.Params, m: torch.nn.Module) -> torch.optim.Optimizer:
        weights = [w for w in m.parameters() if w.ndim > 1]
        others = [w for w in m.parameters() if w.ndim <= 1]
        return bsopt.training.LARS(
            [{"params": weights, "weight_decay": 1e-4}, {"params": others}], p.lr
        )

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        built = build_optimizer(model, params, lars_groups)
    assert [g["weight_decay"] for g in built.param_groups] == [1e-4, 0.0]
    assert optimizer_name(lars_groups, params) == "custom:lars_groups"
    with pytest.warns(UserWarning, match=r"no parameter group at params.lr=0.5"):
        build_optimizer(model, params, lambda p, m: torch.optim.SGD(m.parameters(), lr=0.1))
