"""Objective factories: the one place where bsopt touches ``optuna.Trial``.

``make_objective(build_model, data, ...)`` returns a callable for ``study.optimize``. Per
trial it draws :class:`~bsopt.Params` from the search space, seeds and builds the model,
trains it with :func:`~bsopt.train`, reports every evaluation to the trial (pruning when the
pruner says so), and stores what the run cost as user attributes, which the analysis and
the dashboard read.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import optuna
import torch
from torch import nn

from bsopt._budget import Budget
from bsopt._data import TrainingData
from bsopt._space import Params, SearchSpace
from bsopt._trainer import METRIC_DIRECTIONS, Amp, Metric, TrainResult, resolve_device, train

BuildModel = Callable[[Params], nn.Module]


def result_attrs(result: TrainResult, params: Params, seed: int) -> dict[str, object]:
    """The user attributes stored for a trial, by name."""
    return {
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


class Objective:
    """A callable ``objective(trial) -> float`` built by :func:`make_objective`.

    ``direction`` tells :func:`~bsopt.create_study` which way to optimise; ``describe()``
    says what one trial does.
    """

    def __init__(
        self,
        build_model: BuildModel,
        data: TrainingData,
        *,
        space: SearchSpace,
        budget: Budget,
        metric: Metric,
        device: str | torch.device | None,
        seed: int,
        amp: Amp,
        micro_batch_size: int | None,
        clip_grad_norm: float | None,
        divergence_factor: float,
    ) -> None:
        self.build_model = build_model
        self.data = data
        self.space = space
        self.budget = budget
        self.metric = metric
        self.device = resolve_device(device)
        self.seed = seed
        self.amp = amp
        self.micro_batch_size = micro_batch_size
        self.clip_grad_norm = clip_grad_norm
        self.divergence_factor = divergence_factor

    @property
    def direction(self) -> Literal["maximize", "minimize"]:
        return METRIC_DIRECTIONS[self.metric]

    def describe(self) -> str:
        low, high = self.space.batch_size
        return (
            f"validation {self.metric} ({self.direction}); batch size {low}..{high} "
            f"({self.space.batch_grid}), lr {self.space.lr[0]:g}..{self.space.lr[1]:g} (log), "
            f"dropout {self.space.dropout[0]:g}..{self.space.dropout[1]:g}; "
            f"{self.budget.describe(self.data.n_train)}; device {self.device}"
        )

    def __call__(self, trial: optuna.Trial) -> float:
        params = self.space.suggest(trial)
        seed = self.seed + trial.number
        # Same seed, same initial weights: differences between trials come from the params.
        torch.manual_seed(seed)
        model = self.build_model(params)
        single_objective = len(trial.study.directions) == 1

        def report(step: int, value: float) -> bool:
            # Optuna does not prune multi-objective studies; report only when it can.
            if not single_objective:
                return False
            trial.report(value, step)
            return trial.should_prune()

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
            micro_batch_size=self.micro_batch_size,
            clip_grad_norm=self.clip_grad_norm,
            divergence_factor=self.divergence_factor,
        )
        del model
        for key, value in result_attrs(result, params, seed).items():
            trial.set_user_attr(key, value)
        if result.stop_reason == "pruned":
            step, value = result.history[-1]
            raise optuna.TrialPruned(f"pruned at step {step} with {self.metric}={value:.4g}")
        if result.stop_reason.startswith("diverged"):
            raise optuna.TrialPruned(result.stop_reason)
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
        amp, micro_batch_size, clip_grad_norm, divergence_factor: passed to
            :func:`~bsopt.train`, which documents them.

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
    budget.grid(data.n_train)  # fails early on a budget too small for its evaluations
    return Objective(
        build_model,
        data,
        space=space,
        budget=budget,
        metric=metric,
        device=device,
        seed=seed,
        amp=amp,
        micro_batch_size=micro_batch_size,
        clip_grad_norm=clip_grad_norm,
        divergence_factor=divergence_factor,
    )
