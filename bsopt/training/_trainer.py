"""The training loop: one plain function, no Optuna.

``train`` runs a model for a :class:`~bsopt.Budget`, evaluates it on the budget's grid of
samples seen (or training milliseconds), hands each evaluation to a ``report(step, value)``
callback and returns a :class:`TrainResult`. A callback that returns a
:class:`~bsopt.core.StopReason` stops training (the objective uses this for pruning); the loop
itself never imports Optuna.

Batches never cross an evaluation point: the batch that would overshoot is split, so every
trial is evaluated after exactly the same number of samples whatever its batch size. Samples
are counted along the batch dimension of every tensor in the batch, whatever its structure.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
import contextlib
from dataclasses import dataclass, field
import math
import time
from typing import Any, Literal

import torch
from torch import nn

from bsopt.core._budget import Budget
from bsopt.core._schedules import batch_size_at, lr_factor
from bsopt.core._space import Params
from bsopt.core._stop import DivergenceCheck, StopReason
from bsopt.training._batch import (
    Batch,
    Tree,
    batch_size_of,
    call_model,
    concat,
    slice_batch,
    split_batch,
)
from bsopt.training._data import BatchSize, TrainingData
from bsopt.training._distributed import RankError, World, flag_of, raise_flag
from bsopt.training._memory import peak_memory_mb, release_memory, reset_peak_memory
from bsopt.training._metrics import (
    LossFn,
    Metric,
    MetricFn,
    check_loss_value,
    default_loss,
    resolve_metric,
)
from bsopt.training._noise import NoiseScale
from bsopt.training._optim import make_optimizer

Amp = Literal["auto", "bf16", "fp16", "off"]
AMP_MODES = ("auto", "bf16", "fp16", "off")
# Returns why to stop (True means pruned), or None / False to go on.
ReportFn = Callable[[int, float], "StopReason | bool | None"]


@dataclass
class TrainResult:
    """What one training run produced. ``value`` is the last evaluation of ``metric``.

    ``history`` holds ``(step, value)`` per evaluation and ``history_seconds`` the training
    seconds spent when each was taken; ``val_loss`` is the last validation loss (recorded
    whatever the metric); ``batch_history`` the batch size trained with in each evaluation
    interval and ``noise_history`` the gradient noise scale estimated at each evaluation
    (empty unless measured), with ``noise_summary`` the final estimate, its interval and the
    number of measurements (:meth:`NoiseScale.as_dict`). ``stop_detail`` says more about
    ``stop_reason``.
    """

    value: float
    metric: str
    stop_reason: StopReason
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
    val_loss: float = math.nan
    stop_detail: str = ""
    epochs_started: int = 0
    noise_history: list[float] = field(default_factory=list)
    noise_summary: dict[str, Any] = field(default_factory=dict)
    batch_history: list[int] = field(default_factory=list)
    world_size: int = 1

    @property
    def samples_per_second(self) -> float:
        return self.samples_seen / self.train_seconds if self.train_seconds > 0 else 0.0


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``None`` or ``"auto"`` picks CUDA when present, else the CPU."""
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise ValueError(
            f"device={device!r} is not a device torch knows ({error}). Use 'auto', 'cpu', "
            "'cuda' or 'cuda:N'."
        ) from None
    if resolved.type not in ("cpu", "cuda"):
        raise ValueError(
            f"device={str(device)!r} is not supported: bsopt trains on 'cpu' or 'cuda[:N]'. "
            "Use device='auto' to pick CUDA when present."
        )
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            f"device={str(device)!r} was asked for, but CUDA is not available here. "
            "Use device='auto' or 'cpu'."
        )
    return resolved


def check_amp(amp: object) -> Amp:
    if amp not in AMP_MODES:
        raise ValueError(
            f"amp must be one of {', '.join(AMP_MODES)} (mixed precision on CUDA), but got "
            f"{amp!r}."
        )
    return amp  # type: ignore[return-value]


