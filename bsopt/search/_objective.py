"""Objective factories: the one place where bsopt touches ``optuna.Trial``.

``make_objective(build_model, data, ...)`` returns a callable for ``study.optimize``. Per
trial it draws :class:`~bsopt.Params` from the search space (and the user's own
``suggest(trial)``), seeds and builds the model, trains it with :func:`~bsopt.training.train`,
reports every evaluation to the trial (pruning when the pruner says so), and stores what the
run cost as user attributes, which the analysis and the dashboard read.

Every option is declared once, in :class:`ObjectiveOptions` (the training options in the
:class:`~bsopt.training.TrainConfig` it extends, which trials and ``retrain`` hand to the
trainer), and checked there before any trial trains; what depends on the data and the model
is checked by :class:`Objective` on construction, with one forward pass of a model built from
sampled values.
"""

from __future__ import annotations

import atexit
from collections.abc import Callable, Mapping, Sequence
import contextlib
import copy
import dataclasses
from dataclasses import KW_ONLY, dataclass, field, fields
import functools
import hashlib
import json
import logging
import math
import pickle
import re
import threading
from typing import Any, Literal
import warnings
import weakref

import optuna
from optuna.trial import FrozenTrial
import torch
from torch import nn

from bsopt.core._budget import Budget
from bsopt.core._space import (
    RESERVED_NAMES,
    Params,
    SearchSpace,
    SuggestFn,
    TrackedExtra,
    suggest_params,
)
from bsopt.core._stop import StopReason
from bsopt.search._fair import FairReporter, retry_oom
from bsopt.training._batch import (
    Batch,
    batch_size_of,
    call_model,
    describe,
    leaves,
    slice_batch,
)
from bsopt.training._config import TrainConfig, resolve_device
from bsopt.training._data import TrainingData
from bsopt.training._distributed import (
    DistributedError,
    Group,
    RankError,
    World,
    check_devices,
    join_from_env,
    launched_by_torchrun,
    start_group,
)
from bsopt.training._memory import MemoryBudget, release_memory
from bsopt.training._metrics import (
    LossFn,
    Metric,
    MetricError,
    bind_loss,
    check_loss_value,
    correct_count,
    default_loss,
    pick_output,
    resolve_metric,
    run_metric,
)
from bsopt.training._optim import build_optimizer
from bsopt.training._probe import (
    PROBE_ATTR_PREFIX,
    ProbeResult,
    optimizer_states,
    probe_batch_size,
    probe_key_for,
)
from bsopt.training._trainer import TrainResult, train

BuildModel = Callable[[Params], nn.Module]
Goal = Literal["metric", "time_to_target", "metric_and_time"]
TargetUnit = Literal["samples", "seconds"]
Direction = Literal["maximize", "minimize"]
GOALS = ("metric", "time_to_target", "metric_and_time")

_logger = logging.getLogger(__name__)
# torch's default generator (initialisation, dropout masks) is shared by every thread of a
# process, so two trials training at once in threads (study.optimize(n_jobs=2)) would draw
# from one stream in an order that changes run to run. One trial trains at a time per
# process; worker processes (bsopt run --jobs N) are the way to train several at once.
_ONE_TRIAL_AT_A_TIME = threading.RLock()


@contextlib.contextmanager
def _exclusive_rng() -> Any:
    if not _ONE_TRIAL_AT_A_TIME.acquire(blocking=False):
        _logger.warning(
            "Another trial is training in this process: bsopt runs one trial at a time per "
            "process, because torch's random generator (initialisation, dropout) is shared "
            "by threads and concurrent trials would not be reproducible. For parallel "
            "trials use worker processes: bsopt run --jobs N, or bsopt.runs.run(..., jobs=N)."
        )
        _ONE_TRIAL_AT_A_TIME.acquire()
    try:
        yield
    finally:
        _ONE_TRIAL_AT_A_TIME.release()


def time_to_target(
    result: TrainResult,
    target: float,
    *,
    direction: Literal["maximize", "minimize"],
    unit: TargetUnit,
    total: float,
) -> tuple[float, bool]:
    """Samples (or training seconds) until the metric first reached ``target``.

    A run that never reached it scores ``total * (1 + shortfall)``, where ``shortfall`` is
    its best distance to the target relative to the target: every such run ranks after every
    run that reached the target (those score at most ``total``), and closer misses rank
    first. Returns ``(score, reached)``.
    """
    for (step, value), seconds in zip(result.history, result.history_seconds, strict=True):
        if (value >= target) if direction == "maximize" else (value <= target):
            return (float(step) if unit == "samples" else seconds), True
    values = [v for _, v in result.history if math.isfinite(v)]
    if values:
        best = max(values) if direction == "maximize" else min(values)
        shortfall = abs(target - best) / max(abs(target), 1e-12)
    else:
        shortfall = 1.0
    return total * (1.0 + min(shortfall, 1.0)), False


def _canonical(value: object) -> object:
    """A parameter value as it is hashed: floats rounded to 12 significant digits (a value
    read back from any storage hashes alike), other JSON values as they are."""
    if isinstance(value, float):
        return float(f"{value:.12g}")
    if value is None or isinstance(value, (bool, int, str)):
        return value
    return repr(value)


def trial_seed(seed: int, params: Mapping[str, object]) -> int:
    """The training seed of a trial with the Optuna ``params`` in an objective of ``seed``.

    A stable hash (SHA-256, not Python's salted ``hash``) of ``seed`` and the params sorted by
    name, reduced to ``[0, 2**31 - 1]``. It does not depend on the trial's number, which with
    ``--jobs N`` depends on which worker asked first: a rerun of a seeded study trains each
    configuration it proposes again with the same seed. Two trials with identical params (an
    enqueued retry of a failed trial, say) get the same seed, so a retry reproduces the run.
    """
    canonical = [[name, _canonical(params[name])] for name in sorted(params)]
    text = json.dumps(["bsopt trial seed", int(seed), canonical], separators=(",", ":"))
    digest = hashlib.sha256(text.encode()).digest()
    return int.from_bytes(digest[:8], "big") % 2**31


