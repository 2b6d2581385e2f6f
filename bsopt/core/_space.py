"""The search space: which batch size, learning rate and dropout a trial trains with.

``SearchSpace`` is a frozen, validated description of the ranges. ``suggest(trial)`` asks an
Optuna trial for values and returns a frozen :class:`Params`, the plain record the trainer
and the model builder receive.

Batch size on powers of two: one parameter
------------------------------------------
Optuna's ``IntDistribution`` refuses ``log=True`` together with ``step``, and a suggested value
cannot be replaced afterwards (RDB storages insert each parameter once). So on the default
powers-of-two grid the sampler searches the exponent ``log2_batch_size`` (an ordered integer,
every value equally likely before the sampler learns), and that exponent is the trial's only
batch-size parameter. Why the exponent, and not another single ``batch_size`` parameter:

* ``suggest_int("batch_size", low, high, log=True)`` is ordered but tries every integer, not
  only powers of two, and its value cannot be rounded after the sampler chose it;
* ``suggest_categorical("batch_size", [16, 32, ...])`` keeps the values but loses their
  order: TPE, fANOVA and Optuna's plots treat the choices as unrelated labels;
* the exponent is ordered and evenly spaced on the log scale the batch size lives on, so TPE,
  every importance evaluator, Optuna's plots and optuna-dashboard treat it as the ordered
  dimension it is, and ``study.best_params`` names the batch size once.

The batch size itself is ``2 ** log2_batch_size``: :func:`batch_size_from_params` reads it
from stored parameters, bsopt's analysis and report label it ``batch_size``, and the objective
stores it as the user attribute ``effective_batch_size``. Studies written before this also
hold a single-point ``batch_size`` parameter beside the exponent; it is read, never searched.

With ``batch_grid="int"`` the sampler searches ``batch_size`` itself, log-scaled.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
import math
import numbers
from typing import TYPE_CHECKING, Any, Literal

from bsopt.core._schedules import BATCH_SCHEDULES, LR_SCHEDULES

if TYPE_CHECKING:
    import optuna

# A user's own define-by-run search: ``suggest(trial) -> {name: value}``.
SuggestFn = Callable[["optuna.Trial"], Mapping[str, Any]]
Range = tuple[float, float]

BatchGrid = Literal["pow2", "int"]
Optimizer = Literal["adamw", "sgd", "lars"]
LrScaling = Literal["none", "sqrt", "linear"]
OPTIMIZERS = ("adamw", "sgd", "lars")
_WITH_MOMENTUM = ("sgd", "lars")
# Exponent alpha of lr = base_lr * (batch / reference) ** alpha for each coupling rule.
LR_SCALING_EXPONENTS: dict[str, float] = {"none": 0.0, "sqrt": 0.5, "linear": 1.0}
_LR_SCHEDULES = LR_SCHEDULES
_BATCH_SCHEDULES = BATCH_SCHEDULES
# Shown in the fix of a range given as something other than numbers.
_EXAMPLE_RANGES = {"batch_size": "16, 256", "lr": "1e-4, 1e-1", "weight_decay": "1e-5, 1e-2"}
#: The batch size's parameter: the value itself (``"int"`` grid), or its exponent (``"pow2"``).
BATCH_PARAM = "batch_size"
EXPONENT_PARAM = "log2_batch_size"
# Parameter names bsopt itself may store; a user's own searched names must differ.
RESERVED_NAMES = frozenset(
    {
        BATCH_PARAM,
        EXPONENT_PARAM,
        "lr",
        "base_lr",
        "lr_scaling",
        "dropout",
        "weight_decay",
        "momentum",
        "optimizer",
        "warmup",
        "lr_schedule",
        "batch_schedule",
    }
)


def coupled_lr(base_lr: float, batch_size: int, reference: int, alpha: float) -> float:
    """``base_lr * (batch_size / reference) ** alpha``: the learning rate scaling rule."""
    return base_lr * (batch_size / reference) ** alpha


def _is_power_of_two(n: int) -> bool:
    return n > 0 and n & (n - 1) == 0


@dataclass(frozen=True)
class Params:
    """The hyperparameters of one trial, as the trainer and the model builder see them.

    ``batch_size`` is the effective batch size (samples per optimizer update; the final
    one under a growing or ramped batch schedule); ``lr`` the peak learning rate actually
    used (after coupling to the batch size). ``warmup`` is a fraction of the budget;
    ``batch_min`` the smallest batch a schedule may use. ``extra`` holds any further values.
    """

    batch_size: int
    lr: float
    dropout: float = 0.0
    weight_decay: float = 0.0
    optimizer: Optimizer = "adamw"
    momentum: float = 0.9
    warmup: float = 0.0
    lr_schedule: str = "constant"
    batch_schedule: str = "constant"
    batch_min: int = 1
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        if isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int):
            raise TypeError(f"batch_size must be an int, but got {self.batch_size!r}.")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, but got {self.batch_size}.")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"lr must be a positive finite number, but got {self.lr}.")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), but got {self.dropout}.")
        if not 0.0 <= self.warmup < 1.0:
            raise ValueError(f"warmup must be a fraction in [0, 1), but got {self.warmup}.")
        if self.lr_schedule not in _LR_SCHEDULES:
            raise ValueError(
                f"lr_schedule must be one of {', '.join(_LR_SCHEDULES)}, "
                f"but got {self.lr_schedule!r}."
            )
        if self.batch_schedule not in _BATCH_SCHEDULES:
            raise ValueError(
                f"batch_schedule must be one of {', '.join(_BATCH_SCHEDULES)}, "
                f"but got {self.batch_schedule!r}."
            )
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(
                f"optimizer must be one of {', '.join(OPTIMIZERS)}, but got {self.optimizer!r}."
            )

    def as_dict(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "extra"}
        out.update(self.extra)
        return out


class TrackedExtra(dict[str, Any]):
    """``params.extra`` that remembers which names were read, so that a value a user
    suggests and nothing reads is pointed out instead of silently searched.

    Iterating (``items()``, ``dict(extra)``, ``**extra``) counts as reading every name.
    """

    def __init__(self, values: Mapping[str, Any]) -> None:
        super().__init__(values)
        self.read: set[str] = set()

    def __getitem__(self, key: str) -> Any:
        self.read.add(key)
        return super().__getitem__(key)

    def get(self, key: str, default: Any = None) -> Any:
        self.read.add(key)
        return super().get(key, default)

    def __contains__(self, key: object) -> bool:
        if isinstance(key, str):
            self.read.add(key)
        return super().__contains__(key)

    def _all(self) -> None:
        self.read.update(super().keys())

    def __iter__(self) -> Any:
        self._all()
        return super().__iter__()

    def keys(self) -> Any:
        self._all()
        return super().keys()

    def items(self) -> Any:
        self._all()
        return super().items()

    def values(self) -> Any:
        self._all()
        return super().values()

    def copy(self) -> dict[str, Any]:
        self._all()
        return dict(super().items())

    @property
    def unread(self) -> list[str]:
        return sorted(set(super().keys()) - self.read)


def _check_range(name: str, bounds: tuple[float, float], *, positive: bool) -> None:
    if len(bounds) != 2:
        raise ValueError(f"{name} must be a (low, high) pair, but got {bounds!r}.")
    if not all(isinstance(b, numbers.Real) and not isinstance(b, bool) for b in bounds):
        raise ValueError(
            f"{name} must be a number or a (low, high) pair of numbers, but got {bounds!r}. "
            f"Give numbers, e.g. {name}=({_EXAMPLE_RANGES.get(name, '0.0, 0.5')})."
        )
    low, high = bounds
    if not (math.isfinite(low) and math.isfinite(high)):
        raise ValueError(f"{name} bounds must be finite, but got {bounds!r}.")
    if positive and low <= 0:
        raise ValueError(
            f"{name} bounds must be positive (the scale is logarithmic), but got low={low}."
        )
    if low > high:
        raise ValueError(
            f"{name} must be given as (low, high) with low <= high, but got {bounds!r}. "
            "Swap the two values."
        )


@dataclass(frozen=True)
class SearchSpace:
    """Ranges searched jointly for every trial.

    Args:
        batch_size: ``(low, high)`` effective batch size. With ``batch_grid="pow2"`` (the
            default) both bounds must be powers of two and only powers of two are tried;
            with ``"int"`` any integer in the range is tried, on a log scale.
        lr: ``(low, high)`` learning rate, sampled log-uniformly.
        dropout: ``(low, high)`` dropout probability, sampled uniformly within ``[0, 1)``.
            Use ``(0.0, 0.0)`` to switch dropout off.
        weight_decay: weight decay passed to the optimizer: a single value fixes it, a
            ``(low, high)`` pair searches it log-uniformly (``low > 0``) as the parameter
            ``weight_decay``.
        momentum: SGD/LARS momentum: a single value fixes it, a ``(low, high)`` pair searches
            it uniformly within ``[0, 1)`` as the parameter ``momentum``, in SGD and LARS
            trials only (AdamW trials sample none).
        optimizer: ``"adamw"`` (default), ``"sgd"`` (Nesterov momentum ``momentum``) or
            ``"lars"`` (layer-wise trust ratios for large batches; its effective step is
            ``lr`` times a trust ratio of about 1e-3, so give it learning rates around
            0.1-10), or a tuple of them to search as the parameter ``optimizer``.
        batch_grid: ``"pow2"`` or ``"int"``, see ``batch_size``.
        lr_scaling: couple the learning rate to the batch size as
            ``lr = base_lr * (batch_size / reference_batch_size) ** alpha`` with alpha 0
            (``"none"``), 0.5 (``"sqrt"``, for adaptive optimizers) or 1 (``"linear"``,
            for SGD with warm-up). The ``lr`` range is then the range of ``base_lr``, stored
            as the parameter ``base_lr``; the lr actually used is the user attribute ``lr``.
            A tuple of rules searches the rule as the parameter ``lr_scaling``. The default
            ``None`` samples ``lr`` independently of the batch size (parameter ``lr``).
        reference_batch_size: the batch size at which ``base_lr`` applies; default the
            geometric middle of the batch-size range (rounded to a power of two), so the
            coupled rate extrapolates least at either end.
        warmup: fraction of the budget over which the learning rate rises linearly from 0;
            a ``(low, high)`` pair searches it as the parameter ``warmup``.
        lr_schedule: ``"constant"`` (default), ``"cosine"``, ``"step"`` (x0.1 at 50% and 75%)
            or ``"onecycle"``; a tuple searches it as the parameter ``lr_schedule``.
        batch_schedule: ``"constant"`` (default), ``"grow"`` (x2 at 50% and 75% of the
            budget, ending at the sampled batch size: growing the batch instead of decaying
            the lr), ``"ramp"`` (linear from 1/8 of the sampled batch to all of it at 50%),
            or ``"adaptive"`` (the measured gradient noise scale, clamped between the
            range's low bound and the sampled batch); a tuple searches it.

    A single value fixes a dimension: ``batch_size=64`` (or ``(64, 64)``) trains every trial
    at 64, ``lr=3e-3`` fixes the learning rate. Your own hyperparameters are searched with
    ``make_objective(..., suggest=fn)``.
    """

    batch_size: tuple[int, int] = (16, 256)
    lr: tuple[float, float] = (1e-4, 1e-1)
    dropout: tuple[float, float] = (0.0, 0.5)
    weight_decay: float | tuple[float, float] = 0.0
    optimizer: Optimizer | tuple[Optimizer, ...] = "adamw"
    momentum: float | tuple[float, float] = 0.9
    batch_grid: BatchGrid = "pow2"
    lr_scaling: LrScaling | tuple[LrScaling, ...] | None = None
    reference_batch_size: int | None = None
    warmup: float | tuple[float, float] = 0.0
    lr_schedule: str | tuple[str, ...] = "constant"
    batch_schedule: str | tuple[str, ...] = "constant"

    def __post_init__(self) -> None:
        for name in ("batch_size", "lr", "dropout"):
            object.__setattr__(self, name, _as_range(name, getattr(self, name)))
        lo_b, hi_b = self.batch_size
        if not all(isinstance(b, int) and not isinstance(b, bool) for b in self.batch_size):
            raise ValueError(
                f"batch_size must be an integer or a (low, high) pair of integers, but got "
                f"{self.batch_size!r}."
            )
        _check_range("batch_size", (lo_b, hi_b), positive=True)
        if self.batch_grid not in ("pow2", "int"):
            raise ValueError(f"batch_grid must be 'pow2' or 'int', but got {self.batch_grid!r}.")
        if self.batch_grid == "pow2" and not (_is_power_of_two(lo_b) and _is_power_of_two(hi_b)):
            raise ValueError(
                f"With batch_grid='pow2', batch_size bounds must be powers of two, but got "
                f"{self.batch_size!r}. Use bounds such as (16, 256), or batch_grid='int'."
            )
        _check_range("lr", self.lr, positive=True)
        _check_range("dropout", self.dropout, positive=False)
        if not (0.0 <= self.dropout[0] and self.dropout[1] < 1.0):
            raise ValueError(
                f"dropout must lie in [0, 1), but got {self.dropout!r}. "
                "A dropout of 1 would drop every activation."
            )
        decay = _as_range("weight_decay", self.weight_decay)
        _check_range("weight_decay", decay, positive=isinstance(self.weight_decay, tuple))
        if decay[0] < 0:
            raise ValueError(f"weight_decay must be 0 or more, but got {self.weight_decay!r}.")
        _check_choices("optimizer", self.optimizer, OPTIMIZERS)
        momentum = _as_range("momentum", self.momentum)
        _check_range("momentum", momentum, positive=False)
        if not (0.0 <= momentum[0] and momentum[1] < 1.0):
            raise ValueError(f"momentum must lie in [0, 1), but got {self.momentum!r}.")
        if self.lr_scaling is not None:
            _check_choices("lr_scaling", self.lr_scaling, tuple(LR_SCALING_EXPONENTS))
        ref = self.reference_batch_size
        if ref is not None and (isinstance(ref, bool) or not isinstance(ref, int) or ref < 1):
            raise ValueError(f"reference_batch_size must be an integer >= 1, got {ref!r}.")
        warm = self.warmup if isinstance(self.warmup, tuple) else (self.warmup, self.warmup)
        _check_range("warmup", warm, positive=False)
        if not (0.0 <= warm[0] and warm[1] < 1.0):
            raise ValueError(f"warmup must be a fraction in [0, 1), but got {self.warmup!r}.")
        _check_choices("lr_schedule", self.lr_schedule, _LR_SCHEDULES)
        _check_choices("batch_schedule", self.batch_schedule, _BATCH_SCHEDULES)

    @property
    def reference(self) -> int:
        """The batch size at which ``base_lr`` applies when the lr is coupled."""
        if self.reference_batch_size is not None:
            return self.reference_batch_size
        low, high = self.batch_size
        return 2 ** round(math.log2(math.sqrt(low * high)))

    @property
    def batch_sizes(self) -> list[int]:
        """Every batch size this space can produce, in increasing order."""
        low, high = self.batch_size
        if self.batch_grid == "int":
            return list(range(low, high + 1))
        return [2**e for e in range(int(math.log2(low)), int(math.log2(high)) + 1)]

    def suggest(self, trial: optuna.Trial) -> Params:
        """Draw one set of hyperparameters from ``trial``."""
        batch_size = self._suggest_batch_size(trial)
        if self.lr_scaling is None:
            lr = _suggest_float(trial, "lr", self.lr, log=True)
        else:
            rule = _suggest_choice(trial, "lr_scaling", self.lr_scaling)
            base_lr = _suggest_float(trial, "base_lr", self.lr, log=True)
            lr = coupled_lr(base_lr, batch_size, self.reference, LR_SCALING_EXPONENTS[rule])
        dropout = _suggest_float(trial, "dropout", self.dropout, log=False)
        warmup = (
            _suggest_float(trial, "warmup", self.warmup, log=False)
            if isinstance(self.warmup, tuple)
            else self.warmup
        )
        weight_decay = _suggest_fixed_or_range(trial, "weight_decay", self.weight_decay, log=True)
        optimizer = _suggest_choice(trial, "optimizer", self.optimizer)
        # Conditional, define-by-run: AdamW has no momentum, so its trials store none and
        # importance does not credit momentum with what the optimizer choice did.
        momentum = (
            _suggest_fixed_or_range(trial, "momentum", self.momentum, log=False)
            if optimizer in _WITH_MOMENTUM or not isinstance(self.momentum, tuple)
            else Params.momentum
        )
        return Params(
            batch_size=batch_size,
            lr=lr,
            dropout=dropout,
            weight_decay=weight_decay,
            optimizer=optimizer,  # type: ignore[arg-type]
            momentum=momentum,
            warmup=warmup,
            lr_schedule=_suggest_choice(trial, "lr_schedule", self.lr_schedule),
            batch_schedule=_suggest_choice(trial, "batch_schedule", self.batch_schedule),
            batch_min=self.batch_size[0],
        )

    def _suggest_batch_size(self, trial: optuna.Trial) -> int:
        low, high = self.batch_size
        if self.batch_grid == "int":
            return trial.suggest_int(BATCH_PARAM, low, high, log=True)
        # NOTE: the exponent is the one batch-size parameter (see the module docstring); a
        # second, single-point ``batch_size`` would show as a 0.00 importance beside it.
        low_exp, high_exp = int(math.log2(low)), int(math.log2(high))
        return 2 ** trial.suggest_int(EXPONENT_PARAM, low_exp, high_exp)


def batch_size_from_params(params: Mapping[str, Any]) -> int | None:
    """The batch size stored trial ``params`` trained with, or ``None`` if they hold none.

    ``batch_size`` (the ``"int"`` grid, and the record older studies kept beside the exponent)
    is the value itself; ``log2_batch_size`` alone (the powers-of-two grid) means
    ``2 ** log2_batch_size``.
    """
    value, exponent = params.get(BATCH_PARAM), params.get(EXPONENT_PARAM)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return int(value)
    if isinstance(exponent, (int, float)) and not isinstance(exponent, bool):
        return 2 ** int(exponent)
    return None


def shown_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """``params`` as people read them: the batch size once, as ``batch_size``, in place of
    the exponent ``log2_batch_size`` (older studies hold both; the value is shown once)."""
    batch = batch_size_from_params(params)
    out: dict[str, Any] = {}
    for name, value in params.items():
        if name in (BATCH_PARAM, EXPONENT_PARAM):
            out.setdefault(BATCH_PARAM, batch)
        else:
            out[name] = value
    return out


def _as_range(name: str, value: Any) -> Any:
    """A single number means a fixed value: ``(value, value)``."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return (value, value)
    if isinstance(value, list):
        value = tuple(value)
    if not isinstance(value, tuple) or len(value) != 2:
        raise ValueError(
            f"{name} must be a single value (fixed) or a (low, high) pair (searched), but got "
            f"{value!r}."
        )
    return value


def _suggest_fixed_or_range(
    trial: optuna.Trial, name: str, value: float | tuple[float, float], *, log: bool
) -> float:
    # A fixed value is not a parameter, so studies that never search it keep their space.
    if not isinstance(value, tuple):
        return float(value)
    return _suggest_float(trial, name, value, log=log)


def suggest_params(
    trial: optuna.Trial, space: SearchSpace, suggest: SuggestFn | None = None
) -> Params:
    """``space.suggest(trial)`` plus the user's own ``suggest(trial)`` values as ``extra``.

    Raises:
        ValueError: ``suggest`` returned no mapping, or a name bsopt uses itself.
    """
    if suggest is None:
        return space.suggest(trial)
    # The user's values first: any name of bsopt's in the trial then came from them.
    extra = suggest(trial)
    if not isinstance(extra, Mapping):
        raise ValueError(
            "suggest(trial) must return a dict of your hyperparameters, e.g. "
            "{'width': trial.suggest_int('width', 16, 256)}, but it returned "
            f"{type(extra).__name__}."
        )
    clash = sorted((set(extra) | set(trial.params)) & RESERVED_NAMES)
    if clash:
        raise ValueError(
            f"suggest(trial) suggested or returned {', '.join(map(repr, clash))}, which bsopt "
            "searches itself. Set those through SearchSpace (e.g. SearchSpace(weight_decay="
            "(1e-5, 1e-2))), and give your own hyperparameters other names"
            + (
                " (e.g. 'opt', 'sgd_momentum', 'beta2'), read by make_objective(..., "
                "optimizer=fn(params, model)) from params.extra."
                if {"optimizer", "momentum"} & set(clash)
                else "."
            )
        )
    params = space.suggest(trial)
    return replace(params, extra=dict(extra))


def _check_choices(name: str, value: str | tuple[str, ...], allowed: tuple[str, ...]) -> None:
    values = value if isinstance(value, tuple) else (value,)
    if not values or any(v not in allowed for v in values):
        raise ValueError(
            f"{name} must be one of {', '.join(allowed)} (or a tuple of them to search), "
            f"but got {value!r}."
        )


def _suggest_choice(trial: optuna.Trial, name: str, value: str | tuple[str, ...]) -> str:
    # A fixed choice is not a parameter: it would clutter importance and the dashboard.
    if isinstance(value, tuple):
        return str(trial.suggest_categorical(name, value)) if len(value) > 1 else value[0]
    return value


def _suggest_float(
    trial: optuna.Trial, name: str, bounds: tuple[float, float], *, log: bool
) -> float:
    low, high = bounds
    if low == high:
        # Optuna stores single-point distributions too; keeping them makes a fixed value
        # visible in the dashboard and keeps the search space identical across trials.
        return trial.suggest_float(name, low, high)
    return trial.suggest_float(name, low, high, log=log)
