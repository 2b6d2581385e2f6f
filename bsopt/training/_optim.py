"""Optimizers, including a large-batch option with layer-wise trust ratios (LARS-style)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import replace
import math
from typing import Any
import warnings

import torch
from torch import nn

from bsopt.core._space import Params


def trust_ratio(
    weight_norm: float,
    grad_norm: float,
    *,
    weight_decay: float,
    coefficient: float,
    eps: float = 1e-9,
) -> float:
    """LARS's local learning-rate multiplier ``η ‖w‖ / (‖g‖ + λ ‖w‖)``.

    It is 1 when either norm is zero (a fresh bias, a zero gradient), so such tensors take a
    plain step instead of none.
    """
    if weight_norm == 0 or grad_norm == 0:
        return 1.0
    return coefficient * weight_norm / (grad_norm + weight_decay * weight_norm + eps)


class LARS(torch.optim.Optimizer):
    """SGD with momentum whose step for each weight tensor is scaled by its trust ratio.

    You et al. (2017, "Large Batch Training of Convolutional Networks") keep the update of
    every layer proportional to its weights, which lets very large batches train with a
    large global rate. As is common, one-dimensional tensors (biases, normalisation scales)
    take plain SGD steps without weight decay or trust ratio.
    """

    def __init__(
        self,
        params: Iterable[torch.Tensor] | Iterable[dict[str, Any]],
        lr: float,
        *,
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        trust_coefficient: float = 0.001,
    ) -> None:
        if lr <= 0:
            raise ValueError(f"lr must be positive, but got {lr}.")
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), but got {momentum}.")
        if trust_coefficient <= 0:
            raise ValueError(f"trust_coefficient must be positive, got {trust_coefficient}.")
        defaults = {
            "lr": lr,
            "momentum": momentum,
            "weight_decay": weight_decay,
            "trust_coefficient": trust_coefficient,
        }
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure: Any = None) -> None:  # type: ignore[override]
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad
                if p.ndim > 1:
                    ratio = trust_ratio(
                        float(p.norm()),
                        float(grad.norm()),
                        weight_decay=group["weight_decay"],
                        coefficient=group["trust_coefficient"],
                    )
                    grad = (grad + group["weight_decay"] * p) * ratio
                state = self.state[p]
                if group["momentum"] > 0:
                    buf = state.get("momentum_buffer")
                    if buf is None:
                        buf = state["momentum_buffer"] = grad.clone()
                    else:
                        buf.mul_(group["momentum"]).add_(grad)
                    grad = buf
                p.add_(grad, alpha=-group["lr"])


def make_optimizer(model: nn.Module, params: Params) -> torch.optim.Optimizer:
    """The optimizer ``params.optimizer`` names, at ``params.lr``."""
    if params.optimizer == "sgd":
        return torch.optim.SGD(
            model.parameters(),
            lr=params.lr,
            momentum=params.momentum,
            nesterov=params.momentum > 0,
            weight_decay=params.weight_decay,
        )
    if params.optimizer == "lars":
        return LARS(
            model.parameters(),
            params.lr,
            momentum=params.momentum,
            weight_decay=params.weight_decay,
        )
    return torch.optim.AdamW(model.parameters(), lr=params.lr, weight_decay=params.weight_decay)


def build_optimizer(
    model: nn.Module,
    params: Params,
    choice: str | Callable[[Params, nn.Module], torch.optim.Optimizer] | None = None,
) -> torch.optim.Optimizer:
    """The optimizer of one run: ``params.optimizer`` (``choice=None``), the one ``choice``
    names, or ``choice(params, model)``, checked to be an optimizer of ``model``'s weights.

    Raises:
        ValueError: ``choice(params, model)`` returned no optimizer, or one that updates no
            weight of ``model``.
    """
    if choice is None:
        return make_optimizer(model, params)
    if isinstance(choice, str):
        return make_optimizer(model, replace(params, optimizer=choice))  # type: ignore[arg-type]
    optimizer = choice(params, model)
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise ValueError(
            f"optimizer(params, model) must return a torch.optim.Optimizer, but it returned "
            f"{type(optimizer).__name__}. Example: return torch.optim.AdamW(model.parameters(), "
            "lr=params.lr)."
        )
    own = {id(p) for p in model.parameters()}
    held = [p for group in optimizer.param_groups for p in group["params"]]
    if not any(id(p) in own for p in held):
        raise ValueError(
            "optimizer(params, model) returned an optimizer that updates none of the model's "
            "weights. Build it from the model it is given: model.parameters() or "
            "model.named_parameters()."
        )
    if not any(math.isclose(group["lr"], params.lr) for group in optimizer.param_groups):
        warnings.warn(
            f"optimizer(params, model) built no parameter group at params.lr={params.lr:g} "
            "(the searched learning rate, coupled to the batch size when lr_scaling is set): "
            "the search over lr changes nothing. Build the groups at params.lr, or at "
            "multiples of it.",
            UserWarning,
            stacklevel=2,
        )
    return optimizer


def optimizer_name(choice: object, params: Params) -> str:
    """What a trial stores as its ``optimizer``: the name, or the function's name."""
    if choice is None:
        return params.optimizer
    if isinstance(choice, str):
        return choice
    name = getattr(choice, "__name__", "")
    return f"custom:{name}" if name and name != "<lambda>" else "custom"
