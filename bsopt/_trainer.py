"""The training loop: one plain function, no Optuna.

``train`` runs a model for a :class:`~bsopt.Budget`, evaluates it on the budget's grid of
samples seen (or training milliseconds), hands each evaluation to a ``report(step, value)``
callback and returns a :class:`TrainResult`. A callback that returns ``True`` stops training
(the objective uses this for pruning); the loop itself never imports Optuna.

Batches never cross an evaluation point: the batch that would overshoot is split, so every
trial is evaluated after exactly the same number of samples whatever its batch size.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
import contextlib
from dataclasses import dataclass, field
import math
import time
from typing import Literal

import torch
from torch import nn
import torch.nn.functional as F

from bsopt._budget import Budget
from bsopt._data import Batch, BatchSize, TrainingData
from bsopt._memory import peak_memory_mb, release_memory, reset_peak_memory
from bsopt._noise import NoiseScale
from bsopt._optim import make_optimizer
from bsopt._schedules import batch_size_at, lr_factor
from bsopt._space import Params

Metric = Literal["accuracy", "loss"]
Amp = Literal["auto", "bf16", "fp16", "off"]
ReportFn = Callable[[int, float], "bool | str"]

METRIC_DIRECTIONS: dict[str, Literal["maximize", "minimize"]] = {
    "accuracy": "maximize",
    "loss": "minimize",
}


@dataclass
class TrainResult:
    """What one training run produced. ``value`` is the last evaluation of ``metric``.

    ``history`` holds ``(step, value)`` per evaluation and ``history_seconds`` the training
    seconds spent when each was taken; ``batch_history`` the batch size trained with in
    each evaluation interval and ``noise_history`` the gradient noise scale estimated at
    each evaluation (empty unless measured).
    """

    value: float
    metric: str
    stop_reason: str
    history: list[tuple[int, float]]
    history_seconds: list[float]
    samples_seen: int
    optimizer_steps: int
    epochs: float
    train_seconds: float
    eval_seconds: float
    wall_seconds: float
    batch_size: int
    micro_batch_size: int
    accumulation_steps: int
    peak_memory_mb: float
    device: str
    amp: str
    extra: dict[str, float] = field(default_factory=dict)
    noise_history: list[float] = field(default_factory=list)
    batch_history: list[int] = field(default_factory=list)

    @property
    def samples_per_second(self) -> float:
        return self.samples_seen / self.train_seconds if self.train_seconds > 0 else 0.0


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``None`` or ``"auto"`` picks CUDA when present, else the CPU."""
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    resolved = torch.device(device)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            f"device={str(device)!r} was asked for, but CUDA is not available here. "
            "Use device='auto' or 'cpu'."
        )
    return resolved


def _amp_dtype(amp: Amp, device: torch.device) -> torch.dtype | None:
    if amp not in ("auto", "bf16", "fp16", "off"):
        raise ValueError(f"amp must be 'auto', 'bf16', 'fp16' or 'off', but got {amp!r}.")
    # Autocast on the CPU slows small models down; mixed precision is a GPU feature here.
    if amp == "off" or device.type != "cuda":
        return None
    if amp == "fp16":
        return torch.float16
    if amp == "bf16" or torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float16


def _loss(output: torch.Tensor, target: torch.Tensor, classification: bool) -> torch.Tensor:
    if classification:
        return F.cross_entropy(output, target)
    return F.mse_loss(output.reshape(target.shape), target)


def _grad_sq_norm(model: nn.Module) -> float:
    """The squared L2 norm of all gradients together (one host sync)."""
    grads = [p.grad.detach().float() for p in model.parameters() if p.grad is not None]
    if not grads:
        return 0.0
    return float(torch.stack([g.pow(2).sum() for g in grads]).sum())


