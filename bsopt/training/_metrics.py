"""Validation metrics and training losses: by name, or the user's own functions.

A :class:`Metric` turns the model's outputs on the whole validation split into one number.
``"accuracy"`` and ``"loss"`` are computed on the device as the evaluation runs; every other
metric sees the concatenated outputs and targets, and the named ones are computed with
``sklearn.metrics``. A metric knows its direction and whether it is a fraction (so that
differences can be given in percentage points), which the study records for the analysis.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
import inspect
import math
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F

Direction = Literal["maximize", "minimize"]
LossFn = Callable[[Any, Any], torch.Tensor]
MetricFn = Callable[[Any, Any], float]
#: What named metrics and the default loss read from a structured output: an index, a key or
#: ``fn(output) -> tensor`` (the option ``output``).
OutputPick = int | str | Callable[[Any], Any] | None


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
        Metric("f1_macro", "maximize", True, _classification("f1_score", average="macro"), True),
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
            "The default loss needs one output tensor and one target tensor, but the model "
            f"returns {_kind(output)} and the targets are {_kind(target)}. Pick the output "
            "tensor with output=0 (an index), output='logits' (a key) or output=fn, or pass "
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


class MetricError(ValueError):
    """A metric that cannot read the output or the targets, or returned no fit value."""


def check_output_pick(output: object) -> None:
    """Refuse an ``output=`` that is neither an index, a key, a callable nor None."""
    if output is None or callable(output) or isinstance(output, str):
        return
    if isinstance(output, int) and not isinstance(output, bool):
        return
    raise ValueError(
        f"output must be an index (output=0 for (logits, aux)), a key (output='logits') or "
        f"a callable fn(output) -> tensor, but got {output!r}."
    )


def pick_output(output: Any, pick: OutputPick) -> Any:
    """The part of a model's ``output`` that named metrics and the default loss read."""
    if pick is None:
        return output
    if callable(pick):
        return pick(output)
    try:
        return output[pick]
    except (KeyError, IndexError, TypeError):
        raise ValueError(
            f"output={pick!r} picks what the metric and the default loss read, but the model "
            f"returns {_kind(output)}, which has no {pick!r}. Use an index for a tuple, a key "
            "for a dict, or a callable fn(output) -> tensor."
        ) from None


def _kind(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return f"a tensor of shape {tuple(value.shape)}"
    if isinstance(value, Mapping):
        return f"a dict with keys {list(value)}"
    if isinstance(value, (tuple, list)):
        return f"a {type(value).__name__} of {len(value)}"
    return f"a {type(value).__name__}"


def loss_takes_params(loss: Callable[..., Any]) -> bool:
    """Whether ``loss`` takes ``(output, target, params)``; refuse other arities.

    Raises:
        ValueError: ``loss`` takes neither two nor three positional arguments.
    """
    try:
        signature = inspect.signature(loss)
    except (TypeError, ValueError):
        return False  # a builtin without a signature: called as loss(output, target)
    positional = [
        p
        for p in signature.parameters.values()
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]
    required = sum(p.default is p.empty for p in positional)
    if required == 3:
        return True
    variadic = any(p.kind == p.VAR_POSITIONAL for p in signature.parameters.values())
    if variadic or (required <= 2 <= len(positional)):
        return False
    raise ValueError(
        f"loss must take (output, target) or (output, target, params), but "
        f"{getattr(loss, '__name__', loss)!r} takes {len(positional)} positional "
        f"argument(s) {signature}. Example: loss=lambda out, y, params: "
        "F.huber_loss(out, y, delta=params.extra['delta'])."
    )


def bind_loss(loss: Callable[..., Any] | None, params: Any, output: OutputPick = None) -> LossFn:
    """The two-argument loss of one run: ``loss`` with ``params`` bound when it takes them,
    or the default loss on the ``output`` pick."""
    if loss is None:
        if output is None:
            return default_loss
        return lambda out, target: default_loss(pick_output(out, output), target)
    if loss_takes_params(loss):
        return lambda out, target: loss(out, target, params)
    return loss


def check_metric_value(metric: Metric, value: Any) -> float:
    """``value`` as a float, or a ValueError: a metric returns a real number, and a fraction
    metric one in [0, 1]."""
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
        raise MetricError(
            f"metric {metric.name!r} must return a number (a float), but it returned "
            f"{type(value).__name__}. Return e.g. float(...) from fn(outputs, targets)."
        )
    value = float(value)
    if metric.fraction and math.isfinite(value) and not 0.0 <= value <= 1.0:
        raise MetricError(
            f"metric {metric.name!r} is a fraction, but came out as {value:g}, outside [0, 1]: "
            "the rows evaluated do not match the rows counted (a collate_fn that yields "
            "several rows per item?). Give the data one row per item."
        )
    return value


def correct_count(output: Any, target: Any) -> torch.Tensor:
    """How many rows ``output`` classifies as ``target`` (accuracy's numerator)."""
    if not isinstance(output, torch.Tensor) or not isinstance(target, torch.Tensor):
        raise MetricError(
            f"metric='accuracy' reads one tensor of logits and one of labels, but the model "
            f"returns {_kind(output)} and the targets are {_kind(target)}. Pick the logits "
            "with output=0 (an index), output='logits' (a key) or output=fn, or use a "
            "callable metric fn(outputs, targets) with direction=."
        )
    return (output.argmax(dim=-1) == target).sum()


def run_metric(metric: Metric, outputs: Any, targets: Any, pick: OutputPick = None) -> float:
    """``metric.fn`` on the outputs and targets of a split, with errors that name the fix:
    named metrics read the ``pick`` of the output; a callable metric reads it whole."""
    if metric.fn is None:
        raise MetricError(f"metric {metric.name!r} is computed by the evaluation itself.")
    named = METRICS.get(metric.name) is metric
    if named:
        outputs = pick_output(outputs, pick)
        for part, value in (("model returns", outputs), ("targets are", targets)):
            if not isinstance(value, torch.Tensor):
                raise MetricError(
                    f"metric={metric.name!r} reads one output tensor and one target tensor, "
                    f"but the {part} {_kind(value)}. Pick the output tensor with output=0, "
                    "output='key' or output=fn; for structured targets use a callable "
                    "metric fn(outputs, targets) -> float with direction=."
                )
    return check_metric_value(metric, metric.fn(outputs, targets))
