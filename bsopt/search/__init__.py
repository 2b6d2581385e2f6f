"""Optuna meets training: the objective, the fair reporter for own loops, retry on
out-of-memory, and the pruners."""

from __future__ import annotations

from typing import TYPE_CHECKING

from bsopt._lazy import attach

if TYPE_CHECKING:
    from bsopt.search._fair import FairReporter, LoopObjective, retry_oom
    from bsopt.search._levels import BudgetLevels
    from bsopt.search._objective import (
        Objective,
        ObjectiveOptions,
        make_objective,
        params_from_trial,
        trial_seed,
    )
    from bsopt.search._pruners import make_pruner

# Public name -> the private module that defines it (or the subpackage itself).
_LAZY = {
    "FairReporter": "bsopt.search._fair",
    "LoopObjective": "bsopt.search._fair",
    "retry_oom": "bsopt.search._fair",
    "BudgetLevels": "bsopt.search._levels",
    "Objective": "bsopt.search._objective",
    "ObjectiveOptions": "bsopt.search._objective",
    "make_objective": "bsopt.search._objective",
    "params_from_trial": "bsopt.search._objective",
    "trial_seed": "bsopt.search._objective",
    "make_pruner": "bsopt.search._pruners",
}
__getattr__, __dir__ = attach(__name__, _LAZY)

__all__ = [
    "BudgetLevels",
    "FairReporter",
    "LoopObjective",
    "Objective",
    "ObjectiveOptions",
    "make_objective",
    "make_pruner",
    "params_from_trial",
    "retry_oom",
    "trial_seed",
]
