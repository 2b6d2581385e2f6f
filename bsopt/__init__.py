"""bsopt: batch size as a first-class searched dimension in Optuna."""

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
from bsopt._fair import FairReporter, LoopObjective, retry_oom
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
from bsopt._workers import WorkerError, attach_worker, run_workers, serve_proxy, work

__version__ = "0.1.0"

# The framework integrations import their framework (an optional extra) on first use, so
# `import bsopt` never needs lightning or transformers.
_INTEGRATIONS = {
    "LightningReporter": "bsopt._lightning",
    "TransformersReporter": "bsopt._transformers",
}


def __getattr__(name: str) -> object:
    if name in _INTEGRATIONS:
        import importlib

        return getattr(importlib.import_module(_INTEGRATIONS[name]), name)
    raise AttributeError(f"module 'bsopt' has no attribute {name!r}")

__all__ = [
    "DEFAULT_STORAGE",
    "METRICS",
    "BatchSizeAnalysis",
    "BatchSizeStats",
    "Budget",
    "CriticalBatchFit",
    "DatasetData",
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
