"""Hugging Face transformers: evaluate, report and prune on bsopt's samples-seen grid.

The ``Trainer``'s Optuna backend reports at ``global_step``: optimizer updates, which are 16
samples for one trial and 128 for another. :class:`TransformersReporter` has the ``Trainer``
evaluate when the samples seen reach a point of the budget's grid, reports there, and stops
a pruned trial. :meth:`TransformersReporter.configure` maps the searched effective batch to
``per_device_train_batch_size`` x ``gradient_accumulation_steps`` x processes and refuses
``auto_find_batch_size``, which would halve the very parameter being searched. Needs the
``transformers`` package: ``pip install 'bsopt[transformers]'``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
import dataclasses
import itertools
import math
from typing import Any, Literal

try:
    from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments
except ImportError as error:  # pragma: no cover - the extra is installed in CI
    raise ImportError(
        "bsopt.TransformersReporter needs Hugging Face transformers: "
        "pip install 'bsopt[transformers]'."
    ) from error
import optuna
import torch

from bsopt.core._budget import Budget, GridCursor
from bsopt.core._space import Params, SearchSpace, SuggestFn
from bsopt.core._stop import DivergenceCheck, StopReason
from bsopt.search._fair import FrameworkReporter, LoopObjective, plan_batch


def samples_per_step(
    n_train: int, *, per_device: int, accumulation: int, world_size: int, drop_last: bool
) -> list[int]:
    """Samples of each optimizer update in one epoch, as the ``Trainer`` batches it.

    Each process reads ``ceil(n_train / world_size)`` samples per epoch (the distributed
    sampler pads), in batches of ``per_device`` (the last one smaller, or dropped); an update
    takes ``accumulation`` batches, the last update of an epoch what is left.
    """
    per_rank = math.ceil(n_train / world_size)
    full, rest = divmod(per_rank, per_device)
    batches = [per_device] * full + ([rest] if rest and not drop_last else [])
    return [
        sum(batches[i : i + accumulation]) * world_size
        for i in range(0, len(batches), accumulation)
    ]


def _replicas(args: TrainingArguments) -> int:
    """Model replicas that each take a per-device batch: the processes, times the GPUs one
    process drives with ``DataParallel`` (``n_gpu`` is 1 per process under DDP)."""
    return int(args.world_size) * max(1, int(args.n_gpu))


class TransformersReporter(FrameworkReporter, TrainerCallback):
    """A ``TrainerCallback`` that evaluates, reports and prunes on bsopt's sample grid.

    ::

        reporter = bsopt.TransformersReporter(trial, budget, len(train_set),
                                              batch_size=params.batch_size,
                                              monitor="eval_accuracy", lr=params.lr)
        args = reporter.configure(TrainingArguments(output_dir=..., learning_rate=params.lr))
        trainer = Trainer(model, args, train_dataset=train_set, eval_dataset=val_set,
                          compute_metrics=..., callbacks=[reporter])
        trainer.train()
        return reporter.finish()      # raises optuna.TrialPruned for a pruned trial

    The ``Trainer`` evaluates after the first optimizer update at or past each grid point
    (it cannot cut a batch: a report may come up to one effective batch late, the largest lag
    is stored as ``grid_overshoot``); the report goes to the grid point itself, the same key
    for every batch size. The callback owns evaluation: ``eval_strategy`` steps and epochs
    are overridden. The divergence check reads the training loss the ``Trainer`` logs
    (:meth:`configure` logs it at least once per evaluation interval).

    Under DDP every process counts the same samples, so all evaluate at the same updates;
    the process of rank 0 reports, and its decision is broadcast to every process.

    Args:
        trial: the ``optuna.Trial`` of this run.
        budget: the study's budget in epochs or samples (a time budget is refused).
        n_train: the number of training samples (``len(train_dataset)``).
        batch_size: the searched effective batch: samples per optimizer update over all
            processes.
        monitor: the evaluation metric to report, as the ``Trainer`` names it, e.g.
            ``"eval_accuracy"`` (from ``compute_metrics``) or ``"eval_loss"``.
        lr, seed, divergence_factor, metric: as in :class:`~bsopt.FairReporter`.
    """

    logged = "an evaluation metric, e.g. 'eval_loss'"

    def _set_up(self) -> None:
        self._check_interval("the Trainer")
        self.divergence = DivergenceCheck(self.divergence_factor)
        self._epoch_cumulative: list[int] = []  # samples after each update of an epoch
        self._configured: tuple[int, int] | None = None

    # -- set-up -------------------------------------------------------------------------------

    def configure(
        self, args: TrainingArguments, *, micro_batch_size: int | None = None
    ) -> TrainingArguments:
        """``args`` with the searched batch and the budget's length set; the rest is kept.

        Sets ``per_device_train_batch_size`` and ``gradient_accumulation_steps`` so that they
        times the model replicas (processes, or GPUs of ``DataParallel``) give the searched
        batch (the per-device batch is the largest that is at most ``micro_batch_size``;
        default no cap), ``max_steps`` to the updates the budget takes (so a learning-rate
        schedule spans the budget), and ``logging_steps`` so the training loss is logged at
        least once per evaluation, with ``logging_nan_inf_filter=False`` so a NaN loss shows
        (the divergence check reads it).

        Raises:
            ValueError: ``auto_find_batch_size=True`` (it would halve the searched batch
                after an out-of-memory error), or the batch does not split over the
                processes.
        """
        if args.auto_find_batch_size:
            raise ValueError(
                "TrainingArguments(auto_find_batch_size=True) halves the batch size after an "
                "out-of-memory error, but the batch size is what this study searches. Set "
                "auto_find_batch_size=False; to fit memory, pass micro_batch_size= here "
                "(gradient accumulation keeps the searched batch), or wrap the trial in "
                "bsopt.retry_oom."
            )
        world = _replicas(args)
        per_device, accumulation = plan_batch(
            self.batch_size, world_size=world, max_per_device=micro_batch_size
        )
        self._configured = (per_device, accumulation)
        steps = self._steps_to_budget(
            per_device, accumulation, world, drop_last=args.dataloader_drop_last
        )
        interval_steps = max(1, self.grid.points[0] // self.batch_size)
        return dataclasses.replace(
            args,
            per_device_train_batch_size=per_device,
            gradient_accumulation_steps=accumulation,
            auto_find_batch_size=False,
            max_steps=steps,
            logging_strategy="steps",
            logging_steps=min(interval_steps, args.logging_steps or interval_steps),
            # The default filter hides a NaN loss behind the average of earlier ones.
            logging_nan_inf_filter=False,
        )

    def _steps_to_budget(
        self, per_device: int, accumulation: int, world: int, *, drop_last: bool
    ) -> int:
        per_epoch = samples_per_step(
            self.n_train,
            per_device=per_device,
            accumulation=accumulation,
            world_size=world,
            drop_last=drop_last,
        )
        if not per_epoch:
            raise ValueError(
                f"An epoch of {self.n_train} samples holds no batch of {per_device} with "
                "dataloader_drop_last=True. Lower the batch size or keep the last batch."
            )
        epochs, rest = divmod(self.grid.total, sum(per_epoch))
        steps = epochs * len(per_epoch)
        for samples in per_epoch:
            if rest <= 0:
                break
            rest -= samples
            steps += 1
        return steps

    # -- Trainer hooks --------------------------------------------------------------------------

    def on_train_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        world = _replicas(args)
        per_device = args.per_device_train_batch_size
        accumulation = args.gradient_accumulation_steps
        if args.auto_find_batch_size or (
            state.train_batch_size is not None
            and state.train_batch_size != per_device * max(1, args.n_gpu)
        ):
            raise ValueError(
                f"The Trainer changed the batch size to {state.train_batch_size} "
                f"(auto_find_batch_size={args.auto_find_batch_size}); the searched batch_size="
                f"{self.batch_size} must stay as it is. Set auto_find_batch_size=False."
            )
        if per_device * accumulation * world != self.batch_size:
            raise ValueError(
                f"The TrainingArguments train {per_device} per device x "
                f"gradient_accumulation_steps={accumulation} x {world} processes = "
                f"{per_device * accumulation * world} samples per update, not the searched "
                f"batch_size={self.batch_size}. Build them with reporter.configure(args)."
            )
        self._epoch_cumulative = list(
            itertools.accumulate(
                samples_per_step(
                    self.n_train,
                    per_device=per_device,
                    accumulation=accumulation,
                    world_size=world,
                    drop_last=args.dataloader_drop_last,
                )
            )
        )
        self.cursor = GridCursor(self.grid)
        if state.is_world_process_zero:
            self._start_reporter(
                micro_batch_size=per_device,
                device=args.device,
                world_size=world,
                accumulation_steps=accumulation,
            ).start()

    def on_step_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        cumulative = self._epoch_cumulative
        epochs, index = divmod(state.global_step, len(cumulative))
        samples = epochs * cumulative[-1] + (cumulative[index - 1] if index else 0)
        step_samples, self.cursor.samples_seen = samples - self.samples_seen, samples
        if self.reporter is not None and not self.reporter.done and step_samples > 0:
            self.reporter.step(step_samples)
        due = self._pass_points()
        self._due = due
        # bsopt decides when to evaluate, whatever eval_strategy says.
        control.should_evaluate = due

    def on_epoch_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        control.should_evaluate = False

    def on_log(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        logs: dict[str, float] | None = None,
        **kwargs: Any,
    ) -> None:
        # The logged loss is already averaged over processes: every rank decides alike.
        loss = (logs or {}).get("loss")
        if loss is None:
            return
        reason = self.divergence.interval(float(loss))
        if reason is None:
            return
        control.should_evaluate = False
        control.should_training_stop = True
        self._due = False
        if self.reporter is not None and not self.reporter.done:
            self.reporter._end(StopReason.DIVERGED, reason)

    def on_evaluate(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        metrics: dict[str, float] | None = None,
        **kwargs: Any,
    ) -> None:
        if not self._due:
            return
        self._due = False
        decision: str | None = None
        if self.reporter is not None and not self.reporter.done:
            metrics = metrics or {}
            if self.monitor not in metrics:
                known = ", ".join(sorted(metrics)) or "none"
                raise ValueError(
                    f"{type(self).__name__}(monitor={self.monitor!r}) found no such metric "
                    f"after evaluation (got: {known}). Name one of them, or return it from "
                    "compute_metrics (the Trainer prefixes it with 'eval_')."
                )
            if self.reporter.report(float(metrics[self.monitor]), raise_pruned=False):
                assert self.reporter.stop_reason is not None
                decision = self.reporter.stop_reason.value
        if args.world_size > 1 and torch.distributed.is_initialized():
            box = [decision]
            torch.distributed.broadcast_object_list(box, src=0)
            decision = box[0]
        if decision is not None or self.cursor.done:
            control.should_training_stop = True

    # -- after training -------------------------------------------------------------------------

    def finish(self) -> float:
        """The trial's value after ``trainer.train()``: the last reported metric.

        Stores the standard attributes (``effective_batch_size``, ``micro_batch_size`` per
        device, ``accumulation_steps``, ``samples_seen``, ``samples_per_second``, ...,
        ``world_size``) on rank 0 and raises ``optuna.TrialPruned`` with the reason when the
        trial was pruned or diverged.

        Raises:
            optuna.TrialPruned: the trial was pruned or diverged.
            RuntimeError: ``train()`` has not run here, or training ended before the budget.
        """
        reporter = self.reporter
        if reporter is None:
            raise RuntimeError(
                "TransformersReporter.finish() found no run: call it after trainer.train(), "
                "in the process of rank 0."
            )
        if reporter.stop_reason in (StopReason.PRUNED, StopReason.DIVERGED):
            raise optuna.TrialPruned(reporter.stop_detail)
        if not self.cursor.done:
            raise RuntimeError(
                f"Training ended at {self.samples_seen:,} samples, before the budget's "
                f"{self.grid.total:,}. Build the TrainingArguments with "
                "reporter.configure(args), which sets max_steps to the budget."
            )
        return reporter.finish()


def transformers_objective(
    make_model: Callable[[Params], Any],
    training_args: TrainingArguments,
    train_set: Any,
    eval_set: Any,
    *,
    budget: Budget,
    monitor: str = "eval_loss",
    direction: Literal["maximize", "minimize"] = "minimize",
    metric: str | None = None,
    compute_metrics: Callable[[Any], dict[str, float]] | None = None,
    space: SearchSpace | None = None,
    suggest: SuggestFn | None = None,
    seed: int = 0,
    trainer_options: Mapping[str, Any] | None = None,
) -> LoopObjective:
    """An objective over your own model and ``TrainingArguments``, in one call.

    ::

        objective = bsopt.integrations.transformers_objective(
            lambda params: tiny_bert(params.dropout), TrainingArguments("out", use_cpu=True),
            train_set, eval_set, budget=bsopt.Budget(4, evals=4),
            monitor="eval_accuracy", direction="maximize", compute_metrics=accuracy)

    Per trial it samples ``space`` (and ``suggest``, whose values reach ``params.extra``),
    seeds with :func:`~bsopt.search.trial_seed`, builds the model and trains it with a
    ``Trainer`` whose arguments are ``training_args`` at the trial's ``learning_rate`` and
    seed, set up by :meth:`TransformersReporter.configure` (batch, accumulation,
    ``max_steps``). ``trainer_options`` go to ``Trainer`` (``data_collator``, ...).
    transformers' warnings and progress bars show for the first trial only. The study
    records ``metric`` (default ``monitor``) and its name, like bsopt's own objective.
    """
    from bsopt.core._space import suggest_params
    from bsopt.search._objective import trial_seed

    chosen = space or SearchSpace()
    name = metric or monitor
    trials = [0]

    def objective(trial: optuna.Trial) -> float:
        from transformers import PrinterCallback, ProgressCallback, Trainer
        from transformers.utils import logging as hf_logging

        params = suggest_params(trial, chosen, suggest)
        seeded = trial_seed(seed, trial.params)
        quiet = trials[0] > 0  # the first trial shows what transformers has to say, once
        trials[0] += 1
        if quiet:
            hf_logging.set_verbosity_error()  # type: ignore[no-untyped-call]
        torch.manual_seed(seeded)
        reporter = TransformersReporter(
            trial, budget, len(train_set), batch_size=params.batch_size, monitor=monitor,
            lr=params.lr, seed=seeded, metric=name,
        )  # fmt: skip
        args = dataclasses.replace(training_args, learning_rate=params.lr, seed=seeded)
        trainer = Trainer(
            model=make_model(params),
            args=reporter.configure(args),
            train_dataset=train_set,
            eval_dataset=eval_set,
            compute_metrics=compute_metrics,
            callbacks=[reporter],
            **dict(trainer_options or {}),
        )
        if quiet:
            for printer in (PrinterCallback, ProgressCallback):
                trainer.remove_callback(printer)  # the logs and bars of every later trial
        trainer.train()
        return reporter.finish()

    return LoopObjective(
        objective, budget=budget, n_train=len(train_set), metric=name, direction=direction,
        what=f"transformers; batch size {chosen.batch_size[0]}..{chosen.batch_size[1]}",
    )  # fmt: skip
