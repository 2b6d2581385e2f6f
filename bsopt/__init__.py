"""bsopt: batch size as a first-class searched dimension in Optuna.

The names a study script needs are here; the rest live in the stage that owns them
(``bsopt.core``, ``bsopt.training``, ``bsopt.store``, ``bsopt.search``, ``bsopt.runs``,
``bsopt.analysis``, ``bsopt.report``, ``bsopt.integrations``, ``bsopt.cli``; see
docs/architecture.md). Everything is loaded on first use: ``import bsopt`` imports neither
torch nor Optuna. The framework reporters import their framework (an optional extra) and
stay out of ``__all__``, so ``from bsopt import *`` needs neither lightning nor transformers."""

from __future__ import annotations

from typing import TYPE_CHECKING

from bsopt._lazy import attach

__version__ = "0.1.0"

if TYPE_CHECKING:
    from bsopt.analysis._analysis import analyze_batch_sizes
    from bsopt.analysis._fits import fit_critical_batch, fit_lr_scaling
    from bsopt.analysis._forecast import Forecast, forecast
    from bsopt.analysis._importance import param_importances
    from bsopt.core._budget import Budget
    from bsopt.core._space import Params, SearchSpace
    from bsopt.integrations._lightning import LightningReporter as LightningReporter
    from bsopt.integrations._transformers import TransformersReporter as TransformersReporter
    from bsopt.report._report import write_report
    from bsopt.runs._confirm import confirm
    from bsopt.runs._study import create_study, optimize
    from bsopt.runs._workers import attach_worker, run_workers, work
    from bsopt.search._fair import FairReporter, LoopObjective, retry_oom
    from bsopt.search._objective import Objective, make_objective, params_from_trial
    from bsopt.search._pruners import make_pruner
    from bsopt.store._errors import StorageError
    from bsopt.store._storage import open_storage
    from bsopt.training._data import (
        DatasetData,
        TensorData,
        from_arrays,
        load_digits,
        make_synthetic,
    )
    from bsopt.training._datasets import load_cifar10, load_mnist
    from bsopt.training._models import mlp_builder

# Public name -> the private module that defines it (or the subpackage itself).
_LAZY = {
    "analyze_batch_sizes": "bsopt.analysis._analysis",
    "fit_critical_batch": "bsopt.analysis._fits",
    "fit_lr_scaling": "bsopt.analysis._fits",
    "Forecast": "bsopt.analysis._forecast",
    "forecast": "bsopt.analysis._forecast",
    "param_importances": "bsopt.analysis._importance",
    "Budget": "bsopt.core._budget",
    "Params": "bsopt.core._space",
    "SearchSpace": "bsopt.core._space",
    "LightningReporter": "bsopt.integrations._lightning",
    "TransformersReporter": "bsopt.integrations._transformers",
    "write_report": "bsopt.report._report",
    "confirm": "bsopt.runs._confirm",
    "create_study": "bsopt.runs._study",
    "optimize": "bsopt.runs._study",
    "attach_worker": "bsopt.runs._workers",
    "run_workers": "bsopt.runs._workers",
    "work": "bsopt.runs._workers",
    "FairReporter": "bsopt.search._fair",
    "LoopObjective": "bsopt.search._fair",
    "retry_oom": "bsopt.search._fair",
    "Objective": "bsopt.search._objective",
    "make_objective": "bsopt.search._objective",
    "params_from_trial": "bsopt.search._objective",
    "make_pruner": "bsopt.search._pruners",
    "StorageError": "bsopt.store._errors",
    "open_storage": "bsopt.store._storage",
    "DatasetData": "bsopt.training._data",
    "TensorData": "bsopt.training._data",
    "from_arrays": "bsopt.training._data",
    "load_digits": "bsopt.training._data",
    "make_synthetic": "bsopt.training._data",
    "load_cifar10": "bsopt.training._datasets",
    "load_mnist": "bsopt.training._datasets",
    "mlp_builder": "bsopt.training._models",
    "core": "bsopt.core",
    "training": "bsopt.training",
    "store": "bsopt.store",
    "search": "bsopt.search",
    "runs": "bsopt.runs",
    "analysis": "bsopt.analysis",
    "report": "bsopt.report",
    "integrations": "bsopt.integrations",
    "cli": "bsopt.cli",
}
__getattr__, __dir__ = attach(__name__, _LAZY)

__all__ = [
    "Budget",
    "DatasetData",
    "FairReporter",
    "Forecast",
    "LoopObjective",
    "Objective",
    "Params",
    "SearchSpace",
    "StorageError",
    "TensorData",
    "analyze_batch_sizes",
    "attach_worker",
    "confirm",
    "create_study",
    "fit_critical_batch",
    "fit_lr_scaling",
    "forecast",
    "from_arrays",
    "load_cifar10",
    "load_digits",
    "load_mnist",
    "make_objective",
    "make_pruner",
    "make_synthetic",
    "mlp_builder",
    "open_storage",
    "optimize",
    "param_importances",
    "params_from_trial",
    "retry_oom",
    "run_workers",
    "work",
    "write_report",
]
