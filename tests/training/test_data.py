from __future__ import annotations

import os

import numpy as np
import pytest
import torch

import bsopt
from bsopt import TensorData


def test_digits_split_is_stratified_and_standardised() -> None:
    data = bsopt.load_digits(seed=0)
    assert (data.n_train, data.n_val, data.n_classes, data.n_features) == (1437, 360, 10, 64)
    counts = torch.bincount(data.y_val, minlength=10)
    assert counts.min() >= 35 and counts.max() <= 37  # 360 / 10, stratified
    mean = data.x_train.mean(dim=0)
    assert float(mean.abs().max()) < 1e-5
    assert data.x_train.dtype == torch.float32 and data.y_train.dtype == torch.int64


def test_synthetic_is_reproducible_per_seed() -> None:
    a, b = bsopt.make_synthetic(300, seed=3), bsopt.make_synthetic(300, seed=3)
    c = bsopt.make_synthetic(300, seed=4)
    assert torch.equal(a.x_train, b.x_train)
    assert not torch.equal(a.x_train, c.x_train)


def test_an_epoch_visits_every_sample_once(tiny_data: TensorData) -> None:
    generator = torch.Generator().manual_seed(0)
    batches = list(tiny_data.train_batches(96, torch.device("cpu"), generator))
    assert [len(x) for x, _ in batches] == [96, 96, 96, 32]
    seen = torch.cat([x for x, _ in batches])
    assert sorted(map(tuple, seen.tolist())) == sorted(map(tuple, tiny_data.x_train.tolist()))
    again = torch.cat([x for x, _ in tiny_data.train_batches(96, torch.device("cpu"), generator)])
    assert not torch.equal(seen, again)  # reshuffled each epoch


def test_validation_batches_cover_the_split_in_order(tiny_data: TensorData) -> None:
    xs = torch.cat([x for x, _ in tiny_data.val_batches(torch.device("cpu"))])
    assert torch.equal(xs, tiny_data.x_val)


def test_from_arrays_infers_the_task() -> None:
    x = np.random.default_rng(0).normal(size=(100, 3))
    classes = bsopt.from_arrays(x, np.arange(100) % 4)
    assert classes.n_classes == 4
    assert torch.bincount(classes.y_val).tolist() == [5, 5, 5, 5]
    regression = bsopt.from_arrays(x, x[:, 0].copy(), val_fraction=0.5)
    assert regression.n_classes is None and regression.y_train.dtype == torch.float32


def _zeros(
    n_train: int = 5,
    n_targets: int | None = None,
    *,
    shape: tuple[int, ...] = (2,),
    val_shape: tuple[int, ...] | None = None,
    dtype: torch.dtype = torch.float32,
    target_dtype: torch.dtype = torch.long,
) -> TensorData:
    """A TensorData of zeros (two validation samples) with one thing changed."""
    return TensorData(
        torch.zeros(n_train, *shape, dtype=dtype),
        torch.zeros(n_train if n_targets is None else n_targets, dtype=target_dtype),
        torch.zeros(2, *(val_shape or shape), dtype=dtype),
        torch.zeros(2, dtype=target_dtype),
    )