@torch.inference_mode()
def evaluate(
    model: nn.Module,
    data: TrainingData,
    device: torch.device,
    metric: Metric,
    amp_dtype: torch.dtype | None = None,
) -> float:
    """Validation accuracy or mean loss over the whole validation split."""
    classification = data.n_classes is not None
    model.eval()
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.int64)
    autocast = (
        torch.autocast(device.type, dtype=amp_dtype) if amp_dtype else contextlib.nullcontext()
    )
    with autocast:
        for x, y in data.val_batches(device):
            out = model(x)
            if classification:
                loss_sum += F.cross_entropy(out.float(), y, reduction="sum")
                correct += (out.argmax(dim=1) == y).sum()
            else:
                loss_sum += F.mse_loss(out.float().reshape(y.shape), y, reduction="sum")
    model.train()
    # One synchronisation per evaluation, not one per batch.
    if metric == "accuracy":
        return correct.item() / data.n_val
    return loss_sum.item() / data.n_val


def _batches_forever(
    data: TrainingData, batch_size: BatchSize, device: torch.device, generator: torch.Generator
) -> Iterator[tuple[Batch, bool]]:
    """Training batches epoch after epoch; the flag marks the first batch of a new epoch."""
    while True:
        first = True
        for batch in data.train_batches(batch_size, device, generator):
            yield batch, first
            first = False


