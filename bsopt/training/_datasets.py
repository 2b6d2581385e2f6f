"""Loaders for image data sets that users keep on disk: MNIST, Fashion-MNIST and CIFAR-10.

bsopt never downloads anything. Each loader reads the official training files from a folder
the caller names, makes a stratified train/validation split of them (the official test files
are never read, so they stay untouched for a final evaluation), scales pixels to [0, 1] and
standardises every channel with statistics of the training split only.
"""

from __future__ import annotations

import codecs
from collections.abc import Sequence
import functools
import gzip
import math
import os
from pathlib import Path
import pickle
import struct
from typing import Any
import zlib

import numpy as np
import torch

from bsopt.training._data import TensorData, _stratified_split

MNIST_VARIANTS = ("mnist", "fashion-mnist")
_MNIST_NAMES = {"mnist": "MNIST", "fashion-mnist": "Fashion-MNIST"}
_MNIST_IMAGES = "train-images-idx3-ubyte"
_MNIST_LABELS = "train-labels-idx1-ubyte"
_N_CLASSES = 10

CIFAR10_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR10_SUBFOLDER = "cifar-10-batches-py"
_CIFAR10_SHAPE = (3, 32, 32)

_IDX_UBYTE = 0x08
_IDX_DTYPE_NAMES = {
    0x08: "unsigned byte",
    0x09: "signed byte",
    0x0B: "int16",
    0x0C: "int32",
    0x0D: "float32",
    0x0E: "float64",
}
_GZIP_MAGIC = b"\x1f\x8b"
# Samples per step when standardising: keeps temporaries small (about 12 MB for CIFAR-10).
_CHUNK = 1024


def load_mnist(
    folder: str | os.PathLike[str],
    *,
    variant: str = "mnist",
    val_fraction: float = 0.1,
    seed: int = 0,
    limit: int | None = None,
) -> TensorData:
    """Load MNIST or Fashion-MNIST from the IDX files in ``folder``.

    ``folder`` must directly contain ``train-images-idx3-ubyte`` and
    ``train-labels-idx1-ubyte``, each either plain or gzip-compressed (``.gz``). Both
    variants use the same file names; ``variant`` (``"mnist"`` or ``"fashion-mnist"``) only
    names the data set and the error messages. Nothing is downloaded.

    The validation split is a stratified ``val_fraction`` of the training files (``seed``
    fixes it); the official test files are not read. ``limit`` keeps only the first
    ``limit`` samples before splitting, for quick runs.

    Returns:
        A :class:`TensorData` with float32 images of shape ``(N, 1, rows, cols)`` (rows and
        cols from the file header, 28 x 28 for the official files), scaled to [0, 1] and then
        standardised with the training split's mean and standard deviation, and int64 labels.

    Raises:
        FileNotFoundError: A file is missing from ``folder``.
        TypeError: ``val_fraction``, ``seed`` or ``limit`` has the wrong type.
        ValueError: A parameter is invalid, or a file is not a well-formed IDX file of the
            expected kind, or the image and label files disagree.
    """
    if variant not in MNIST_VARIANTS:
        raise ValueError(
            f"variant must be one of {', '.join(repr(v) for v in MNIST_VARIANTS)}, but got "
            f"{variant!r}. Both variants read the same file names; pick the one whose files "
            "the folder holds."
        )
    _check_split_args(val_fraction, seed, limit)
    base = Path(folder)
    title = _MNIST_NAMES[variant]

    images_path = _find_idx_file(base, _MNIST_IMAGES, title)
    labels_path = _find_idx_file(base, _MNIST_LABELS, title)
    images = _read_idx(images_path, n_dims=3, what=f"{title} training images")
    labels = _read_idx(labels_path, n_dims=1, what=f"{title} training labels")
    if len(images) != len(labels):
        raise ValueError(
            f"The {title} image file {str(images_path)!r} holds {len(images)} images but the "
            f"label file {str(labels_path)!r} holds {len(labels)} labels; they must hold the "
            "same number. Check that both files come from the same download and are complete."
        )
    _check_labels(labels, labels_path)

    if limit is not None:
        images, labels = images[:limit], labels[:limit]
    # One channel, so the per-channel statistics are a single mean and standard deviation.
    images = images.reshape(len(images), 1, *images.shape[1:])
    return _split_and_standardise(
        images, labels.astype(np.int64), val_fraction, seed, name=variant, source=str(base)
    )