def result_attrs(result: TrainResult, params: Params, seed: int) -> dict[str, object]:
    """The user attributes stored for a trial, by name."""
    schedule: dict[str, object] = {
        "optimizer": result.optimizer or params.optimizer,
        "lr_schedule": params.lr_schedule,
        "warmup": params.warmup,
        "batch_schedule": params.batch_schedule,
    }
    if params.batch_schedule != "constant":
        schedule["batch_sizes"] = result.batch_history
    if result.noise_history:
        # JSON has no NaN: intervals before a first estimate are stored as null.
        schedule["noise_scale_history"] = [
            round(v, 2) if math.isfinite(v) else None for v in result.noise_history
        ]
        # The final estimate, or nothing when the run ended without enough signal.
        summary = result.noise_summary
        if summary.get("noise_scale") is not None:
            schedule["noise_scale"] = round(summary["noise_scale"], 2)
        interval = summary.get("noise_scale_interval")
        if interval is not None:
            schedule["noise_scale_interval"] = [round(v, 2) for v in interval]
        schedule["noise_scale_measurements"] = summary.get("noise_scale_measurements", 0)
    return (
        schedule
        | {
            "effective_batch_size": result.batch_size,
            "micro_batch_size": result.micro_batch_size,
            "accumulation_steps": result.accumulation_steps,
            "lr": params.lr,
            "samples_seen": result.samples_seen,
            "optimizer_steps": result.optimizer_steps,
            "epochs": round(result.epochs, 4),
            "samples_per_second": round(result.samples_per_second, 1),
            "train_seconds": round(result.train_seconds, 4),
            "eval_seconds": round(result.eval_seconds, 4),
            "wall_seconds": round(result.wall_seconds, 4),
            "peak_memory_mb": round(result.peak_memory_mb, 1),
            "val_loss": result.val_loss if math.isfinite(result.val_loss) else None,
            "device": result.device,
            "amp": result.amp,
            "seed": seed,
            "stop_reason": result.stop_reason.value,
        }
        | ({"stop_detail": result.stop_detail} if result.stop_detail else {})
    )


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@dataclass(frozen=True)
class ObjectiveOptions(TrainConfig):
    """Every option of :func:`make_objective`, declared once and checked on construction.

    The training options (``budget``, ``metric``, ``direction``, ``loss``, ``optimizer``,
    ``output``, ``call``, ``device``, ``seed``, ``amp``, ``micro_batch_size``,
    ``clip_grad_norm``, ``divergence_factor``, ``measure_noise_scale``, ``noise_every``) are
    those of
    :class:`~bsopt.training.TrainConfig`, which documents them; ``seed`` is the objective's
    seed (each trial initialises and shuffles with a seed hashed from it and the trial's
    params, :func:`trial_seed`, stored as the user attribute ``seed``), and
    ``micro_batch_size`` defaults to the probed one when probing. The others:

    Args:
        space: the ranges to search; default :class:`~bsopt.SearchSpace()`.
        suggest: your own hyperparameters, define-by-run: ``suggest(trial) -> dict`` may
            call any ``trial.suggest_*`` (conditional ones included). Its values reach
            ``build_model`` as ``params.extra`` and are stored as ordinary trial
            parameters; names bsopt uses itself (``batch_size``, ``lr``, ...) are refused.
        memory_budget_mb: pretend the device has this many MiB (see
            :class:`~bsopt.training.MemoryBudget`): how a CPU machine stands in for a GPU.
        probe: start each trial from the largest micro-batch that fits, found by
            :func:`~bsopt.training.probe_batch_size` once per model signature and cached in the
            study's user attributes (see :meth:`Objective.probe`). Default ``None``: probe
            on CUDA or with a ``memory_budget_mb``, not on a plain CPU.
        probe_margin: trials use this fraction of the probed limit, in ``(0, 1]``.
        min_micro_batch_size: the floor of out-of-memory recovery. A trial that runs out of
            memory restarts (same seed, same effective batch) with half the micro-batch;
            when even this floor runs out of memory, the trial is pruned with
            ``stop_reason="oom"`` and the constraint ``"oom"`` set to 1 (infeasible), so TPE
            learns to avoid the region and the study goes on.
        goal: what the trial returns.

            * ``"metric"`` (default): the last validation ``metric``.
            * ``"time_to_target"``: the samples (``target_unit="samples"``) or training
              seconds (``"seconds"``, which needs a seconds budget) until the metric first
              reaches ``target`` (minimised). Training stops once it is reached. A trial that
              never reaches it completes with ``budget * (1 + shortfall)``, so it ranks after
              every trial that did; the pruner sees the distance still to go.
            * ``"metric_and_time"``: two values, (metric, training seconds), for a
              multi-objective study (``directions=objective.directions``). Optuna does not
              prune multi-objective trials.
        target, target_unit: see ``goal``.
        devices: processes per trial, one per device (``torch.distributed``: gloo on the
            CPU, NCCL on CUDA, rank ``r`` on ``cuda:r``). The searched ``batch_size`` stays
            the *global* effective batch, ``per-device micro-batch x accumulation steps x
            devices``, so every batch size in the space must be a multiple of ``devices``,
            and a coupled learning rate follows the global batch. Rank 0 (this process)
            samples the params, reports on the global samples-seen grid and sends the prune
            decision to every rank; the other ranks are started on the first trial and kept
            for the next ones (:meth:`Objective.close` stops them). Each trial stores
            ``world_size``, ``per_device_micro_batch_size`` and ``accumulation_steps``.
            A rank that dies fails its trial (the study goes on with a fresh group); an out
            of memory on any rank restarts the trial with half the per-device micro-batch
            on every rank. Epochs or samples budgets only.
    """

    space: SearchSpace = field(default_factory=SearchSpace)
    suggest: SuggestFn | None = None
    goal: Goal = "metric"
    target: float | None = None
    target_unit: TargetUnit = "samples"
    memory_budget_mb: float | None = None
    probe: bool | None = None
    probe_margin: float = 0.9
    min_micro_batch_size: int = 8
    devices: int = 1

    def __post_init__(self) -> None:
        if not isinstance(self.space, SearchSpace):
            raise ValueError(
                f"space must be a bsopt.SearchSpace, but got {self.space!r}. Example: "
                "space=bsopt.SearchSpace(batch_size=(16, 256))."
            )
        if self.suggest is not None and not callable(self.suggest):
            raise ValueError(f"suggest must be a callable or None, but got {self.suggest!r}.")
        super().__post_init__()
        self._check_goal()
        if self.memory_budget_mb is not None and not (
            _is_number(self.memory_budget_mb) and 0 < self.memory_budget_mb < math.inf
        ):
            raise ValueError(
                f"memory_budget_mb must be a positive number of MiB, but got "
                f"{self.memory_budget_mb!r}. Use e.g. memory_budget_mb=512, or None for the "
                "device's own memory."
            )
        if self.probe not in (None, True, False):
            raise ValueError(f"probe must be True, False or None (auto), but got {self.probe!r}.")
        if not (_is_number(self.probe_margin) and 0 < self.probe_margin <= 1):
            raise ValueError(
                f"probe_margin must be a fraction in (0, 1], but got {self.probe_margin!r}. "
                "Try 0.9."
            )
        if not _is_int(self.min_micro_batch_size) or self.min_micro_batch_size < 1:
            raise ValueError(
                "min_micro_batch_size must be an integer >= 1, but got "
                f"{self.min_micro_batch_size!r}."
            )
        self._check_devices()
        self._check_optimizer()

    def _check_optimizer(self) -> None:
        chosen, searched = self.optimizer, self.space.optimizer
        if chosen is None or searched == chosen:
            return
        if isinstance(searched, tuple) or searched != "adamw":
            what = "a callable" if callable(chosen) else repr(chosen)
            raise ValueError(
                f"optimizer={what} decides the optimizer of every trial, but the search space "
                f"also sets optimizer={searched!r}. Drop one: search names with "
                "SearchSpace(optimizer=('sgd', 'adamw')), or choose inside optimizer=fn from "
                "your own suggest (params.extra['opt'])."
            )
        if isinstance(chosen, str):
            # One name everywhere: the params, the probe and the stored attribute agree.
            space = dataclasses.replace(self.space, optimizer=chosen)  # type: ignore[arg-type]
            object.__setattr__(self, "space", space)

    def _check_devices(self) -> None:
        devices = check_devices(self.devices)
        if devices == 1:
            return
        uneven = [b for b in self.space.batch_sizes if b % devices]
        if uneven:
            low, high = self.space.batch_size
            shown = ", ".join(map(str, uneven[:4])) + (", ..." if len(uneven) > 4 else "")
            fix = (
                "search powers of two from a low bound of at least devices, e.g. "
                f"SearchSpace(batch_size=({max(low, 1 << (devices - 1).bit_length())}, "
                f"{max(high, 1 << (devices - 1).bit_length())})), with devices a power of two"
                if self.space.batch_grid == "pow2" and devices & (devices - 1) == 0
                else "use devices a power of two with the default powers-of-two batch grid"
            )
            raise ValueError(
                f"devices={devices} splits every global batch evenly over {devices} "
                f"processes, but the search space holds batch sizes that are not multiples "
                f"of {devices} ({shown}). Fix: {fix}."
            )
        if self.budget.unit == "seconds":
            raise ValueError(
                f"devices={devices} needs an epochs or samples budget, but got "
                f"{self.budget!r}: the ranks' clocks would disagree on where a seconds "
                "budget's grid points fall. Use e.g. Budget(10, 'epochs')."
            )
        device = resolve_device(self.device)
        if device.type == "cuda" and torch.cuda.device_count() < devices:
            raise ValueError(
                f"devices={devices} needs {devices} CUDA devices, but "
                f"{torch.cuda.device_count()} are visible (CUDA_VISIBLE_DEVICES). Use "
                f"devices={torch.cuda.device_count()} or fewer."
            )

    def _check_goal(self) -> None:
        if self.goal not in GOALS:
            raise ValueError(f"goal must be one of {', '.join(GOALS)}, but got {self.goal!r}.")
        if self.target_unit not in ("samples", "seconds"):
            raise ValueError(
                f"target_unit must be 'samples' or 'seconds', but got {self.target_unit!r}."
            )
        if self.goal != "time_to_target":
            return
        if not (_is_number(self.target) and math.isfinite(self.target)):  # type: ignore[arg-type]
            raise ValueError(
                "goal='time_to_target' needs target=<validation metric to reach>, "
                f"e.g. target=0.95 for accuracy; got target={self.target!r}."
            )
        if self.target_unit == "seconds" and self.budget.unit != "seconds":
            raise ValueError(
                "target_unit='seconds' needs a time budget, e.g. Budget(30, 'seconds'), so "
                "every trial gets the same seconds; with a sample budget use 'samples'."
            )


