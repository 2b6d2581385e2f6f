"""The largest micro-batch that fits: probe it once, then accumulate beyond it.

:func:`probe_batch_size` trains single steps of growing batches on the training device: it
doubles the batch until a step runs out of memory (or reaches ``high``), then binary-searches
between the last batch that fit and the first that did not. The model's weights, the
optimizer's state and the random number generators are restored afterwards, so a probe
leaves no trace in the training that follows.

On CUDA every probe step is real and an out-of-memory error is recognised by
:func:`~bsopt.training.is_oom_error`. On a machine without a GPU, ``memory_budget_mb`` makes a
:class:`~bsopt.training._memory.MemoryBudget` stand in for device memory (the one simulated seam).

No Optuna here: the objective caches the result in the study under :func:`probe_key`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
import contextlib
import copy
from dataclasses import asdict, dataclass, field, fields
import hashlib
import math
import time
from typing import Any

import torch
from torch import nn

from bsopt.core._space import Params
from bsopt.training._batch import Batch, batch_size_of, signature, tree_map
from bsopt.training._config import Amp, resolve_device
from bsopt.training._data import TrainingData
from bsopt.training._memory import MemoryBudget, is_oom_error, release_memory
from bsopt.training._metrics import LossFn, default_loss
from bsopt.training._optim import make_optimizer
from bsopt.training._trainer import Autocast, amp_dtype, autocast_for, forward_loss

# Study user attribute under which a probe result is cached: PROBE_ATTR_PREFIX + probe_key.
PROBE_ATTR_PREFIX = "probe:"

# Copies of the parameters each optimizer keeps as state (AdamW: two moments; SGD and LARS:
# one momentum buffer). Unknown optimizers are charged like AdamW.
_OPTIMIZER_STATES = {"adamw": 2, "sgd": 1, "lars": 1}


def optimizer_states(params: Params) -> int:
    """How many parameter-sized state tensors ``params``' optimizer keeps."""
    if params.optimizer == "sgd" and params.momentum == 0:
        return 0
    return _OPTIMIZER_STATES.get(params.optimizer, 2)


@dataclass(frozen=True)
class ProbeResult:
    """What :func:`probe_batch_size` found.

    ``limit`` is the largest batch that trained one step; ``micro_batch_size`` the batch
    trials push through the model at once: ``floor(margin * limit)``, or ``limit`` itself
    when ``capped`` (every batch up to ``high`` fit, so the true limit lies above and no
    margin is needed). ``steps`` counts the training steps the probe ran; ``cached`` says
    the result was read from the study rather than measured now.
    """

    limit: int
    micro_batch_size: int
    capped: bool
    steps: int
    seconds: float
    margin: float
    high: int
    device: str
    memory_budget_mb: float | None
    key: str
    cached: bool = field(default=False, compare=False)

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        del out["cached"]
        return out

    @classmethod
    def from_dict(cls, stored: Mapping[str, Any]) -> ProbeResult:
        names = {f.name for f in fields(cls)} - {"cached"}
        return cls(**{k: v for k, v in stored.items() if k in names}, cached=True)

    def describe(self) -> str:
        where = self.device + (
            f" with a {self.memory_budget_mb:g} MiB memory budget"
            if self.memory_budget_mb is not None
            else ""
        )
        if self.capped:
            found = f"every batch up to {self.high} fits on {where}; micro-batch {self.high}"
        else:
            found = (
                f"largest batch that fits on {where}: {self.limit}; micro-batch "
                f"{self.micro_batch_size} ({self.margin:.0%} of it)"
            )
        origin = "cached in the study" if self.cached else "measured"
        return f"{found}; {self.steps} probe steps, {self.seconds:.2f} s ({origin})"


def search_limit(fits: Callable[[int], bool], *, high: int, start: int = 1) -> tuple[int, int]:
    """The largest ``n <= high`` with ``fits(n)``, and how many times ``fits`` was called.

    Doubles from ``start`` until a batch fails (or ``high`` fits), then binary-searches
    between the last success and the first failure: about ``2 log2(limit)`` calls, against
    ``limit`` for a linear scan. ``fits`` must be monotone (a batch that fits means every
    smaller batch fits). Returns ``(0, calls)`` when not even a batch of 1 fits.
    """
    if high < 1:
        raise ValueError(f"high must be at least 1, but got {high}.")
    if not 1 <= start <= high:
        raise ValueError(f"start must be in [1, high={high}], but got {start}.")
    calls = 0
    good, bad = 0, None
    n = start
    while True:
        calls += 1
        if not fits(n):
            bad = n
            break
        good = n
        if n >= high:
            return good, calls
        n = min(2 * n, high)
    while bad - good > 1:
        mid = (good + bad) // 2
        calls += 1
        if fits(mid):
            good = mid
        else:
            bad = mid
    return good, calls


