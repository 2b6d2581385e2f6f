"""PyTorch Lightning: validate, report and prune on bsopt's samples-seen grid.

Optuna's Lightning callback reports at ``current_epoch``; a step counted in epochs or
optimizer updates means different amounts of data for different batch sizes.
:class:`LightningReporter` instead has Lightning validate when the samples seen (optimizer
steps x per-device batch x accumulation x processes) reach a point of the budget's grid,
reports the monitored metric there (rank 0 only), and sends the prune decision to every
rank. Needs the ``lightning`` package: ``pip install 'bsopt[lightning]'``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
import math
from typing import Any, Literal

try:
    import lightning.pytorch as pl
except ImportError as error:  # pragma: no cover - the extra is installed in CI
    raise ImportError(
        "bsopt.LightningReporter needs PyTorch Lightning: pip install 'bsopt[lightning]'."
    ) from error
import optuna
import torch

from bsopt.core._budget import Budget
from bsopt.core._space import Params, SearchSpace, SuggestFn
from bsopt.core._stop import StopReason
from bsopt.search._fair import FrameworkReporter, LoopObjective, _positive_int, plan_batch
from bsopt.training._batch import batch_size_of

# Trainer arguments that would keep bsopt from deciding when to validate.
_TRAINER_KWARGS: dict[str, Any] = {
    "check_val_every_n_epoch": None,  # validation counted over all batches, not per epoch
    "val_check_interval": 2**31,  # overridden batch by batch: validation at grid points only
    "num_sanity_val_steps": 0,
    "max_epochs": -1,  # the callback stops training at the end of the budget
}


class LightningReporter(FrameworkReporter, pl.Callback):
    """A Lightning callback that validates, reports and prunes on bsopt's sample grid.

    ::

        reporter = bsopt.LightningReporter(trial, budget, n_train, batch_size=params.batch_size,
                                           monitor="val_acc", lr=params.lr)
        trainer = L.Trainer(callbacks=[reporter], **reporter.configure(datamodule))
        trainer.fit(module, datamodule=datamodule)
        return reporter.finish()   # raises optuna.TrialPruned for a pruned trial

    Validation runs after the first optimizer step at or past each grid point (Lightning
    cannot cut a batch, so a report may come up to one effective batch late; the largest
    lag is stored as ``grid_overshoot``) and is reported at the grid point itself, the same
    key for every batch size. After the last point, training stops.

    Under DDP every rank counts the same samples, so all validate at the same steps; rank 0
    reports to the trial and its decision (go on, pruned, diverged) is broadcast to every
    rank, which all stop together. With ``strategy="ddp_spawn"`` (or ``"ddp_fork"`` on a
    CPU) the trial must live in an RDB storage such as SQLite (the spawned rank 0 writes to
    it); :meth:`finish` then reads the outcome back from the storage.

    Args:
        trial: the ``optuna.Trial`` of this run.
        budget: the study's budget in epochs or samples (a time budget differs between
            ranks, so it is refused).
        n_train: the number of training samples (one epoch).
        batch_size: the searched effective batch: samples per optimizer update over all
            processes.
        monitor: the logged validation metric to report, e.g. ``"val_acc"`` (log it with
            ``self.log("val_acc", ...)`` in ``validation_step``).
        lr, seed, divergence_factor, metric: as in :class:`~bsopt.FairReporter`; ``metric``
            defaults to ``monitor``.

    Raises:
        ValueError: no trial, a time budget, or a budget whose grid is finer than samples.
    """

    logged = "a logged metric, e.g. 'val_acc'"

    def _set_up(self) -> None:
        self.micro_batch_size: int | None = None  # per device, set by configure()
        self._pending_samples = 0
        self._pending_loss: list[torch.Tensor] = []
        self._last_global_step = 0
        self._decision: str | None = None
        self._world_size = 1
        self._trainer: pl.Trainer | None = None
        self._interrupted = False
        self._batch_checked = False

    # -- set-up -------------------------------------------------------------------------------

    def configure(
        self,
        datamodule: pl.LightningDataModule,
        *,
        devices: int = 1,
        num_nodes: int = 1,
        micro_batch_size: int | None = None,
    ) -> dict[str, Any]:
        """Set the DataModule's batch size and return the matching ``Trainer`` arguments.

        The effective batch is ``datamodule.batch_size`` (per device) x
        ``accumulate_grad_batches`` x ``devices`` x ``num_nodes``; the per-device batch is
        the largest that is at most ``micro_batch_size`` (default: no cap, no accumulation).
        The returned arguments also let bsopt decide when to validate
        (``check_val_every_n_epoch=None``, no sanity check, ``max_epochs=-1``): pass them to
        ``Trainer(**kwargs)`` along with your own.

        Raises:
            ValueError: the DataModule has no settable ``batch_size`` (an attribute, or a
                ``batch_size`` hyperparameter), or the batch does not split over the devices.
        """
        _positive_int("devices", devices)
        _positive_int("num_nodes", num_nodes)
        per_device, accumulation = plan_batch(
            self.batch_size, world_size=devices * num_nodes, max_per_device=micro_batch_size
        )
        set_batch_size(datamodule, per_device)
        self.micro_batch_size = per_device
        return _TRAINER_KWARGS | {"accumulate_grad_batches": accumulation}

    # -- Lightning hooks ----------------------------------------------------------------------

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._trainer = trainer
        self._world_size = trainer.world_size
        self._check_trainer(trainer)
        if trainer.is_global_zero:
            self._start_reporter(
                micro_batch_size=self.micro_batch_size,
                device=pl_module.device,
                world_size=trainer.world_size,
                accumulation_steps=trainer.accumulate_grad_batches,
                divergence_factor=self.divergence_factor,
            )

    def _check_trainer(self, trainer: pl.Trainer) -> None:
        name = type(self).__name__
        if getattr(trainer, "_val_check_time_interval", None) is not None:
            raise ValueError(
                f"{name} decides when to validate: remove the time-based "
                f"val_check_interval={trainer.val_check_interval!r} from the Trainer."
            )
        if trainer.check_val_every_n_epoch not in (None, 1):
            raise ValueError(
                f"{name} validates at points of the sample grid, which may fall in any epoch; "
                f"check_val_every_n_epoch={trainer.check_val_every_n_epoch} would skip them. "
                "Use Trainer(**reporter.configure(datamodule)), which sets it to None."
            )
        if trainer.limit_val_batches == 0:
            raise ValueError(
                f"{name} reports validation metrics, but limit_val_batches=0 turns validation "
                "off. Remove limit_val_batches, or set it above 0."
            )
        self._check_interval(name)
        world = trainer.world_size
        accumulation = trainer.accumulate_grad_batches
        per_device = self.micro_batch_size
        if per_device is not None and per_device * accumulation * world != self.batch_size:
            raise ValueError(
                f"The Trainer trains {per_device} x accumulate_grad_batches={accumulation} x "
                f"{world} processes = {per_device * accumulation * world} samples per update, "
                f"not the searched batch_size={self.batch_size}. Pass the devices to "
                "reporter.configure(datamodule, devices=...) and its arguments to the Trainer."
            )
        if per_device is None and self.batch_size % (accumulation * world):
            raise ValueError(
                f"batch_size={self.batch_size} does not split into accumulate_grad_batches="
                f"{accumulation} x {world} processes. Use reporter.configure(datamodule) to "
                "set both."
            )
        if per_device is None:
            self.micro_batch_size = self.batch_size // (accumulation * world)
        steps_needed = math.ceil(self.grid.total / self.batch_size)
        if trainer.max_steps not in (-1, None) and trainer.max_steps < steps_needed:
            raise ValueError(
                f"max_steps={trainer.max_steps} stops training before the budget "
                f"({self.grid.total:,} samples = {steps_needed} optimizer steps). Remove "
                "max_steps: the callback stops training at the end of the budget."
            )
        max_epochs = trainer.max_epochs
        if max_epochs not in (-1, None) and max_epochs * self.n_train < self.grid.total:
            raise ValueError(
                f"max_epochs={max_epochs} stops training before the budget "
                f"({self.grid.total:,} samples = {self.grid.total / self.n_train:.3g} epochs). "
                "Use max_epochs=-1: the callback stops training at the end of the budget."
            )

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.enable_validation:
            raise ValueError(
                f"{type(self).__name__} reports validation metrics, but this fit has no "
                "validation: define validation_step in the LightningModule and "
                "val_dataloader in the DataModule (or pass val_dataloaders to fit)."
            )
        if self.reporter is not None:
            self.reporter.start()

    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        per_device = self.micro_batch_size or 0
        n = self._samples_in(batch, per_device)
        if n > per_device:
            raise ValueError(
                f"A training batch holds {n} samples, but the per-device batch size is "
                f"{per_device}: the DataModule does not use its batch_size. Build the "
                "DataLoader in train_dataloader() with batch_size=self.batch_size."
            )
        self._pending_samples += n * self._world_size
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if isinstance(loss, torch.Tensor):
            self._pending_loss.append(loss.detach())
        if trainer.global_step == self._last_global_step:
            self._schedule_validation(trainer, due=False)  # accumulating: no update yet
            return
        self._last_global_step = trainer.global_step
        samples, self._pending_samples = self._pending_samples, 0
        losses, self._pending_loss = self._pending_loss, []
        self.cursor.samples_seen += samples
        due = self._pass_points()
        if self.reporter is not None and not self.reporter.done:
            step_loss = (
                (losses[0] if len(losses) == 1 else torch.stack(losses).sum()) if losses else None
            )
            self.reporter.step(samples, step_loss, raise_pruned=False)
            if self.reporter.done and self._world_size == 1:
                # Diverged: stop at once. Under DDP every rank must stop together, so the
                # decision waits for the next grid point, where it is broadcast.
                assert self.reporter.stop_reason is not None
                self._decision = self.reporter.stop_reason.value
                trainer.should_stop = True
        self._due = due
        self._schedule_validation(trainer, due=due)

    def _samples_in(self, batch: Any, per_device: int) -> int:
        """Samples in a training batch: checked in full once, then read off the first tensor
        (the per-step cost counts against the callback's overhead)."""
        if self._batch_checked:
            first = batch[0] if isinstance(batch, (tuple, list)) and batch else batch
            if isinstance(first, torch.Tensor) and first.ndim:
                return int(first.shape[0])
        try:
            n = batch_size_of(batch)
        except (TypeError, ValueError):
            return per_device  # a batch holding more than tensors: trust the configured size
        self._batch_checked = True
        return n

    def _schedule_validation(self, trainer: pl.Trainer, *, due: bool) -> None:
        """Make Lightning's validation check after this batch come out as ``due``.

        Lightning validates when ``(iteration + 1) % trainer.val_check_batch == 0``, with the
        iteration counted over all batches (``check_val_every_n_epoch=None``) or within the
        epoch; a divisor of ``iteration + 1`` or ``iteration + 2`` answers yes or no.
        """
        loop = trainer.fit_loop.epoch_loop
        iteration = (
            loop.total_batch_idx if trainer.check_val_every_n_epoch is None else loop.batch_idx
        )
        trainer.val_check_batch = iteration + 1 if due else iteration + 2

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or not self._due:
            return
        self._due = False
        decision: str | None = None
        if self.reporter is not None:
            decision = self._decide(trainer)
        if self._world_size > 1:
            decision = trainer.strategy.broadcast(decision, src=0)
        self._decision = decision
        if decision is not None or self.cursor.done:
            trainer.should_stop = True
            if decision is None and self.reporter is not None:
                # Stored here, by rank 0: under ddp_spawn it runs in another process than
                # finish(), which then reads them back from the storage.
                self.trial.set_user_attr("final_value", self.reporter.finish())

    def _decide(self, trainer: pl.Trainer) -> str | None:
        reporter = self.reporter
        assert reporter is not None
        if reporter.done:  # diverged at the step that reached this point
            return reporter.stop_reason.value if reporter.stop_reason else None
        metrics = trainer.callback_metrics
        if self.monitor not in metrics:
            known = ", ".join(sorted(metrics)) or "none"
            raise ValueError(
                f"{type(self).__name__}(monitor={self.monitor!r}) found no such metric after "
                f"validation (logged: {known}). Log it in validation_step with "
                f"self.log({self.monitor!r}, value), or pass the right name."
            )
        value = float(metrics[self.monitor])
        if reporter.report(value, raise_pruned=False):
            assert reporter.stop_reason is not None
            return reporter.stop_reason.value
        return None

    def on_exception(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException
    ) -> None:
        if isinstance(exception, KeyboardInterrupt):
            self._interrupted = True
            if self.reporter is not None and not self.reporter.done:
                self.reporter._end(StopReason.INTERRUPTED, "interrupted by the user")

    # -- after fit ----------------------------------------------------------------------------

    def finish(self) -> float:
        """The trial's value after ``trainer.fit``: the last reported metric.

        Stores the standard attributes (``effective_batch_size``, ``micro_batch_size`` per
        device, ``accumulation_steps``, ``samples_seen``, ``samples_per_second``, ...,
        ``world_size``) and raises ``optuna.TrialPruned`` with the reason when the trial was
        pruned or diverged.

        Raises:
            optuna.TrialPruned: the trial was pruned or diverged.
            RuntimeError: ``fit`` has not run, or training ended before the budget.
        """
        reporter = self.reporter
        if reporter is None:
            return self._finish_from_storage()
        if reporter.stop_reason in (StopReason.PRUNED, StopReason.DIVERGED):
            raise optuna.TrialPruned(reporter.stop_detail)
        if reporter.stop_reason is StopReason.INTERRUPTED or self._interrupted:
            raise KeyboardInterrupt
        if reporter.stop_reason is None:
            raise RuntimeError(
                f"Training ended at {self.samples_seen:,} samples, before the budget's "
                f"{self.grid.total:,}. Something stopped it early (max_epochs, max_steps, "
                "another callback): leave stopping to bsopt's callback."
            )
        return reporter.value

    def _finish_from_storage(self) -> float:
        # ddp_spawn: rank 0 ran in another process and wrote the outcome to the storage.
        attrs: dict[str, Any] = {}
        if isinstance(self.trial, optuna.Trial):
            # The trial object caches its attributes: read the stored ones.
            for stored in self.trial.study.get_trials(deepcopy=False):
                if stored.number == self.trial.number:
                    attrs = stored.user_attrs
        reason = attrs.get("stop_reason")
        if reason is None:
            raise RuntimeError(
                "LightningReporter.finish() found no run: call it after trainer.fit(). Under "
                "strategy='ddp_spawn' the study needs an RDB storage (e.g. SQLite), which "
                "the spawned processes write to."
            )
        if reason in (StopReason.PRUNED.value, StopReason.DIVERGED.value):
            raise optuna.TrialPruned(attrs.get("stop_detail", reason))
        return float(attrs["final_value"])


def set_batch_size(datamodule: Any, per_device: int) -> None:
    """Set ``datamodule.batch_size`` (or its ``batch_size`` hyperparameter) to ``per_device``.

    Raises:
        ValueError: the DataModule has neither, or the attribute cannot be set.
    """
    name = type(datamodule).__name__
    from torch.utils.data import DataLoader

    if isinstance(datamodule, DataLoader):
        # A DataLoader's batch size is fixed once it is built, so bsopt cannot set it.
        raise ValueError(
            "configure() needs a LightningDataModule, but got a DataLoader, whose batch size "
            "cannot change after it is built. Wrap the data in a DataModule whose "
            "train_dataloader() builds it from self.batch_size, and pass that: class "
            "Data(LightningDataModule): __init__ sets self.batch_size = 32; "
            "train_dataloader returns DataLoader(train_set, batch_size=self.batch_size, "
            "shuffle=True); val_dataloader returns DataLoader(val_set, batch_size=256)."
        )
    fix = (
        f"Give {name} a batch size its train_dataloader() uses: take batch_size in __init__ "
        "and keep it as self.batch_size (or call self.save_hyperparameters())."
    )
    hparams = getattr(datamodule, "hparams", None)
    has_hparam = isinstance(hparams, dict) and "batch_size" in hparams
    if not hasattr(datamodule, "batch_size") and not has_hparam:
        raise ValueError(f"The DataModule {name} has no batch_size to set. {fix}")
    if has_hparam:
        hparams["batch_size"] = per_device  # type: ignore[index]
    if hasattr(datamodule, "batch_size") or not has_hparam:
        try:
            datamodule.batch_size = per_device
        except AttributeError:
            raise ValueError(
                f"The DataModule {name} has a batch_size that cannot be set (a read-only "
                f"property?). {fix}"
            ) from None


def lightning_objective(
    make_module: Callable[[Params], pl.LightningModule],
    make_datamodule: Callable[[], pl.LightningDataModule],
    *,
    budget: Budget,
    monitor: str,
    direction: Literal["maximize", "minimize"] = "maximize",
    metric: str | None = None,
    space: SearchSpace | None = None,
    suggest: SuggestFn | None = None,
    n_train: int | None = None,
    seed: int = 0,
    trainer_options: Mapping[str, Any] | None = None,
) -> LoopObjective:
    """An objective over your own LightningModule and DataModule, in one call.

    ::

        objective = bsopt.integrations.lightning_objective(
            lambda params: MLP(params.lr, params.dropout), Digits,
            budget=bsopt.Budget(10, evals=10), monitor="val_acc")

    Per trial it samples ``space`` (and ``suggest``, whose values reach ``params.extra``),
    seeds everything with :func:`~bsopt.search.trial_seed`, builds the DataModule and the
    module, and fits them under a :class:`LightningReporter` (which sets the DataModule's
    batch size and the accumulation, and validates on the budget's grid) with a quiet
    ``Trainer`` (no logger, checkpoints, progress bar or summary; ``trainer_options`` add
    or override arguments). Lightning's banners show for the first trial only. The study
    records ``metric`` (default ``monitor``) and its name, like bsopt's own objective.

    Args:
        make_module: ``make_module(params) -> LightningModule``; read ``params.lr``.
        make_datamodule: ``make_datamodule() -> LightningDataModule`` with a settable
            ``batch_size``.
        budget, monitor: as in :class:`LightningReporter`.
        n_train: training samples per epoch; default the length of the DataModule's
            training set (``setup("fit")`` then ``len(train_dataloader().dataset)``).
    """
    from bsopt.core._space import suggest_params
    from bsopt.search._objective import trial_seed

    chosen = space or SearchSpace()
    name = metric or monitor
    if n_train is None:
        n_train = _train_size(make_datamodule())
    options = dict(_QUIET_TRAINER) | dict(trainer_options or {})
    trials = [0]

    def objective(trial: optuna.Trial) -> float:
        params = suggest_params(trial, chosen, suggest)
        seeded = trial_seed(seed, trial.params)
        if trials[0]:
            _quiet_lightning()  # the banners said it once; each trial would repeat them
        trials[0] += 1
        pl.seed_everything(seeded, verbose=False)
        datamodule = make_datamodule()
        reporter = LightningReporter(
            trial,
            budget,
            n_train,
            batch_size=params.batch_size,
            monitor=monitor,
            lr=params.lr,
            seed=seeded,
            metric=name,
        )
        trainer = pl.Trainer(callbacks=[reporter], **options, **reporter.configure(datamodule))
        trainer.fit(make_module(params), datamodule=datamodule)
        return reporter.finish()

    return LoopObjective(
        objective, budget=budget, n_train=n_train, metric=name, direction=direction,
        what=f"Lightning; batch size {chosen.batch_size[0]}..{chosen.batch_size[1]}",
    )  # fmt: skip


# Trainer arguments for a search: nothing written or printed per trial.
_QUIET_TRAINER: dict[str, Any] = {
    "logger": False,
    "enable_checkpointing": False,
    "enable_progress_bar": False,
    "enable_model_summary": False,
}


def _quiet_lightning() -> None:
    import logging

    for name in ("lightning.pytorch", "lightning.fabric", "pytorch_lightning"):
        logging.getLogger(name).setLevel(logging.WARNING)


def _train_size(datamodule: pl.LightningDataModule) -> int:
    datamodule.setup("fit")
    dataset = getattr(datamodule.train_dataloader(), "dataset", None)
    if dataset is None or not hasattr(dataset, "__len__"):
        raise ValueError(
            f"n_train is needed: {type(datamodule).__name__}.train_dataloader() has no dataset "
            "with a length. Pass n_train=<training samples per epoch>."
        )
    return len(dataset)