def params_from_trial(
    trial: FrozenTrial | optuna.Trial, space: SearchSpace, suggest: SuggestFn | None = None
) -> Params:
    """The :class:`Params` a stored trial trained with, rebuilt from its parameters.

    The space (and ``suggest``) run again define-by-run against the trial's stored values,
    so conditional parameters and coupled learning rates come out exactly as in the trial.

    Raises:
        ValueError: the trial lacks a parameter this space needs (another space or study).
    """
    fixed = optuna.trial.FixedTrial(dict(trial.params), number=trial.number)
    try:
        return suggest_params(fixed, space, suggest)  # type: ignore[arg-type]
    except ValueError as error:
        if "is not found" not in str(error):
            raise
        raise ValueError(
            f"Trial #{trial.number} cannot be rebuilt with this search space: {error}. Use "
            "the objective (space and suggest) the study was run with."
        ) from None


def _scratch_trial(seed: int) -> optuna.Trial:
    """A trial of a throwaway in-memory study, to sample values outside any real study."""
    logger = optuna.logging.get_logger("optuna")
    level = logger.level
    logger.setLevel(logging.WARNING)  # not "A new study created in memory" on every run
    try:
        return optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed)).ask()
    finally:
        logger.setLevel(level)


def _preview_batch(data: TrainingData, n: int = 8, *, split: str = "val") -> Batch | None:
    """A few samples of ``split`` ("val" or "train") on the CPU, without starting DataLoader
    workers."""
    x_val = getattr(data, f"x_{split}", None)
    if x_val is not None:
        y_val = getattr(data, f"y_{split}")
        return slice_batch((x_val, y_val), 0, n)
    preview = getattr(data, "preview", None)
    if callable(preview):
        return preview(n, split=split)
    val = getattr(data, split, None)
    if val is None:
        return None
    from torch.utils.data import default_collate

    collate = getattr(data, "collate_fn", None) or default_collate
    items = [val[i] for i in range(min(n, len(val)))]
    return tuple(collate(items))


# --- what a study's trials were trained on: kept with the study, compared on resume --------

#: Rows of each split hashed into the definition: enough to tell another data set or another
#: split apart, few enough to read at once from a data set on disk.
_SAMPLE_ROWS = 16


def data_fingerprint(data: TrainingData) -> dict[str, Any]:
    """The data's name, its train and validation rows, its classes and a hash of its first
    rows (``sample``: validation rows, and training rows where they are tensors, since a data
    set on disk may transform its training items at random). A key is left out where it
    cannot be known (no name, items that are not tensors)."""
    name = getattr(data, "name", None)
    described: dict[str, Any] = {"name": name} if isinstance(name, str) else {}
    described |= {
        "train_rows": int(data.n_train),
        "val_rows": int(data.n_val),
        "classes": data.n_classes,
    }
    sample = _sample_digest(data)
    if sample is not None:
        described["sample"] = sample
    return described