def amp_dtype(amp: Amp, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``amp`` on ``device``, or ``None`` for full precision."""
    check_amp(amp)
    # Autocast on the CPU slows small models down; mixed precision is a GPU feature here.
    if amp == "off" or device.type != "cuda":
        return None
    if amp == "fp16":
        return torch.float16
    if amp == "bf16" or torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float16


def autocast_for(
    device: torch.device, dtype: torch.dtype | None
) -> contextlib.AbstractContextManager[object]:
    """One autocast context for a whole run. Without mixed precision it is a null context:
    entering even a disabled ``torch.autocast`` costs ~10 us, 1% of a small model's step."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


Autocast = contextlib.AbstractContextManager[object]


def forward_loss(
    model: nn.Module, batch: Batch, loss_fn: LossFn, autocast: Autocast
) -> torch.Tensor:
    """The loss of ``batch``: the one loss path of training, probing and evaluation."""
    x, y = batch
    with autocast:
        return check_loss_value(loss_fn(call_model(model, x), y))


def _grad_sq_norm(model: nn.Module) -> float:
    """The squared L2 norm of all gradients together (one host sync)."""
    grads = [p.grad.detach().float() for p in model.parameters() if p.grad is not None]
    if not grads:
        return 0.0
    return float(torch.stack([g.pow(2).sum() for g in grads]).sum())


@torch.inference_mode()
def validate(
    model: nn.Module,
    data: TrainingData,
    device: torch.device,
    metric: Metric,
    loss_fn: LossFn = default_loss,
    autocast: Autocast | None = None,
) -> tuple[float, float]:
    """``(metric value, mean validation loss)`` over the whole validation split.

    Accuracy and loss are summed on the device (one host sync per evaluation); any other
    metric sees the concatenated outputs and targets of the split.
    """
    autocast = autocast or autocast_for(device, None)
    model.eval()
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.int64)
    outputs: list[Tree] = []
    targets: list[Tree] = []
    with autocast:
        for x, y in data.val_batches(device):
            out = call_model(model, x)
            loss_sum += check_loss_value(loss_fn(out, y)).float() * batch_size_of(y)
            if metric.name == "accuracy":
                correct += (out.argmax(dim=-1) == y).sum()
            elif metric.fn is not None:
                outputs.append(out)
                targets.append(y)
    model.train()
    val_loss = loss_sum.item() / data.n_val
    if metric.name == "accuracy":
        return correct.item() / data.n_val, val_loss
    if metric.fn is None:
        return val_loss, val_loss
    return float(metric.fn(concat(outputs), concat(targets))), val_loss


def evaluate(
    model: nn.Module,
    data: TrainingData,
    device: str | torch.device | None = None,
    metric: str | Metric | MetricFn = "accuracy",
    *,
    loss: LossFn | None = None,
    direction: Literal["maximize", "minimize"] | None = None,
) -> float:
    """The validation ``metric`` of ``model`` on ``data`` (see :func:`train` for metrics)."""
    chosen = resolve_metric(metric, direction)
    value, _ = validate(model, data, resolve_device(device), chosen, loss or default_loss)
    return value


def _batches_forever(
    data: TrainingData, batch_size: BatchSize, device: torch.device, generator: torch.Generator
) -> Iterator[tuple[Batch, bool]]:
    """Training batches epoch after epoch; the flag marks the first batch of a new epoch."""
    while True:
        first = True
        for batch in data.train_batches(batch_size, device, generator):
            yield batch, first
            first = False