def load_cifar10(
    folder: str | os.PathLike[str],
    *,
    val_fraction: float = 0.1,
    seed: int = 0,
    limit: int | None = None,
) -> TensorData:
    """Load CIFAR-10 from the "python version" batches in ``folder``.

    The five training batches ``data_batch_1`` ... ``data_batch_5`` are read from ``folder``
    itself or, if they are not there, from ``folder/cifar-10-batches-py`` (the layout of the
    official archive once extracted). Nothing is downloaded.

    The batches are pickle files. They are read with a restricted unpickler that rebuilds
    only builtin containers and numpy arrays, so a crafted file cannot run code: it is
    refused with a ValueError.

    The validation split is a stratified ``val_fraction`` of the training batches (``seed``
    fixes it); the official ``test_batch`` is not read. ``limit`` keeps only the first
    ``limit`` samples, in batch order, before splitting; batches past them are not read.

    Returns:
        A :class:`TensorData` with float32 images of shape ``(N, 3, 32, 32)``, scaled to
        [0, 1] and then standardised per channel with training-split statistics, and int64
        labels.

    Raises:
        FileNotFoundError: One or more training batches are missing.
        TypeError: ``val_fraction``, ``seed`` or ``limit`` has the wrong type.
        ValueError: A parameter is invalid, or a batch is not the expected pickled dict.
    """
    _check_split_args(val_fraction, seed, limit)
    base = Path(folder)
    batch_dir = _find_cifar10_dir(base)

    images: list[np.ndarray] = []
    labels: list[np.ndarray] = []
    n_read = 0
    for name in CIFAR10_BATCHES:
        if limit is not None and n_read >= limit:
            break
        batch_images, batch_labels = _read_cifar10_batch(batch_dir / name)
        images.append(batch_images)
        labels.append(batch_labels)
        n_read += len(batch_labels)

    all_images = np.concatenate(images)
    all_labels = np.concatenate(labels)
    if limit is not None:
        all_images, all_labels = all_images[:limit], all_labels[:limit]
    return _split_and_standardise(
        all_images.reshape(len(all_images), *_CIFAR10_SHAPE),
        all_labels,
        val_fraction,
        seed,
        name="cifar10",
        source=str(batch_dir),
    )


# --- shared ------------------------------------------------------------------------------


def _check_split_args(val_fraction: float, seed: int, limit: int | None) -> None:
    # Checked before any file is read, so a typo does not cost a long load first.
    if isinstance(val_fraction, bool) or not isinstance(val_fraction, (int, float)):
        raise TypeError(
            f"val_fraction must be a float in (0, 1), but got {type(val_fraction).__name__} "
            f"{val_fraction!r}."
        )
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(
            f"val_fraction must be in (0, 1), but got {val_fraction}. It is the share of the "
            "training files held out for validation, e.g. 0.1."
        )
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed must be an int, but got {type(seed).__name__} {seed!r}.")
    if limit is not None:
        if isinstance(limit, bool) or not isinstance(limit, (int, np.integer)):
            raise TypeError(
                f"limit must be None or an int, but got {type(limit).__name__} {limit!r}."
            )
        if limit < 1:
            raise ValueError(f"limit must be None (all samples) or at least 1, but got {limit}.")


def _check_labels(labels: np.ndarray, path: Path) -> None:
    if len(labels) and int(labels.max()) >= _N_CLASSES:
        bad = int(np.flatnonzero(labels >= _N_CLASSES)[0])
        raise ValueError(
            f"The labels in {str(path)!r} must be class numbers 0 to {_N_CLASSES - 1}, but "
            f"label {bad} is {int(labels[bad])}. The file is not a training label file of "
            "this data set."
        )