def _sample_digest(data: TrainingData) -> str | None:
    splits = ("train", "val") if hasattr(data, "x_train") else ("val",)
    digest = hashlib.sha256()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)  # the same items from a data set that transforms at random
        for split in splits:
            batch = _preview_batch(data, _SAMPLE_ROWS, split=split)
            if batch is None:
                return None
            try:
                tensors = list(leaves(batch))
            except TypeError:
                return None  # a collate_fn of your own gives more than tensors
            for path, tensor in tensors:
                values = tensor.detach().cpu()
                # Rounded: data standardised on another host may differ in the last bits.
                if values.is_floating_point():
                    values = torch.round(values.double(), decimals=6)
                digest.update(f"{split}{path}:{tuple(values.shape)}:{tensor.dtype};".encode())
                digest.update(values.contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def model_fingerprint(model: nn.Module) -> dict[str, Any]:
    """The model's class, its parameter count and a hash of its parameters' names, shapes
    and dtypes (``shapes``)."""
    shapes = ";".join(f"{n}:{tuple(p.shape)}:{p.dtype}" for n, p in model.named_parameters())
    return {
        "class": type(model).__name__,
        "parameters": sum(p.numel() for p in model.parameters()),
        "shapes": hashlib.sha256(shapes.encode()).hexdigest()[:16],
    }


# torch reports inputs that do not fit a layer as a RuntimeError naming shapes or sizes.
_SHAPE_ERROR = re.compile(r"shape|size|dimension", re.IGNORECASE)


def _model_input_size(model: nn.Module, inputs: Any) -> str:
    """What the data gives each sample, and what the model's first linear layer takes."""
    data_side = f"inputs {describe(inputs)}"
    if isinstance(inputs, torch.Tensor) and inputs.ndim > 1:
        data_side = f"{math.prod(inputs.shape[1:])} input features per sample ({data_side})"
    first = next((m for m in model.modules() if isinstance(m, nn.Linear)), None)
    if first is None or isinstance(first, nn.LazyLinear):
        return f"the data has {data_side}"
    return f"the model's first layer takes {first.in_features} features, the data has {data_side}"


def _head_error(width: int, n_classes: int) -> ValueError:
    return ValueError(
        f"The model outputs {width} value(s) per sample, but the data has {n_classes} classes "
        f"(labels 0 to {n_classes - 1}); a classifier needs one output per class. Give the "
        f"model's last layer {n_classes} outputs (data.n_classes)."
    )


# Python's complaint about a call that does not fit ``forward``'s signature.
_CALL_ERROR = re.compile(r"argument|forward\(\)")


def _call_error(inputs: Any, call: str | None, error: TypeError) -> ValueError:
    how = {
        "kwargs": "model(**inputs)",
        "positional": "model(*inputs)",
        "whole": "model(inputs)",
    }
    used = call or (
        "kwargs"
        if isinstance(inputs, Mapping)
        else "positional"
        if isinstance(inputs, (tuple, list))
        else "whole"
    )
    others = ", ".join(f"call={name!r} for {how[name]}" for name in how if name != used)
    return ValueError(
        f"The model cannot be called as {how[used]} with the batch's inputs "
        f"{describe(inputs)} ({error}). Set the option call to match its forward: {others}. "
        "call='whole' suits a forward(self, batch) that takes the whole dict or tuple."
    )


def _preview_output(
    model: nn.Module,
    batch: Batch,
    loss: LossFn,
    n_classes: int | None,
    *,
    call: str | None = None,
    pick: Any = None,
) -> Any:
    """The model's output on a preview batch, after checking its shapes and its loss."""
    try:
        output = call_model(model, batch[0], call)
    except TypeError as e:
        if not _CALL_ERROR.search(str(e)):
            raise
        raise _call_error(batch[0], call, e) from None
    except RuntimeError as e:
        if not _SHAPE_ERROR.search(str(e)):
            raise
        raise ValueError(
            f"The model does not fit the data's input size: {_model_input_size(model, batch[0])}"
            f" (torch: {e}). Build the model's first layer for the data, e.g. "
            "nn.Linear(data.n_features, ...)."
        ) from None
    picked = pick_output(output, pick)
    width = picked.shape[-1] if isinstance(picked, torch.Tensor) and picked.ndim == 2 else None
    if n_classes is not None and width is not None and 1 < width < n_classes:
        raise _head_error(width, n_classes)
    try:
        check_loss_value(loss(output, batch[1]))
    except IndexError:
        if n_classes is None or width is None:
            raise
        raise _head_error(width, n_classes) from None
    return output


def _preflight_metric(metric: Metric, output: Any, target: Any, pick: Any) -> None:
    """Run ``metric`` on the preview's few validation rows, so that one which cannot read
    the output or the targets is refused before any trial, with the fix."""
    if metric.name == "loss":
        return
    if metric.name == "accuracy":
        correct_count(pick_output(output, pick), target)
        return
    try:
        run_metric(metric, output, target, pick)
    except MetricError:
        raise
    except Exception as error:
        if isinstance(error, ValueError) and "class" in str(error) and metric.needs_classes:
            return  # a few rows may hold one class only; the whole split decides
        raise ValueError(
            f"metric {metric.name!r} fails on a few validation rows: "
            f"{type(error).__name__}: {error}. The model returns {describe(output)} and the "
            f"targets are {describe(target)}: make the metric read them, or pick the "
            "output tensor with output=0, output='key' or output=fn."
        ) from None


@dataclass(frozen=True, eq=False)
class Objective:
    """A callable ``objective(trial)`` built by :func:`make_objective`.

    ``direction`` (or ``directions``) tells :func:`~bsopt.create_study` which way to
    optimise; ``describe()`` says what one trial does; ``retrain(trial)`` trains a stored
    trial's configuration again and returns the model.
    """

    build_model: BuildModel
    data: TrainingData
    options: ObjectiveOptions = field(default_factory=ObjectiveOptions)
    _: KW_ONLY
    preflight: bool = True
    _recorded: set[str] = field(default_factory=set, init=False, repr=False)
    _reads_checked: list[bool] = field(default_factory=list, init=False, repr=False)
    _fingerprint: dict[str, Any] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        if not callable(self.build_model):
            raise TypeError(
                f"build_model must be callable as build_model(params) -> nn.Module, got "
                f"{self.build_model!r}."
            )
        for attr in ("n_train", "n_val", "train_batches", "val_batches"):
            if not hasattr(self.data, attr):
                raise ValueError(
                    f"data must be a bsopt.TensorData or bsopt.DatasetData (or provide "
                    f"n_train, n_val, n_classes, train_batches and val_batches), but got "
                    f"{self.data!r}. Example: data=bsopt.from_arrays(x, y)."
                )
        metric = self.metric
        if metric.needs_classes and self.data.n_classes is None:
            raise ValueError(
                f"metric={metric.name!r} needs class labels (a single int64 target tensor), "
                "but the data hold regression or structured targets. Use metric='loss', "
                "'mae' or 'r2' for one float target tensor, or a callable fn(outputs, "
                "targets) -> float with direction= for structured targets."
            )
        largest = self.space.batch_size[1]
        if largest > self.data.n_train:
            raise ValueError(
                f"The search space's largest batch_size ({largest}) is larger than the "
                f"training set ({self.data.n_train} samples). Use SearchSpace(batch_size="
                f"(low, high)) with high <= {self.data.n_train}."
            )
        self.budget.grid(self.data.n_train)  # fails early on a budget too small to evaluate
        if self.preflight:
            self._preflight()

    # -- the options most callers read -------------------------------------------------
    @property
    def space(self) -> SearchSpace:
        return self.options.space

    @property
    def budget(self) -> Budget:
        return self.options.budget

    @property
    def goal(self) -> Goal:
        return self.options.goal

    @property
    def seed(self) -> int:
        return self.options.seed

    @property
    def metric(self) -> Metric:
        return resolve_metric(self.options.metric, self.options.direction)

    @property
    def device(self) -> torch.device:
        return resolve_device(self.options.device)

    @property
    def loss(self) -> Callable[..., torch.Tensor]:
        """The loss as given: ``(output, target)`` or ``(output, target, params)``."""
        return self.options.loss or default_loss

    @property
    def metric_direction(self) -> Direction:
        return self.metric.direction

    @property
    def directions(self) -> list[Direction]:
        """The study directions this objective needs, one per returned value."""
        if self.goal == "time_to_target":
            return ["minimize"]
        if self.goal == "metric_and_time":
            return [self.metric_direction, "minimize"]
        return [self.metric_direction]

    @property
    def direction(self) -> Direction:
        """The study direction of a single-objective goal."""
        if len(self.directions) != 1:
            raise ValueError(
                f"goal={self.goal!r} returns two values; create the study with "
                "directions=objective.directions instead of direction=."
            )
        return self.directions[0]

    def describe(self) -> str:
        low, high = self.space.batch_size
        metric, options = self.metric, self.options
        if self.goal == "time_to_target":
            what = (
                f"{options.target_unit} to reach validation {metric.name} {options.target:g} "
                "(minimize)"
            )
        elif self.goal == "metric_and_time":
            what = f"validation {metric.name} ({metric.direction}) and training seconds"
        else:
            what = f"validation {metric.name} ({metric.direction})"
        own = "; plus your own suggest()" if options.suggest is not None else ""
        return (
            f"{what}; batch size {low}..{high} "
            f"({self.space.batch_grid}), lr {self.space.lr[0]:g}..{self.space.lr[1]:g} (log), "
            f"dropout {self.space.dropout[0]:g}..{self.space.dropout[1]:g}{own}; "
            f"{self.budget.describe(self.data.n_train)}; {self._where()}"
        )

    def _where(self) -> str:
        devices = self.options.devices
        if devices == 1:
            return f"device {self.device}"
        kind = "GPUs" if self.device.type == "cuda" else "CPU processes"
        return f"{devices} {kind} per trial (batch sizes are global)"

    def with_options(self, **changes: Any) -> Objective:
        """A copy of this objective with some options changed (checked again)."""
        options = dataclasses.replace(self.options, **changes)
        return Objective(self.build_model, self.data, options, preflight=False)

    def with_devices(
        self, devices: int, *, rebuild: Callable[[], Objective] | None = None
    ) -> Objective:
        """A copy that trains each trial on ``devices`` processes (the option ``devices``).

        The other ranks need this objective in their own process: by default it is pickled
        to them (``build_model``, ``suggest``, ``loss`` and a callable metric must then be
        module-level functions); ``rebuild``, a picklable ``rebuild() -> Objective``, builds
        it there instead (``bsopt run`` passes the study's ``build_objective``).
        """
        copy = self.with_options(devices=devices)
        if rebuild is not None:
            _REBUILD[copy] = rebuild
        return copy

    def close(self) -> None:
        """Stop the other ranks of this objective's trials (``devices`` > 1), if started.

        They are also stopped when this process exits; a later trial starts them again.
        """
        group = _GROUPS.pop(self, None)
        if group is not None:
            group.close()

    def _group(self) -> Group:
        """This objective's process group, started on first use or after a failure."""
        group = _GROUPS.get(self)
        if group is not None and group.healthy():
            return group
        if group is not None:
            group.close(graceful=False)
        # torch.distributed holds one default group per process: another objective's ranks
        # (idle: this process trains one trial at a time) make way, and start again when
        # that objective's next trial needs them.
        for other, idle in list(_GROUPS.items()):
            if other is not self:
                _GROUPS.pop(other, None)
                idle.close()
        follower = _Follower(_REBUILD.get(self) or _Same(self))
        try:
            pickle.dumps(follower)
        except Exception as error:
            raise ValueError(
                f"devices={self.options.devices} runs each trial in {self.options.devices} "
                "processes, which need this objective: build_model, data, suggest, loss and a "
                f"callable metric must be picklable, and one is not ({error}). Define them "
                "at module level, or pass rebuild= to Objective.with_devices, or run the "
                "study with `bsopt run STUDY --devices N`."
            ) from None
        try:
            group = start_group(self.options.devices, follower, device_type=self.device.type)
        except DistributedError as error:
            # Not one trial's bad luck: every trial would fail the same way.
            raise ValueError(
                f"devices={self.options.devices}: the other ranks could not start ({error})."
            ) from None
        atexit.register(group.close)
        _GROUPS[self] = group
        return group

    def join(self, world: World) -> None:
        """Use ``world`` (this process's rank 0 of a group ``torchrun`` started) for trials;
        the other ranks run :func:`follow`."""
        if world.size != self.options.devices:
            raise ValueError(
                f"The group has {world.size} processes, but the objective was built with "
                f"devices={self.options.devices}. Pass the same number to torchrun "
                "(--nproc-per-node x --nnodes) and to --devices."
            )
        group = Group(world)
        atexit.register(group.close)
        _GROUPS[self] = group

    # -- parameters and models -----------------------------------------------------------
    def params_of(self, trial: optuna.Trial | FrozenTrial) -> Params:
        """The :class:`~bsopt.Params` of a live trial (sampling them) or a stored one."""
        if isinstance(trial, FrozenTrial):
            return params_from_trial(trial, self.space, self.options.suggest)
        return suggest_params(trial, self.space, self.options.suggest)

    def _build(self, params: Params, seed: int) -> nn.Module:
        # The caller holds _exclusive_rng: seeding and building use the global generator.
        torch.manual_seed(seed)
        model = self.build_model(params)
        if not isinstance(model, nn.Module):
            raise ValueError(
                f"build_model(params) must return a torch.nn.Module, but returned "
                f"{type(model).__name__}."
            )
        return model

    def _preflight(self) -> None:
        """Sample once, build the model and compute one loss before any trial trains, so a
        bad ``suggest``, model, loss or metric fails now with its own message."""
        params = self.params_of(_scratch_trial(self.seed))
        batch = _preview_batch(self.data)
        with _exclusive_rng(), torch.random.fork_rng(devices=[]):
            model = self._build(params, self.seed)
            self._remember(model)  # the study's fingerprint, without building it again
            if callable(self.options.optimizer):
                build_optimizer(model, params, self.options.optimizer)  # checks what it returns
            if batch is None:
                return
            batch_size_of(batch, where="validation batch")
            model.eval()
            options = self.options
            loss = bind_loss(options.loss, params, options.output)
            with torch.no_grad():
                output = _preview_output(
                    model,
                    batch,
                    loss,
                    self.data.n_classes,
                    call=options.call,
                    pick=options.output,
                )
                _preflight_metric(self.metric, output, batch[1], options.output)
        output = pick_output(output, options.output)
        width = output.shape[-1] if isinstance(output, torch.Tensor) and output.ndim > 1 else 1
        if self.metric.name == "roc_auc" and width > 2:
            raise ValueError(
                f"metric='roc_auc' is for two classes, but the model outputs {width} classes. "
                "Use metric='roc_auc_ovr' (one-vs-rest) or 'roc_auc_ovo' (one-vs-one) to "
                "state how to average over classes."
            )

    def fingerprint(self) -> dict[str, Any]:
        """What this objective's trials are trained on, besides the search space and budget:
        ``data`` (:func:`data_fingerprint`), ``model`` (:func:`model_fingerprint` of the model
        built once from sampled values, as the preflight does), ``metric`` and ``seed`` (the
        objective's seed, which the built-in studies also split the data with). A study keeps
        it and refuses another on resume (:func:`~bsopt.runs._study.check_definition`)."""
        if not self._fingerprint:
            params = self.params_of(_scratch_trial(self.seed))
            with _exclusive_rng(), torch.random.fork_rng(devices=[]):
                self._remember(self._build(params, self.seed))
        return copy.deepcopy(self._fingerprint)

    def _remember(self, model: nn.Module) -> None:
        """Keep :meth:`fingerprint` of ``model``, built from the preflight's params."""
        self._fingerprint.update(
            data=data_fingerprint(self.data),
            model=model_fingerprint(model),
            metric=self.metric.name,
            seed=self.seed,
        )

    @property
    def probing(self) -> bool:
        """Whether trials start from a probed micro-batch (``probe=None``: on CUDA or with a
        memory budget, where there is a device limit to find)."""
        if self.options.probe is not None:
            return self.options.probe
        return self.device.type == "cuda" or self.options.memory_budget_mb is not None

    def _probe_params(self) -> Params:
        # The optimizer with the most state needs the most memory: probe with that one.
        params = self.params_of(_scratch_trial(self.seed))
        choices = self.space.optimizer
        names = choices if isinstance(choices, tuple) else (choices,)
        hungriest = max(names, key=lambda name: optimizer_states(Params(1, 1.0, optimizer=name)))
        return dataclasses.replace(
            params, batch_size=self.space.batch_size[1], optimizer=hungriest
        )

    def probe(
        self,
        study: optuna.Study | None = None,
        params: Params | None = None,
        *,
        model: nn.Module | None = None,
    ) -> ProbeResult:
        """The largest micro-batch of this objective's model, data and device, probed once
        per model signature and study.

        Runs :func:`~bsopt.training.probe_batch_size` up to the search space's largest batch size,
        with ``memory_budget_mb``, ``probe_margin``, ``amp`` and ``loss`` of the objective.
        The result is stored as the study user attribute ``"probe:<key>"``, where the key
        hashes the model signature (parameter names, shapes, dtypes), the input signature,
        the device and those settings; a later call with the same key reads it back
        (``cached=True``). A model whose shape depends on your own hyperparameters gets a
        probe for each signature, the first time a trial builds it. ``params`` default to
        sampled values with the most memory-hungry optimizer; ``model`` to
        ``build_model(params)``.
        """
        options = self.options
        params = params or self._probe_params()
        if model is None:
            with _exclusive_rng(), torch.random.fork_rng(devices=[]):
                model = self._build(params, self.seed)
        settings: dict[str, Any] = {
            "params": params,
            "device": self.device,
            "high": self.space.batch_size[1],
            "margin": options.probe_margin,
            "memory_budget_mb": options.memory_budget_mb,
            "amp": options.amp,
        }
        attr = PROBE_ATTR_PREFIX + probe_key_for(model, self.data, **settings)
        if study is not None:
            stored = study.user_attrs.get(attr)
            if stored is not None:
                return ProbeResult.from_dict(stored)
        result = probe_batch_size(
            model,
            self.data,
            loss=bind_loss(options.loss, params, options.output),
            call=options.call,
            **settings,
        )
        if study is not None:
            study.set_user_attr(attr, result.as_dict())
        return result

    # -- training ----------------------------------------------------------------------
    def _record_metric(self, study: optuna.Study) -> None:
        # The analysis reads storage only: tell it what the values mean, once per study.
        if study.study_name in self._recorded:
            return
        metric = self.metric
        wanted = {
            "metric": metric.name,
            "metric_direction": metric.direction,
            "metric_unit": metric.unit,
            "goal": self.goal,
        }
        stored = study.user_attrs
        for key, value in wanted.items():
            if stored.get(key) != value:
                study.set_user_attr(key, value)
        if study.metric_names is None:
            # optuna-dashboard shows these instead of "Objective 0".
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                study.set_metric_names(self.objective_names)
        self._recorded.add(study.study_name)

    @property
    def objective_names(self) -> list[str]:
        """What each returned value is, e.g. ``["validation roc_auc"]``."""
        metric = f"validation {self.metric.name}"
        if self.goal == "time_to_target":
            return [f"{self.options.target_unit} to {metric} {self.options.target:g}"]
        if self.goal == "metric_and_time":
            return [metric, "training seconds"]
        return [metric]

    def _attempt(
        self,
        trial: optuna.Trial,
        params: Params,
        seed: int,
        micro: int,
        group: Group | None = None,
    ) -> tuple[FairReporter, TrainResult]:
        """One training run of a trial with micro-batches of ``micro``, reported through a
        :class:`~bsopt.FairReporter` (the same path as a hand-written loop). With a
        ``group`` this process is rank 0: the other ranks get the params, seed and
        per-device micro-batch first."""
        options = self.options
        reporter = FairReporter(
            trial,
            self.budget,
            self.data.n_train,
            batch_size=params.batch_size,
            lr=params.lr,
            micro_batch_size=micro,
            seed=seed,
            device=self.device,
            metric=self.metric.name,
            divergence_factor=options.divergence_factor,
            amp=options.amp,
            defer_attrs=True,
        )
        if group is not None:
            group.command(
                {"kind": "trial", "params": _params_json(params), "seed": seed, "micro": micro}
            )
        return reporter, self._run(
            params,
            seed,
            micro,
            report=_Report(self, reporter),
            world=group.world if group is not None else None,
        )

    def _run(
        self,
        params: Params,
        seed: int,
        micro: int,
        *,
        report: _Report | None = None,
        world: World | None = None,
    ) -> TrainResult:
        """Build the model from ``seed`` and train it: one rank's part of an attempt."""
        options = self.options
        # Same seed, same initial weights: differences between trials come from the params,
        # and a retry after an out-of-memory error restarts the same run.
        model = self._build(params, seed)
        guard: contextlib.AbstractContextManager[object] = (
            MemoryBudget(
                options.memory_budget_mb, optimizer_states=optimizer_states(params)
            ).attach(model)
            if options.memory_budget_mb is not None
            else contextlib.nullcontext()
        )
        with guard:
            return train(
                model,
                self.data,
                params,
                TrainConfig.of(options, seed=seed, micro_batch_size=micro),
                report=report,
                world=world,
            )

    def __call__(self, trial: optuna.Trial) -> float | Sequence[float]:
        self._record_metric(trial.study)
        params = self.params_of(trial)
        watch = not self._reads_checked and self.options.suggest is not None
        if watch:
            params = dataclasses.replace(params, extra=TrackedExtra(params.extra))
        seed = trial_seed(self.seed, trial.params)
        options = self.options
        devices = options.devices
        # The micro-batch is per device: the global batch is shared by the ranks first.
        micro = options.micro_batch_size or params.batch_size // devices
        extra: dict[str, object] = {}
        group: Group | None = None
        try:
            with _exclusive_rng():
                if devices > 1:
                    group = self._group()
                if self.probing:
                    probed = self.probe(trial.study, params)
                    micro = min(micro, probed.micro_batch_size)
                    extra["probed_micro_batch_size"] = probed.micro_batch_size
                reporter, result = retry_oom(
                    trial,
                    lambda m: self._attempt(trial, params, seed, m, group),
                    batch_size=params.batch_size,
                    micro_batch_size=micro,
                    min_micro_batch_size=options.min_micro_batch_size,
                    device=self.device,
                    seed=seed,
                )
        except KeyboardInterrupt:
            trial.set_user_attr("stop_reason", StopReason.INTERRUPTED.value)
            self._drop_group()  # the other ranks are mid-trial: stopped, not asked
            raise
        except DistributedError as error:
            return self._rank_failed(trial, error)
        except (RankError, optuna.TrialPruned):
            # Every rank stopped together (an error they all raised, or an out-of-memory
            # trial pruned as infeasible): the group is fine for the next trial.
            raise
        except BaseException:
            if group is not None:
                self._drop_group()
            raise
        if watch:
            self._reads_checked.append(True)
            _warn_unread(trial, params.extra)
        if group is not None:
            extra |= {
                "world_size": devices,
                "per_device_micro_batch_size": result.micro_batch_size,
            }
        reporter.set_attrs(**result_attrs(result, params, seed), **extra)
        if result.stop_reason in (StopReason.PRUNED, StopReason.DIVERGED):
            reporter.stop(result.stop_reason, result.stop_detail or reporter.stop_detail)
        if self.goal == "time_to_target":
            score, reached = time_to_target(
                result,
                float(options.target),  # type: ignore[arg-type]
                direction=self.metric_direction,
                unit=options.target_unit,
                total=self._budget_total(),
            )
            reporter.set_attrs(reached_target=reached, **{"final_" + result.metric: result.value})
            return reporter.finish(score, reason=result.stop_reason)
        value = reporter.finish(result.value, reason=result.stop_reason)
        if self.goal == "metric_and_time":
            return value, result.train_seconds
        return value

    def _drop_group(self) -> None:
        group = _GROUPS.pop(self, None)
        if group is not None:
            group.close(graceful=False)

    def _rank_failed(self, trial: optuna.Trial, error: DistributedError) -> float | list[float]:
        """A rank died or hung: fail the trial (its value NaN), keep the study going with a
        fresh group on the next trial."""
        self._drop_group()
        detail = str(error)
        trial.set_user_attr("stop_reason", "rank failed")
        trial.set_user_attr("stop_detail", detail[:500])
        retried = _retry_like_a_dead_worker(trial)
        _logger.warning(
            "Trial %d failed: %s%s",
            trial.number,
            detail,
            "; queued again with the same parameters" if retried else "",
        )
        # Optuna records a NaN value as a FAIL and goes on with the next trial.
        nan = float("nan")
        return [nan] * len(self.directions) if len(self.directions) > 1 else nan

    def _budget_total(self) -> float:
        grid = self.budget.grid(self.data.n_train)
        if self.options.target_unit == "seconds":
            return grid.total / 1000 if grid.unit == "ms" else float("nan")
        return float(grid.total)

    def retrain(
        self, trial: optuna.Trial | FrozenTrial, *, seed: int | None = None
    ) -> tuple[nn.Module, TrainResult]:
        """Train a stored trial's configuration again; returns the model and its result.

        The params are rebuilt from the trial (:meth:`params_of`), the seed is the one the
        trial stored (or ``seed``), and the micro-batch the one it trained with, so on the
        CPU the result's ``value`` equals the stored value of a completed ``goal="metric"``
        trial. The whole budget is trained without pruning, also for a trial that was pruned.
        A trial stored without a seed (by an older version) gets that version's rule: the
        objective's seed plus the trial number.
        """
        params = self.params_of(trial)
        attrs = trial.user_attrs
        if seed is None:
            seed = int(attrs.get("seed", self.seed + trial.number))
        micro = attrs.get("micro_batch_size") if attrs.get("accumulation_steps", 1) > 1 else None
        with _exclusive_rng():
            model = self._build(params, seed)
            config = TrainConfig.of(
                self.options, seed=seed, micro_batch_size=micro or self.options.micro_batch_size
            )
            result = train(model, self.data, params, config)
        return model, result


# The process group of each objective with devices > 1 (this process is its rank 0), and how
# the other ranks rebuild the objective.
_GROUPS: weakref.WeakKeyDictionary[Objective, Group] = weakref.WeakKeyDictionary()
_REBUILD: weakref.WeakKeyDictionary[Objective, Callable[[], Objective]] = (
    weakref.WeakKeyDictionary()
)


def _retry_like_a_dead_worker(trial: optuna.Trial) -> bool:
    """Queue the trial again as the storage's heartbeat would for a dead worker's trial
    (same parameters, same place in the exact total; SQL storages with heartbeats, up to
    their retry limit). Returns whether a retry was queued."""
    # NOTE: the study's storage and the trial id are private to Optuna; the stale-trial
    # callback is the one RDBStorage(heartbeat_interval=..., failed_trial_callback=...) runs.
    from optuna.storages._heartbeat import BaseHeartbeat, is_heartbeat_enabled

    storage = trial.study._storage
    if not (isinstance(storage, BaseHeartbeat) and is_heartbeat_enabled(storage)):
        return False
    callback = storage.get_heartbeat_stale_trial_callback()
    if callback is None:
        return False
    before = len(trial.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.WAITING,)))
    callback(trial.study, copy.deepcopy(storage.get_trial(trial._trial_id)))
    waiting = trial.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.WAITING,))
    return len(waiting) > before


