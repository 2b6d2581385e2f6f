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

from collections.abc import Callable, Generator
import contextlib
from dataclasses import dataclass, field
import math
import time
from typing import Any, Literal

import torch
from torch import nn

from bsopt.core._budget import GridCursor
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
from bsopt.training._config import Amp, TrainConfig, check_amp, resolve_device
from bsopt.training._data import BatchSize, TrainingData
from bsopt.training._distributed import RankError, World, flag_of, raise_flag
from bsopt.training._memory import peak_memory_mb, release_memory, reset_peak_memory
from bsopt.training._metrics import (
    LossFn,
    Metric,
    MetricFn,
    OutputPick,
    bind_loss,
    check_loss_value,
    check_metric_value,
    correct_count,
    default_loss,
    pick_output,
    resolve_metric,
    run_metric,
)
from bsopt.training._noise import MeasureBudget, NoiseScale
from bsopt.training._optim import build_optimizer, optimizer_name

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
    optimizer: str = ""

    @property
    def samples_per_second(self) -> float:
        return self.samples_seen / self.train_seconds if self.train_seconds > 0 else 0.0


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
    model: nn.Module,
    batch: Batch,
    loss_fn: LossFn,
    autocast: Autocast,
    call: str | None = None,
) -> torch.Tensor:
    """The loss of ``batch``: the one loss path of training, probing and evaluation."""
    x, y = batch
    with autocast:
        return check_loss_value(loss_fn(call_model(model, x, call), y))


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
    *,
    output: OutputPick = None,
    call: str | None = None,
) -> tuple[float, float]:
    """``(metric value, mean validation loss)`` over the whole validation split.

    Accuracy and loss are summed on the device (one host sync per evaluation); any other
    metric sees the concatenated outputs and targets of the split. Both are means over the
    rows the model saw (the batch dimension of its inputs), not over ``data.n_val``.
    """
    autocast = autocast or autocast_for(device, None)
    model.eval()
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.int64)
    rows = 0
    outputs: list[Tree] = []
    targets: list[Tree] = []
    with autocast:
        for x, y in data.val_batches(device):
            out = call_model(model, x, call)
            n = batch_size_of(y)
            rows += n
            loss_sum += check_loss_value(loss_fn(out, y)).float() * n
            if metric.name == "accuracy":
                correct += correct_count(pick_output(out, output), y)
            elif metric.fn is not None:
                outputs.append(out)
                targets.append(y)
    model.train()
    val_loss = loss_sum.item() / rows
    if metric.name == "accuracy":
        return check_metric_value(metric, correct.item() / rows), val_loss
    if metric.fn is None:
        return val_loss, val_loss
    return run_metric(metric, concat(outputs), concat(targets), output), val_loss


def evaluate(
    model: nn.Module,
    data: TrainingData,
    device: str | torch.device | None = None,
    metric: str | Metric | MetricFn = "accuracy",
    *,
    loss: LossFn | None = None,
    direction: Literal["maximize", "minimize"] | None = None,
    output: OutputPick = None,
    call: str | None = None,
) -> float:
    """The validation ``metric`` of ``model`` on ``data`` (see :func:`train` for metrics,
    ``output`` and ``call``). A loss taking ``params`` cannot be used here."""
    chosen = resolve_metric(metric, direction)
    loss_fn = bind_loss(loss, None, output)
    value, _ = validate(
        model, data, resolve_device(device), chosen, loss_fn, output=output, call=call
    )
    return value


def _batches_forever(
    data: TrainingData, batch_size: BatchSize, device: torch.device, generator: torch.Generator
) -> Generator[tuple[Batch, bool], None, None]:
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
    call: str | None = None

    def __call__(self, batch: Batch, n: int, noise: NoiseScale | None) -> torch.Tensor:
        if self.world is not None:
            return self._shared(batch, n, noise, self.world)
        micro = min(n, self.micro_cap)
        if noise is not None and micro == n:
            micro = (n + 1) // 2  # two micro-batches give the two gradient norms
        if micro == n:
            # The whole batch in one pass, the common case: no accumulator, no weights.
            loss = forward_loss(self.model, batch, self.loss_fn, self.autocast, self.call)
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
        first: tuple[float, int] | None = None
        aside: list[torch.Tensor | None] = []
        for start in range(0, n, micro):
            part = slice_batch(batch, start, start + micro)
            size = min(micro, n - start)
            loss = forward_loss(self.model, part, self.loss_fn, self.autocast, self.call)
            loss = loss * (size / n)
            self.scaler.scale(loss).backward()
            step_loss += loss.detach().float()
            if noise is not None and first is None:
                # The first micro-batch's own gradient, undoing its weight in the batch, set
                # aside (no copy) so that the rest's gradient is measured on its own too.
                first = (self._grad_sq() * (n / size) ** 2, size)
                aside = [p.grad for p in self.model.parameters()]
                self.model.zero_grad(set_to_none=True)
        if noise is not None and first is not None and first[1] < n:
            rest = n - first[1]
            rest_sq = self._grad_sq() * (n / rest) ** 2
            for p, grad in zip(self.model.parameters(), aside, strict=True):
                if grad is not None:
                    p.grad = grad if p.grad is None else p.grad.add_(grad)
            noise.update_split(first[0], first[1], rest_sq, rest, self._grad_sq())
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
                    loss = forward_loss(self.model, part, self.loss_fn, self.autocast, self.call)
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


