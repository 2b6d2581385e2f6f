"""The options of one training run, declared and checked once.

:class:`TrainConfig` holds what :func:`~bsopt.training.train` needs besides the model, the
data and the params. :func:`~bsopt.make_objective`'s options extend it
(:class:`~bsopt.search.ObjectiveOptions`), so an option means the same in both and is checked
by the same code, eagerly, with a message that names the fix.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
import math
from typing import TYPE_CHECKING, Any, Literal

import torch

from bsopt.core._budget import Budget
from bsopt.core._space import OPTIMIZERS
from bsopt.core._stop import DivergenceCheck
from bsopt.training._batch import CALLS
from bsopt.training._metrics import (
    LossFn,
    Metric,
    MetricFn,
    OutputPick,
    check_output_pick,
    loss_takes_params,
    resolve_metric,
)

if TYPE_CHECKING:
    from collections.abc import Callable

    from torch import nn

    from bsopt.core._space import Params

    #: ``fn(params, model) -> torch.optim.Optimizer`` (the option ``optimizer``).
    OptimizerFn = Callable[[Params, nn.Module], torch.optim.Optimizer]

Amp = Literal["auto", "bf16", "fp16", "off"]
AMP_MODES = ("auto", "bf16", "fp16", "off")


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``None`` or ``"auto"`` picks CUDA when present, else the CPU."""
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise ValueError(
            f"device={device!r} is not a device torch knows ({error}). Use 'auto', 'cpu', "
            "'cuda' or 'cuda:N'."
        ) from None
    if resolved.type not in ("cpu", "cuda"):
        raise ValueError(
            f"device={str(device)!r} is not supported: bsopt trains on 'cpu' or 'cuda[:N]'. "
            "Use device='auto' to pick CUDA when present."
        )
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            f"device={str(device)!r} was asked for, but CUDA is not available here. "
            "Use device='auto' or 'cpu'."
        )
    return resolved


