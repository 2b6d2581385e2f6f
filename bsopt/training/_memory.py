"""The one out-of-memory predicate, memory release, peak-memory readings, and a memory budget.

:class:`MemoryBudget` is the one seam through which a CPU machine pretends to have a device
of limited memory: it raises :class:`SimulatedOutOfMemoryError` (a
``torch.OutOfMemoryError``, so :func:`is_oom_error` sees a real OOM) when a training step's
estimated memory exceeds the budget. Everything above it handles that error exactly as it
handles a CUDA out-of-memory error.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
import contextlib
import gc
import resource
import sys
from typing import Any
import warnings

import torch
from torch import nn

# Messages raised by the CUDA caching allocator, cuDNN/cuBLAS and the CPU allocator when an
# allocation fails; anything else is a real error and must propagate.
_OOM_MESSAGES = (
    "CUDA out of memory",
    "CUBLAS_STATUS_ALLOC_FAILED",
    "CUDNN_STATUS_NOT_ALLOCATED",
    "cuDNN error: CUDNN_STATUS_ALLOC_FAILED",
    "DefaultCPUAllocator: can't allocate memory",
    "MPS backend out of memory",
)


def is_oom_error(error: BaseException) -> bool:
    """Whether ``error`` means the device ran out of memory (and a smaller batch may fit)."""
    if isinstance(error, torch.cuda.OutOfMemoryError):
        return True
    if isinstance(error, RuntimeError) and len(error.args) == 1:
        message = str(error.args[0])
        return any(m in message for m in _OOM_MESSAGES)
    return False


def release_memory(device: torch.device | None = None) -> None:
    """Return cached allocator blocks to the device after references were dropped.

    Call it outside any ``except`` block: a live traceback keeps the failed step's tensors.
    """
    on_cuda = torch.cuda.is_available() and (device is None or device.type == "cuda")
    if not on_cuda:
        # On the CPU, reference counting already returned the memory; a full collection
        # would only add tens of milliseconds to every trial.
        return
    gc.collect()
    torch.cuda.empty_cache()


def reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_mb(device: torch.device) -> float:
    """Peak tensor memory on CUDA since the last reset; on CPU the process's peak RSS."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports KiB, macOS bytes.
    return rss / 2**20 if sys.platform == "darwin" else rss / 2**10


class SimulatedOutOfMemoryError(torch.OutOfMemoryError):
    """A training step would exceed a :class:`MemoryBudget` (the CPU stand-in for CUDA OOM)."""


def _tensors_in(value: Any) -> Iterator[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, (tuple, list)):
        for item in value:
            yield from _tensors_in(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from _tensors_in(item)


def tensor_bytes(tensors: Iterable[torch.Tensor]) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


class MemoryBudget:
    """Pretend device memory of ``budget_mb`` MiB, checked on every training forward pass.

    On a machine without a GPU this stands in for device memory: one training step is
    estimated as

    * parameters, their gradients and ``optimizer_states`` more copies of them (2 for AdamW's
      two moments, 1 for SGD with momentum), plus the module buffers;
    * activations: the input batch and every leaf module's output, which autograd keeps for
      the backward pass (measured with forward hooks on each forward).

    When the sum exceeds the budget, the model's forward raises
    :class:`SimulatedOutOfMemoryError`. The estimate ignores allocator slack and in-place
    savings; what matters is that it is deterministic and grows linearly with the batch, as
    real activation memory does. Forward passes without gradients (evaluation) are not
    charged.
    """

    def __init__(self, budget_mb: float, *, optimizer_states: int = 2) -> None:
        if not budget_mb > 0:
            raise ValueError(
                f"memory_budget_mb must be a positive number of MiB, but got {budget_mb!r}."
            )
        if optimizer_states < 0:
            raise ValueError(f"optimizer_states must be 0 or more, but got {optimizer_states}.")
        self.budget_mb = float(budget_mb)
        self.optimizer_states = optimizer_states
        self.last_mb = 0.0
        self.peak_mb = 0.0

    def static_bytes(self, model: nn.Module) -> int:
        """Parameters, gradients, optimizer state and buffers: the batch-independent part."""
        params = tensor_bytes(p for p in model.parameters())
        trainable = tensor_bytes(p for p in model.parameters() if p.requires_grad)
        return params + trainable * (1 + self.optimizer_states) + tensor_bytes(model.buffers())

    @contextlib.contextmanager
    def attach(self, model: nn.Module) -> Iterator[MemoryBudget]:
        """Charge every training forward pass of ``model`` against the budget while open."""
        static = self.static_bytes(model)
        activations = 0

        def start(module: nn.Module, inputs: Any) -> None:
            nonlocal activations
            activations = tensor_bytes(_tensors_in(inputs))

        def add(module: nn.Module, inputs: Any, output: Any) -> None:
            nonlocal activations
            if torch.is_grad_enabled():
                activations += tensor_bytes(_tensors_in(output))

        def check(module: nn.Module, inputs: Any, output: Any) -> None:
            if not torch.is_grad_enabled():
                return
            self.last_mb = (static + activations) / 2**20
            self.peak_mb = max(self.peak_mb, self.last_mb)
            if self.last_mb > self.budget_mb:
                raise SimulatedOutOfMemoryError(
                    f"Simulated device out of memory: a training step needs about "
                    f"{self.last_mb:.2f} MiB (static {static / 2**20:.2f} MiB + activations "
                    f"{activations / 2**20:.2f} MiB) but memory_budget_mb={self.budget_mb:g}."
                )

        handles = [model.register_forward_pre_hook(start)]
        handles += [m.register_forward_hook(add) for m in model.modules() if not any(m.children())]
        # Registered last, so on a model that is a single leaf it runs after `add`.
        handles.append(model.register_forward_hook(check))
        try:
            yield self
        finally:
            for handle in handles:
                handle.remove()


def live_tensors() -> tuple[int, int]:
    """``(count, bytes)`` of the tensors alive in this process, each storage counted once.

    Found through the garbage collector, so a tensor kept alive by any Python reference (a
    model, a traceback, a cache) is counted: the leak check for many trials in one process.
    """
    count = 0
    storages: dict[tuple[str, int], int] = {}
    with warnings.catch_warnings():
        # isinstance() on some lazily deprecated torch attributes warns.
        warnings.simplefilter("ignore")
        for obj in gc.get_objects():
            try:
                if not isinstance(obj, torch.Tensor):
                    continue
                storage = obj.untyped_storage()
                key = (str(obj.device), storage.data_ptr())
            except Exception:  # meta, sparse or otherwise storage-less tensors
                continue
            count += 1
            storages[key] = storage.nbytes()
    return count, sum(storages.values())