def train(
    model: nn.Module,
    data: TrainingData,
    params: Params,
    config: TrainConfig | None = None,
    *,
    report: ReportFn | None = None,
    world: World | None = None,
    **options: Any,
) -> TrainResult:
    """Train ``model`` on ``data`` with ``params`` for the budget and evaluate on its grid.

    Args:
        model: any ``nn.Module``. It is called as ``model(x)``, ``model(*x)`` for tuple or
            list inputs, or ``model(**x)`` for dict inputs, and moved to the device.
        data: a :class:`~bsopt.TensorData` or :class:`~bsopt.DatasetData`.
        params: batch size, learning rate, optimizer and schedules (:class:`~bsopt.Params`).
            The learning rate follows ``params.lr_schedule`` after ``params.warmup``, as a
            function of the budget spent; the batch size follows ``params.batch_schedule``
            and changes only at evaluation points.
        config: how to train: budget, metric, loss, device, seed, amp, micro-batch,
            clipping, divergence and noise scale (:class:`TrainConfig` documents each).
        report: called as ``report(step, value)`` after each evaluation, where ``step`` is
            samples seen (or training milliseconds for a time budget); returning a
            :class:`~bsopt.core.StopReason` stops training with it (``True`` means pruned).
        world: this process's rank of a trial spread over several processes (see
            :mod:`bsopt.training._distributed`); ``None`` trains in this process alone. Every rank
            iterates the same global batches (same seed) and trains on its share of each;
            ``params.batch_size`` is the global batch and ``micro_batch_size`` the
            per-device cap. Rank 0 validates and calls ``report``; its value and decision
            reach every rank, so all stop together. ``samples_seen`` counts global samples.
        **options: options of :class:`TrainConfig` by name, over ``config``, e.g.
            ``train(model, data, params, budget=Budget(5), device="cpu", seed=1)``.
    """
    if "budget" in options and options["budget"] is None:
        del options["budget"]  # budget=None has always meant the default budget
    run = _Run(model, data, params, TrainConfig.of(config, **options), report, world)
    while not run.cursor.done:
        batch, n = run.next_batch()
        run.set_lr(n)
        # forward/backward over the micro-batches -> clip -> step -> zero_grad
        step_loss = run.take_step(batch, n)
        if run.count(n, step_loss):  # a NaN or infinite loss stops at once
            break
        if run.cursor.reached(run.training_ms()) and run.evaluate():
            break
    result = run.result()
    device = run.device
    del run  # the optimizer's state and a leftover batch go with it
    release_memory(device)
    return result


def _checked_metric(
    data: TrainingData, params: Params, config: TrainConfig, world: World | None
) -> Metric:
    """The metric of the run, after the checks that need the data and the params."""
    metric = config.resolved_metric
    if metric.needs_classes and data.n_classes is None:
        raise ValueError(
            f"metric={metric.name!r} needs class labels (int64 targets), but the data hold "
            "regression or structured targets. Use metric='loss', 'mae' (one float target "
            "tensor) or a callable metric."
        )
    if params.batch_size > data.n_train:
        raise ValueError(
            f"batch_size={params.batch_size} is larger than the training set "
            f"({data.n_train} samples). Lower the batch-size range of the search space."
        )
    if world is not None and config.budget.unit == "seconds":
        raise ValueError(
            "A seconds budget cannot be shared by several processes yet (their clocks would "
            "disagree on where the grid points fall). Use an epochs or samples budget with "
            "devices > 1, e.g. Budget(10, 'epochs')."
        )
    return metric


