"""Validation metrics and training losses: by name, or the user's own functions.

A :class:`Metric` turns the model's outputs on the whole validation split into one number.
``"accuracy"`` and ``"loss"`` are computed on the device as the evaluation runs; every other
metric sees the concatenated outputs and targets, and the named ones are computed with
``sklearn.metrics``. A metric knows its direction and whether it is a fraction (so that
differences can be given in percentage points), which the study records for the analysis.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F

Direction = Literal["maximize", "minimize"]
LossFn = Callable[[Any, Any], torch.Tensor]
MetricFn = Callable[[Any, Any], float]


@dataclass(frozen=True)
class Metric:
    """A validation metric.

    ``name`` is what the study, the summary and the report call it; ``fraction`` says its
    values are shares in [0, 1] whose differences read as percentage points; ``fn`` maps
    ``(outputs, targets)`` of the whole validation split to a float (``None`` for the two
    metrics computed on the device: ``"accuracy"`` and ``"loss"``).
    """

    name: str
    direction: Direction
    fraction: bool
    fn: MetricFn | None = None
    needs_classes: bool = False

    @property
    def unit(self) -> Literal["fraction", "value"]:
        return "fraction" if self.fraction else "value"


def _numpy(t: torch.Tensor) -> np.ndarray:
    return t.detach().float().cpu().numpy() if t.is_floating_point() else t.cpu().numpy()


def _labels(outputs: torch.Tensor) -> np.ndarray:
    if outputs.ndim == 1 or outputs.shape[-1] == 1:
        return (_numpy(outputs).reshape(len(outputs)) > 0).astype(np.int64)
    return outputs.argmax(dim=-1).cpu().numpy()


def _scores(outputs: torch.Tensor) -> np.ndarray:
    """Positive-class scores of a binary classifier: one logit, or two-class logits."""
    if outputs.ndim == 1 or outputs.shape[-1] == 1:
        return _numpy(outputs).reshape(len(outputs))
    if outputs.shape[-1] == 2:
        return _numpy(torch.softmax(outputs.float(), dim=-1)[:, 1])
    return _numpy(torch.softmax(outputs.float(), dim=-1))


def _sk(name: str) -> Any:
    from sklearn import metrics

    return getattr(metrics, name)


def _classification(fn_name: str, **kwargs: Any) -> MetricFn:
    def metric(outputs: torch.Tensor, targets: torch.Tensor) -> float:
        return float(_sk(fn_name)(_numpy(targets), _labels(outputs), **kwargs))

    return metric


def _roc_auc(multi_class: str | None) -> MetricFn:
    def metric(outputs: torch.Tensor, targets: torch.Tensor) -> float:
        scores = _scores(outputs)
        if scores.ndim == 2 and multi_class is None:
            raise ValueError(
                f"metric='roc_auc' is for two classes, but the model outputs "
                f"{scores.shape[1]} classes. Use metric='roc_auc_ovr' (one-vs-rest) or "
                "'roc_auc_ovo' (one-vs-one) to state how to average over classes."
            )
        kwargs = {"multi_class": multi_class, "average": "macro"} if scores.ndim == 2 else {}
        return float(_sk("roc_auc_score")(_numpy(targets), scores, **kwargs))

    return metric


def _regression(fn_name: str, *, root: bool = False) -> MetricFn:
    def metric(outputs: torch.Tensor, targets: torch.Tensor) -> float:
        y = _numpy(targets)
        value = float(_sk(fn_name)(y, _numpy(outputs).reshape(y.shape)))
        return value**0.5 if root else value

    return metric


METRICS: dict[str, Metric] = {
    m.name: m
    for m in (
        Metric("accuracy", "maximize", True, needs_classes=True),
        Metric("loss", "minimize", False),
        Metric(
            "balanced_accuracy",
            "maximize",
            True,
            _classification("balanced_accuracy_score"),
            True,
        ),
        Metric(
            "f1_macro", "maximize", True, _classification("f1_score", average="macro"), True
        ),
        Metric(
            "f1_weighted",
            "maximize",
            True,
            _classification("f1_score", average="weighted"),
            True,
        ),
        Metric("roc_auc", "maximize", True, _roc_auc(None), True),
        Metric("roc_auc_ovr", "maximize", True, _roc_auc("ovr"), True),
        Metric("roc_auc_ovo", "maximize", True, _roc_auc("ovo"), True),
        Metric("r2", "maximize", False, _regression("r2_score")),
        Metric("mae", "minimize", False, _regression("mean_absolute_error")),
        Metric("mse", "minimize", False, _regression("mean_squared_error")),
        Metric("rmse", "minimize", False, _regression("mean_squared_error", root=True)),
    )
}


def resolve_metric(metric: str | MetricFn | Metric, direction: str | None = None) -> Metric:
    """A :class:`Metric` from a name, a callable (with ``direction``) or a Metric."""
    if isinstance(metric, Metric):
        return metric
    if isinstance(metric, str):
        if metric not in METRICS:
            raise ValueError(
                f"metric={metric!r} is not a known metric. Use one of "
                f"{', '.join(METRICS)}, or a callable fn(outputs, targets) -> float together "
                "with direction='maximize' or 'minimize'."
            )
        known = METRICS[metric]
        if direction is not None and direction != known.direction:
            raise ValueError(
                f"metric={metric!r} is always {known.direction}d, but direction={direction!r} "
                "was given. Leave direction out for a named metric."
            )
        return known
    if callable(metric):
        if direction not in ("maximize", "minimize"):
            raise ValueError(
                "A callable metric needs direction='maximize' or 'minimize' (bsopt cannot "
                f"tell which way is better), but got direction={direction!r}. Example: "
                "make_objective(..., metric=my_metric, direction='maximize')."
            )
        name = getattr(metric, "__name__", "metric")
        way: Direction = "maximize" if direction == "maximize" else "minimize"
        return Metric(name if name != "<lambda>" else "metric", way, False, metric)
    raise ValueError(
        f"metric must be a name ({', '.join(METRICS)}) or a callable, but got {metric!r}."
    )


def default_loss(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Cross-entropy for integer class labels, mean squared error for float targets."""
    if not isinstance(target, torch.Tensor) or not isinstance(output, torch.Tensor):
        raise ValueError(
            "The default loss needs tensor outputs and targets, but got "
            f"{type(output).__name__} outputs and {type(target).__name__} targets. Pass "
            "loss=fn(output, target) -> scalar tensor to make_objective."
        )
    if target.is_floating_point():
        return F.mse_loss(output.float().reshape(target.shape), target)
    return F.cross_entropy(output.float(), target)


def check_loss_value(loss: Any) -> torch.Tensor:
    """``loss`` if it is a scalar tensor, else a ValueError naming the rule."""
    if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
        shape = tuple(loss.shape) if isinstance(loss, torch.Tensor) else type(loss).__name__
        raise ValueError(
            "loss(output, target) must return a scalar tensor (the mean loss of the "
            f"batch), but it returned {shape}. Reduce it, e.g. with .mean()."
        )
    return loss
