"""Batches of any structure: a tensor, or a tuple, list or dict of them, nested.

A training batch is ``(inputs, targets)``. Inputs may be a tensor, a tuple or list of tensors
(the model is called as ``model(*inputs)``) or a dict of tensors (``model(**inputs)``);
targets a tensor or a dict of tensors. Every leaf carries the batch along its first
dimension. These helpers move, count and slice such structures, so the trainer, the probe
and a user's own loop split a batch at an evaluation point the same way, and samples are
counted along the batch dimension, never as ``len()`` of a container.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any, TypeAlias

import torch
from torch import nn

# A tensor, or a (possibly nested) tuple, list or dict of tensors.
Tree: TypeAlias = Any
Batch: TypeAlias = tuple[Tree, Tree]


def leaves(tree: Tree, path: str = "") -> Iterator[tuple[str, torch.Tensor]]:
    """``(path, tensor)`` for every tensor in ``tree``; the path names it in errors."""
    if isinstance(tree, torch.Tensor):
        yield path or "tensor", tree
    elif isinstance(tree, Mapping):
        for key, value in tree.items():
            yield from leaves(value, f"{path}[{key!r}]")
    elif isinstance(tree, (tuple, list)):
        for i, value in enumerate(tree):
            yield from leaves(value, f"{path}[{i}]")
    else:
        raise TypeError(
            f"A batch may hold tensors, and tuples, lists or dicts of them, but "
            f"{path or 'the batch'} is a {type(tree).__name__}. Convert it with "
            "torch.as_tensor, or leave it out of the batch."
        )


def tree_map(fn: Callable[[torch.Tensor], torch.Tensor], tree: Tree) -> Tree:
    """``tree`` with ``fn`` applied to every tensor, its structure kept."""
    if isinstance(tree, torch.Tensor):
        return fn(tree)
    if isinstance(tree, Mapping):
        return {key: tree_map(fn, value) for key, value in tree.items()}
    if isinstance(tree, tuple):
        return tuple(tree_map(fn, value) for value in tree)
    if isinstance(tree, list):
        return [tree_map(fn, value) for value in tree]
    raise TypeError(
        f"A batch may hold tensors, and tuples, lists or dicts of them, not {type(tree).__name__}."
    )


def concat(parts: list[Tree]) -> Tree:
    """Batches of one structure joined along the batch dimension (``torch.cat`` per leaf)."""
    first = parts[0]
    if isinstance(first, torch.Tensor):
        return torch.cat(parts)
    if isinstance(first, Mapping):
        return {key: concat([p[key] for p in parts]) for key in first}
    return type(first)(concat([p[i] for p in parts]) for i in range(len(first)))


def batch_size_of(tree: Tree, *, where: str = "batch") -> int:
    """The number of samples in ``tree``: the shared leading size of its tensors.

    Raises:
        ValueError: a leaf is 0-d, the structure holds no tensor, or leaves disagree.
    """
    if (
        isinstance(tree, tuple)
        and len(tree) == 2
        and isinstance(tree[0], torch.Tensor)
        and isinstance(tree[1], torch.Tensor)
        and tree[0].ndim > 0
        and tree[1].ndim > 0
        and tree[0].shape[0] == tree[1].shape[0]
    ):
        return int(tree[0].shape[0])  # the common (x, y) batch, checked without a walk
    size: int | None = None
    first = ""
    for path, tensor in leaves(tree):
        if tensor.ndim == 0:
            raise ValueError(
                f"Every tensor of a {where} needs a batch dimension, but {path} is 0-d. "
                "Give it a leading dimension of one entry per sample."
            )
        if size is None:
            size, first = int(tensor.shape[0]), path
        elif tensor.shape[0] != size:
            raise ValueError(
                f"The tensors of a {where} must share their leading (batch) size, but "
                f"{first} has {size} samples and {path} has {tensor.shape[0]}. Put the "
                "sample dimension first in every tensor."
            )
    if size is None:
        raise ValueError(f"The {where} holds no tensor.")
    return size


def slice_batch(tree: Tree, start: int, stop: int | None = None) -> Tree:
    """Samples ``start:stop`` of every tensor in ``tree`` (views, no copy)."""
    return tree_map(lambda t: t[start:stop], tree)


def index_batch(tree: Tree, index: torch.Tensor) -> Tree:
    """The samples at ``index`` (a gather) of every tensor in ``tree``."""
    return tree_map(lambda t: t[index.to(t.device)], tree)


def to_device(tree: Tree, device: torch.device, *, non_blocking: bool = False) -> Tree:
    """Every tensor of ``tree`` on ``device``."""
    return tree_map(lambda t: t.to(device, non_blocking=non_blocking), tree)


def split_batch(batch: Batch, room: int) -> tuple[Batch, Batch | None]:
    """``batch`` cut after ``room`` samples: ``(head, tail)``, tail ``None`` if it fits.

    This is how a batch that would overshoot an evaluation point is split there, so every
    trial is evaluated after exactly the same number of samples.
    """
    n = batch_size_of(batch)
    if room >= n:
        return batch, None
    if room < 1:
        raise ValueError(f"room must be at least 1 sample, but got {room}.")
    return slice_batch(batch, 0, room), slice_batch(batch, room)


#: How the model is called with a batch's inputs (the option ``call``).
CALLS = ("kwargs", "positional", "whole")


def call_model(
    model: nn.Module | Callable[..., Any], inputs: Tree, call: str | None = None
) -> Any:
    """The model's output on ``inputs``.

    ``call=None`` follows the structure: ``model(**inputs)`` for a dict, ``model(*inputs)``
    for a tuple or list, ``model(inputs)`` otherwise. ``"kwargs"``, ``"positional"`` and
    ``"whole"`` force one of the three (``"whole"`` hands a dict or tuple over as one
    argument, for a ``forward(self, batch)``).
    """
    if call == "whole":
        return model(inputs)
    if isinstance(inputs, Mapping) and call in (None, "kwargs"):
        return model(**inputs)
    if isinstance(inputs, (tuple, list)) and call in (None, "positional"):
        return model(*inputs)
    if call is not None and call not in CALLS:
        raise ValueError(f"call must be one of {', '.join(CALLS)} or None, but got {call!r}.")
    if call is not None:
        kind = "a dict" if isinstance(inputs, Mapping) else type(inputs).__name__
        raise ValueError(
            f"call={call!r} needs inputs that are "
            f"{'a dict' if call == 'kwargs' else 'a tuple or list'}, but the batch's inputs are "
            f"{kind}. Use call='whole' to pass them as one argument, or leave call out."
        )
    return model(inputs)


def describe(tree: Tree) -> str:
    """Shapes and dtypes, not values: ``{'a': (32, 4) float32, ...}``."""
    if isinstance(tree, torch.Tensor):
        return f"{tuple(tree.shape)} {str(tree.dtype).removeprefix('torch.')}"
    if isinstance(tree, Mapping):
        return "{" + ", ".join(f"{k!r}: {describe(v)}" for k, v in tree.items()) + "}"
    if isinstance(tree, (tuple, list)):
        inner = ", ".join(describe(v) for v in tree)
        return f"({inner})" if isinstance(tree, tuple) else f"[{inner}]"
    return type(tree).__name__


def signature(tree: Tree) -> str:
    """Per-sample shapes and dtypes of every leaf: what decides the memory a step needs."""
    return ";".join(f"{path}:{tuple(t.shape[1:])}:{t.dtype}" for path, t in leaves(tree))