def _split_and_standardise(
    images: np.ndarray,
    labels: np.ndarray,
    val_fraction: float,
    seed: int,
    *,
    name: str,
    source: str,
) -> TensorData:
    """Stratified split of uint8 ``(N, C, H, W)`` images, then per-channel standardisation."""
    _check_splittable(labels, val_fraction, name, source)
    # Splitting indices rather than the images avoids copying the uint8 array twice.
    idx_train, idx_val, _, _ = _stratified_split(
        np.arange(len(labels)), labels, val_fraction, seed
    )
    raw_train, raw_val = images[idx_train], images[idx_val]
    mean, std = _channel_stats(raw_train)
    return TensorData(
        torch.from_numpy(_standardise_images(raw_train, mean, std)),
        torch.from_numpy(labels[idx_train].astype(np.int64)),
        torch.from_numpy(_standardise_images(raw_val, mean, std)),
        torch.from_numpy(labels[idx_val].astype(np.int64)),
        name=name,
    )


def _check_splittable(labels: np.ndarray, val_fraction: float, name: str, source: str) -> None:
    # scikit-learn's own messages for these cases do not say which data or what to change.
    classes, counts = np.unique(labels, return_counts=True)
    if len(classes) < 2:
        raise ValueError(
            f"The {name} data in {source!r} has {len(labels)} samples of "
            f"{len(classes)} class(es); a stratified split needs at least 2 classes. "
            "Raise limit or check the files."
        )
    if counts.min() < 2:
        rare = classes[counts < 2].tolist()
        raise ValueError(
            f"The {name} data in {source!r} has only one sample of class(es) {rare}; a "
            "stratified split needs at least 2 of every class. Raise limit."
        )
    n_val = math.ceil(val_fraction * len(labels))
    n_train = len(labels) - n_val
    if min(n_val, n_train) < len(classes):
        raise ValueError(
            f"With val_fraction={val_fraction} the {len(labels)} {name} samples split into "
            f"{n_train} for training and {n_val} for validation, but each split needs at "
            f"least one sample of each of the {len(classes)} classes. Raise limit or move "
            "val_fraction towards 0.5."
        )


