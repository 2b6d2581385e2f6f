"""The search space: which batch size, learning rate and dropout a trial trains with.

``SearchSpace`` is a frozen, validated description of the ranges. ``suggest(trial)`` asks an
Optuna trial for values and returns a frozen :class:`Params`, the plain record the trainer
and the model builder receive.

Batch size on powers of two
---------------------------
Optuna's ``IntDistribution`` refuses ``log=True`` together with ``step``, and a suggested value
cannot be replaced afterwards (RDB storages insert each parameter once). So on the default
powers-of-two grid the sampler searches the exponent ``log2_batch_size`` (an ordered integer,
every value equally likely before the sampler learns), and the value trained with is stored as
the parameter ``batch_size`` through a single-point distribution. Consequences:

* ``trial.params["batch_size"]`` is always the batch size actually used, under the same name
  on every grid, for the analysis, ``study.best_params`` and the dashboard's tables;
* the sampler models only ``log2_batch_size`` (single-point distributions are not searched),
  so nothing is counted twice;
* importance evaluators and Optuna's plots see the searched ``log2_batch_size``; bsopt's
  analysis reports it under the name ``batch_size``.

With ``batch_grid="int"`` the sampler searches ``batch_size`` itself, log-scaled.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
import math
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    import optuna

BatchGrid = Literal["pow2", "int"]
Optimizer = Literal["adamw", "sgd"]


def _is_power_of_two(n: int) -> bool:
    return n > 0 and n & (n - 1) == 0


@dataclass(frozen=True)
class Params:
    """The hyperparameters of one trial, as the trainer and the model builder see them.

    ``batch_size`` is the effective batch size (samples per optimizer update); ``lr`` the
    learning rate actually used. ``extra`` holds values a user's own ``suggest_extra`` hook
    drew (for example a hidden width).
    """

    batch_size: int
    lr: float
    dropout: float = 0.0
    weight_decay: float = 0.0
    optimizer: Optimizer = "adamw"
    momentum: float = 0.9
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

    def as_dict(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "extra"}
        out.update(self.extra)
        return out


def _check_range(name: str, bounds: tuple[float, float], *, positive: bool) -> None:
    if len(bounds) != 2:
        raise ValueError(f"{name} must be a (low, high) pair, but got {bounds!r}.")
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
        weight_decay: fixed weight decay passed to the optimizer.
        optimizer: ``"adamw"`` (default) or ``"sgd"`` (with Nesterov momentum ``momentum``).
        batch_grid: ``"pow2"`` or ``"int"``, see ``batch_size``.

    A single value fixes a dimension: ``batch_size=(64, 64)`` trains every trial at 64.
    """

    batch_size: tuple[int, int] = (16, 256)
    lr: tuple[float, float] = (1e-4, 1e-1)
    dropout: tuple[float, float] = (0.0, 0.5)
    weight_decay: float = 0.0
    optimizer: Optimizer = "adamw"
    momentum: float = 0.9
    batch_grid: BatchGrid = "pow2"

    def __post_init__(self) -> None:
        lo_b, hi_b = self.batch_size
        if not all(isinstance(b, int) and not isinstance(b, bool) for b in self.batch_size):
            raise ValueError(f"batch_size bounds must be integers, but got {self.batch_size!r}.")
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
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay must be 0 or more, but got {self.weight_decay}.")
        if self.optimizer not in ("adamw", "sgd"):
            raise ValueError(f"optimizer must be 'adamw' or 'sgd', but got {self.optimizer!r}.")
        if not 0.0 <= self.momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), but got {self.momentum}.")

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
        lr = _suggest_float(trial, "lr", self.lr, log=True)
        dropout = _suggest_float(trial, "dropout", self.dropout, log=False)
        return Params(
            batch_size=batch_size,
            lr=lr,
            dropout=dropout,
            weight_decay=self.weight_decay,
            optimizer=self.optimizer,
            momentum=self.momentum,
        )

    def _suggest_batch_size(self, trial: optuna.Trial) -> int:
        low, high = self.batch_size
        if self.batch_grid == "int":
            return trial.suggest_int("batch_size", low, high, log=True)
        exponent = trial.suggest_int("log2_batch_size", int(math.log2(low)), int(math.log2(high)))
        used = 2**exponent
        # A single-point distribution records the used value without searching it again.
        return trial.suggest_int("batch_size", used, used, log=True)


def _suggest_float(
    trial: optuna.Trial, name: str, bounds: tuple[float, float], *, log: bool
) -> float:
    low, high = bounds
    if low == high:
        # Optuna stores single-point distributions too; keeping them makes a fixed value
        # visible in the dashboard and keeps the search space identical across trials.
        return trial.suggest_float(name, low, high)
    return trial.suggest_float(name, low, high, log=log)