def _params_json(params: Params) -> dict[str, Any]:
    json = {f.name: getattr(params, f.name) for f in fields(Params)}
    # Sent to the other ranks: not a read of the user's values.
    json["extra"] = dict(dict.items(params.extra))
    return json


def _warn_unread(trial: optuna.Trial, extra: Any) -> None:
    """Warn about names the user's ``suggest`` searched that nothing read in this trial."""
    returned = set(dict.keys(extra))
    unread = extra.unread if isinstance(extra, TrackedExtra) else []
    never = sorted(set(trial.params) - RESERVED_NAMES - returned)
    if not unread and not never:
        return
    parts = []
    if unread:
        parts.append(
            f"{', '.join(map(repr, unread))} reached params.extra, but neither build_model, "
            "optimizer=fn(params, model) nor loss=fn(output, target, params) read it"
        )
    if never:
        parts.append(f"{', '.join(map(repr, never))} was suggested but not returned by suggest")
    warnings.warn(
        f"Trial #{trial.number}: {'; '.join(parts)}. Such a value is stored and searched, yet "
        "changes nothing (its importance would be noise). Read it (e.g. in optimizer=fn), "
        "return it from suggest, or stop suggesting it.",
        UserWarning,
        stacklevel=3,
    )


@dataclass(frozen=True)
class _Same:
    """``rebuild()`` for an objective that pickles: itself."""

    objective: Objective

    def __call__(self) -> Objective:
        return self.objective


