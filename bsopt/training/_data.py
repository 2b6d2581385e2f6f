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

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
import math
import os
import time
from typing import Any, Protocol

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from bsopt.training._batch import (
    Batch,
    Tree,
    batch_size_of,
    describe,
    index_batch,
    leaves,
    signature,
    slice_batch,
    to_device,
)

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
        """One shuffled epoch of training batches ``(inputs, targets)``; the last may be short.

        A callable ``batch_size`` is asked before each batch, so a schedule can change the
        batch size within an epoch.
        """
        ...

    def val_batches(self, device: torch.device) -> Iterator[Batch]:
        """The validation set, in large batches, in a fixed order."""
        ...


def _check_finite(tree: Tree, split: str, part: str) -> None:
    for path, t in leaves(tree):
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            bad = (~torch.isfinite(t)).nonzero()
            where = part if path == "tensor" else f"{part}{path}"
            raise ValueError(
                f"The {split} {where} hold {len(bad)} NaN or infinite value(s), the first at "
                f"index {tuple(bad[0].tolist())}. Every trial would diverge on them: clean or "
                "impute the data first (e.g. sklearn.impute.SimpleImputer)."
            )


def _check_pair(x: Tree, y: Tree, split: str) -> int:
    for name, tree in (("x", x), ("y", y)):
        if isinstance(tree, np.ndarray):
            raise TypeError(
                f"The {split} data must be torch tensors (or tuples, lists or dicts of them), "
                f"but got {name}=ndarray. Convert arrays with torch.as_tensor first, or use "
                "bsopt.from_arrays(x, y)."
            )
    _check_dtypes(x, split, "inputs", (torch.int64, torch.int32, torch.bool))
    _check_dtypes(y, split, "targets", (torch.int64,))
    n_x = batch_size_of(x, where=f"{split} inputs")
    n_y = batch_size_of(y, where=f"{split} targets")
    if n_x != n_y:
        raise ValueError(
            f"The {split} inputs and targets must have the same length, but got "
            f"len(x)={n_x} and len(y)={n_y}."
        )
    if n_x == 0:
        raise ValueError(f"The {split} split is empty; it needs at least one sample.")
    _check_finite(x, split, "inputs")
    _check_finite(y, split, "targets")
    return n_x


def _check_dtypes(tree: Tree, split: str, part: str, integer: tuple[torch.dtype, ...]) -> None:
    for path, t in leaves(tree):
        if not (t.is_floating_point() or t.dtype in integer):
            where = part if path == "tensor" else f"{part}{path}"
            allowed = ", ".join(str(d).removeprefix("torch.") for d in integer)
            raise ValueError(
                f"The {split} {where} must be floating point or {allowed}, but got "
                f"dtype={t.dtype}. Use x.float() for features and regression targets, "
                "y.long() for class labels."
            )


def _per_sample(tree: Tree) -> str:
    return ", ".join(
        ("" if path == "tensor" else f"{path} ")
        + f"{tuple(t.shape[1:])} {str(t.dtype).removeprefix('torch.')}"
        for path, t in leaves(tree)
    )


def _check_val_labels_seen(y_train: torch.Tensor, y_val: Tree) -> None:
    """Refuse validation classes the model can never learn: none of their samples train."""
    if not isinstance(y_val, torch.Tensor):
        return
    unseen = sorted(set(y_val.unique().tolist()) - set(y_train.unique().tolist()))
    if unseen:
        shown = ", ".join(str(label) for label in unseen[:20])
        more = f" and {len(unseen) - 20} more" if len(unseen) > 20 else ""
        raise ValueError(
            f"The validation labels hold classes that no training sample has: {shown}{more}. "
            "Every trial would score them wrong whatever it learned. Split the data so that "
            "each class appears in the training set (bsopt.from_arrays stratifies by class)."
        )