def train(
    model: nn.Module,
    data: TrainingData,
    params: Params,
    *,
    budget: Budget | None = None,
    metric: Metric = "accuracy",
    report: ReportFn | None = None,
    device: str | torch.device | None = None,
    seed: int = 0,
    amp: Amp = "auto",
    micro_batch_size: int | None = None,
    clip_grad_norm: float | None = None,
    divergence_factor: float = 10.0,
    measure_noise_scale: bool = False,
    noise_every: int = 4,
) -> TrainResult:
    """Train ``model`` on ``data`` with ``params`` for ``budget`` and evaluate on its grid.

    Args:
        model: any ``nn.Module`` mapping a batch of inputs to logits (classification) or
            predictions (regression). It is moved to ``device``.
        data: a :class:`~bsopt.TensorData` or :class:`~bsopt.DatasetData`.
        params: batch size, learning rate, optimizer and schedules (:class:`~bsopt.Params`).
            The learning rate follows ``params.lr_schedule`` after ``params.warmup``, as a
            function of the budget spent; the batch size follows ``params.batch_schedule``
            and changes only at evaluation points.
        budget: how long to train and how often to evaluate; default ``Budget(10)``.
        metric: ``"accuracy"`` (classification, maximised) or ``"loss"`` (minimised).
        report: called as ``report(step, value)`` after each evaluation, where ``step`` is
            samples seen (or training milliseconds for a time budget); returning ``True``
            stops training with ``stop_reason="pruned"``, returning a string stops it with
            that string as the reason.
        device: ``"auto"`` (CUDA when present), ``"cpu"``, ``"cuda:1"``, ...
        seed: seeds the shuffling; seed the model's initialisation before building it.
        amp: mixed precision on CUDA: ``"auto"`` (bf16 where supported, else fp16),
            ``"bf16"``, ``"fp16"`` or ``"off"``. Ignored on the CPU.
        micro_batch_size: largest batch pushed through the model at once; a larger
            ``params.batch_size`` is reached by gradient accumulation.
        clip_grad_norm: clip the global gradient norm to this value before each update.
        divergence_factor: stop as diverged when the mean training loss between two
            evaluations exceeds this multiple of the first interval's; a NaN or infinite loss
            stops at once.
        measure_noise_scale: estimate the gradient noise scale B_simple every
            ``noise_every`` optimizer steps from the gradient of the first micro-batch and of
            the whole batch (a batch is split in two for it when it is not accumulated).
            Always on for ``batch_schedule="adaptive"``, which sets the batch from it.
    """
    budget = budget or Budget()
    if metric not in METRIC_DIRECTIONS:
        raise ValueError(f"metric must be 'accuracy' or 'loss', but got {metric!r}.")
    classification = data.n_classes is not None
    if metric == "accuracy" and not classification:
        raise ValueError(
            "metric='accuracy' needs class labels (int64 targets), but the data are "
            "regression targets. Use metric='loss'."
        )
    if params.batch_size > data.n_train:
        raise ValueError(
            f"batch_size={params.batch_size} is larger than the training set "
            f"({data.n_train} samples). Lower the batch-size range of the search space."
        )
    if micro_batch_size is not None and micro_batch_size < 1:
        raise ValueError(f"micro_batch_size must be at least 1, but got {micro_batch_size}.")
    if not divergence_factor > 1:
        raise ValueError(f"divergence_factor must be above 1, but got {divergence_factor}.")
    if noise_every < 1:
        raise ValueError(f"noise_every must be at least 1, but got {noise_every}.")

    device = resolve_device(device)
    amp_dtype = _amp_dtype(amp, device)
    # fp16 gradients underflow without loss scaling; bf16 has fp32's range and needs none.
    scaler = torch.amp.GradScaler("cuda") if amp_dtype == torch.float16 else None
    micro_cap = micro_batch_size or params.batch_size
    grid = budget.grid(data.n_train)
    timed = grid.unit == "ms"
    scheduled_lr = params.lr_schedule != "constant" or params.warmup > 0
    noise = NoiseScale() if measure_noise_scale or params.batch_schedule == "adaptive" else None

    def scheduled_batch(points_done: int) -> int:
        return batch_size_at(
            points_done,
            len(grid.points),
            schedule=params.batch_schedule,
            final=params.batch_size,
            noise_scale=noise.value if noise is not None else None,
            minimum=params.batch_min,
        )

    current_batch = scheduled_batch(0)
    # Checking the loss needs a host sync: every step is free on the CPU, not on a GPU.
    check_every = 1 if device.type == "cpu" else 25

    model.to(device)
    model.train()
    optimizer = make_optimizer(model, params)
    generator = torch.Generator().manual_seed(seed)
    reset_peak_memory(device)
    autocast = (
        torch.autocast(device.type, dtype=amp_dtype) if amp_dtype else contextlib.nullcontext()
    )

    history: list[tuple[int, float]] = []
    history_seconds: list[float] = []
    samples = steps = epochs_started = 0
    train_seconds = eval_seconds = 0.0
    interval_loss = torch.zeros((), device=device)
    interval_steps = 0
    first_interval_loss: float | None = None
    stop_reason = "completed"
    value = math.nan
    next_point = 0
    leftover: Batch | None = None
    noise_history: list[float] = []
    batch_history: list[int] = [current_batch]
    batches = _batches_forever(
        data,
        params.batch_size if params.batch_schedule == "constant" else (lambda: current_batch),
        device,
        generator,
    )
    wall_start = time.perf_counter()
    tick = time.perf_counter()

    while next_point < len(grid.points):
        if leftover is not None:
            (x, y), leftover = leftover, None
        else:
            (x, y), new_epoch = next(batches)
            epochs_started += new_epoch
        if not timed:
            room = grid.points[next_point] - samples
            if len(x) > room:
                leftover = (x[room:], y[room:])
                x, y = x[:room], y[:room]

        n = len(x)
        if scheduled_lr:
            progress = (
                (train_seconds + time.perf_counter() - tick) * 1000 / grid.total
                if timed
                else (samples + n) / grid.total
            )
            for group in optimizer.param_groups:
                group["lr"] = params.lr * lr_factor(progress, params.lr_schedule, params.warmup)
        micro = min(n, micro_cap)
        measure = noise is not None and n >= 2 and steps % noise_every == 0
        if measure and micro == n:
            micro = (n + 1) // 2  # two micro-batches give the two gradient norms

        if micro == n:
            # The whole batch in one pass, the common case. The loop below would give the same
            # numbers (its weight is exactly 1) at ~25 us more per step: an accumulator, a
            # multiplication and its backward node, two slices. That is 3-5% of a small
            # model's step on the CPU.
            with autocast:
                loss = _loss(model(x), y, classification)
            if scaler is not None:
                scaler.scale(loss).backward()
            else:
                loss.backward()
            step_loss = loss.detach().float()
        else:
            # One optimizer update over the micro-batches. Each micro-batch loss is weighted
            # by its share of the batch, so the summed gradient equals the full batch's.
            step_loss = torch.zeros((), device=device)
            small_sq = None
            for start in range(0, n, micro):
                xm, ym = x[start : start + micro], y[start : start + micro]
                with autocast:
                    loss = _loss(model(xm), ym, classification) * (len(xm) / n)
                if scaler is not None:
                    scaler.scale(loss).backward()
                else:
                    loss.backward()
                step_loss += loss.detach().float()
                if measure and small_sq is None:
                    # The first micro-batch's own gradient, undoing its weight in the batch.
                    small_sq = _grad_sq_norm(model) * (n / len(xm)) ** 2
                    b_small = len(xm)
            if measure and noise is not None and small_sq is not None:
                noise.update(small_sq, b_small, _grad_sq_norm(model), n)
        if clip_grad_norm is not None:
            if scaler is not None:
                scaler.unscale_(optimizer)
            nn.utils.clip_grad_norm_(model.parameters(), clip_grad_norm)
        if scaler is not None:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        samples += n
        steps += 1
        interval_loss += step_loss
        interval_steps += 1

        if steps % check_every == 0 and not math.isfinite(step_loss.item()):
            stop_reason = "diverged: non-finite training loss"
            break

        elapsed_ms = (train_seconds + time.perf_counter() - tick) * 1000
        at_point = (
            elapsed_ms >= grid.points[next_point] if timed else samples == grid.points[next_point]
        )
        if not at_point:
            continue

        if device.type == "cuda":
            torch.cuda.synchronize(device)
        now = time.perf_counter()
        train_seconds += now - tick
        mean_loss = interval_loss.item() / interval_steps
        if not math.isfinite(mean_loss):
            stop_reason = "diverged: non-finite training loss"
            break
        if first_interval_loss is None:
            first_interval_loss = mean_loss
        elif mean_loss > divergence_factor * first_interval_loss:
            stop_reason = (
                f"diverged: training loss {mean_loss:.3g} > "
                f"{divergence_factor:g} x first {first_interval_loss:.3g}"
            )
            break
        interval_loss.zero_()
        interval_steps = 0

        value = evaluate(model, data, device, metric, amp_dtype)
        step_key = grid.points[next_point]
        history.append((step_key, value))
        history_seconds.append(train_seconds)
        if noise is not None:
            noise_history.append(noise.value)
        next_point += 1
        if next_point < len(grid.points):
            current_batch = scheduled_batch(next_point)
            batch_history.append(current_batch)
        tick = time.perf_counter()
        eval_seconds += tick - now
        verdict = report(step_key, value) if report is not None else False
        if verdict:
            stop_reason = verdict if isinstance(verdict, str) else "pruned"
            break
        tick = time.perf_counter()

    if stop_reason.startswith("diverged"):
        train_seconds += time.perf_counter() - tick
    result = TrainResult(
        value=value,
        metric=metric,
        stop_reason=stop_reason,
        history=history,
        history_seconds=history_seconds,
        samples_seen=samples,
        optimizer_steps=steps,
        epochs=samples / data.n_train,
        train_seconds=train_seconds,
        eval_seconds=eval_seconds,
        wall_seconds=time.perf_counter() - wall_start,
        batch_size=params.batch_size,
        micro_batch_size=min(micro_cap, params.batch_size),
        accumulation_steps=math.ceil(params.batch_size / micro_cap),
        peak_memory_mb=peak_memory_mb(device),
        device=str(device),
        amp=str(amp_dtype).removeprefix("torch.") if amp_dtype else "off",
        extra={"epochs_started": float(epochs_started)},
        noise_history=noise_history,
        batch_history=batch_history,
    )
    del optimizer, batches, leftover
    release_memory(device)
    return result