@dataclass(frozen=True)
class _Follower:
    """What a spawned rank runs: rebuild the objective, then :func:`follow` rank 0."""

    rebuild: Callable[[], Objective]

    def prepare(self, rank: int) -> Callable[[World], None]:
        objective = self.rebuild()
        return lambda world: follow(objective, world)


def on_devices(
    objective: Objective, devices: int, *, rebuild: Callable[[], Objective] | None = None
) -> Objective | None:
    """``objective`` set up to train each trial on ``devices`` processes, from this process.

    Started by hand (or by ``bsopt run --devices N``), this process becomes rank 0 and
    starts the other ranks on the first trial. Started by ``torchrun`` (``RANK``,
    ``WORLD_SIZE``, ``MASTER_ADDR`` set), it joins the group: rank 0 gets the objective
    back and runs the study; every other rank follows rank 0's trials until rank 0 closes
    the objective, then gets ``None`` and should exit.
    """
    if check_devices(devices) == 1 and not launched_by_torchrun():
        return objective
    copy = objective.with_devices(devices, rebuild=rebuild)
    if not launched_by_torchrun():
        return copy
    world = join_from_env(copy.device.type)
    if world.rank == 0:
        copy.join(world)
        return copy
    try:
        follow(copy, world)
    finally:
        world.close()
    return None