@pytest.mark.parametrize(
    ("make", "error", "message"),
    [
        (
            lambda: _zeros(5, 4),
            ValueError,
            r"training inputs and targets must have the same length, but got "
            r"len\(x\)=5 and len\(y\)=4",
        ),
        (
            lambda: _zeros(dtype=torch.uint8),
            ValueError,
            r"training inputs must be floating point or int64, int32, bool, but got "
            r"dtype=torch.uint8",
        ),
        (
            lambda: _zeros(target_dtype=torch.int32),
            ValueError,
            r"training targets must be floating point or int64, but got dtype=torch.int32",
        ),
        (
            lambda: _zeros(val_shape=(3,)),
            ValueError,
            r"same structure, per-sample shapes and dtypes, but got \(2,\) float32 and "
            r"\(3,\) float32",
        ),
        (
            lambda: _zeros(0),
            ValueError,
            r"training split is empty",
        ),
        (
            lambda: TensorData(
                np.zeros((5, 2)),
                torch.zeros(5, dtype=torch.long),  # type: ignore[arg-type]
                torch.zeros(2, 2),
                torch.zeros(2, dtype=torch.long),
            ),
            TypeError,
            r"training data must be torch tensors .*but got x=ndarray",
        ),
        (
            lambda: TensorData(
                torch.zeros(5, 2),
                -torch.ones(5, dtype=torch.long),
                torch.zeros(2, 2),
                torch.zeros(2, dtype=torch.long),
            ),
            ValueError,
            r"Class labels must be 0 or more, but the smallest label is -1",
        ),
        (
            lambda: bsopt.from_arrays(np.zeros((5, 2)), np.zeros(4)),
            ValueError,
            r"x and y must have the same length, but got len\(x\)=5 and len\(y\)=4",
        ),
    ],
)
def test_bad_data_is_refused(make: object, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        make()  # type: ignore[operator]


def test_dataset_data_uses_no_workers_for_items_in_memory_and_refuses_several_rows() -> None:
    from torch.utils.data import Dataset, TensorDataset

    x, y = torch.randn(64, 3), torch.arange(64) % 2
    fast = bsopt.DatasetData(TensorDataset(x, y), TensorDataset(x, y), n_classes=2)
    assert fast.num_workers == 0

    class Slow(Dataset[tuple[torch.Tensor, torch.Tensor]]):
        def __len__(self) -> int:
            return 64

        def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
            import time

            time.sleep(0.002)  # an item read from disk
            return x[i], y[i]

    slow = bsopt.DatasetData(Slow(), Slow(), n_classes=2)
    assert slow.num_workers == max(0, min(4, (os.cpu_count() or 1) - 1))
    assert bsopt.DatasetData(Slow(), Slow(), n_classes=2, num_workers=0).num_workers == 0

    def doubled(items: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, ...]:
        xs = torch.stack([item[0] for item in items])
        ys = torch.stack([item[1] for item in items])
        return torch.cat([xs, xs.flip(-1)]), torch.cat([ys, ys])  # two rows per item

    with pytest.raises(ValueError, match=r"8 training items collate into 16 rows"):
        bsopt.DatasetData(TensorDataset(x, y), TensorDataset(x, y), n_classes=2,
                          collate_fn=doubled)  # fmt: skip


def test_items_past_the_preview_that_yield_several_rows_stop_training() -> None:
    from torch.utils.data import Dataset, TensorDataset

    x, y = torch.randn(64, 3), torch.arange(64) % 2

    class LaterTwice(Dataset[tuple[torch.Tensor, torch.Tensor]]):
        def __len__(self) -> int:
            return 64

        def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
            times = 1 if i < 8 else 2  # the preview (items 0-7) looks fine
            return x[i].expand(times, 3), y[i].expand(times)

    def cat(items: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, ...]:
        return torch.cat([a for a, _ in items]), torch.cat([b for _, b in items])

    data = bsopt.DatasetData(LaterTwice(), TensorDataset(x, y), n_classes=2, collate_fn=cat)
    model = torch.nn.Linear(3, 2)
    with pytest.raises(ValueError, match=r"at most 16 items collated into \d+ rows"):
        bsopt.training.train(model, data, bsopt.Params(16, 1e-2), device="cpu")


def test_a_text_collate_with_offsets_is_pointed_at_padding() -> None:
    from torch.utils.data import Dataset

    class Texts(Dataset[tuple[int, torch.Tensor]]):
        def __len__(self) -> int:
            return 16

        def __getitem__(self, i: int) -> tuple[int, torch.Tensor]:
            return i % 2, torch.arange(1, 2 + i % 5)  # texts of different lengths

    def tutorial(items: list[tuple[int, torch.Tensor]]) -> tuple[torch.Tensor, ...]:
        labels = torch.tensor([label for label, _ in items])
        lengths = torch.tensor([0] + [len(text) for _, text in items[:-1]])
        return labels, torch.cat([text for _, text in items]), lengths.cumsum(0)

    with pytest.raises(ValueError, match=r"must be a pair .*pad_sequence.*padding_idx=0"):
        bsopt.DatasetData(Texts(), Texts(), n_classes=2, collate_fn=tutorial)
