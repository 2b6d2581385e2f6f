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
import sys
from typing import Any, Generic, Literal, TypeVar

from bsopt.core._stop import DivergenceCheck

BudgetUnit = Literal["epochs", "samples", "seconds"]
_UNITS = ("epochs", "samples", "seconds")
B = TypeVar("B")


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


@dataclass
class GridCursor(Generic[B]):
    """Where a run stands on its grid: the one walker of the grid points.

    bsopt's trainer, :class:`~bsopt.FairReporter` and the framework callbacks all keep one.
    It counts ``samples_seen``, knows the next grid point (``index`` into ``grid.points``),
    holds the ``leftover`` of a batch that was cut at a point (the caller cuts: core knows
    no tensors) and sums the training loss of the current evaluation interval.

    ``interval_loss`` is a float or a scalar tensor: a tensor is summed where it lives, so
    a GPU run syncs with the host only when the interval is checked.
    """

    grid: Grid
    samples_seen: int = 0
    index: int = 0
    leftover: B | None = None
    interval_loss: Any = 0.0
    interval_steps: int = 0

    @property
    def timed(self) -> bool:
        """Whether the grid is in training milliseconds (a seconds budget)."""
        return self.grid.unit == "ms"

    @property
    def done(self) -> bool:
        """Whether every grid point was passed."""
        return self.index >= len(self.grid.points)

    @property
    def next_point(self) -> int | None:
        """The grid point to reach next, ``None`` once every point was passed."""
        return None if self.done else self.grid.points[self.index]

    @property
    def room(self) -> int:
        """Samples until the next grid point: the most the next batch may hold.

        A time grid cannot be cut by samples: then (and once done) it is ``sys.maxsize``.
        """
        if self.timed or self.done:
            return sys.maxsize
        return max(self.grid.points[self.index] - self.samples_seen, 0)

    def position(self, training_ms: float) -> float:
        """How far the run is in the grid's unit: training ms or samples seen."""
        return training_ms if self.timed else self.samples_seen

    def reached(self, training_ms: float = 0.0) -> bool:
        """Whether the next grid point is reached (``training_ms`` counts on a time grid)."""
        return not self.done and self.position(training_ms) >= self.grid.points[self.index]

    def last_passed(self, training_ms: float = 0.0) -> int:
        """The last grid point at or before the run's position, at least the next one: where
        a report goes when one step passed several points."""
        done = self.position(training_ms)
        index = self.index
        while index + 1 < len(self.grid.points) and self.grid.points[index + 1] <= done:
            index += 1
        return self.grid.points[index]

    def advance(self, past: int | None = None) -> None:
        """Move beyond the next point, or beyond every point up to ``past``."""
        if past is None:
            self.index += 1
            return
        while not self.done and self.grid.points[self.index] <= past:
            self.index += 1

    def take_leftover(self) -> B | None:
        """The tail of the batch last cut at a grid point (once), or ``None``."""
        leftover, self.leftover = self.leftover, None
        return leftover

    def add_loss(self, loss: Any) -> None:
        """Add one step's training loss to the interval's sum."""
        self.interval_loss = self.interval_loss + loss
        self.interval_steps += 1

    def close_interval(self, divergence: DivergenceCheck) -> str | None:
        """Check the interval's mean training loss and start a new interval: the reason if
        the run diverged, else ``None`` (also when no loss was added)."""
        if not self.interval_steps:
            return None
        mean = float(self.interval_loss) / self.interval_steps
        self.interval_loss = 0.0
        self.interval_steps = 0
        return divergence.interval(mean)
