"""The vocabulary every stage shares: budgets and their grid, schedules, the search
space and its parameters, stop reasons. Imports neither torch nor Optuna at run time."""

from __future__ import annotations

from typing import TYPE_CHECKING

from bsopt._lazy import attach

if TYPE_CHECKING:
    from bsopt.core._budget import Budget, Grid
    from bsopt.core._space import Params, SearchSpace
    from bsopt.core._stop import StopReason

# Public name -> the private module that defines it (or the subpackage itself).
_LAZY = {
    "Budget": "bsopt.core._budget",
    "Grid": "bsopt.core._budget",
    "Params": "bsopt.core._space",
    "SearchSpace": "bsopt.core._space",
    "StopReason": "bsopt.core._stop",
}
__getattr__, __dir__ = attach(__name__, _LAZY)

__all__ = [
    "Budget",
    "Grid",
    "Params",
    "SearchSpace",
    "StopReason",
]