@dataclass(frozen=True, repr=False)
class TensorData:
    """A train/validation split held entirely as tensors.

    Inputs may be a tensor, or a tuple, list or dict of tensors (nested is allowed): the
    model is then called as ``model(x)``, ``model(*x)`` or ``model(**x)``. Targets may be a
    tensor or a dict of tensors. Every tensor holds one entry per sample along its first
    dimension. A single ``int64`` target tensor means classification (``n_classes`` is
    inferred from the largest label); floating-point targets mean regression.
    """

    x_train: Tree
    y_train: Tree
    x_val: Tree
    y_val: Tree
    name: str = "tensors"
    _device_cache: dict[str, tuple[Tree, ...]] = field(
        default_factory=dict, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        n_train = _check_pair(self.x_train, self.y_train, "training")
        _check_pair(self.x_val, self.y_val, "validation")
        for part, train, val in (
            ("inputs", self.x_train, self.x_val),
            ("targets", self.y_train, self.y_val),
        ):
            if signature(train) != signature(val):
                raise ValueError(
                    f"The training and validation {part} must have the same structure, "
                    f"per-sample shapes and dtypes, but got {_per_sample(train)} and "
                    f"{_per_sample(val)}."
                )
        object.__setattr__(self, "_n_train", n_train)
        y = self.y_train
        if isinstance(y, torch.Tensor) and not y.is_floating_point():
            low = int(min(y.min(), self.y_val.min()))
            if low < 0:
                raise ValueError(
                    f"Class labels must be 0 or more, but the smallest label is {low}."
                )
            if y.unique().numel() < 2:
                raise ValueError(
                    f"The training labels hold a single class ({int(y[0])}); every trial "
                    "would score perfectly without learning anything. Check the labels "
                    "(or use float targets for regression)."
                )
            _check_val_labels_seen(y, self.y_val)

    def __repr__(self) -> str:
        return (
            f"TensorData(name={self.name!r}, n_train={self.n_train}, n_val={self.n_val}, "
            f"x={describe(self.x_val)}, y={describe(self.y_val)}, n_classes={self.n_classes})"
        )

    @property
    def n_train(self) -> int:
        return int(self._n_train)  # type: ignore[attr-defined]

    @property
    def n_val(self) -> int:
        return batch_size_of(self.y_val)

    @property
    def n_features(self) -> int:
        if not isinstance(self.x_train, torch.Tensor):
            raise ValueError(
                "n_features is defined for a single input tensor; these inputs are "
                f"{describe(self.x_val)}."
            )
        return int(np.prod(self.x_train.shape[1:]))

    @property
    def n_classes(self) -> int | None:
        y = self.y_train
        if not isinstance(y, torch.Tensor) or y.is_floating_point():
            return None
        return int(max(y.max(), self.y_val.max())) + 1

    def _on(self, device: torch.device) -> tuple[Tree, ...]:
        # Moved once per device and reused by every trial in this process.
        key = str(device)
        if key not in self._device_cache:
            self._device_cache[key] = tuple(
                to_device(t, device) for t in (self.x_train, self.y_train, self.x_val, self.y_val)
            )
        return self._device_cache[key]

    def train_batches(
        self, batch_size: BatchSize, device: torch.device, generator: torch.Generator
    ) -> Iterator[Batch]:
        x, y, _, _ = self._on(device)
        # One gather per epoch, then contiguous views: cheaper than indexing every batch.
        order = torch.randperm(self.n_train, generator=generator)
        if isinstance(x, torch.Tensor) and isinstance(y, torch.Tensor):
            order = order.to(device)
            x, y = x[order], y[order]
            start = 0
            while start < len(x):
                stop = start + _size(batch_size)
                yield x[start:stop], y[start:stop]
                start = stop
            return
        x, y = index_batch(x, order), index_batch(y, order)
        start = 0
        while start < self.n_train:
            stop = start + _size(batch_size)
            yield slice_batch(x, start, stop), slice_batch(y, start, stop)
            start = stop

    def val_batches(self, device: torch.device) -> Iterator[Batch]:
        _, _, x, y = self._on(device)
        for start in range(0, self.n_val, _EVAL_BATCH_SIZE):
            stop = start + _EVAL_BATCH_SIZE
            yield slice_batch(x, start, stop), slice_batch(y, start, stop)


class DatasetData:
    """Train/validation ``Dataset`` objects read through ``DataLoader`` workers.

    Use this when the data do not fit in memory. Items may be ``(inputs, target)`` with
    tensors or dicts/tuples of tensors, as for :class:`TensorData`; ``collate_fn`` is passed
    to the ``DataLoader`` for anything else. Items that are dicts holding their own label
    (Hugging Face style, ``{"input_ids": ..., "labels": ...}``) take ``target_key="labels"``:
    the model is called with the other keys, and the loss and metric read the label.

    One item is one row: the batch size, the budget, the epochs and the evaluation all count
    items, so a ``collate_fn`` that yields several rows per item (windows, crops, stacked
    augmentations) is refused on construction, with the fix (index the dataset by row).

    ``num_workers=None`` picks 0 for items that load fast (in memory: worker processes would
    only add their start-up and transfer time) and ``min(4, cpu count - 1)`` for slow ones;
    memory is pinned when training on CUDA.
    """

    def __init__(
        self,
        train: Dataset[Any],
        val: Dataset[Any],
        *,
        n_classes: int | None,
        num_workers: int | None = None,
        collate_fn: Callable[[list[Any]], Batch] | None = None,
        target_key: str | None = None,
        name: str = "dataset",
    ) -> None:
        for split, ds in (("training", train), ("validation", val)):
            if not hasattr(ds, "__len__") or len(ds) == 0:
                raise ValueError(f"The {split} dataset must have a length of at least 1.")
        if n_classes is not None and (
            isinstance(n_classes, bool) or not isinstance(n_classes, int) or n_classes < 2
        ):
            raise ValueError(
                f"n_classes must be None (regression) or an integer >= 2, got {n_classes!r}."
            )
        if num_workers is not None and num_workers < 0:
            raise ValueError(f"num_workers must be 0 or more, got {num_workers}.")
        if collate_fn is not None and not callable(collate_fn):
            raise ValueError(f"collate_fn must be callable or None, got {collate_fn!r}.")
        if target_key is not None and not isinstance(target_key, str):
            raise ValueError(
                f"target_key must be the key of the label in dict items (e.g. 'labels') or "
                f"None, but got {target_key!r}."
            )
        self.train = train
        self.val = val
        self._n_classes = n_classes
        self.collate_fn = collate_fn
        self.target_key = target_key
        self.name = name
        seconds = self._check_rows()
        self.num_workers = _default_workers(seconds) if num_workers is None else num_workers

    def __repr__(self) -> str:
        return (
            f"DatasetData(name={self.name!r}, n_train={self.n_train}, n_val={self.n_val}, "
            f"n_classes={self.n_classes}, num_workers={self.num_workers})"
        )

    @property
    def n_train(self) -> int:
        return len(self.train)  # type: ignore[arg-type]

    @property
    def n_val(self) -> int:
        return len(self.val)  # type: ignore[arg-type]

    @property
    def n_classes(self) -> int | None:
        return self._n_classes

    def _loader(self, ds: Dataset[Any], device: torch.device, **kwargs: Any) -> DataLoader[Any]:
        return DataLoader(
            ds,
            num_workers=self.num_workers,
            pin_memory=device.type == "cuda",
            persistent_workers=False,
            collate_fn=self.collate_fn,
            **kwargs,
        )

    def pair(self, batch: Any) -> Batch:
        """A collated batch as ``(inputs, targets)``, with a message naming the fix."""
        key = self.target_key
        if key is not None:
            if not isinstance(batch, Mapping) or key not in batch:
                raise ValueError(
                    f"target_key={key!r} takes the label out of dict items, but the batch is "
                    f"{describe(batch)}. Return dicts that hold {key!r}, or leave target_key "
                    "out for (inputs, targets) items."
                )
            return {k: v for k, v in batch.items() if k != key}, batch[key]
        if isinstance(batch, Mapping):
            raise ValueError(
                f"A DatasetData batch must be a pair (inputs, targets), but the DataLoader gave "
                f"a dict with keys {list(batch)}. If the label is one of them (Hugging Face "
                "style), pass target_key='labels' (its key)."
            )
        if not isinstance(batch, (tuple, list)) or len(batch) != 2:
            raise ValueError(
                "A DatasetData batch must be a pair (inputs, targets), but the DataLoader "
                f"gave {describe(batch)}. Return (inputs, targets) from the Dataset or "
                "from collate_fn; a text collate with offsets (EmbeddingBag) returns "
                "((tokens, offsets), labels) instead, or pads the tokens to (batch, length) "
                "with torch.nn.utils.rnn.pad_sequence and EmbeddingBag(padding_idx=0)."
            )
        return batch[0], batch[1]

    def preview(self, n: int = 8, *, split: str = "val") -> Batch:
        """The first ``n`` items of ``split`` ("train" or "val"), collated and paired, on the
        CPU, without starting workers."""
        from torch.utils.data import default_collate

        ds = self.train if split == "train" else self.val
        collate = self.collate_fn or default_collate
        return self.pair(collate([ds[i] for i in range(min(n, len(ds)))]))  # type: ignore[arg-type]

    def _check_rows(self) -> float:
        """Refuse items that collate into more or fewer rows than items; returns the seconds
        one item took to load (for the number of workers)."""
        n = min(8, self.n_train)
        tick = time.perf_counter()
        batch = self.preview(n, split="train")
        seconds = (time.perf_counter() - tick) / n
        try:
            rows = batch_size_of(batch[1], where="batch's targets")
        except (TypeError, ValueError):
            return seconds  # not tensors: the trainer's own checks say what is wrong
        if rows != n:
            raise ValueError(
                f"{n} training items collate into {rows} rows: the Dataset (or collate_fn) "
                "yields several rows per item. The batch size, the budget, the epochs and the "
                "evaluation count items, so they would not count what the model trains on. "
                "Index the dataset by row instead (one window, crop or augmented copy per "
                "item: __len__ = items x rows per item, __getitem__(i) -> one row)."
            )
        return seconds

    def _batches(
        self, loader: DataLoader[Any], device: torch.device, most: int | None = None
    ) -> Iterator[Batch]:
        non_blocking = device.type == "cuda"
        for batch in loader:
            pair = self.pair(batch)
            try:
                rows = batch_size_of(pair)  # leaves must agree on the number of samples
            except ValueError as error:
                raise ValueError(
                    f"{error} (A text collate with offsets for EmbeddingBag gives a tokens "
                    "tensor as long as all texts together: pad the tokens to (batch, length) "
                    "with torch.nn.utils.rnn.pad_sequence and use EmbeddingBag(padding_idx=0).)"
                ) from None
            if most is not None and rows > most:
                raise ValueError(
                    f"A batch of at most {most} items collated into {rows} rows: some items "
                    "yield several rows, so the batch size, the budget and the epochs would "
                    "not count what the model trains on. Index the dataset by row (one row "
                    "per item)."
                )
            yield to_device(pair, device, non_blocking=non_blocking)

    def train_batches(
        self, batch_size: BatchSize, device: torch.device, generator: torch.Generator
    ) -> Iterator[Batch]:
        if callable(batch_size):
            # Worker processes prefetch a few batches, so a new size takes effect a few
            # batches late; schedules change the size only at evaluation points.
            sampler = _ScheduledBatchSampler(self.n_train, batch_size, generator)
            loader = self._loader(self.train, device, batch_sampler=sampler)
        else:
            loader = self._loader(
                self.train, device, batch_size=batch_size, shuffle=True, generator=generator
            )
        yield from self._batches(loader, device, None if callable(batch_size) else batch_size)

    def val_batches(self, device: torch.device) -> Iterator[Batch]:
        loader = self._loader(self.val, device, batch_size=min(_EVAL_BATCH_SIZE, self.n_val))
        yield from self._batches(loader, device)


#: Items that load faster than this are in memory: worker processes would cost more (their
#: start-up each epoch and the transfer of every batch) than they save.
_FAST_ITEM_SECONDS = 5e-4


def _default_workers(seconds_per_item: float) -> int:
    if seconds_per_item < _FAST_ITEM_SECONDS:
        return 0
    return max(0, min(4, (os.cpu_count() or 1) - 1))


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


_MIN_SAMPLES = 10


def _check_arrays(x: np.ndarray, y: np.ndarray, val_fraction: float) -> None:
    """Refuse arrays that cannot be split: not numbers, too few samples, too rare a class."""
    if len(x) < _MIN_SAMPLES:
        raise ValueError(
            f"from_arrays needs at least {_MIN_SAMPLES} samples to split into training and "
            f"validation sets, but got {len(x)}. Pass more samples."
        )
    for part, array in (("x", x), ("y", y)):
        if not (np.issubdtype(array.dtype, np.number) or array.dtype == np.bool_):
            raise ValueError(
                f"{part} must hold numbers, but got dtype {array.dtype} (first value "
                f"{str(array.flat[0])!r}). Convert it first, e.g. {part}.astype(np.float32), and "
                "encode text categories as integers."
            )
    if not np.issubdtype(y.dtype, np.integer):
        return
    labels, counts = np.unique(y, return_counts=True)
    rare = [int(label) for label, count in zip(labels, counts, strict=True) if count < 2]
    if rare:
        raise ValueError(
            f"Every class needs at least 2 samples, one for each split, but class(es) "
            f"{', '.join(map(str, rare[:20]))} have only 1. Add samples of them or drop them."
        )
    if not 0.0 < val_fraction < 1.0:
        return  # refused by the split, with its own message
    n_val = math.ceil(len(y) * val_fraction)
    for split, n, fix in (
        ("validation", n_val, "Raise val_fraction"),
        ("training", len(y) - n_val, "Lower val_fraction"),
    ):
        if n < len(labels):
            raise ValueError(
                f"val_fraction={val_fraction} of {len(y)} samples leaves {n} {split} "
                f"samples, fewer than the {len(labels)} classes, so some class would be "
                f"missing from it. {fix} or pass more samples."
            )


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
    x, y = np.asarray(x), np.asarray(y)
    if x.ndim < 2:
        raise ValueError(
            f"x must have a sample dimension and at least one feature dimension, but got "
            f"shape {x.shape}. For one feature per sample use x.reshape(-1, 1)."
        )
    if len(x) != len(y):
        raise ValueError(
            f"x and y must have the same length, but got len(x)={len(x)} and len(y)={len(y)}."
        )
    _check_arrays(x, y, val_fraction)
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
