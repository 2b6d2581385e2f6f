"""Training budgets in units that mean the same for every batch size.

Optuna's pruners compare trials only at identical ``step`` keys. A step counted in optimizer
updates means 16 samples for one trial and 256 for another, so bsopt reports on a grid of
*samples seen* (for sample and epoch budgets) or of *training milliseconds* (for time
budgets). Every trial reports at exactly the same keys, whatever its batch size.
"""

from __future__ import annotations

from dataclasses import dataclass
import math
import numbers
from typing import Literal

BudgetUnit = Literal["epochs", "samples", "seconds"]
_UNITS = ("epochs", "samples", "seconds")


@dataclass(frozen=True)
class Grid:
    """The step keys a trial reports at, resolved for one training-set size.

    ``points`` are samples seen (``unit == "samples"``) or training milliseconds
    (``unit == "ms"``); the last point is the end of the budget.
    """

    unit: Literal["samples", "ms"]
    points: tuple[int, ...]

    @property
    def total(self) -> int:
        return self.points[-1]


@dataclass(frozen=True)
class Budget:
    """How long each trial trains, and how often it is evaluated.

    Args:
        amount: the size of the budget in ``unit``.
        unit: ``"epochs"`` (default), ``"samples"`` or ``"seconds"`` (training time,
            evaluation excluded: equal compute per trial).
        evals: the number of evaluations, evenly spaced; each is reported to the pruner.

    Examples: ``Budget(10)`` is ten epochs evaluated ten times; ``Budget(50_000, "samples",
    evals=5)``; ``Budget(30, "seconds")``.
    """

    amount: float = 10.0
    unit: BudgetUnit = "epochs"
    evals: int = 10

    def __post_init__(self) -> None:
        if self.unit not in _UNITS:
            raise ValueError(f"Budget unit must be one of {_UNITS}, but got {self.unit!r}.")
        if isinstance(self.amount, bool) or not isinstance(self.amount, numbers.Real):
            raise ValueError(
                f"Budget amount must be a number of {self.unit}, but got "
                f"{type(self.amount).__name__} {self.amount!r}. Pass it as a number, e.g. "
                f"Budget(10) for ten epochs or Budget(30, 'seconds')."
            )
        if not (math.isfinite(self.amount) and self.amount > 0):
            raise ValueError(
                f"Budget amount must be a positive number of {self.unit}, but got {self.amount!r}."
            )
        if isinstance(self.evals, bool) or not isinstance(self.evals, int) or self.evals < 1:
            raise ValueError(f"Budget evals must be an integer of at least 1, got {self.evals!r}.")

    def grid(self, n_train: int) -> Grid:
        """The report steps for a training set of ``n_train`` samples."""
        if n_train < 1:
            raise ValueError(f"n_train must be at least 1, but got {n_train}.")
        if self.unit == "seconds":
            total_ms = max(1, round(self.amount * 1000))
            return Grid("ms", _even_points(total_ms, self.evals))
        total = round(self.amount * n_train) if self.unit == "epochs" else round(self.amount)
        if total < self.evals:
            raise ValueError(
                f"A budget of {self.amount:g} {self.unit} is {total} samples, fewer than the "
                f"{self.evals} evaluations asked for. Raise the budget or lower evals."
            )
        return Grid("samples", _even_points(total, self.evals))

    def describe(self, n_train: int) -> str:
        """The budget as a user thinks of it, e.g. "10 epochs = 14,370 samples; ..."."""
        grid = self.grid(n_train)
        every = grid.points[0]
        if grid.unit == "ms":
            return (
                f"{self.amount:g} s of training per trial; evaluate every {every / 1000:g} s "
                f"({self.evals} evaluations)"
            )
        head = (
            f"{self.amount:g} epochs = {grid.total:,} samples"
            if self.unit == "epochs"
            else f"{grid.total:,} samples = {grid.total / n_train:.3g} epochs"
        )
        return f"{head}; evaluate every {every:,} samples ({self.evals} evaluations)"


def _even_points(total: int, n: int) -> tuple[int, ...]:
    return tuple(round(total * k / n) for k in range(1, n + 1))