@dataclass
class _Step:
    """One optimizer update over a batch, accumulated over micro-batches when needed."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    autocast: Autocast
    loss_fn: LossFn
    micro_cap: int
    clip_grad_norm: float | None
    device: torch.device
    world: World | None = None
    pending: int = 0  # a failure flag (see _distributed) owed to the next all-reduce

    def __call__(self, batch: Batch, n: int, noise: NoiseScale | None) -> torch.Tensor:
        if self.world is not None:
            return self._shared(batch, n, noise, self.world)
        micro = min(n, self.micro_cap)
        if noise is not None and micro == n:
            micro = (n + 1) // 2  # two micro-batches give the two gradient norms
        if micro == n:
            # The whole batch in one pass, the common case: no accumulator, no weights.
            loss = forward_loss(self.model, batch, self.loss_fn, self.autocast)
            self.scaler.scale(loss).backward()
            step_loss = loss.detach().float()
        else:
            step_loss = self._accumulate(batch, n, micro, noise)
        if self.clip_grad_norm is not None:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.model.parameters(), self.clip_grad_norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        return step_loss

    def _accumulate(
        self, batch: Batch, n: int, micro: int, noise: NoiseScale | None
    ) -> torch.Tensor:
        # Each micro-batch loss is weighted by its share of the batch, so the summed
        # gradient equals the full batch's.
        step_loss = torch.zeros((), device=self.device)
        small: tuple[float, int] | None = None
        for start in range(0, n, micro):
            part = slice_batch(batch, start, start + micro)
            size = min(micro, n - start)
            loss = forward_loss(self.model, part, self.loss_fn, self.autocast) * (size / n)
            self.scaler.scale(loss).backward()
            step_loss += loss.detach().float()
            if noise is not None and small is None:
                # The first micro-batch's own gradient, undoing its weight in the batch.
                small = (self._grad_sq() * (n / size) ** 2, size)
        if noise is not None and small is not None:
            noise.update(small[0], small[1], self._grad_sq(), n)
        return step_loss

    def _shared(
        self, batch: Batch, n: int, noise: NoiseScale | None, world: World
    ) -> torch.Tensor:
        """One update of a trial spread over ranks: ``batch`` is this rank's slice of a
        global batch of ``n`` samples.

        Each micro-batch loss is weighted by its share of the *global* batch, so the sum of
        the ranks' gradients (one all-reduce) is the global batch's gradient. A failure on
        any rank (out of memory or another error) is a flag in the same all-reduce: every
        rank raises at the same step and none waits for a rank that stopped.
        """
        local = batch_size_of(batch)
        micro = max(1, min(local, self.micro_cap))
        step_loss = torch.zeros((), device=self.device)
        failed, self.pending = self.pending, 0
        if not failed:
            try:
                for start in range(0, local, micro):
                    part = batch if micro >= local else slice_batch(batch, start, start + micro)
                    size = min(micro, local - start)
                    loss = forward_loss(self.model, part, self.loss_fn, self.autocast)
                    loss = loss * (size / n)
                    self.scaler.scale(loss).backward()
                    step_loss += loss.detach().float()
            except Exception as error:
                failed = flag_of(error)
                world.note_error(f"{type(error).__name__}: {error}")
        if failed:
            self.optimizer.zero_grad(set_to_none=True)  # this rank contributes nothing
        extras: list[float | torch.Tensor] = [step_loss, float(failed == 1), float(failed == 2)]
        if noise is not None:
            # This rank's gradient as the mean over its own samples: the small batch.
            extras.append(self._grad_sq() * (n / local) ** 2 if local and not failed else 0.0)
        params = [p for p in self.model.parameters() if p.requires_grad]
        sums = world.reduce_gradients(params, extras)
        raise_flag(world, 2 if sums[2] else 1 if sums[1] else 0, "a training step")
        if noise is not None:
            noise.update(sums[3] / world.size, n // world.size, self._grad_sq(), n)
        try:
            if self.clip_grad_norm is not None:
                self.scaler.unscale_(self.optimizer)
                nn.utils.clip_grad_norm_(self.model.parameters(), self.clip_grad_norm)
            self.scaler.step(self.optimizer)
            self.scaler.update()
        except Exception as error:
            # Owed to the next all-reduce (or the final check), which every rank reaches.
            self.pending = flag_of(error)
            world.note_error(f"{type(error).__name__}: {error}")
        self.optimizer.zero_grad(set_to_none=True)
        return torch.tensor(sums[0], device=self.device)

    def _grad_sq(self) -> float:
        # Under fp16 loss scaling the gradients are scaled; the noise scale needs true norms.
        scale = self.scaler.get_scale() if self.scaler.is_enabled() else 1.0
        return _grad_sq_norm(self.model) / scale**2


def check_train_options(
    *,
    micro_batch_size: object,
    clip_grad_norm: object,
    divergence_factor: object,
    noise_every: object = 4,
) -> None:
    """Eager checks of the options ``train`` and ``make_objective`` share."""
    if micro_batch_size is not None and (
        isinstance(micro_batch_size, bool)
        or not isinstance(micro_batch_size, int)
        or micro_batch_size < 1
    ):
        raise ValueError(
            f"micro_batch_size must be an integer >= 1 (the most samples pushed through the "
            f"model at once) or None for no cap, but got {micro_batch_size!r}."
        )
    if clip_grad_norm is not None and not (
        isinstance(clip_grad_norm, (int, float))
        and not isinstance(clip_grad_norm, bool)
        and 0 < clip_grad_norm < math.inf
    ):
        raise ValueError(
            f"clip_grad_norm must be a positive finite number (the largest gradient norm "
            f"allowed), but got {clip_grad_norm!r}. Use None to switch clipping off."
        )
    DivergenceCheck(divergence_factor)  # type: ignore[arg-type]
    if isinstance(noise_every, bool) or not isinstance(noise_every, int) or noise_every < 1:
        raise ValueError(f"noise_every must be an integer >= 1, but got {noise_every!r}.")


def train(
    model: nn.Module,
    data: TrainingData,
    params: Params,
    *,
    budget: Budget | None = None,
    metric: str | Metric | MetricFn = "accuracy",
    direction: Literal["maximize", "minimize"] | None = None,
    loss: LossFn | None = None,
    report: ReportFn | None = None,
    device: str | torch.device | None = None,
    seed: int = 0,
    amp: Amp = "auto",
    micro_batch_size: int | None = None,
    clip_grad_norm: float | None = None,
    divergence_factor: float = 10.0,
    measure_noise_scale: bool = False,
    noise_every: int = 4,
    world: World | None = None,
) -> TrainResult:
    """Train ``model`` on ``data`` with ``params`` for ``budget`` and evaluate on its grid.

    Args:
        model: any ``nn.Module``. It is called as ``model(x)``, ``model(*x)`` for tuple or
            list inputs, or ``model(**x)`` for dict inputs, and moved to ``device``.
        data: a :class:`~bsopt.TensorData` or :class:`~bsopt.DatasetData`.
        params: batch size, learning rate, optimizer and schedules (:class:`~bsopt.Params`).
            The learning rate follows ``params.lr_schedule`` after ``params.warmup``, as a
            function of the budget spent; the batch size follows ``params.batch_schedule``
            and changes only at evaluation points.
        budget: how long to train and how often to evaluate; default ``Budget(10)``.
        metric: the validation metric: ``"accuracy"``, ``"loss"``, a scikit-learn metric by
            name (``bsopt.training.METRICS``), or a callable ``fn(outputs, targets) -> float`` with
            ``direction``.
        loss: ``loss(output, target) -> scalar tensor``, used for training and the
            validation loss; default cross-entropy for integer targets, MSE for float ones.
        report: called as ``report(step, value)`` after each evaluation, where ``step`` is
            samples seen (or training milliseconds for a time budget); returning a
            :class:`~bsopt.core.StopReason` stops training with it (``True`` means pruned).
        device: ``"auto"`` (CUDA when present), ``"cpu"``, ``"cuda:1"``, ...
        seed: seeds the shuffling; seed the model's initialisation before building it.
        amp: mixed precision on CUDA: ``"auto"`` (bf16 where supported, else fp16 with loss
            scaling), ``"bf16"``, ``"fp16"`` or ``"off"``. Ignored on the CPU.
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
        world: this process's rank of a trial spread over several processes (see
            :mod:`bsopt.training._distributed`); ``None`` trains in this process alone. Every rank
            iterates the same global batches (same seed) and trains on its share of each;
            ``params.batch_size`` is the global batch and ``micro_batch_size`` the
            per-device cap. Rank 0 validates and calls ``report``; its value and decision
            reach every rank, so all stop together. ``samples_seen`` counts global samples.
    """
    budget = budget or Budget()
    chosen = resolve_metric(metric, direction)
    if chosen.needs_classes and data.n_classes is None:
        raise ValueError(
            f"metric={chosen.name!r} needs class labels (int64 targets), but the data hold "
            "regression or structured targets. Use metric='loss', 'mae' or a callable."
        )
    if params.batch_size > data.n_train:
        raise ValueError(
            f"batch_size={params.batch_size} is larger than the training set "
            f"({data.n_train} samples). Lower the batch-size range of the search space."
        )
    check_train_options(
        micro_batch_size=micro_batch_size,
        clip_grad_norm=clip_grad_norm,
        divergence_factor=divergence_factor,
        noise_every=noise_every,
    )
    loss_fn = loss or default_loss
    device = resolve_device(device) if world is None else world.device
    if world is not None and budget.unit == "seconds":
        raise ValueError(
            "A seconds budget cannot be shared by several processes yet (their clocks would "
            "disagree on where the grid points fall). Use an epochs or samples budget with "
            "devices > 1, e.g. Budget(10, 'epochs')."
        )
    dtype = amp_dtype(amp, device)
    autocast = autocast_for(device, dtype)
    micro_cap = micro_batch_size or params.batch_size
    grid = budget.grid(data.n_train)
    timed = grid.unit == "ms"
    scheduled_lr = params.lr_schedule != "constant" or params.warmup > 0
    noise = NoiseScale() if measure_noise_scale or params.batch_schedule == "adaptive" else None
    divergence = DivergenceCheck(divergence_factor)

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
    if world is not None:
        world.broadcast_state(model)  # every rank starts from rank 0's weights
        if world.rank:
            # Other dropout masks than rank 0's, on other samples.
            torch.manual_seed(seed * 1_000_003 + world.rank)
    optimizer = make_optimizer(model, params)
    step = _Step(
        model,
        optimizer,
        # fp16 gradients underflow without loss scaling; bf16 has fp32's range.
        torch.amp.GradScaler(device.type, enabled=dtype == torch.float16),
        autocast,
        loss_fn,
        micro_cap,
        clip_grad_norm,
        device,
        world,
    )
    reset_peak_memory(device)

    history: list[tuple[int, float]] = []
    history_seconds: list[float] = []
    samples = steps = epochs_started = 0
    train_seconds = eval_seconds = 0.0
    interval_loss = torch.zeros((), device=device)
    interval_steps = 0
    stop_reason, stop_detail = StopReason.COMPLETED, ""
    value = val_loss = math.nan
    next_point = 0
    leftover: Batch | None = None
    noise_history: list[float] = []
    batch_history: list[int] = [current_batch]
    batches = _batches_forever(
        data,
        params.batch_size if params.batch_schedule == "constant" else (lambda: current_batch),
        device,
        torch.Generator().manual_seed(seed),
    )
    wall_start = tick = time.perf_counter()

    while next_point < len(grid.points):
        if leftover is not None:
            batch, leftover = leftover, None
        else:
            batch, new_epoch = next(batches)
            epochs_started += new_epoch
        n = batch_size_of(batch)
        if not timed and n > grid.points[next_point] - samples:
            batch, leftover = split_batch(batch, grid.points[next_point] - samples)
            n = grid.points[next_point] - samples
        if world is not None:
            batch = slice_batch(batch, *world.share(n))
        if scheduled_lr:
            progress = (
                (train_seconds + time.perf_counter() - tick) * 1000 / grid.total
                if timed
                else (samples + n) / grid.total
            )
            for group in optimizer.param_groups:
                group["lr"] = params.lr * lr_factor(progress, params.lr_schedule, params.warmup)
        measure = (
            noise is not None
            and n >= (2 if world is None else 2 * world.size)
            and steps % noise_every == 0
        )
        step_loss = step(batch, n, noise if measure else None)
        samples += n
        steps += 1
        interval_loss += step_loss
        interval_steps += 1

        if steps % check_every == 0 and (reason := divergence.non_finite(step_loss.item())):
            stop_reason, stop_detail = StopReason.DIVERGED, reason
            break
        elapsed_ms = (train_seconds + time.perf_counter() - tick) * 1000
        if elapsed_ms < grid.points[next_point] if timed else samples < grid.points[next_point]:
            continue

        if device.type == "cuda":
            torch.cuda.synchronize(device)
        now = time.perf_counter()
        train_seconds += now - tick
        reason = divergence.interval(interval_loss.item() / interval_steps)
        if reason is not None:
            stop_reason, stop_detail = StopReason.DIVERGED, reason
            break
        interval_loss.zero_()
        interval_steps = 0

        step_key = grid.points[next_point]
        verdict: StopReason | bool | None = None
        if world is None:
            value, val_loss = validate(model, data, device, chosen, loss_fn, autocast)
        else:
            value, val_loss, verdict = _shared_evaluation(
                world,
                next_point,
                lambda: validate(model, data, device, chosen, loss_fn, autocast),
                report,
                step_key,
            )
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
        if world is None:
            verdict = report(step_key, value) if report is not None else None
        if verdict:
            stop_reason = verdict if isinstance(verdict, StopReason) else StopReason.PRUNED
            break
        tick = time.perf_counter()

    if stop_reason == StopReason.DIVERGED:
        train_seconds += time.perf_counter() - tick
    if world is not None:
        # A failure in the last optimizer step has no later all-reduce to ride on.
        raise_flag(world, world.reduce_flags(step.pending), "the last optimizer step")
    per_device = params.batch_size if world is None else math.ceil(params.batch_size / world.size)
    result = TrainResult(
        value=value,
        metric=chosen.name,
        stop_reason=stop_reason,
        stop_detail=stop_detail,
        history=history,
        history_seconds=history_seconds,
        samples_seen=samples,
        optimizer_steps=steps,
        epochs=samples / data.n_train,
        train_seconds=train_seconds,
        eval_seconds=eval_seconds,
        wall_seconds=time.perf_counter() - wall_start,
        batch_size=params.batch_size,
        micro_batch_size=min(micro_cap, per_device),
        accumulation_steps=math.ceil(per_device / micro_cap),
        peak_memory_mb=peak_memory_mb(device),
        device=str(device),
        amp=str(dtype).removeprefix("torch.") if dtype else "off",
        val_loss=val_loss,
        epochs_started=epochs_started,
        noise_history=noise_history,
        noise_summary=noise.as_dict() if noise is not None else {},
        batch_history=batch_history,
        world_size=1 if world is None else world.size,
    )
    del optimizer, step, batches, leftover
    release_memory(device)
    return result


def _shared_evaluation(
    world: World,
    index: int,
    validate_now: Callable[[], tuple[float, float]],
    report: ReportFn | None,
    step_key: int,
) -> tuple[float, float, StopReason | bool | None]:
    """An evaluation point of a trial spread over ranks: rank 0 validates and reports, then
    sends the value and its decision to the other ranks, which wait for it (as long as it
    takes: the message goes through the store, not a timed collective)."""
    key = f"eval/{world.sequence}/{index}"
    if not world.is_main:
        message = world.wait(key)
        if "abort" in message:
            raise RankError(f"rank 0 stopped the trial: {message['abort']}")
        stop = message["stop"]
        reason = StopReason(stop) if stop else None
        return float(message["value"]), float(message["val_loss"]), reason
    try:
        value, val_loss = validate_now()
        verdict = report(step_key, value) if report is not None else None
    except BaseException as error:
        world.post(key, {"abort": f"{type(error).__name__}: {error}"[:500]})
        raise
    stop = (verdict if isinstance(verdict, StopReason) else StopReason.PRUNED) if verdict else None
    world.post(key, {"value": value, "val_loss": val_loss, "stop": stop.value if stop else None})
    return value, val_loss, verdict
