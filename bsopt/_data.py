"""Training data containers and the batch iterators the trainer draws from.

Two kinds of data reach the trainer:

* :class:`TensorData` keeps the whole train/validation split as tensors. They are moved to
  the training device once, and every epoch is one permutation followed by slicing views:
  no per-sample collate, no worker processes. This is the fast path for anything that fits.
* :class:`DatasetData` wraps ``torch.utils.data.Dataset`` objects for data that does not fit
  in memory; batches come from a ``DataLoader`` with workers and pinned memory.

Both expose the same two methods the trainer uses: ``train_batches`` and ``val_batches``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
import os
from typing import Protocol

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

Batch = tuple[torch.Tensor, torch.Tensor]
# A fixed batch size, or a callable asked before each batch (batch-size schedules).
BatchSize = int | Callable[[], int]


def _size(batch_size: BatchSize) -> int:
    return batch_size() if callable(batch_size) else batch_size


# Evaluation has no gradients, so it can use far larger batches than training.
_EVAL_BATCH_SIZE = 4096


class TrainingData(Protocol):
    """What the trainer needs from a data set."""

    @property
    def n_train(self) -> int: ...

    @property
    def n_val(self) -> int: ...

    @property
    def n_classes(self) -> int | None: ...

    def train_batches(
        self, batch_size: BatchSize, device: torch.device, generator: torch.Generator
    ) -> Iterator[Batch]:
        """One shuffled epoch of training batches; the last batch may be short.

        A callable ``batch_size`` is asked before each batch, so a schedule can change the
        batch size within an epoch.
        """
        ...

    def val_batches(self, device: torch.device) -> Iterator[Batch]:
        """The validation set, in large batches, in a fixed order."""
        ...


def _check_pair(x: torch.Tensor, y: torch.Tensor, split: str) -> None:
    if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor):
        raise TypeError(
            f"The {split} data must be torch tensors, but got "
            f"x={type(x).__name__} and y={type(y).__name__}. "
            "Convert arrays with torch.as_tensor first."
        )
    if x.ndim == 0 or y.ndim == 0:
        raise ValueError(f"The {split} tensors need a sample dimension, but got 0-d tensors.")
    if len(x) != len(y):
        raise ValueError(
            f"The {split} inputs and targets must have the same length, but got "
            f"len(x)={len(x)} and len(y)={len(y)}."
        )
    if len(x) == 0:
        raise ValueError(f"The {split} split is empty; it needs at least one sample.")
    if not x.is_floating_point():
        raise ValueError(
            f"The {split} inputs must be a floating-point tensor, but got dtype={x.dtype}. "
            "Convert them with x.float()."
        )
    if not (y.is_floating_point() or y.dtype == torch.int64):
        raise ValueError(
            f"The {split} targets must be int64 class labels or floating-point regression "
            f"targets, but got dtype={y.dtype}. Use y.long() for class labels."
        )


@dataclass(frozen=True)
class TensorData:
    """A train/validation split held entirely as tensors.

    Targets of dtype ``int64`` mean classification (``n_classes`` is inferred from the
    largest label), floating-point targets mean regression.
    """

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    name: str = "tensors"
    _device_cache: dict[str, tuple[torch.Tensor, ...]] = field(
        default_factory=dict, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        _check_pair(self.x_train, self.y_train, "training")
        _check_pair(self.x_val, self.y_val, "validation")
        if self.x_train.shape[1:] != self.x_val.shape[1:]:
            raise ValueError(
                "The training and validation inputs must have the same feature shape, but got "
                f"{tuple(self.x_train.shape[1:])} and {tuple(self.x_val.shape[1:])}."
            )
        if self.y_train.dtype != self.y_val.dtype:
            raise ValueError(
                "The training and validation targets must have the same dtype, but got "
                f"{self.y_train.dtype} and {self.y_val.dtype}."
            )
        if not self.y_train.is_floating_point():
            low = int(min(self.y_train.min(), self.y_val.min()))
            if low < 0:
                raise ValueError(
                    f"Class labels must be 0 or more, but the smallest label is {low}."
                )

    @property
    def n_train(self) -> int:
        return len(self.x_train)

    @property
    def n_val(self) -> int:
        return len(self.x_val)

    @property
    def n_features(self) -> int:
        return int(np.prod(self.x_train.shape[1:]))

    @property
    def n_classes(self) -> int | None:
        if self.y_train.is_floating_point():
            return None
        return int(max(self.y_train.max(), self.y_val.max())) + 1

    def _on(self, device: torch.device) -> tuple[torch.Tensor, ...]:
        # Moved once per device and reused by every trial in this process.
        key = str(device)
        if key not in self._device_cache:
            self._device_cache[key] = tuple(
                t.to(device) for t in (self.x_train, self.y_train, self.x_val, self.y_val)
            )
        return self._device_cache[key]

    def train_batches(
        self, batch_size: BatchSize, device: torch.device, generator: torch.Generator
    ) -> Iterator[Batch]:
        x, y, _, _ = self._on(device)
        # One gather per epoch, then contiguous views: cheaper than indexing every batch.
        order = torch.randperm(len(x), generator=generator).to(device)
        x, y = x[order], y[order]
        start = 0
        while start < len(x):
            stop = start + _size(batch_size)
            yield x[start:stop], y[start:stop]
            start = stop

    def val_batches(self, device: torch.device) -> Iterator[Batch]:
        _, _, x, y = self._on(device)
        for start in range(0, len(x), _EVAL_BATCH_SIZE):
            yield x[start : start + _EVAL_BATCH_SIZE], y[start : start + _EVAL_BATCH_SIZE]


class DatasetData:
    """Train/validation ``Dataset`` objects read through ``DataLoader`` workers.

    Use this when the data do not fit in memory. ``num_workers=None`` picks
    ``min(4, cpu count - 1)``; memory is pinned when training on CUDA.
    """

    def __init__(
        self,
        train: Dataset[Batch],
        val: Dataset[Batch],
        *,
        n_classes: int | None,
        num_workers: int | None = None,
        name: str = "dataset",
    ) -> None:
        for split, ds in (("training", train), ("validation", val)):
            if not hasattr(ds, "__len__") or len(ds) == 0:
                raise ValueError(f"The {split} dataset must have a length of at least 1.")
        if n_classes is not None and n_classes < 2:
            raise ValueError(
                f"n_classes must be None (regression) or at least 2, got {n_classes}."
            )
        if num_workers is not None and num_workers < 0:
            raise ValueError(f"num_workers must be 0 or more, got {num_workers}.")
        self.train = train
        self.val = val
        self._n_classes = n_classes
        self.num_workers = (
            max(0, min(4, (os.cpu_count() or 1) - 1)) if num_workers is None else num_workers
        )
        self.name = name

    @property
    def n_train(self) -> int:
        return len(self.train)  # type: ignore[arg-type]

    @property
    def n_val(self) -> int:
        return len(self.val)  # type: ignore[arg-type]

    @property
    def n_classes(self) -> int | None:
        return self._n_classes

    def _loader(
        self, ds: Dataset[Batch], batch_size: int, device: torch.device, **kwargs: object
    ) -> DataLoader[Batch]:
        return DataLoader(
            ds,
            batch_size=batch_size,
            num_workers=self.num_workers,
            pin_memory=device.type == "cuda",
            persistent_workers=False,
            **kwargs,  # type: ignore[arg-type]
        )

    def train_batches(
        self, batch_size: BatchSize, device: torch.device, generator: torch.Generator
    ) -> Iterator[Batch]:
        if callable(batch_size):
            # Worker processes prefetch a few batches, so a new size takes effect a few
            # batches late; schedules change the size only at evaluation points.
            sampler = _ScheduledBatchSampler(self.n_train, batch_size, generator)
            loader: DataLoader[Batch] = DataLoader(
                self.train,
                batch_sampler=sampler,
                num_workers=self.num_workers,
                pin_memory=device.type == "cuda",
            )
        else:
            loader = self._loader(
                self.train, batch_size, device, shuffle=True, generator=generator
            )
        non_blocking = device.type == "cuda"
        for x, y in loader:
            yield x.to(device, non_blocking=non_blocking), y.to(device, non_blocking=non_blocking)

    def val_batches(self, device: torch.device) -> Iterator[Batch]:
        loader = self._loader(self.val, min(_EVAL_BATCH_SIZE, self.n_val), device)
        for x, y in loader:
            yield x.to(device), y.to(device)


class _ScheduledBatchSampler:
    """Shuffled index batches whose size is asked for before each batch."""

    def __init__(self, n: int, size: Callable[[], int], generator: torch.Generator) -> None:
        self.n, self.size, self.generator = n, size, generator

    def __iter__(self) -> Iterator[list[int]]:
        order = torch.randperm(self.n, generator=self.generator).tolist()
        start = 0
        while start < self.n:
            stop = start + self.size()
            yield order[start:stop]
            start = stop


def _stratified_split(
    x: np.ndarray, y: np.ndarray, val_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    from sklearn.model_selection import train_test_split

    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), but got {val_fraction}.")
    # Stratify class labels only; continuous regression targets cannot be stratified.
    stratify = y if np.issubdtype(y.dtype, np.integer) else None
    x_tr, x_va, y_tr, y_va = train_test_split(
        x, y, test_size=val_fraction, random_state=seed, stratify=stratify
    )
    return x_tr, x_va, y_tr, y_va


def _standardise(x_tr: np.ndarray, x_va: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    # Statistics from the training split only, so validation stays unseen.
    mean = x_tr.mean(axis=0)
    std = x_tr.std(axis=0)
    std[std == 0] = 1.0
    return (x_tr - mean) / std, (x_va - mean) / std


def from_arrays(
    x: np.ndarray,
    y: np.ndarray,
    *,
    val_fraction: float = 0.2,
    seed: int = 0,
    standardise: bool = True,
    name: str = "arrays",
) -> TensorData:
    """Split arrays into a :class:`TensorData`.

    Integer ``y`` means class labels (the split is stratified), floating-point ``y``
    regression targets. Inputs are standardised with training-split statistics.
    """
    if len(x) != len(y):
        raise ValueError(
            f"x and y must have the same length, but got len(x)={len(x)} and len(y)={len(y)}."
        )
    x_tr, x_va, y_tr, y_va = _stratified_split(x, y, val_fraction, seed)
    if standardise:
        x_tr, x_va = _standardise(x_tr.astype(np.float64), x_va.astype(np.float64))
    y_dtype = torch.int64 if np.issubdtype(y.dtype, np.integer) else torch.float32
    return TensorData(
        torch.as_tensor(x_tr, dtype=torch.float32),
        torch.as_tensor(y_tr, dtype=y_dtype),
        torch.as_tensor(x_va, dtype=torch.float32),
        torch.as_tensor(y_va, dtype=y_dtype),
        name=name,
    )


def load_digits(*, val_fraction: float = 0.2, seed: int = 0) -> TensorData:
    """scikit-learn's bundled 8x8 digits (1,797 images, 10 classes), standardised.

    The split is stratified; ``seed`` fixes it. No download is needed.
    """
    from sklearn.datasets import load_digits as sk_load_digits

    bunch = sk_load_digits()
    return from_arrays(
        bunch.data,
        bunch.target.astype(np.int64),
        val_fraction=val_fraction,
        seed=seed,
        name="digits",
    )


def make_synthetic(
    n_samples: int = 2000,
    *,
    n_features: int = 20,
    n_classes: int = 4,
    val_fraction: float = 0.2,
    seed: int = 0,
) -> TensorData:
    """A seeded synthetic classification problem (scikit-learn ``make_classification``)."""
    from sklearn.datasets import make_classification

    if n_samples < 10:
        raise ValueError(f"n_samples must be at least 10, but got {n_samples}.")
    x, y = make_classification(
        n_samples=n_samples,
        n_features=n_features,
        n_informative=max(2, n_features // 2),
        n_redundant=min(2, n_features // 4),
        n_classes=n_classes,
        n_clusters_per_class=2,
        class_sep=1.0,
        random_state=seed,
    )
    return from_arrays(
        x, y.astype(np.int64), val_fraction=val_fraction, seed=seed, name="synthetic"
    )
