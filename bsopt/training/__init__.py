"""Training without Optuna: batches, data, data sets, models, metrics, optimizers,
the noise scale, memory and the out-of-memory predicate, the probe, the trainer and
training over several devices."""

from __future__ import annotations

from typing import TYPE_CHECKING

from bsopt._lazy import attach

if TYPE_CHECKING:
    from bsopt.training._batch import batch_size_of, split_batch
    from bsopt.training._config import TrainConfig
    from bsopt.training._data import (
        DatasetData,
        TensorData,
        TrainingData,
        from_arrays,
        load_digits,
        make_synthetic,
    )
    from bsopt.training._datasets import load_cifar10, load_mnist
    from bsopt.training._distributed import DistributedError, RankError
    from bsopt.training._memory import MemoryBudget, is_oom_error, release_memory
    from bsopt.training._metrics import METRICS, LossFn, Metric
    from bsopt.training._models import mlp, mlp_builder
    from bsopt.training._optim import LARS
    from bsopt.training._probe import ProbeResult, probe_batch_size
    from bsopt.training._trainer import TrainResult, evaluate, train

# Public name -> the private module that defines it (or the subpackage itself).
_LAZY = {
    "batch_size_of": "bsopt.training._batch",
    "split_batch": "bsopt.training._batch",
    "TrainConfig": "bsopt.training._config",
    "DatasetData": "bsopt.training._data",
    "TensorData": "bsopt.training._data",
    "TrainingData": "bsopt.training._data",
    "from_arrays": "bsopt.training._data",
    "load_digits": "bsopt.training._data",
    "make_synthetic": "bsopt.training._data",
    "load_cifar10": "bsopt.training._datasets",
    "load_mnist": "bsopt.training._datasets",
    "DistributedError": "bsopt.training._distributed",
    "RankError": "bsopt.training._distributed",
    "MemoryBudget": "bsopt.training._memory",
    "is_oom_error": "bsopt.training._memory",
    "release_memory": "bsopt.training._memory",
    "LossFn": "bsopt.training._metrics",
    "METRICS": "bsopt.training._metrics",
    "Metric": "bsopt.training._metrics",
    "mlp": "bsopt.training._models",
    "mlp_builder": "bsopt.training._models",
    "LARS": "bsopt.training._optim",
    "ProbeResult": "bsopt.training._probe",
    "probe_batch_size": "bsopt.training._probe",
    "TrainResult": "bsopt.training._trainer",
    "evaluate": "bsopt.training._trainer",
    "train": "bsopt.training._trainer",
}
__getattr__, __dir__ = attach(__name__, _LAZY)

__all__ = [
    "LARS",
    "METRICS",
    "DatasetData",
    "DistributedError",
    "LossFn",
    "MemoryBudget",
    "Metric",
    "ProbeResult",
    "RankError",
    "TensorData",
    "TrainConfig",
    "TrainResult",
    "TrainingData",
    "batch_size_of",
    "evaluate",
    "from_arrays",
    "is_oom_error",
    "load_cifar10",
    "load_digits",
    "load_mnist",
    "make_synthetic",
    "mlp",
    "mlp_builder",
    "probe_batch_size",
    "release_memory",
    "split_batch",
    "train",
]