class _Run:
    """The state of one :func:`train` run; each method is one part of its loop."""

    def __init__(
        self,
        model: nn.Module,
        data: TrainingData,
        params: Params,
        config: TrainConfig,
        report: ReportFn | None,
        world: World | None,
    ) -> None:
        self.model, self.data, self.params, self.config = model, data, params, config
        self.report, self.world = report, world
        self.metric = _checked_metric(data, params, config, world)
        self.loss_fn = bind_loss(config.loss, params, config.output)
        self.device = resolve_device(config.device) if world is None else world.device
        self.dtype = amp_dtype(config.amp, self.device)
        self.autocast = autocast_for(self.device, self.dtype)
        self.micro_cap = config.micro_batch_size or params.batch_size
        self.cursor: GridCursor[Batch] = GridCursor(config.budget.grid(data.n_train))
        self.scheduled_lr = params.lr_schedule != "constant" or params.warmup > 0
        measure = config.measure_noise_scale or params.batch_schedule == "adaptive"
        self.noise = NoiseScale(population=data.n_train) if measure else None
        timed = measure and config.noise_every is None and world is None
        self.noise_budget = MeasureBudget() if timed else None
        self.divergence = DivergenceCheck(config.divergence_factor)
        self.current_batch = self._scheduled_batch(0)
        # Checking the loss needs a host sync: every step is free on the CPU, not on a GPU.
        self.check_every = 1 if self.device.type == "cpu" else 25
        self.step = self._prepare_model()
        self.steps = self.epochs_started = 0
        self.train_seconds = self.eval_seconds = 0.0
        self.stop_reason, self.stop_detail = StopReason.COMPLETED, ""
        self.value = self.val_loss = math.nan
        self.history: list[tuple[int, float]] = []
        self.history_seconds: list[float] = []
        self.noise_history: list[float] = []
        self.batch_history = [self.current_batch]
        constant = params.batch_schedule == "constant"
        self.batches = _batches_forever(
            data,
            params.batch_size if constant else (lambda: self.current_batch),
            self.device,
            torch.Generator().manual_seed(config.seed),
        )
        self.wall_start = self.tick = time.perf_counter()

    def _prepare_model(self) -> _Step:
        model, world, device = self.model, self.world, self.device
        model.to(device)
        model.train()
        if world is not None:
            world.broadcast_state(model)  # every rank starts from rank 0's weights
            if world.rank:
                # Other dropout masks than rank 0's, on other samples.
                torch.manual_seed(self.config.seed * 1_000_003 + world.rank)
        optimizer = build_optimizer(model, self.params, self.config.optimizer)
        # Each group's own rate (a head at 10x, a backbone at 0.1x) is what the schedule
        # scales, so groups keep their ratios through warm-up and decay.
        self.group_lrs = [float(group["lr"]) for group in optimizer.param_groups]
        step = _Step(
            model,
            optimizer,
            # fp16 gradients underflow without loss scaling; bf16 has fp32's range.
            torch.amp.GradScaler(device.type, enabled=self.dtype == torch.float16),
            self.autocast,
            self.loss_fn,
            self.micro_cap,
            self.config.clip_grad_norm,
            device,
            world,
            call=self.config.call,
        )
        reset_peak_memory(device)
        return step

    def _scheduled_batch(self, points_done: int) -> int:
        return batch_size_at(
            points_done,
            len(self.cursor.grid.points),
            schedule=self.params.batch_schedule,
            final=self.params.batch_size,
            noise_scale=self.noise.value if self.noise is not None else None,
            minimum=self.params.batch_min,
        )

    def training_ms(self) -> float:
        return (self.train_seconds + time.perf_counter() - self.tick) * 1000

    def next_batch(self) -> tuple[Batch, int]:
        """The next batch (this rank's share of it) and its global number of samples; a
        batch that would overshoot the next grid point is cut there."""
        batch = self.cursor.take_leftover()
        if batch is None:
            batch, new_epoch = next(self.batches)
            self.epochs_started += new_epoch
        n = batch_size_of(batch)
        if n > self.cursor.room:
            batch, self.cursor.leftover = split_batch(batch, self.cursor.room)
            n = batch_size_of(batch)
        if self.world is not None:
            batch = slice_batch(batch, *self.world.share(n))
        return batch, n

    def set_lr(self, n: int) -> None:
        if not self.scheduled_lr:
            return
        cursor = self.cursor
        done = self.training_ms() if cursor.timed else cursor.samples_seen + n
        factor = lr_factor(done / cursor.grid.total, self.params.lr_schedule, self.params.warmup)
        for group, lr in zip(self.step.optimizer.param_groups, self.group_lrs, strict=True):
            group["lr"] = lr * factor

    def _noise_summary(self) -> dict[str, Any]:
        if self.noise is None:
            return {}
        summary: dict[str, Any] = dict(self.noise.as_dict())
        budget = self.noise_budget
        if budget is not None and budget.total > 0:
            # What measuring cost, by the budget's own clock: its share of the step time.
            summary["noise_scale_time_share"] = budget.cost / budget.total
        return summary

    def take_step(self, batch: Batch, n: int) -> torch.Tensor:
        """One optimizer update, measuring the noise scale when due (timed for its budget)."""
        measure = self.measures_noise(n)
        start = time.perf_counter()
        step_loss = self.step(batch, n, self.noise if measure else None)
        if self.noise_budget is not None:
            self.noise_budget.record(time.perf_counter() - start, n, measure)
        return step_loss

    def measures_noise(self, n: int) -> bool:
        # Two micro-batches per rank give the small and the large gradient norm.
        ranks = 1 if self.world is None else self.world.size
        if self.noise is None or n < 2 * ranks or (ranks == 1 and self.world is not None):
            # A one-rank group has no smaller batch to compare with (its rank's gradient
            # is the whole batch's).
            return False
        every = self.config.noise_every
        if every is not None:
            return self.steps % every == 0
        # noise_every=None: as often as the time budget allows. Over several devices every
        # rank must measure at the same steps (the norms travel in the all-reduce), and each
        # rank's own gradient is the small batch: no split, so every step.
        return self.noise_budget is None or self.noise_budget.due()

    def count(self, n: int, step_loss: torch.Tensor) -> bool:
        """Count a step; ``True`` when its loss is not finite (the run stops)."""
        self.cursor.samples_seen += n
        self.steps += 1
        self.cursor.add_loss(step_loss)
        if self.steps % self.check_every == 0:
            reason = DivergenceCheck.non_finite(step_loss.item())
            if reason is not None:
                self.stop_reason, self.stop_detail = StopReason.DIVERGED, reason
                return True
        return False

    def _validate(self) -> tuple[float, float]:
        config = self.config
        return validate(
            self.model,
            self.data,
            self.device,
            self.metric,
            self.loss_fn,
            self.autocast,
            output=config.output,
            call=config.call,
        )

    def evaluate(self) -> bool:
        """Validate and report at the grid point just reached; ``True`` to stop."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        now = time.perf_counter()
        self.train_seconds += now - self.tick
        reason = self.cursor.close_interval(self.divergence)
        if reason is not None:
            self.stop_reason, self.stop_detail = StopReason.DIVERGED, reason
            return True
        index, cursor = self.cursor.index, self.cursor
        key = cursor.grid.points[index]
        verdict: StopReason | bool | None = None
        if self.world is None:
            self.value, self.val_loss = self._validate()
        else:
            self.value, self.val_loss, verdict = _shared_evaluation(
                self.world, index, self._validate, self.report, key
            )
        self.history.append((key, self.value))
        self.history_seconds.append(self.train_seconds)
        if self.noise is not None:
            self.noise_history.append(self.noise.value)
        cursor.advance()
        if not cursor.done:
            self.current_batch = self._scheduled_batch(cursor.index)
            self.batch_history.append(self.current_batch)
        self.tick = time.perf_counter()
        self.eval_seconds += self.tick - now
        if self.world is None and self.report is not None:
            verdict = self.report(key, self.value)
        if verdict:
            self.stop_reason = verdict if isinstance(verdict, StopReason) else StopReason.PRUNED
            return True
        self.tick = time.perf_counter()  # the report's time is neither training nor evaluation
        return False

    def result(self) -> TrainResult:
        """The run's result, once the loop ended."""
        self.batches.close()  # its batch-size callable refers back to this run
        if self.stop_reason == StopReason.DIVERGED:
            self.train_seconds += time.perf_counter() - self.tick
        world, params = self.world, self.params
        if world is not None:
            # A failure in the last optimizer step has no later all-reduce to ride on.
            raise_flag(world, world.reduce_flags(self.step.pending), "the last optimizer step")
        per_device = (
            params.batch_size if world is None else math.ceil(params.batch_size / world.size)
        )
        samples = self.cursor.samples_seen
        return TrainResult(
            value=self.value,
            metric=self.metric.name,
            stop_reason=self.stop_reason,
            stop_detail=self.stop_detail,
            history=self.history,
            history_seconds=self.history_seconds,
            samples_seen=samples,
            optimizer_steps=self.steps,
            epochs=samples / self.data.n_train,
            train_seconds=self.train_seconds,
            eval_seconds=self.eval_seconds,
            wall_seconds=time.perf_counter() - self.wall_start,
            batch_size=params.batch_size,
            micro_batch_size=min(self.micro_cap, per_device),
            accumulation_steps=math.ceil(per_device / self.micro_cap),
            peak_memory_mb=peak_memory_mb(self.device),
            device=str(self.device),
            amp=str(self.dtype).removeprefix("torch.") if self.dtype else "off",
            val_loss=self.val_loss,
            epochs_started=self.epochs_started,
            noise_history=self.noise_history,
            noise_summary=self._noise_summary(),
            batch_history=self.batch_history,
            world_size=1 if world is None else world.size,
            optimizer=optimizer_name(self.config.optimizer, params),
        )


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