def probe_key(
    model: nn.Module,
    inputs: str,
    device: torch.device,
    **settings: object,
) -> str:
    """A short hash of what decides the probe's answer.

    The model signature (class, parameter and buffer names, shapes and dtypes), the per-sample
    input shape and dtype, the device, and ``settings`` (optimizer state copies, AMP, memory
    budget, margin, ``high``). Weights and learning rate do not change the memory a step
    needs, so trials that differ only in those share one probe.
    """
    parts: list[str] = [type(model).__qualname__]
    for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
        parts.append(f"{name}:{tuple(tensor.shape)}:{tensor.dtype}")
    parts.append(f"input:{inputs}:{device}")
    parts += [f"{k}={settings[k]!r}" for k in sorted(settings)]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def _example_batch(data: TrainingData, device: torch.device) -> Batch:
    batches = data.train_batches(min(data.n_train, 256), device, torch.Generator().manual_seed(0))
    return next(iter(batches))


def _input_signature(data: TrainingData) -> str:
    """Per-sample shapes and dtypes of the inputs, read without starting a DataLoader when
    possible (the objective computes the probe key in every trial)."""
    x = getattr(data, "x_train", None)
    if x is not None:
        return signature(x)
    train = getattr(data, "train", None)
    if train is not None:
        try:
            first = train[0][0]
            return signature(tree_map(lambda t: t.unsqueeze(0), first))
        except (TypeError, ValueError, IndexError, AttributeError):
            pass  # items that need collate_fn: read one collated batch instead
    x, _ = _example_batch(data, torch.device("cpu"))
    return signature(x)


def probe_key_for(
    model: nn.Module,
    data: TrainingData,
    *,
    params: Params | None = None,
    device: str | torch.device | None = None,
    high: int | None = None,
    margin: float = 0.9,
    memory_budget_mb: float | None = None,
    amp: Amp = "auto",
) -> str:
    """The :func:`probe_key` that :func:`probe_batch_size` with these arguments stores."""
    device = resolve_device(device)
    return probe_key(
        model,
        _input_signature(data),
        device,
        optimizer_states=optimizer_states(params or Params(batch_size=1, lr=1e-3)),
        amp=str(amp_dtype(amp, device)),
        memory_budget_mb=memory_budget_mb,
        margin=margin,
        high=data.n_train if high is None else high,
    )


def _tile(batch: Batch, n: int, available: int) -> Batch:
    # Batches of any size from a few real samples: memory depends on the shape, not values.
    index = torch.arange(n) % available
    return tree_map(lambda t: t[index.to(t.device)], batch)