def spread_objective(
    objective: Any,
    build_objective: Callable[..., Objective],
    *,
    seed: int,
    devices: int,
    jobs: int | None = 1,
) -> Any:
    """What ``bsopt run`` and ``bsopt worker`` train with for ``--devices``.

    ``objective`` set up for ``devices`` processes per trial (the ranks start with the first
    trial this process trains, rebuilt there by ``build_objective(seed=seed)``), or under
    ``torchrun`` this process's part of the group: the objective on rank 0, ``None`` on the
    other ranks once rank 0 is done.

    Raises:
        ValueError: a hand-written loop's objective, or ``jobs`` > 1 under ``torchrun``.
    """
    torchrun = launched_by_torchrun()
    if devices == 1 and not torchrun:
        return objective
    if not isinstance(objective, Objective):
        raise ValueError(
            f"--devices {devices} (or torchrun) spreads each trial of bsopt's own trainer "
            f"over processes, but this study's objective is a {type(objective).__name__} "
            "(a training loop of your own), which runs in one process. Use --devices 1, or "
            "an objective from bsopt.make_objective."
        )
    rebuild = functools.partial(build_objective, seed=seed)
    if not torchrun:
        return objective.with_devices(devices, rebuild=rebuild)
    if jobs not in (None, 1):
        raise ValueError(
            "Under torchrun every process is one rank of one trial: drop --jobs (run more "
            "torchrun jobs on the same study for trials side by side)."
        )
    return on_devices(objective, devices, rebuild=rebuild)


