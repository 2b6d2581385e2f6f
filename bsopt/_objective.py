"""Objective factories: the one place where bsopt touches ``optuna.Trial``.

``make_objective(build_model, data, ...)`` returns a callable for ``study.optimize``. Per
trial it draws :class:`~bsopt.Params` from the search space, seeds and builds the model,
trains it with :func:`~bsopt.train`, reports every evaluation to the trial (pruning when the
pruner says so), and stores what the run cost as user attributes, which the analysis and
the dashboard read.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
import contextlib
from dataclasses import KW_ONLY, dataclass
import math
from typing import Literal

import optuna
import torch
from torch import nn

from bsopt._budget import Budget
from bsopt._data import TrainingData
from bsopt._memory import MemoryBudget, is_oom_error, release_memory
from bsopt._probe import (
    PROBE_ATTR_PREFIX,
    ProbeResult,
    optimizer_states,
    probe_batch_size,
    probe_key_for,
)
from bsopt._space import Params, SearchSpace
from bsopt._trainer import METRIC_DIRECTIONS, Amp, Metric, TrainResult, resolve_device, train

BuildModel = Callable[[Params], nn.Module]
Goal = Literal["metric", "time_to_target", "metric_and_time"]
TargetUnit = Literal["samples", "seconds"]
GOALS = ("metric", "time_to_target", "metric_and_time")
REACHED = "reached target"


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


def result_attrs(result: TrainResult, params: Params, seed: int) -> dict[str, object]:
    """The user attributes stored for a trial, by name."""
    finite_noise = [v for v in result.noise_history if math.isfinite(v)]
    schedule: dict[str, object] = {
        "optimizer": params.optimizer,
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
        if finite_noise:
            schedule["noise_scale"] = round(finite_noise[-1], 2)
    return schedule | {
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
        "device": result.device,
        "amp": result.amp,
        "seed": seed,
        "stop_reason": result.stop_reason,
    }


@dataclass(eq=False)
class Objective:
    """A callable ``objective(trial) -> float`` built by :func:`make_objective`.

    ``direction`` tells :func:`~bsopt.create_study` which way to optimise; ``describe()``
    says what one trial does.
    """

    build_model: BuildModel
    data: TrainingData
    _: KW_ONLY
    space: SearchSpace
    budget: Budget
    metric: Metric
    device: torch.device
    seed: int
    amp: Amp
    micro_batch_size: int | None
    clip_grad_norm: float | None
    divergence_factor: float
    goal: Goal = "metric"
    target: float | None = None
    target_unit: TargetUnit = "samples"
    memory_budget_mb: float | None = None
    auto_probe: bool | None = None
    probe_margin: float = 0.9
    min_micro_batch_size: int = 8
    measure_noise_scale: bool = False

    @property
    def metric_direction(self) -> Literal["maximize", "minimize"]:
        return METRIC_DIRECTIONS[self.metric]

    @property
    def directions(self) -> list[Literal["maximize", "minimize"]]:
        """The study directions this objective needs, one per returned value."""
        if self.goal == "time_to_target":
            return ["minimize"]
        if self.goal == "metric_and_time":
            return [self.metric_direction, "minimize"]
        return [self.metric_direction]

    @property
    def direction(self) -> Literal["maximize", "minimize"]:
        """The study direction of a single-objective goal."""
        if len(self.directions) != 1:
            raise ValueError(
                f"goal={self.goal!r} returns two values; create the study with "
                "directions=objective.directions instead of direction=."
            )
        return self.directions[0]

    def _budget_total(self) -> float:
        grid = self.budget.grid(self.data.n_train)
        if self.target_unit == "seconds":
            return grid.total / 1000 if grid.unit == "ms" else float("nan")
        return float(grid.total)

    def describe(self) -> str:
        low, high = self.space.batch_size
        if self.goal == "time_to_target":
            what = (
                f"{self.target_unit} to reach validation {self.metric} {self.target:g} (minimize)"
            )
        elif self.goal == "metric_and_time":
            what = f"validation {self.metric} ({self.metric_direction}) and training seconds"
        else:
            what = f"validation {self.metric} ({self.metric_direction})"
        return (
            f"{what}; batch size {low}..{high} "
            f"({self.space.batch_grid}), lr {self.space.lr[0]:g}..{self.space.lr[1]:g} (log), "
            f"dropout {self.space.dropout[0]:g}..{self.space.dropout[1]:g}; "
            f"{self.budget.describe(self.data.n_train)}; device {self.device}"
        )

    def _reached(self, value: float) -> bool:
        assert self.target is not None  # set whenever goal == "time_to_target"
        if self.metric_direction == "maximize":
            return value >= self.target
        return value <= self.target

    @property
    def probing(self) -> bool:
        """Whether trials start from a probed micro-batch (``probe=None``: on CUDA or with a
        memory budget, where there is a device limit to find)."""
        if self.auto_probe is not None:
            return self.auto_probe
        return self.device.type == "cuda" or self.memory_budget_mb is not None

    def _probe_params(self) -> Params:
        # The optimizer with the most state needs the most memory: probe with that one.
        choices = self.space.optimizer
        names = choices if isinstance(choices, tuple) else (choices,)
        probe_with = max(names, key=lambda name: optimizer_states(Params(1, 1.0, optimizer=name)))
        return Params(
            batch_size=self.space.batch_size[1],
            lr=self.space.lr[0],
            dropout=self.space.dropout[0],
            weight_decay=self.space.weight_decay,
            optimizer=probe_with,
            momentum=self.space.momentum,
        )

    def probe(
        self,
        study: optuna.Study | None = None,
        params: Params | None = None,
        *,
        model: nn.Module | None = None,
    ) -> ProbeResult:
        """The largest micro-batch of this objective's model, data and device, probed once
        per study.

        Runs :func:`~bsopt.probe_batch_size` up to the search space's largest batch size,
        with ``memory_budget_mb``, ``probe_margin`` and ``amp`` of the objective. The result is
        stored as the study user attribute ``"probe:<key>"``, where the key hashes the model
        signature (parameter names, shapes, dtypes), the input shape and dtype, the device
        and those settings; a later call with the same key reads it back (``cached=True``).
        ``params`` default to the space's lowest values with its most memory-hungry
        optimizer; ``model`` defaults to ``build_model(params)``.
        """
        params = params or self._probe_params()
        if model is None:
            torch.manual_seed(self.seed)
            model = self.build_model(params)
        high = self.space.batch_size[1]
        key = probe_key_for(
            model,
            self.data,
            params=params,
            device=self.device,
            high=high,
            margin=self.probe_margin,
            memory_budget_mb=self.memory_budget_mb,
            amp=self.amp,
        )
        attr = PROBE_ATTR_PREFIX + key
        if study is not None:
            stored = study.user_attrs.get(attr)
            if stored is not None:
                return ProbeResult.from_dict(stored)
        result = probe_batch_size(
            model,
            self.data,
            params=params,
            device=self.device,
            high=high,
            margin=self.probe_margin,
            memory_budget_mb=self.memory_budget_mb,
            amp=self.amp,
        )
        if study is not None:
            study.set_user_attr(attr, result.as_dict())
        return result

    def __call__(self, trial: optuna.Trial) -> float | Sequence[float]:
        params = self.space.suggest(trial)
        seed = self.seed + trial.number
        single_objective = len(trial.study.directions) == 1
        reported: set[int] = set()

        def report_once(value: float, step: int) -> None:
            # A retry after an out-of-memory error replays the steps reported before it;
            # Optuna would keep the first value anyway, with a warning.
            if step not in reported:
                reported.add(step)
                trial.report(value, step)

        def report(step: int, value: float) -> bool | str:
            if self.goal == "time_to_target":
                if self._reached(value):
                    report_once(0.0, step)
                    return REACHED
                # The study minimises, so the pruner gets the distance still to go.
                report_once(abs(self.target - value), step)  # type: ignore[operator]
                return trial.should_prune()
            # Optuna does not prune multi-objective studies; report only when it can.
            if not single_objective:
                return False
            report_once(value, step)
            return trial.should_prune()

        micro = self.micro_batch_size
        probed: ProbeResult | None = None
        retries = 0
        while True:
            # Same seed, same initial weights: differences between trials come from the
            # params, and a retry after an out-of-memory error restarts the same run.
            torch.manual_seed(seed)
            model = self.build_model(params)
            if probed is None and self.probing:
                probed = self.probe(trial.study, params, model=model)
                micro = min(micro or probed.micro_batch_size, probed.micro_batch_size)
            memory_guard: contextlib.AbstractContextManager[object] = (
                MemoryBudget(
                    self.memory_budget_mb, optimizer_states=optimizer_states(params)
                ).attach(model)
                if self.memory_budget_mb is not None
                else contextlib.nullcontext()
            )
            oom: str | None = None
            try:
                with memory_guard:
                    result = train(
                        model,
                        self.data,
                        params,
                        budget=self.budget,
                        metric=self.metric,
                        report=report,
                        device=self.device,
                        seed=seed,
                        amp=self.amp,
                        micro_batch_size=micro,
                        clip_grad_norm=self.clip_grad_norm,
                        divergence_factor=self.divergence_factor,
                        measure_noise_scale=self.measure_noise_scale,
                    )
            except Exception as error:
                if not is_oom_error(error):
                    raise
                # Keep the message only: the traceback pins the failed step's tensors.
                oom = f"{type(error).__name__}: {error}".splitlines()[0][:300]
            del model, memory_guard
            if oom is None:
                break
            # Outside the except block, so the failed step's memory can really be freed.
            release_memory(self.device)
            used = min(micro or params.batch_size, params.batch_size)
            smaller = max(used // 2, self.min_micro_batch_size)
            if smaller >= used:
                trial.set_user_attr("effective_batch_size", params.batch_size)
                trial.set_user_attr("micro_batch_size", used)
                trial.set_user_attr("oom_retries", retries)
                trial.set_user_attr("oom_error", oom)
                trial.set_user_attr("seed", seed)
                trial.set_user_attr("stop_reason", "oom")
                # Infeasible (constraint > 0): TPE ranks it after every feasible trial and
                # learns to avoid the region, which a FAILED trial would not teach it.
                trial.set_constraint("oom", 1.0)
                raise optuna.TrialPruned(
                    f"out of memory at batch_size={params.batch_size} even with micro-batches "
                    f"of {used} (min_micro_batch_size={self.min_micro_batch_size}): {oom}"
                )
            retries += 1
            micro = smaller
        for key, value in result_attrs(result, params, seed).items():
            trial.set_user_attr(key, value)
        trial.set_user_attr("oom_retries", retries)
        if probed is not None:
            trial.set_user_attr("probed_micro_batch_size", probed.micro_batch_size)
        if result.stop_reason == "pruned":
            step, value = result.history[-1]
            raise optuna.TrialPruned(f"pruned at step {step} with {self.metric}={value:.4g}")
        if result.stop_reason.startswith("diverged"):
            raise optuna.TrialPruned(result.stop_reason)
        if self.goal == "time_to_target":
            assert self.target is not None
            score, reached = time_to_target(
                result,
                self.target,
                direction=self.metric_direction,
                unit=self.target_unit,
                total=self._budget_total(),
            )
            trial.set_user_attr("reached_target", reached)
            trial.set_user_attr("final_" + self.metric, result.value)
            return score
        if self.goal == "metric_and_time":
            return result.value, result.train_seconds
        return result.value


def make_objective(
    build_model: BuildModel,
    data: TrainingData,
    *,
    space: SearchSpace | None = None,
    budget: Budget | None = None,
    metric: Metric = "accuracy",
    device: str | torch.device | None = None,
    seed: int = 0,
    amp: Amp = "auto",
    micro_batch_size: int | None = None,
    clip_grad_norm: float | None = None,
    divergence_factor: float = 10.0,
    goal: Goal = "metric",
    target: float | None = None,
    target_unit: TargetUnit = "samples",
    memory_budget_mb: float | None = None,
    probe: bool | None = None,
    probe_margin: float = 0.9,
    min_micro_batch_size: int = 8,
    measure_noise_scale: bool = False,
) -> Objective:
    """Build an Optuna objective that searches batch size, learning rate and dropout.

    Args:
        build_model: ``build_model(params) -> nn.Module``; read ``params.dropout`` (and
            ``params.extra``) to configure the model. Called once per trial after seeding.
        data: a :class:`~bsopt.TensorData` (fast, in memory) or :class:`~bsopt.DatasetData`.
        space: the ranges to search; default :class:`~bsopt.SearchSpace()`.
        budget: training per trial and evaluation grid; default ``Budget(10)`` (ten
            epochs, ten evaluations). Evaluations are reported at samples seen, so pruners
            compare trials of different batch sizes fairly.
        metric: ``"accuracy"`` (maximised) or ``"loss"`` (minimised), on the validation split.
        device: ``"auto"`` (CUDA when present), ``"cpu"``, ``"cuda:0"``, ...
        seed: trial ``n`` uses seed ``seed + n`` for initialisation and shuffling.
        amp, clip_grad_norm, divergence_factor, measure_noise_scale: passed to
            :func:`~bsopt.train`, which documents them. With the noise scale measured, each
            trial stores ``noise_scale`` (the last estimate) and ``noise_scale_history``.
        micro_batch_size: the most samples pushed through the model at once. The searched
            ``batch_size`` is always the *effective* batch (samples per optimizer update);
            a larger one is reached by accumulating the gradients of several micro-batches,
            each loss weighted by its share, so the update equals the full batch's up to
            float rounding. Caveat: BatchNorm (and anything else that looks across a batch)
            computes its statistics per micro-batch, so such a model trains slightly
            differently under accumulation. Default: no cap (or the probed one).
        memory_budget_mb: pretend the device has this many MiB: every training step's memory
            is estimated (parameters, gradients, optimizer state, activations measured with
            forward hooks) and a step over budget raises an out-of-memory error. This is how
            a CPU machine stands in for a GPU; on a GPU it can leave room for others.
        probe: start each trial from the largest micro-batch that fits, found by
            :func:`~bsopt.probe_batch_size` once per study and cached in the study's user
            attributes (see :meth:`Objective.probe`). Default ``None``: probe on CUDA or
            with a ``memory_budget_mb``, not on a plain CPU (which has no device limit).
        probe_margin: trials use this fraction of the probed limit (fragmentation, other
            processes), in ``(0, 1]``.
        min_micro_batch_size: the floor of out-of-memory recovery. A trial that runs out of
            memory restarts (same seed, same effective batch) with half the micro-batch;
            when even this floor runs out of memory, the trial is pruned with user attribute
            ``stop_reason="oom"`` and the constraint ``"oom"`` set to 1 (infeasible), so TPE
            learns to avoid the region and the study goes on. Any error that is not out of
            memory fails the trial as usual. ``oom_retries`` records the restarts. The
            default of 8 keeps recovery from crawling through tiny micro-batches.
        goal: what the trial returns.

            * ``"metric"`` (default): the last validation ``metric``.
            * ``"time_to_target"``: the samples (``target_unit="samples"``) or training
              seconds (``"seconds"``, which needs a seconds budget) until the metric first
              reaches ``target`` (minimised; the "steps to result" measure of the
              large-batch literature). Training stops once it is reached. A trial that never
              reaches it completes with ``budget * (1 + shortfall)``, so it ranks after every
              trial that did; the pruner sees the distance still to go.
            * ``"metric_and_time"``: two values, (metric, training seconds), for a
              multi-objective study (``directions=objective.directions``). Optuna does not
              prune multi-objective trials, so every trial runs its whole budget.
        target, target_unit: see ``goal``.

    Returns:
        An :class:`Objective` for ``study.optimize(objective, ...)``.

    Example:
        >>> objective = bsopt.make_objective(build_model, bsopt.load_digits())
        >>> study = bsopt.create_study("mine", direction=objective.direction)
        >>> bsopt.optimize(study, objective, trials=30)
    """
    space = space or SearchSpace()
    budget = budget or Budget()
    if not callable(build_model):
        raise TypeError(
            f"build_model must be callable as build_model(params), got {build_model!r}."
        )
    if metric not in METRIC_DIRECTIONS:
        raise ValueError(f"metric must be 'accuracy' or 'loss', but got {metric!r}.")
    if metric == "accuracy" and data.n_classes is None:
        raise ValueError(
            "metric='accuracy' needs class labels (int64 targets), but the data hold "
            "regression targets. Use metric='loss'."
        )
    largest = space.batch_size[1]
    if largest > data.n_train:
        raise ValueError(
            f"The search space's largest batch_size ({largest}) is larger than the training "
            f"set ({data.n_train} samples). Use SearchSpace(batch_size=(low, high)) with "
            f"high <= {data.n_train}."
        )
    grid = budget.grid(data.n_train)  # fails early on a budget too small for its evaluations
    if goal not in GOALS:
        raise ValueError(f"goal must be one of {', '.join(GOALS)}, but got {goal!r}.")
    if goal == "time_to_target":
        if target is None or not math.isfinite(target):
            raise ValueError(
                "goal='time_to_target' needs target=<validation metric to reach>, "
                f"e.g. target=0.95 for accuracy; got target={target!r}."
            )
        if target_unit not in ("samples", "seconds"):
            raise ValueError(
                f"target_unit must be 'samples' or 'seconds', but got {target_unit!r}."
            )
        if target_unit == "seconds" and grid.unit != "ms":
            raise ValueError(
                "target_unit='seconds' needs a time budget, e.g. Budget(30, 'seconds'), so "
                "every trial gets the same seconds; with a sample budget use 'samples'."
            )
    if memory_budget_mb is not None and not (
        isinstance(memory_budget_mb, (int, float)) and 0 < memory_budget_mb < math.inf
    ):
        raise ValueError(
            f"memory_budget_mb must be a positive number of MiB, but got {memory_budget_mb!r}. "
            "Use e.g. memory_budget_mb=512, or None for the device's own memory."
        )
    if probe not in (None, True, False):
        raise ValueError(f"probe must be True, False or None (auto), but got {probe!r}.")
    if not 0 < probe_margin <= 1:
        raise ValueError(
            f"probe_margin must be a fraction in (0, 1], but got {probe_margin!r}. Try 0.9."
        )
    if (
        isinstance(min_micro_batch_size, bool)
        or not isinstance(min_micro_batch_size, int)
        or min_micro_batch_size < 1
    ):
        raise ValueError(
            f"min_micro_batch_size must be an integer >= 1, but got {min_micro_batch_size!r}."
        )
    return Objective(
        build_model,
        data,
        space=space,
        budget=budget,
        metric=metric,
        device=resolve_device(device),
        seed=seed,
        amp=amp,
        micro_batch_size=micro_batch_size,
        clip_grad_norm=clip_grad_norm,
        divergence_factor=divergence_factor,
        goal=goal,
        target=target,
        target_unit=target_unit,
        memory_budget_mb=memory_budget_mb,
        auto_probe=probe,
        probe_margin=probe_margin,
        min_micro_batch_size=min_micro_batch_size,
        measure_noise_scale=measure_noise_scale,
    )
