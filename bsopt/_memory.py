"""The one out-of-memory predicate, memory release and peak-memory readings."""

from __future__ import annotations

import gc
import resource
import sys

import torch

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