def probe_batch_size(
    model: nn.Module,
    data: TrainingData,
    *,
    params: Params | None = None,
    device: str | torch.device | None = None,
    high: int | None = None,
    start: int = 2,
    margin: float = 0.9,
    memory_budget_mb: float | None = None,
    amp: Amp = "auto",
    loss: LossFn | None = None,
    call: str | None = None,
) -> ProbeResult:
    """Find the largest micro-batch that trains one step of ``model`` on ``device``.

    Args:
        model: the model to probe; its weights, buffers and training mode are restored.
        data: supplies a few training samples, tiled to every probed batch size.
        params: optimizer settings of the steps (their state counts towards memory);
            default AdamW.
        device: ``"auto"`` (CUDA when present), ``"cpu"``, ``"cuda:0"``, ...
        high: the largest batch worth probing, usually the largest effective batch of the
            search space; default the training set size.
        start: the first batch tried; doubling starts here. The default 2 suits BatchNorm,
            which cannot train on a single sample (1 is still tried if 2 does not fit).
        margin: fraction of the found limit that trials use, for fragmentation and for
            memory other processes take later; in ``(0, 1]``.
        memory_budget_mb: pretend the device has this much memory (MiB), using the estimate
            of :class:`~bsopt.training.MemoryBudget`: how a CPU machine stands in for a GPU.
            On CUDA without it, real steps run until a real out-of-memory error.
        amp: mixed precision as in :func:`~bsopt.training.train`; it changes the memory a
            step needs.
        loss: the training loss as in :func:`~bsopt.training.train`; default cross-entropy or MSE.
        call: how the model is called, as in :func:`~bsopt.training.train`.

    Raises:
        ValueError: a bad argument, or not even a batch of 1 fits.
    """
    high = _checked_high(data, high, margin)
    params = params or Params(batch_size=1, lr=1e-3)
    device = resolve_device(device)
    model.to(device)
    step = _ProbeStep(
        model,
        _example_batch(data, device),
        loss or default_loss,
        autocast_for(device, amp_dtype(amp, device)),
        device,
        call,
    )
    key = probe_key_for(
        model,
        data,
        params=params,
        device=device,
        high=high,
        margin=margin,
        memory_budget_mb=memory_budget_mb,
        amp=amp,
    )
    limit, steps, seconds = step.search(
        params, memory_budget_mb, high=high, start=min(start, high)
    )
    capped = limit >= high
    return ProbeResult(
        limit=limit,
        micro_batch_size=limit if capped else max(1, math.floor(margin * limit)),
        capped=capped,
        steps=steps,
        seconds=seconds,
        margin=margin,
        high=high,
        device=str(device),
        memory_budget_mb=memory_budget_mb,
        key=key,
    )


def _checked_high(data: TrainingData, high: int | None, margin: float) -> int:
    """``high`` (default: the training set size), after the eager checks of the probe."""
    if not 0 < margin <= 1:
        raise ValueError(f"margin must be in (0, 1], but got {margin}. Try margin=0.9.")
    high = data.n_train if high is None else high
    if high < 1:
        raise ValueError(f"high must be at least 1, but got {high}.")
    return high


@dataclass
class _ProbeStep:
    """Single training steps of probed batch sizes, tiled from a few real samples."""

    model: nn.Module
    example: Batch
    loss_fn: LossFn
    autocast: Autocast
    device: torch.device
    call: str | None = None

    def search(
        self, params: Params, memory_budget_mb: float | None, *, high: int, start: int
    ) -> tuple[int, int, float]:
        """``(limit, steps, seconds)`` of :func:`search_limit` over :meth:`fits`; the model's
        weights, training mode and the random generators are restored afterwards.

        Raises:
            ValueError: not even a batch of 1 fits.
        """
        budget = (
            MemoryBudget(memory_budget_mb, optimizer_states=optimizer_states(params))
            if memory_budget_mb is not None
            else None
        )
        model = self.model
        saved_model = copy.deepcopy(model.state_dict())
        was_training = model.training
        optimizer = make_optimizer(model, params)
        rng_devices = [self.device] if self.device.type == "cuda" else []
        tick = time.perf_counter()
        model.train()
        try:
            with torch.random.fork_rng(devices=rng_devices):
                with budget.attach(model) if budget is not None else contextlib.nullcontext():
                    limit, steps = search_limit(
                        lambda n: self.fits(n, optimizer), high=high, start=start
                    )
        finally:
            model.load_state_dict(saved_model)
            model.train(was_training)
            # The optimizer's moments are the largest thing the probe leaves behind.
            optimizer.state.clear()
            release_memory(self.device)
        seconds = time.perf_counter() - tick
        if limit == 0:
            within = f" within memory_budget_mb={memory_budget_mb:g}" if budget else ""
            raise ValueError(
                f"Not even a batch of 1 trains on {self.device}{within}. Use a smaller model, "
                "a larger memory budget or another device."
            )
        return limit, steps, seconds

    def fits(self, n: int, optimizer: torch.optim.Optimizer) -> bool:
        """Whether one training step of a batch of ``n`` runs without running out of memory."""
        failed = False
        try:
            batch = _tile(self.example, n, batch_size_of(self.example))
            forward_loss(self.model, batch, self.loss_fn, self.autocast, self.call).backward()
            optimizer.step()
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
        except Exception as error:
            if not is_oom_error(error):
                raise
            failed = True
        finally:
            optimizer.zero_grad(set_to_none=True)
        if failed:
            # Outside the except block: the traceback that pinned the step's tensors is gone.
            release_memory(self.device)
        return not failed
