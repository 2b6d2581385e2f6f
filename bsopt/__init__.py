"""bsopt: batch size as a first-class searched dimension in Optuna.

The public names are loaded on first use, as ``optuna/__init__.py`` does for its heavy
parts: ``import bsopt`` imports neither torch nor Optuna, so the command line starts at
once and ``bsopt studies`` or ``bsopt report`` never pay for the trainer. ``bsopt.X``
imports the private module that defines ``X`` (the table below) and keeps the value.
Type checkers and editors read the imports under ``TYPE_CHECKING``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0"

if TYPE_CHECKING:
    from bsopt._analysis import (
        BatchSizeAnalysis,
        BatchSizeStats,
        CriticalBatchFit,
        ImportanceRow,
        Importances,
        LrFit,
        analyze_batch_sizes,
        fit_critical_batch,
        fit_lr_scaling,
        param_importances,
    )
    from bsopt._batch import batch_size_of, split_batch
    from bsopt._budget import Budget, Grid
    from bsopt._cli import main, run_script
    from bsopt._confirm import ConfirmResult, ConfirmRun, confirm
    from bsopt._dashboard import attach_report, serve_dashboard
    from bsopt._data import (
        DatasetData,
        TensorData,
        TrainingData,
        from_arrays,
        load_digits,
        make_synthetic,
    )
    from bsopt._datasets import load_cifar10, load_mnist
    from bsopt._distributed import DistributedError, RankError
    from bsopt._fair import FairReporter, LoopObjective, retry_oom
    from bsopt._lightning import LightningReporter as LightningReporter
    from bsopt._memory import MemoryBudget, is_oom_error, release_memory
    from bsopt._metrics import METRICS, LossFn, Metric
    from bsopt._models import mlp, mlp_builder
    from bsopt._objective import Objective, ObjectiveOptions, make_objective, params_from_trial
    from bsopt._probe import ProbeResult, probe_batch_size
    from bsopt._pruners import make_pruner
    from bsopt._report import Report, write_report
    from bsopt._runner import run
    from bsopt._space import Params, SearchSpace
    from bsopt._stop import StopReason
    from bsopt._storage import (
        DEFAULT_STORAGE,
        StorageError,
        mask_url,
        open_storage,
        resolve_storage_url,
    )
    from bsopt._study import create_study, optimize, summary
    from bsopt._trainer import TrainResult, evaluate, train
    from bsopt._transformers import TransformersReporter as TransformersReporter
    from bsopt._workers import WorkerError, attach_worker, run_workers, serve_proxy, work

# Public name -> the private module that defines it. The framework integrations import
# their framework (an optional extra) on first use, so `import bsopt` never needs lightning
# or transformers; they stay out of __all__ so that `from bsopt import *` does not either.
_LAZY: dict[str, str] = {
    "BatchSizeAnalysis": "bsopt._analysis",
    "BatchSizeStats": "bsopt._analysis",
    "CriticalBatchFit": "bsopt._analysis",
    "ImportanceRow": "bsopt._analysis",
    "Importances": "bsopt._analysis",
    "LrFit": "bsopt._analysis",
    "analyze_batch_sizes": "bsopt._analysis",
    "fit_critical_batch": "bsopt._analysis",
    "fit_lr_scaling": "bsopt._analysis",
    "param_importances": "bsopt._analysis",
    "batch_size_of": "bsopt._batch",
    "split_batch": "bsopt._batch",
    "Budget": "bsopt._budget",
    "Grid": "bsopt._budget",
    "main": "bsopt._cli",
    "run_script": "bsopt._cli",
    "ConfirmResult": "bsopt._confirm",
    "ConfirmRun": "bsopt._confirm",
    "confirm": "bsopt._confirm",
    "attach_report": "bsopt._dashboard",
    "serve_dashboard": "bsopt._dashboard",
    "DatasetData": "bsopt._data",
    "TensorData": "bsopt._data",
    "TrainingData": "bsopt._data",
    "from_arrays": "bsopt._data",
    "load_digits": "bsopt._data",
    "make_synthetic": "bsopt._data",
    "load_cifar10": "bsopt._datasets",
    "load_mnist": "bsopt._datasets",
    "DistributedError": "bsopt._distributed",
    "RankError": "bsopt._distributed",
    "FairReporter": "bsopt._fair",
    "LoopObjective": "bsopt._fair",
    "retry_oom": "bsopt._fair",
    "MemoryBudget": "bsopt._memory",
    "is_oom_error": "bsopt._memory",
    "release_memory": "bsopt._memory",
    "LossFn": "bsopt._metrics",
    "METRICS": "bsopt._metrics",
    "Metric": "bsopt._metrics",
    "mlp": "bsopt._models",
    "mlp_builder": "bsopt._models",
    "Objective": "bsopt._objective",
    "ObjectiveOptions": "bsopt._objective",
    "make_objective": "bsopt._objective",
    "params_from_trial": "bsopt._objective",
    "ProbeResult": "bsopt._probe",
    "probe_batch_size": "bsopt._probe",
    "make_pruner": "bsopt._pruners",
    "Report": "bsopt._report",
    "write_report": "bsopt._report",
    "run": "bsopt._runner",
    "Params": "bsopt._space",
    "SearchSpace": "bsopt._space",
    "StopReason": "bsopt._stop",
    "DEFAULT_STORAGE": "bsopt._storage",
    "StorageError": "bsopt._storage",
    "mask_url": "bsopt._storage",
    "open_storage": "bsopt._storage",
    "resolve_storage_url": "bsopt._storage",
    "create_study": "bsopt._study",
    "optimize": "bsopt._study",
    "summary": "bsopt._study",
    "TrainResult": "bsopt._trainer",
    "evaluate": "bsopt._trainer",
    "train": "bsopt._trainer",
    "WorkerError": "bsopt._workers",
    "attach_worker": "bsopt._workers",
    "run_workers": "bsopt._workers",
    "serve_proxy": "bsopt._workers",
    "work": "bsopt._workers",
    "LightningReporter": "bsopt._lightning",
    "TransformersReporter": "bsopt._transformers",
}


def __getattr__(name: str) -> object:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'bsopt' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # the next lookup does not come here
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "DEFAULT_STORAGE",
    "METRICS",
    "BatchSizeAnalysis",
    "BatchSizeStats",
    "Budget",
    "ConfirmResult",
    "ConfirmRun",
    "CriticalBatchFit",
    "DatasetData",
    "DistributedError",
    "FairReporter",
    "Grid",
    "ImportanceRow",
    "Importances",
    "LoopObjective",
    "LossFn",
    "LrFit",
    "MemoryBudget",
    "Metric",
    "Objective",
    "ObjectiveOptions",
    "Params",
    "ProbeResult",
    "RankError",
    "Report",
    "SearchSpace",
    "StopReason",
    "StorageError",
    "TensorData",
    "TrainResult",
    "TrainingData",
    "WorkerError",
    "analyze_batch_sizes",
    "attach_report",
    "attach_worker",
    "batch_size_of",
    "confirm",
    "create_study",
    "evaluate",
    "fit_critical_batch",
    "fit_lr_scaling",
    "from_arrays",
    "is_oom_error",
    "load_cifar10",
    "load_digits",
    "load_mnist",
    "main",
    "make_objective",
    "make_pruner",
    "make_synthetic",
    "mask_url",
    "mlp",
    "mlp_builder",
    "open_storage",
    "optimize",
    "param_importances",
    "params_from_trial",
    "probe_batch_size",
    "release_memory",
    "resolve_storage_url",
    "retry_oom",
    "run",
    "run_script",
    "run_workers",
    "serve_dashboard",
    "serve_proxy",
    "split_batch",
    "summary",
    "train",
    "work",
    "write_report",
]
