"""Small reference models for the bundled studies and for quick experiments."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from torch import nn

from bsopt.core._space import Params
from bsopt.training._data import TensorData


def mlp(
    in_features: int,
    out_features: int,
    *,
    hidden: Sequence[int] = (128,),
    dropout: float = 0.0,
) -> nn.Sequential:
    """A multilayer perceptron: (Linear -> ReLU -> Dropout) per hidden layer, then Linear.

    Inputs of any shape are flattened first, so images can be fed directly.
    """
    if in_features < 1 or out_features < 1:
        raise ValueError(
            f"in_features and out_features must be at least 1, got {in_features}, {out_features}."
        )
    if any(h < 1 for h in hidden):
        raise ValueError(f"Every hidden width must be at least 1, but got {tuple(hidden)}.")
    layers: list[nn.Module] = [nn.Flatten()]
    width = in_features
    for h in hidden:
        layers += [nn.Linear(width, h), nn.ReLU(), nn.Dropout(dropout)]
        width = h
    layers.append(nn.Linear(width, out_features))
    return nn.Sequential(*layers)


def mlp_builder(
    data: TensorData, *, hidden: Sequence[int] = (128,)
) -> Callable[[Params], nn.Module]:
    """A ``build_model(params)`` for :func:`~bsopt.make_objective`: an MLP sized for ``data``.

    The trial's dropout goes into every hidden layer.
    """
    out = data.n_classes or 1

    def build_model(params: Params) -> nn.Module:
        return mlp(data.n_features, out, hidden=hidden, dropout=params.dropout)

    return build_model
