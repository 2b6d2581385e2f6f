"""Tests for the on-disk loaders, on small files written here in the real formats.

Every image carries three marker pixels: (c, 0, 0) = 0 and (c, 0, 1) = 255 in every channel,
and (0, 0, 2) = 4 * sample index. The two anchors give back each channel's scale and shift,
so the standardisation can be undone exactly and every sample matched to the one written.
"""

from __future__ import annotations

from collections.abc import Callable
import gzip
import os
from pathlib import Path
import pickle
import struct

import numpy as np
import pytest
import torch

from bsopt.training._data import TensorData
from bsopt.training._datasets import load_cifar10, load_mnist

N = 60
N_CLASSES = 10


def _make_images(n_channels: int, rows: int, cols: int, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(N, n_channels, rows, cols), dtype=np.uint8)
    images[:, :, 0, 0] = 0
    images[:, :, 0, 1] = 255
    images[:, 0, 0, 2] = 4 * np.arange(N)
    return images


LABELS = np.arange(N, dtype=np.uint8) % N_CLASSES


def _idx_bytes(array: np.ndarray, dtype_code: int = 0x08) -> bytes:
    header = bytes([0, 0, dtype_code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(np.uint8).tobytes()


def _write(path: Path, data: bytes, gz: bool = False) -> None:
    if gz:
        path = path.with_name(path.name + ".gz")
        data = gzip.compress(data)
    path.write_bytes(data)


def _write_mnist(
    folder: Path, images: np.ndarray, labels: np.ndarray = LABELS, gz: bool = False
) -> None:
    _write(folder / "train-images-idx3-ubyte", _idx_bytes(images[:, 0]), gz)
    _write(folder / "train-labels-idx1-ubyte", _idx_bytes(labels), gz)


def _write_cifar(folder: Path, images: np.ndarray, labels: np.ndarray = LABELS) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    flat = images.reshape(len(images), -1)
    for i, chunk in enumerate(np.array_split(np.arange(len(images)), 5), start=1):
        batch = {
            b"batch_label": f"training batch {i} of 5".encode(),
            b"data": flat[chunk],
            b"labels": [int(v) for v in labels[chunk]],
        }
        with (folder / f"data_batch_{i}").open("wb") as f:
            pickle.dump(batch, f)


def _undo(data: TensorData) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Raw uint8 images of train+val, their labels, and the per-channel mean/std used."""
    x = torch.cat([data.x_train, data.x_val]).numpy().astype(np.float64)
    y = torch.cat([data.y_train, data.y_val]).numpy()
    low, high = x[:, :, 0, 0], x[:, :, 0, 1]
    # Every sample must have been transformed with the same per-channel statistics.
    assert np.allclose(low, low[0], atol=1e-5) and np.allclose(high, high[0], atol=1e-5)
    std = 1.0 / (high[0] - low[0])
    mean = -low[0] * std
    pixels = (x * std[None, :, None, None] + mean[None, :, None, None]) * 255.0
    raw = np.rint(pixels)
    assert np.abs(pixels - raw).max() < 1e-3
    return raw.astype(np.uint8), y, mean, std


def _check_known_answers(data: TensorData, images: np.ndarray, n: int = N) -> None:
    n_channels = images.shape[1]
    assert data.x_train.dtype == torch.float32 and data.x_val.dtype == torch.float32
    assert data.y_train.dtype == torch.int64 and data.y_val.dtype == torch.int64
    assert data.n_train + data.n_val == n
    assert data.x_train.shape[1:] == images.shape[1:]
    assert data.n_classes == N_CLASSES

    raw, y, mean, std = _undo(data)
    ids = raw[:, 0, 0, 2].astype(np.int64) // 4
    # Each of the first n samples appears exactly once, unchanged, with its own label.
    assert sorted(ids.tolist()) == list(range(n))
    np.testing.assert_array_equal(raw, images[ids])
    np.testing.assert_array_equal(y, LABELS[ids])

    # The statistics are those of the training split, in [0, 1] pixel units.
    train01 = images[ids[: data.n_train]].astype(np.float64) / 255.0
    np.testing.assert_allclose(mean, train01.mean(axis=(0, 2, 3)), rtol=1e-4)
    np.testing.assert_allclose(std, train01.std(axis=(0, 2, 3)), rtol=1e-4)
    x_train = data.x_train.numpy().astype(np.float64)
    np.testing.assert_allclose(x_train.mean(axis=(0, 2, 3)), np.zeros(n_channels), atol=1e-4)
    np.testing.assert_allclose(x_train.std(axis=(0, 2, 3)), np.ones(n_channels), atol=1e-4)

    # Stratified: every class keeps its share in validation.
    val_counts = np.bincount(data.y_val.numpy(), minlength=N_CLASSES)
    train_counts = np.bincount(data.y_train.numpy(), minlength=N_CLASSES)
    assert val_counts.max() - val_counts.min() <= 1
    np.testing.assert_array_equal(
        train_counts + val_counts, np.bincount(LABELS[:n], minlength=N_CLASSES)
    )


# --- MNIST --------------------------------------------------------------------------------


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("variant", ["mnist", "fashion-mnist"])
def test_mnist_known_answers(tmp_path: Path, gz: bool, variant: str) -> None:
    images = _make_images(1, 28, 28)
    _write_mnist(tmp_path, images, gz=gz)
    data = load_mnist(tmp_path, variant=variant, val_fraction=1 / 6)
    assert data.name == variant
    assert data.x_train.shape == (50, 1, 28, 28) and data.x_val.shape == (10, 1, 28, 28)
    np.testing.assert_array_equal(np.bincount(data.y_val.numpy()), np.ones(N_CLASSES))
    _check_known_answers(data, images)


def test_mnist_shape_comes_from_header(tmp_path: Path) -> None:
    images = _make_images(1, 5, 7)
    _write_mnist(tmp_path, images)
    data = load_mnist(tmp_path, val_fraction=0.5)
    assert data.x_train.shape == (30, 1, 5, 7)
    _check_known_answers(data, images)


def test_mnist_limit_takes_first_samples(tmp_path: Path) -> None:
    images = _make_images(1, 28, 28)
    _write_mnist(tmp_path, images)
    data = load_mnist(tmp_path, val_fraction=1 / 3, limit=30)
    assert (data.n_train, data.n_val) == (20, 10)
    _check_known_answers(data, images, n=30)


def test_mnist_seed_fixes_split(tmp_path: Path) -> None:
    _write_mnist(tmp_path, _make_images(1, 28, 28))
    a = load_mnist(tmp_path, val_fraction=0.5, seed=3)
    b = load_mnist(tmp_path, val_fraction=0.5, seed=3)
    c = load_mnist(tmp_path, val_fraction=0.5, seed=4)
    assert torch.equal(a.x_val, b.x_val) and torch.equal(a.y_train, b.y_train)
    assert not torch.equal(a.x_val, c.x_val)


def test_mnist_missing_file(tmp_path: Path) -> None:
    missing = r"train-images-idx3-ubyte.*\.gz.*does not download"
    with pytest.raises(FileNotFoundError, match=missing):
        load_mnist(tmp_path)
    _write(tmp_path / "train-images-idx3-ubyte", _idx_bytes(_make_images(1, 4, 4)[:, 0]))
    with pytest.raises(FileNotFoundError, match=r"Fashion-MNIST.*train-labels-idx1-ubyte"):
        load_mnist(tmp_path, variant="fashion-mnist")
    with pytest.raises(FileNotFoundError, match=r"not an existing folder"):
        load_mnist(tmp_path / "nowhere")


def test_mnist_unknown_variant(tmp_path: Path) -> None:
    allowed = r"variant must be one of 'mnist', 'fashion-mnist'.*'kmnist'"
    with pytest.raises(ValueError, match=allowed):
        load_mnist(tmp_path, variant="kmnist")


@pytest.mark.parametrize("gz", [False, True])
def test_mnist_truncated_file(tmp_path: Path, gz: bool) -> None:
    images = _make_images(1, 28, 28)
    _write_mnist(tmp_path, images)
    payload = _idx_bytes(images[:, 0])[:-100]
    (tmp_path / "train-images-idx3-ubyte").unlink()
    _write(tmp_path / "train-images-idx3-ubyte", payload, gz=gz)
    truncated = r"train-images-idx3-ubyte.* is truncated.*47040 data bytes, but 46940"
    with pytest.raises(ValueError, match=truncated):
        load_mnist(tmp_path)


def test_mnist_truncated_gzip_stream(tmp_path: Path) -> None:
    images = _make_images(1, 28, 28)
    _write_mnist(tmp_path, images, gz=True)
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:-50])
    with pytest.raises(ValueError, match=r"idx3-ubyte\.gz.*could not be decompressed"):
        load_mnist(tmp_path)


def test_mnist_truncated_header(tmp_path: Path) -> None:
    _write_mnist(tmp_path, _make_images(1, 28, 28))
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(bytes([0, 0, 8, 1, 0]))
    with pytest.raises(ValueError, match=r"labels-idx1-ubyte.* truncated: its IDX header needs 8"):
        load_mnist(tmp_path)


def test_mnist_wrong_magic(tmp_path: Path) -> None:
    images = _make_images(1, 28, 28)
    _write_mnist(tmp_path, images)
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(b"\x89PNG" + path.read_bytes()[4:])
    with pytest.raises(ValueError, match=r"expected bytes 00 00 08 03, found 89 50 4e 47"):
        load_mnist(tmp_path)


def test_mnist_wrong_dtype(tmp_path: Path) -> None:
    images = _make_images(1, 28, 28)
    _write_mnist(tmp_path, images)
    (tmp_path / "train-images-idx3-ubyte").write_bytes(_idx_bytes(images[:, 0], 0x0D))
    with pytest.raises(ValueError, match=r"type 0x0d \(float32\).*must be unsigned bytes"):
        load_mnist(tmp_path)


def test_mnist_swapped_files(tmp_path: Path) -> None:
    images = _make_images(1, 28, 28)
    _write(tmp_path / "train-images-idx3-ubyte", _idx_bytes(LABELS))
    _write(tmp_path / "train-labels-idx1-ubyte", _idx_bytes(images[:, 0]))
    with pytest.raises(ValueError, match=r"has 1 dimension.*must have 3.*swapped"):
        load_mnist(tmp_path)


def test_mnist_count_mismatch(tmp_path: Path) -> None:
    _write_mnist(tmp_path, _make_images(1, 28, 28), labels=LABELS[:59])
    with pytest.raises(ValueError, match=r"holds 60 images but the label file .* holds 59 labels"):
        load_mnist(tmp_path)


def test_mnist_label_out_of_range(tmp_path: Path) -> None:
    labels = LABELS.copy()
    labels[7] = 12
    _write_mnist(tmp_path, _make_images(1, 28, 28), labels=labels)
    with pytest.raises(ValueError, match=r"0 to 9, but label 7 is 12"):
        load_mnist(tmp_path)


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"val_fraction": 0.0}, ValueError, r"val_fraction must be in \(0, 1\), but got 0.0"),
        ({"val_fraction": 1}, ValueError, "val_fraction must be in"),
        ({"val_fraction": "0.1"}, TypeError, "val_fraction must be a float"),
        ({"limit": 0}, ValueError, "limit must be None .* at least 1, but got 0"),
        ({"limit": 2.5}, TypeError, "limit must be None or an int"),
        ({"seed": None}, TypeError, "seed must be an int"),
        ({"limit": 15}, ValueError, r"only one sample of class\(es\) \[5, 6, 7, 8, 9\]"),
        ({"limit": 30, "val_fraction": 0.1}, ValueError, "3 for validation.*each of the 10"),
    ],
)
def test_mnist_bad_arguments(
    tmp_path: Path, kwargs: dict[str, object], error: type[Exception], message: str
) -> None:
    _write_mnist(tmp_path, _make_images(1, 4, 4))
    with pytest.raises(error, match=message):
        load_mnist(tmp_path, **kwargs)  # type: ignore[arg-type]


# --- CIFAR-10 -----------------------------------------------------------------------------


@pytest.mark.parametrize("subfolder", [False, True])
def test_cifar10_known_answers(tmp_path: Path, subfolder: bool) -> None:
    images = _make_images(3, 32, 32)
    _write_cifar(tmp_path / "cifar-10-batches-py" if subfolder else tmp_path, images)
    data = load_cifar10(tmp_path, val_fraction=1 / 6)
    assert data.name == "cifar10"
    assert data.x_train.shape == (50, 3, 32, 32) and data.x_val.shape == (10, 3, 32, 32)
    _check_known_answers(data, images)


def test_cifar10_channel_order(tmp_path: Path) -> None:
    # The 3072 bytes of a row are the red plane, then green, then blue, each row-major.
    images = _make_images(3, 32, 32)
    images[:, 1, 5, 9] = 17
    images[:, 2, 31, 31] = 201
    _write_cifar(tmp_path, images)
    raw, _, _, _ = _undo(load_cifar10(tmp_path, val_fraction=0.2))
    assert (raw[:, 1, 5, 9] == 17).all() and (raw[:, 2, 31, 31] == 201).all()


def test_cifar10_limit_reads_only_needed_batches(tmp_path: Path) -> None:
    images = _make_images(3, 32, 32)
    _write_cifar(tmp_path, images)
    # The first two batches hold 24 samples; the broken fifth must never be unpickled.
    (tmp_path / "data_batch_5").write_bytes(b"not a pickle")
    data = load_cifar10(tmp_path, val_fraction=0.5, limit=20)
    assert (data.n_train, data.n_val) == (10, 10)
    _check_known_answers(data, images, n=20)
    with pytest.raises(ValueError, match=r"data_batch_5.* could not be unpickled"):
        load_cifar10(tmp_path)


def test_cifar10_missing_batches(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"cifar-10-batches-py.*does not download"):
        load_cifar10(tmp_path)
    _write_cifar(tmp_path, _make_images(3, 32, 32))
    (tmp_path / "data_batch_2").unlink()
    (tmp_path / "data_batch_4").unlink()
    missing = r"lacks the training batch\(es\) data_batch_2, data_batch_4"
    with pytest.raises(FileNotFoundError, match=missing):
        load_cifar10(tmp_path)


@pytest.mark.parametrize(
    ("corrupt", "message"),
    [
        (lambda b: b.pop(b"labels"), r"data_batch_3.* has no key b'labels'"),
        (lambda b: b.pop(b"data"), r"data_batch_3.* has no key b'data'"),
        (
            lambda b: b.update({b"data": b[b"data"].astype(np.float32)}),
            r"data_batch_3.*b'data' must be a uint8 array.*float32 array of shape \(12, 3072\)",
        ),
        (
            lambda b: b.update({b"labels": b[b"labels"][:-1]}),
            r"data_batch_3.*one int per image \(12\), but it has shape \(11,\)",
        ),
        (
            lambda b: b.update({b"labels": [10] * 12}),
            "data_batch_3.*labels must be 0 to 9, but label 0 is 10",
        ),
    ],
)
def test_cifar10_malformed_batch(
    tmp_path: Path, corrupt: Callable[[dict[bytes, object]], object], message: str
) -> None:
    _write_cifar(tmp_path, _make_images(3, 32, 32))
    path = tmp_path / "data_batch_3"
    with path.open("rb") as f:
        batch = pickle.load(f)
    corrupt(batch)
    with path.open("wb") as f:
        pickle.dump(batch, f)
    with pytest.raises(ValueError, match=message):
        load_cifar10(tmp_path)


def test_cifar10_not_a_dict(tmp_path: Path) -> None:
    _write_cifar(tmp_path, _make_images(3, 32, 32))
    with (tmp_path / "data_batch_1").open("wb") as f:
        pickle.dump([1, 2, 3], f)
    with pytest.raises(ValueError, match=r"data_batch_1.* must hold a dict .* but holds a list"):
        load_cifar10(tmp_path)


class _RunsACommand:
    """Unpickling this calls os.system: what a crafted CIFAR-10 batch would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return os.system, (f"touch {self.marker}",)


def test_cifar10_crafted_batch_runs_no_code(tmp_path: Path) -> None:
    _write_cifar(tmp_path, _make_images(3, 32, 32))
    marker = tmp_path / "pwned"
    with (tmp_path / "data_batch_2").open("wb") as f:
        pickle.dump({b"data": _RunsACommand(marker), b"labels": []}, f)
    with pytest.raises(ValueError, match=r"data_batch_2.* names (posix|os)\.system.*malicious"):
        load_cifar10(tmp_path)
    assert not marker.exists()
    # The same payload through plain pickle.load does run the command: the test can fail.
    with (tmp_path / "data_batch_2").open("rb") as f:
        pickle.load(f)
    assert marker.exists()


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_cifar10_batches_of_every_pickle_protocol_load(tmp_path: Path, protocol: int) -> None:
    images = _make_images(3, 32, 32)
    _write_cifar(tmp_path, images)
    for path in sorted(tmp_path.glob("data_batch_*")):
        with path.open("rb") as f:
            batch = pickle.load(f)
        with path.open("wb") as f:
            pickle.dump(batch, f, protocol=protocol)
    raw, _, _, _ = _undo(load_cifar10(tmp_path, val_fraction=0.2))
    assert raw.shape[0] == len(images)