def _channel_stats(raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and standard deviation of uint8 ``(N, C, H, W)`` images, in [0, 1] units.

    Sums of bytes and of their squares are exact in int64, and working in chunks avoids a
    float copy of the whole set (one of CIFAR-10 in float64 would take over a gigabyte).
    """
    total = np.zeros(raw.shape[1], dtype=np.int64)
    total_sq = np.zeros(raw.shape[1], dtype=np.int64)
    for start in range(0, len(raw), _CHUNK):
        chunk = raw[start : start + _CHUNK].astype(np.int64)
        total += chunk.sum(axis=(0, 2, 3))
        total_sq += np.einsum("nchw,nchw->c", chunk, chunk)
    count = raw.size // raw.shape[1]
    mean = total / count
    var = np.maximum(total_sq / count - mean**2, 0.0)
    return mean / 255.0, np.sqrt(var) / 255.0


def _standardise_images(raw: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """``(raw / 255 - mean) / std`` per channel, as float32, computed chunk by chunk."""
    # A constant channel carries no information; leave it centred rather than divide by 0.
    std = np.where(std > 0.0, std, 1.0)
    # The same map in byte units, so each chunk needs one subtraction and one multiplication.
    shift = (255.0 * mean).astype(np.float32).reshape(-1, 1, 1)
    scale = (1.0 / (255.0 * std)).astype(np.float32).reshape(-1, 1, 1)
    out = np.empty(raw.shape, dtype=np.float32)
    for start in range(0, len(raw), _CHUNK):
        part = out[start : start + _CHUNK]
        np.copyto(part, raw[start : start + _CHUNK], casting="unsafe")
        part -= shift
        part *= scale
    return out


# --- MNIST: IDX files ----------------------------------------------------------------------


def _find_idx_file(base: Path, stem: str, title: str) -> Path:
    for candidate in (base / stem, base / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    where = (
        f"the folder {str(base)!r}"
        if base.is_dir()
        else f"{str(base)!r}, which is not an existing folder"
    )
    raise FileNotFoundError(
        f"The {title} training file {stem!r} (or {stem + '.gz'!r}) was not found in {where}. "
        f"bsopt does not download data: get the {title} training files "
        f"({_MNIST_IMAGES} and {_MNIST_LABELS}, plain or .gz) yourself and pass the folder "
        "that directly contains them."
    )


def _read_bytes(path: Path) -> bytes:
    data = path.read_bytes()
    # Detect gzip by content, not name: an IDX file always starts with a zero byte.
    if data[:2] == _GZIP_MAGIC:
        try:
            return gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as exc:
            raise ValueError(
                f"{str(path)!r} is gzip-compressed but could not be decompressed ({exc}); the "
                "file is probably truncated or corrupt. Download it again."
            ) from exc
    return data


def _read_idx(path: Path, *, n_dims: int, what: str) -> np.ndarray:
    """Parse an unsigned-byte IDX file with ``n_dims`` dimensions into a uint8 array.

    Layout: two zero bytes, a data-type byte (0x08 for unsigned byte), a byte with the number
    of dimensions, one big-endian uint32 size per dimension, then the data in C order.
    """
    data = _read_bytes(path)
    expected_magic = f"00 00 {_IDX_UBYTE:02x} {n_dims:02x}"
    if len(data) < 4:
        raise ValueError(
            f"{str(path)!r} is {len(data)} bytes long, too short for the 4-byte IDX header "
            f"({expected_magic}) of the {what}. The file is truncated or not an IDX file."
        )
    zero1, zero2, dtype_code, dims = data[:4]
    if zero1 != 0 or zero2 != 0:
        raise ValueError(
            f"{str(path)!r} does not start with an IDX magic number: expected bytes "
            f"{expected_magic}, found {data[:4].hex(' ')}. Is it the {what} file, and not "
            "some other format?"
        )
    if dtype_code != _IDX_UBYTE:
        found = _IDX_DTYPE_NAMES.get(dtype_code, "an unknown type")
        raise ValueError(
            f"{str(path)!r} holds IDX data of type 0x{dtype_code:02x} ({found}), but the "
            f"{what} must be unsigned bytes (type 0x{_IDX_UBYTE:02x}, magic {expected_magic})."
        )
    if dims != n_dims:
        raise ValueError(
            f"{str(path)!r} has {dims} dimension(s) in its IDX header (magic "
            f"{data[:4].hex(' ')}), but the {what} must have {n_dims} (magic "
            f"{expected_magic}). Check that the image and label files are not swapped."
        )
    header_len = 4 + 4 * n_dims
    if len(data) < header_len:
        raise ValueError(
            f"{str(path)!r} is truncated: its IDX header needs {header_len} bytes but the "
            f"file has {len(data)}."
        )
    shape = struct.unpack(f">{n_dims}I", data[4:header_len])
    n_values = math.prod(shape)
    n_found = len(data) - header_len
    if n_found != n_values:
        problem = "truncated" if n_found < n_values else "longer than its header says"
        raise ValueError(
            f"{str(path)!r} is {problem}: its header declares shape {shape}, i.e. "
            f"{n_values} data bytes, but {n_found} follow the header. Download the file again."
        )
    if shape[0] == 0 or n_values == 0:
        raise ValueError(f"{str(path)!r} declares shape {shape} and so holds no {what}.")
    return np.frombuffer(data, dtype=np.uint8, count=n_values, offset=header_len).reshape(shape)


# --- CIFAR-10: pickled batches -------------------------------------------------------------


def _find_cifar10_dir(base: Path) -> Path:
    candidates: Sequence[Path] = (base, base / CIFAR10_SUBFOLDER)
    for directory in candidates:
        present = [name for name in CIFAR10_BATCHES if (directory / name).is_file()]
        if present:
            missing = [name for name in CIFAR10_BATCHES if name not in present]
            if missing:
                raise FileNotFoundError(
                    f"The CIFAR-10 folder {str(directory)!r} lacks the training batch(es) "
                    f"{', '.join(missing)} (it has {', '.join(present)}); all of "
                    f"{', '.join(CIFAR10_BATCHES)} are needed. bsopt does not download data: "
                    "extract the complete CIFAR-10 python-version archive again."
                )
            return directory
    raise FileNotFoundError(
        f"No CIFAR-10 training batches ({', '.join(CIFAR10_BATCHES)}) were found in "
        f"{str(base)!r} or in {str(base / CIFAR10_SUBFOLDER)!r}. bsopt does not download "
        "data: get the CIFAR-10 python version (cifar-10-python.tar.gz) yourself, extract it "
        "and pass the folder that holds the batches or the cifar-10-batches-py folder."
    )


class _BatchUnpickler(pickle.Unpickler):
    """Unpickles plain data only: builtin containers and numpy arrays, never code.

    A pickle names the functions that rebuild its objects, and plain ``pickle.load`` calls
    any of them (``os.system`` included). A CIFAR-10 batch needs only numpy's array
    rebuilders; every other name is refused before anything is called.
    """

    def find_class(self, module: str, name: str) -> Any:
        allowed = _allowed_globals()
        if (module, name) not in allowed:
            raise pickle.UnpicklingError(
                f"it names {module}.{name}, which a CIFAR-10 batch never needs; bsopt loads "
                "only builtin containers and numpy arrays from it, so the file may be "
                "malicious"
            )
        return allowed[(module, name)]


@functools.lru_cache(maxsize=1)
def _allowed_globals() -> dict[tuple[str, str], Any]:
    sample = np.zeros(1, dtype=np.uint8)
    # numpy's own array rebuilders, found the way numpy pickles (protocol 2-4 and 5), so
    # that both its module names (numpy.core before 2.0, numpy._core since) resolve to them.
    reconstruct: Any = sample.__reduce__()[0]
    frombuffer: Any = sample.__reduce_ex__(5)[0]
    allowed: dict[tuple[str, str], Any] = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): codecs.encode,  # bytes pickled by Python 3 at protocol 2
    }
    for function in (reconstruct, frombuffer):
        for module in ("numpy.core", "numpy._core"):
            for sub in ("multiarray", "numeric"):
                allowed[(f"{module}.{sub}", function.__name__)] = function
    return allowed


def _read_cifar10_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    n_pixels = math.prod(_CIFAR10_SHAPE)
    try:
        with path.open("rb") as f:
            # The official batches were pickled by Python 2; "bytes" keeps their keys as bytes.
            batch = _BatchUnpickler(f, encoding="bytes").load()
    except (
        pickle.UnpicklingError,
        EOFError,
        ValueError,
        TypeError,
        AttributeError,
        ImportError,
        IndexError,
    ) as exc:
        raise ValueError(
            f"The CIFAR-10 batch {str(path)!r} could not be unpickled ({type(exc).__name__}: "
            f"{exc}). It is truncated or not a CIFAR-10 python-version batch; extract it again."
        ) from exc
    if not isinstance(batch, dict):
        raise ValueError(
            f"The CIFAR-10 batch {str(path)!r} must hold a dict with keys b'data' and "
            f"b'labels', but holds a {type(batch).__name__}."
        )
    for key in (b"data", b"labels"):
        if key not in batch:
            keys = ", ".join(repr(k) for k in list(batch)[:10])
            raise ValueError(
                f"The CIFAR-10 batch {str(path)!r} has no key {key!r}; a python-version batch "
                f"has b'data' and b'labels', but this one has keys: {keys or 'none'}."
            )
    data = batch[b"data"]
    if (
        not isinstance(data, np.ndarray)
        or data.dtype != np.uint8
        or data.ndim != 2
        or data.shape[1] != n_pixels
    ):
        found = (
            f"a {data.dtype} array of shape {data.shape}"
            if isinstance(data, np.ndarray)
            else f"a {type(data).__name__}"
        )
        raise ValueError(
            f"In the CIFAR-10 batch {str(path)!r}, b'data' must be a uint8 array of shape "
            f"(N, {n_pixels}), but it is {found}."
        )
    try:
        labels = np.asarray(batch[b"labels"], dtype=np.int64)
    except (TypeError, ValueError) as exc:
        raise ValueError(
            f"In the CIFAR-10 batch {str(path)!r}, b'labels' must be a list of ints, but it "
            f"could not be read as one ({exc})."
        ) from exc
    if labels.ndim != 1 or len(labels) != len(data):
        raise ValueError(
            f"In the CIFAR-10 batch {str(path)!r}, b'labels' must hold one int per image "
            f"({len(data)}), but it has shape {labels.shape}."
        )
    if len(labels) and (labels.min() < 0 or labels.max() >= _N_CLASSES):
        bad = int(np.flatnonzero((labels < 0) | (labels >= _N_CLASSES))[0])
        raise ValueError(
            f"In the CIFAR-10 batch {str(path)!r}, labels must be 0 to {_N_CLASSES - 1}, but "
            f"label {bad} is {int(labels[bad])}."
        )
    return data, labels