def follow(objective: Objective, world: World) -> None:
    """The loop of a rank other than 0: run each trial rank 0 sends, until it says stop.

    A failure that every rank agreed on (out of memory, an error in training) ends only
    that attempt: the rank waits for the next command. Anything else ends the process, and
    rank 0 fails the trial.
    """
    while True:
        world.sequence += 1
        message = world.wait(f"cmd/{world.sequence}")
        if message.get("kind") != "trial":
            return
        params = Params(**message["params"])
        failed = False
        try:
            with _exclusive_rng():
                objective._run(params, int(message["seed"]), int(message["micro"]), world=world)
        except (RankError, torch.OutOfMemoryError):
            failed = True
        if failed:
            release_memory(world.device)  # outside the except block: no traceback pins memory


class _Report:
    """The trainer's ``report(step, value)``: through the FairReporter to the trial."""

    def __init__(self, objective: Objective, reporter: FairReporter) -> None:
        self.reporter = reporter
        self.goal = objective.goal
        self.target = objective.options.target
        self.maximize = objective.metric_direction == "maximize"

    def __call__(self, step: int, value: float) -> StopReason | None:
        reached = False
        if self.goal == "time_to_target":
            target = float(self.target)  # type: ignore[arg-type]
            reached = (value >= target) if self.maximize else (value <= target)
            # The study minimises, so the pruner gets the distance still to go.
            value = 0.0 if reached else abs(target - value)
        at = {"train_seconds": step / 1000} if self.reporter.timed else {"samples_seen": step}
        if self.reporter.report(value, raise_pruned=False, **at):
            return self.reporter.stop_reason
        return StopReason.REACHED_TARGET if reached else None


def make_objective(build_model: BuildModel, data: TrainingData, **options: Any) -> Objective:
    """Build an Optuna objective that searches batch size, learning rate and dropout jointly
    with your own hyperparameters.

    Args:
        build_model: ``build_model(params) -> nn.Module``; read ``params.dropout`` and your
            own ``params.extra[...]`` to configure the model. Called once per trial after
            seeding.
        data: a :class:`~bsopt.TensorData` (fast, in memory) or :class:`~bsopt.DatasetData`.
        **options: the options of :class:`ObjectiveOptions` (space, budget, suggest, metric,
            direction, loss, device, seed, amp, ...), which documents each one. Bad values
            raise ``ValueError`` here, before any trial trains.

    Returns:
        An :class:`Objective` for ``study.optimize(objective, ...)``.

    Example:
        >>> objective = bsopt.make_objective(build_model, bsopt.load_digits())
        >>> study = bsopt.create_study("mine", direction=objective.direction)
        >>> bsopt.optimize(study, objective, trials=30)
    """
    known = {f.name for f in fields(ObjectiveOptions)}
    unknown = sorted(set(options) - known)
    if unknown:
        raise ValueError(
            f"make_objective got unknown option(s) {', '.join(unknown)}. The options are: "
            f"{', '.join(sorted(known))}."
        )
    if data is None:
        raise ValueError(
            "data is None. Pass the training data, e.g. bsopt.load_digits(), "
            "bsopt.from_arrays(x, y) or bsopt.TensorData(x_train, y_train, x_val, y_val)."
        )
    return Objective(build_model, data, ObjectiveOptions(**options))