def check_amp(amp: object) -> Amp:
    if amp not in AMP_MODES:
        raise ValueError(
            f"amp must be one of {', '.join(AMP_MODES)} (mixed precision on CUDA), but got "
            f"{amp!r}."
        )
    return amp  # type: ignore[return-value]


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class TrainConfig:
    """How one run trains, besides the model, the data and the params.

    Args:
        budget: training per run and its evaluation grid; default ``Budget(10)`` (ten
            epochs, ten evaluations). Evaluations are reported at samples seen, so pruners
            compare trials of different batch sizes fairly.
        metric: the validation metric: ``"accuracy"`` (default), ``"loss"``, a
            scikit-learn metric by name (``balanced_accuracy``, ``f1_macro``,
            ``f1_weighted``, ``roc_auc`` (two classes), ``roc_auc_ovr``, ``roc_auc_ovo``,
            ``r2``, ``mae``, ``mse``, ``rmse``; ``bsopt.training.METRICS``) computed on the
            concatenated validation outputs, or a callable ``fn(outputs, targets) -> float``
            with ``direction``. The validation loss is recorded beside it (``val_loss``).
        direction: ``"maximize"`` or ``"minimize"``: required with a callable metric.
        loss: ``loss(output, target) -> scalar tensor``, or ``loss(output, target, params)``
            to read the trial's values (``params.extra["delta"]`` of a Huber loss), used for
            training, gradient accumulation, the probe and the validation loss. Default:
            cross-entropy for integer class labels, mean squared error for float targets (on
            the ``output`` pick).
        optimizer: ``None`` (default: the search space's ``optimizer``), a name
            (``"adamw"``, ``"sgd"``, ``"lars"``), or ``fn(params, model) ->
            torch.optim.Optimizer``, which may build parameter groups and read your own
            values from ``params.extra`` (momentum, betas, ...). Build it at ``params.lr``
            (the searched, coupled rate): bsopt's lr schedule and warm-up scale every
            group's own initial lr by the same factor.
        output: what named metrics and the default loss read from a structured output: an
            index (``output=0`` for ``(logits, aux)``), a key (``output="logits"``) or
            ``fn(output) -> tensor``. A loss or metric of your own sees the whole output.
        call: how the model is called with a batch's inputs: ``"kwargs"`` (``model(**x)``),
            ``"positional"`` (``model(*x)``) or ``"whole"`` (``model(x)``, for a
            ``forward(self, batch)`` taking a dict or tuple). Default ``None``: by the inputs'
            structure (dict -> kwargs, tuple or list -> positional, tensor -> whole).
        device: ``"auto"`` (CUDA when present), ``"cpu"``, ``"cuda:1"``, ...
        seed: seeds the shuffling; seed the model's initialisation before building it. An
            objective gives trial ``n`` the seed ``seed + n``.
        amp: mixed precision on CUDA: ``"auto"`` (bf16 where supported, else fp16 with loss
            scaling), ``"bf16"``, ``"fp16"`` or ``"off"``. Ignored on the CPU.
        micro_batch_size: the most samples pushed through the model at once. The batch
            size of the params is always the *effective* batch (samples per optimizer
            update); a larger one is reached by accumulating the gradients of several
            micro-batches, each loss weighted by its share, so the update equals the full
            batch's up to float rounding. Caveat: BatchNorm (and anything else that looks
            across a batch) computes its statistics per micro-batch. Default: no cap (or the
            probed one, in an objective). Over several devices it is the per-device cap.
        clip_grad_norm: clip the global gradient norm to this value before each update;
            ``None`` (default) does not clip.
        divergence_factor: stop as diverged when the mean training loss between two
            evaluations exceeds this multiple of the first interval's; a NaN or infinite loss
            stops at once. Above 1.
        measure_noise_scale: estimate the gradient noise scale B_simple from the gradients
            of the two parts of a batch and of the whole (a batch is split in two for it
            when it is not accumulated; BatchNorm then sees half batches at that step). On
            by default: at one step in 24 it costs about 4% of the training time on a tiny
            CPU model (the digits MLP), less on larger ones. Always on for
            ``batch_schedule="adaptive"``, which sets the batch from it. A trial then stores
            ``noise_scale`` (the last estimate), its 95% interval and
            ``noise_scale_history``.
        noise_every: optimizer steps between two noise-scale measurements (default 24: the
            same steps in every run, so a trial repeats exactly). ``None``: as often as 5% of
            the training time allows, by the trainer's own clock (more measurements where the
            split is nearly free, a large model or an accumulated batch; which steps split
            then depends on the clock, so reruns differ in float rounding).

    Raises:
        ValueError: an option outside its range, naming the option and the fix.
    """

    budget: Budget = field(default_factory=Budget)
    metric: str | MetricFn | Metric = "accuracy"
    direction: Literal["maximize", "minimize"] | None = None
    loss: LossFn | Callable[[Any, Any, Params], torch.Tensor] | None = None
    optimizer: str | OptimizerFn | None = None
    output: OutputPick = None
    call: Literal["kwargs", "positional", "whole"] | None = None
    device: str | torch.device | None = None
    seed: int = 0
    amp: Amp = "auto"
    micro_batch_size: int | None = None
    clip_grad_norm: float | None = None
    divergence_factor: float = 10.0
    measure_noise_scale: bool = True
    noise_every: int | None = 24

    def __post_init__(self) -> None:
        if not isinstance(self.budget, Budget):
            raise ValueError(
                f"budget must be a bsopt.Budget, but got {self.budget!r}. Example: "
                "budget=bsopt.Budget(10, 'epochs', evals=10)."
            )
        if self.loss is not None and not callable(self.loss):
            raise ValueError(f"loss must be a callable or None, but got {self.loss!r}.")
        if self.loss is not None:
            loss_takes_params(self.loss)
        self._check_recipe()
        resolve_metric(self.metric, self.direction)
        if not _is_int(self.seed):
            raise ValueError(f"seed must be an integer, but got {self.seed!r}.")
        check_amp(self.amp)
        resolve_device(self.device)
        self._check_steps()

    def _check_recipe(self) -> None:
        opt = self.optimizer
        if opt is not None and not callable(opt) and opt not in OPTIMIZERS:
            raise ValueError(
                f"optimizer must be None (the search space's), one of {', '.join(OPTIMIZERS)}, "
                f"or a callable fn(params, model) -> torch.optim.Optimizer, but got {opt!r}. "
                "Example: optimizer=lambda params, model: torch.optim.SGD(model.parameters(), "
                "lr=params.lr, momentum=params.extra['momentum'])."
            )
        check_output_pick(self.output)
        if self.call is not None and self.call not in CALLS:
            raise ValueError(
                f"call must be one of {', '.join(CALLS)} or None (by the inputs' structure), "
                f"but got {self.call!r}. Use call='whole' for a forward(self, batch)."
            )

    def _check_steps(self) -> None:
        micro = self.micro_batch_size
        if micro is not None and not (_is_int(micro) and micro >= 1):
            raise ValueError(
                f"micro_batch_size must be an integer >= 1 (the most samples pushed through the "
                f"model at once) or None for no cap, but got {micro!r}."
            )
        clip = self.clip_grad_norm
        if clip is not None and not (
            isinstance(clip, (int, float)) and not isinstance(clip, bool) and 0 < clip < math.inf
        ):
            raise ValueError(
                f"clip_grad_norm must be a positive finite number (the largest gradient norm "
                f"allowed), but got {clip!r}. Use None to switch clipping off."
            )
        DivergenceCheck(self.divergence_factor)
        every = self.noise_every
        if every is not None and not (_is_int(every) and every >= 1):
            raise ValueError(
                f"noise_every must be an integer >= 1, but got {every!r}. Use None to "
                "measure as often as 5% of the training time allows."
            )

    @classmethod
    def of(cls, config: TrainConfig | None = None, **options: Any) -> TrainConfig:
        """``config`` (default ``TrainConfig()``) with ``options`` changed: one plain
        :class:`TrainConfig` even when ``config`` extends it (an objective's options)."""
        names = [f.name for f in fields(cls)]
        unknown = sorted(set(options) - set(names))
        if unknown:
            raise TypeError(
                f"Unknown training option(s) {', '.join(unknown)}. The options of TrainConfig "
                f"are: {', '.join(names)}."
            )
        if config is None:
            return cls(**options)
        if type(config) is not cls:
            return cls(**{name: getattr(config, name) for name in names} | options)
        return replace(config, **options) if options else config

    @property
    def resolved_metric(self) -> Metric:
        """The validation metric with its direction."""
        return resolve_metric(self.metric, self.direction)
