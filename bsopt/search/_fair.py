"""Fair reporting for a training loop of your own: bsopt's sample grid without its trainer.

:class:`FairReporter` wraps the ``optuna.Trial`` of a hand-written objective. It holds the
grid of samples seen for a :class:`~bsopt.Budget` (the same points for every batch size),
cuts batches so that none crosses a grid point, reports evaluations at those points, stops
diverged runs, and stores the user attributes that ``bsopt report``, the verdict and the
dashboard read. :func:`retry_oom` restarts a trial with half the micro-batch after an
out-of-memory error, down to a floor, then marks it infeasible. :class:`LoopObjective` lets
``bsopt run`` and the workers run such an objective like a built-in one.

The training loop itself stays the user's: nothing here touches the model or the optimizer.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
import contextlib
from dataclasses import KW_ONLY, dataclass
import math
import time
from typing import Any, ClassVar, Literal, NoReturn, TypeVar
import weakref

import optuna
import torch

from bsopt.core._budget import Budget, Grid, GridCursor
from bsopt.core._stop import DivergenceCheck, StopReason
from bsopt.training._batch import Batch, batch_size_of, split_batch
from bsopt.training._memory import is_oom_error, peak_memory_mb, release_memory, reset_peak_memory

T = TypeVar("T")
Direction = Literal["maximize", "minimize"]

# Steps already reported per trial, shared by every reporter of the trial: a restart after an
# out-of-memory error replays the reports made before it, and Optuna keeps the first value of
# a step anyway (with a warning).
_REPORTED: weakref.WeakKeyDictionary[Any, set[int]] = weakref.WeakKeyDictionary()


_TRIAL_METHODS = ("report", "should_prune", "set_user_attr")


def _check_trial(trial: Any, who: str) -> None:
    if trial is None or not all(callable(getattr(trial, m, None)) for m in _TRIAL_METHODS):
        raise ValueError(
            f"{who} needs the optuna.Trial your objective receives, but got {trial!r}. Create "
            f"it inside objective(trial) and pass the trial: {who}(trial, ...). To run the same "
            "code outside a study, pass optuna.trial.FixedTrial(params)."
        )


def _positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an integer of at least 1, but got {value!r}.")
    return value


def store_user_attrs(trial: optuna.Trial, attrs: dict[str, object]) -> None:
    """Store each of ``attrs`` as its own user attribute of ``trial``.

    In one storage transaction where the storage offers it (the SQL storage that
    :func:`~bsopt.open_storage` opens has ``user_attrs_batch()``); one write per attribute
    otherwise. Either way the dashboard and ``trial.user_attrs`` show each on its own.
    """
    storage = getattr(trial, "storage", None)
    # Optuna wraps an RDB storage in a cache that passes attribute writes on to it.
    backend = getattr(storage, "_backend", storage)
    batch = getattr(backend, "user_attrs_batch", None)
    with batch() if callable(batch) else contextlib.nullcontext():
        for key, item in attrs.items():
            trial.set_user_attr(key, item)


def plan_batch(
    batch_size: int, *, world_size: int = 1, max_per_device: int | None = None
) -> tuple[int, int]:
    """``(per_device, accumulation)`` with ``per_device * accumulation * world_size ==
    batch_size``: the fewest accumulation steps whose per-device batch is at most
    ``max_per_device`` (default: no cap).

    This is how a framework's per-device batch size and gradient-accumulation setting are
    derived from bsopt's searched effective batch.

    Raises:
        ValueError: ``batch_size`` is not a multiple of ``world_size``.
    """
    _positive_int("batch_size", batch_size)
    _positive_int("world_size", world_size)
    if max_per_device is not None:
        _positive_int("micro_batch_size", max_per_device)
    if batch_size % world_size:
        raise ValueError(
            f"The effective batch_size={batch_size} must be a multiple of the number of "
            f"processes ({world_size}), so each gets the same share. Search powers of two, or "
            "a batch-size range whose values divide evenly."
        )
    per_process = batch_size // world_size
    cap = max_per_device or per_process
    for accumulation in range(1, per_process + 1):
        if per_process % accumulation == 0 and per_process // accumulation <= cap:
            return per_process // accumulation, accumulation
    raise AssertionError("unreachable: one sample per step always fits")  # pragma: no cover


class FrameworkReporter:
    """What the framework callbacks share: their checks, settings and rank 0's reporter.

    A framework's processes train at different speeds, so a time grid cannot be shared:
    the budget must be in epochs or samples. A framework's reporter documents the arguments,
    sets ``logged`` (where the monitored value comes from, for the error message) and adds
    its own set-up in :meth:`_set_up`.
    """

    logged: ClassVar[str] = "a logged metric"

    def __init__(
        self,
        trial: Any,
        budget: Budget,
        n_train: int,
        *,
        batch_size: int,
        monitor: str,
        lr: float | None = None,
        seed: int | None = None,
        divergence_factor: float = 10.0,
        metric: str | None = None,
    ) -> None:
        who = type(self).__name__
        _check_trial(trial, who)
        if not isinstance(budget, Budget) or budget.unit == "seconds":
            raise ValueError(
                f"{who} needs a budget in epochs or samples, e.g. bsopt.Budget(10, 'epochs'), "
                f"but got {budget!r}: training time differs between processes, so a time grid "
                "cannot be shared."
            )
        _positive_int("n_train", n_train)
        _positive_int("batch_size", batch_size)
        if not isinstance(monitor, str) or not monitor:
            raise ValueError(f"monitor must name {self.logged}; got {monitor!r}.")
        self.grid = budget.grid(n_train)
        self.trial = trial
        self.budget = budget
        self.n_train = n_train
        self.batch_size = batch_size
        self.monitor = monitor
        self.lr = lr
        self.seed = seed
        self.divergence_factor = divergence_factor
        self.metric = metric or monitor
        self.reporter: FairReporter | None = None  # rank 0's, once training starts
        self.cursor: GridCursor[object] = GridCursor(self.grid)
        self._due = False
        self._set_up()

    def _set_up(self) -> None:
        """What a framework's reporter adds to the common set-up."""

    @property
    def samples_seen(self) -> int:
        """Samples trained on so far, over all processes."""
        return self.cursor.samples_seen

    def _pass_points(self) -> bool:
        """Whether the samples seen reached the next grid point; if so, move past every
        point reached (the evaluation that follows goes to the last of them)."""
        due = self.cursor.reached()
        if due:
            self.cursor.advance(past=self.cursor.samples_seen)
        return due

    def _check_interval(self, evaluator: str) -> None:
        # A framework evaluates between optimizer updates, never inside one.
        if self.grid.points[0] < self.batch_size:
            raise ValueError(
                f"The budget evaluates every {self.grid.points[0]:,} samples, less than one "
                f"optimizer update of batch_size={self.batch_size}: {evaluator} cannot "
                "evaluate in between. Raise the budget, lower Budget(evals=...), or the "
                "largest batch size."
            )

    def _start_reporter(
        self,
        *,
        micro_batch_size: int | None,
        device: str | torch.device | None,
        world_size: int,
        accumulation_steps: int,
        divergence_factor: float = 10.0,
    ) -> FairReporter:
        self.reporter = FairReporter(
            self.trial,
            self.budget,
            self.n_train,
            batch_size=self.batch_size,
            lr=self.lr,
            micro_batch_size=micro_batch_size,
            seed=self.seed,
            device=device,
            metric=self.metric,
            divergence_factor=divergence_factor,
        )
        self.reporter.set_attrs(world_size=world_size, accumulation_steps=accumulation_steps)
        return self.reporter


class FairReporter:
    """Report a hand-written training loop to an Optuna trial on bsopt's samples-seen grid.

    Every trial of a study reports at the same grid points (samples seen, or training
    milliseconds for a time budget), whatever its batch size, so a pruner compares a batch-16
    and a batch-256 run after the same data. Use it like this::

        reporter = bsopt.FairReporter(trial, budget, n_train, batch_size=bs, lr=lr, seed=seed)
        for x, y in reporter.batches(loader):      # epochs until the budget ends, split at points
            loss = train_step(model, x, y)         # one optimizer update
            if reporter.step((x, y), loss):        # counts samples; True at a grid point
                reporter.report(evaluate(model))   # raises optuna.TrialPruned when pruned
        return reporter.finish()                   # stores the attributes, returns the value

    :meth:`batches` cuts a loader batch that would overshoot the next point, so evaluations
    happen after exactly the grid's samples. A loop that cannot cut batches (a framework's
    own loop) calls :meth:`step` with whole batches instead: the report goes to the grid
    point just passed, and the overshoot, less than one batch, is stored as
    ``grid_overshoot``.

    Args:
        trial: the ``optuna.Trial`` (or ``optuna.trial.FixedTrial``) of this run.
        budget: the study's :class:`~bsopt.Budget`; its grid is resolved for ``n_train``.
        n_train: the number of training samples (one epoch).
        batch_size: the effective batch: samples per optimizer update, over all processes.
        lr: the learning rate the run uses (stored as ``lr``; the analysis fits it against
            the batch size).
        micro_batch_size: the most samples pushed through the model at once when gradients
            are accumulated; default ``batch_size``.
        seed: the run's seed, stored as ``seed``.
        device: the training device, for ``device`` and ``peak_memory_mb``.
        metric: the name of the reported value, used in messages.
        divergence_factor: stop as diverged when the mean training loss of an evaluation
            interval exceeds this multiple of the first interval's (a NaN or infinite loss
            stops at once); above 1.
        amp: the mixed-precision mode, stored as ``amp``.
        defer_attrs: with ``report(..., raise_pruned=False)``, do not store the attributes
            when the run stops there; the caller ends it with :meth:`stop` or
            :meth:`finish`, which store them once (bsopt's own objective does this).

    Raises:
        ValueError: no trial, a budget with fewer samples than evaluations, or an argument
            outside its range.
    """

    def __init__(
        self,
        trial: optuna.Trial,
        budget: Budget,
        n_train: int,
        *,
        batch_size: int,
        lr: float | None = None,
        micro_batch_size: int | None = None,
        seed: int | None = None,
        device: str | torch.device | None = None,
        metric: str = "value",
        divergence_factor: float = 10.0,
        amp: str = "off",
        defer_attrs: bool = False,
    ) -> None:
        _check_trial(trial, type(self).__name__)
        self.defer_attrs = defer_attrs
        if not isinstance(budget, Budget):
            raise ValueError(
                f"budget must be a bsopt.Budget, e.g. bsopt.Budget(10, 'epochs'), but got "
                f"{budget!r}."
            )
        _positive_int("n_train", n_train)
        _positive_int("batch_size", batch_size)
        if micro_batch_size is not None:
            _positive_int("micro_batch_size", micro_batch_size)
        if lr is not None and not (isinstance(lr, (int, float)) and lr > 0 and math.isfinite(lr)):
            raise ValueError(f"lr must be a positive number, but got {lr!r}.")
        self.trial = trial
        self.budget = budget
        self.n_train = n_train
        self.grid: Grid = budget.grid(n_train)
        self.batch_size = batch_size
        self.micro_batch_size = min(micro_batch_size or batch_size, batch_size)
        self.lr = lr
        self.seed = seed
        self.device = torch.device(device) if device is not None else None
        self.metric = metric
        study = getattr(trial, "study", None)  # a FixedTrial has none
        if metric != "value" and not defer_attrs and study is not None:
            # An own loop's study then names its values as bsopt's own objective does.
            if len(study.directions) == 1:
                way = "maximize" if study.direction.name == "MAXIMIZE" else "minimize"
                record_metric(study, metric, way)
        self.amp = amp
        self.divergence = DivergenceCheck(divergence_factor)
        self.cursor: GridCursor[Batch] = GridCursor(self.grid)
        self.optimizer_steps = 0
        self.epochs_started = 0
        self.train_seconds = 0.0
        self.eval_seconds = 0.0
        self.grid_overshoot = 0
        self.history: list[tuple[int, float]] = []
        self.stop_reason: StopReason | None = None
        self.stop_detail: str | None = None
        self.extra_attrs: dict[str, object] = {}
        self._created = time.perf_counter()
        self._tick: float | None = None  # when the training clock last resumed
        self._due_at: float | None = None  # when a grid point was reached, awaiting report()
        self._stored = False
        if self.device is not None:
            reset_peak_memory(self.device)

    # -- where the run stands ---------------------------------------------------------------

    @property
    def samples_seen(self) -> int:
        """Samples trained on so far."""
        return self.cursor.samples_seen

    @property
    def timed(self) -> bool:
        """Whether the grid is in training milliseconds (a seconds budget)."""
        return self.cursor.timed

    @property
    def next_point(self) -> int | None:
        """The grid point to report next, ``None`` once every point is reported."""
        return self.cursor.next_point

    @property
    def done(self) -> bool:
        """Whether the run is over: every grid point reported, or stopped."""
        return self.stop_reason is not None or self.cursor.done

    @property
    def due(self) -> bool:
        """Whether a grid point was reached and waits for :meth:`report`."""
        return self._due_at is not None

    @property
    def room(self) -> int:
        """Samples until the next grid point: the most the next batch may hold.

        A time budget cannot be cut by samples: then it is ``sys.maxsize``.
        """
        return self.cursor.room

    def training_ms(self) -> float:
        """Training time so far in milliseconds, evaluation excluded."""
        running = time.perf_counter() - self._tick if self._tick is not None else 0.0
        return (self.train_seconds + running) * 1000

    def progress(self) -> float:
        """The fraction of the budget spent, in [0, 1] (for lr schedules)."""
        return min(self.cursor.position(self.training_ms()) / self.grid.total, 1.0)

    # -- the loop ---------------------------------------------------------------------------

    def start(self) -> None:
        """Start the training clock (:meth:`batches` and :meth:`step` start it if needed)."""
        if self._tick is None and self._due_at is None:
            self._tick = time.perf_counter()

    def batches(self, loader: Iterable[Batch]) -> Iterator[Batch]:
        """The batches of ``loader``, epoch after epoch, cut at grid points, until the end.

        ``loader`` is iterated once per epoch (a ``DataLoader`` reshuffles each time). A batch
        that would overshoot the next grid point is split there with
        :func:`~bsopt.training.split_batch`; its tail comes next. Batches are ``(inputs, targets)``
        of tensors, or tuples, lists or dicts of them. Call :meth:`step` after each batch and
        :meth:`report` whenever it returns ``True``; iteration ends when the budget is spent
        or the run stopped.
        """
        while not self.done:
            self.epochs_started += 1
            empty = True
            for batch in loader:
                empty = False
                self.cursor.leftover = batch
                while (tail := self.cursor.take_leftover()) is not None:
                    self._expect_caught_up("the next batch")
                    if self.done:
                        return
                    head, self.cursor.leftover = split_batch(tail, self.room)
                    self.start()
                    before = self.samples_seen
                    yield head
                    if self.samples_seen == before and not self.done:
                        raise RuntimeError(
                            "FairReporter.batches() yielded a batch but step() was not called "
                            "for it. Call reporter.step(batch, loss) after each training step."
                        )
                if self.done:
                    return
            if empty:
                raise ValueError(
                    "The loader given to FairReporter.batches() yielded no batch in an epoch. "
                    "Pass a loader over the training set (drop_last=True with fewer samples "
                    "than one batch yields nothing)."
                )

    def _expect_caught_up(self, what: str) -> None:
        if self.due:
            raise RuntimeError(
                f"A grid point ({self._due_key():,} {self._unit_name()}) was reached but not "
                f"reported before {what}. Call reporter.report(value) whenever "
                "reporter.step(...) returns True."
            )

    def _unit_name(self) -> str:
        return "training ms" if self.timed else "samples seen"

    def step(
        self,
        batch: Batch | int,
        loss: float | torch.Tensor | None = None,
        *,
        optimizer_step: bool = True,
        raise_pruned: bool = True,
    ) -> bool:
        """Count one training step; ``True`` when a grid point is reached (call :meth:`report`).

        Args:
            batch: the batch just trained on, or its number of samples. Samples are counted
                along the batch dimension of every tensor.
            loss: the step's training loss (a float or a scalar tensor), for the divergence
                check; a NaN or infinite loss stops the run at once (``optuna.TrialPruned``).
            optimizer_step: ``False`` for a micro-batch whose gradients are accumulated
                without an update yet.
            raise_pruned: with ``False``, a diverged run ends (its attributes stored) and
                ``True`` is returned instead of raising: check ``reporter.done``.

        Raises:
            optuna.TrialPruned: the loss is not finite (stop reason ``diverged``).
            RuntimeError: a grid point reached earlier was not reported yet, or the run is
                already over.
        """
        self._expect_caught_up("training further")
        if self.done:
            raise RuntimeError(
                "FairReporter.step() was called after the run ended "
                f"({self.stop_reason or 'budget spent'}). Stop the loop when reporter.done "
                "is True, or iterate over reporter.batches(loader)."
            )
        if self._tick is None:
            self._tick = time.perf_counter()
        n = batch if isinstance(batch, int) and not isinstance(batch, bool) else None
        if n is None:
            n = batch_size_of(batch)
        if n < 1:
            raise ValueError(f"A training step holds at least 1 sample, but got {n}.")
        self.cursor.samples_seen += n
        self.optimizer_steps += bool(optimizer_step)
        if loss is not None:
            if isinstance(loss, torch.Tensor):
                loss = loss.detach()
                if loss.device.type == "cpu":
                    loss = loss.item()  # no device sync on the CPU: check every step
                else:
                    loss = loss.float()
            if isinstance(loss, (float, int)):
                reason = DivergenceCheck.non_finite(float(loss))
                if reason is not None:
                    return self._halt(StopReason.DIVERGED, reason, raise_pruned)
            self.cursor.add_loss(loss)
        reached = self.cursor.reached(self.training_ms())
        if reached:
            self._pause_clock()
            # A diverged run stops before its evaluation is computed.
            stop = self._interval_check()
            if stop is not None:
                return self._halt(*stop, raise_pruned)
            self._due_at = time.perf_counter()
        return reached

    def _halt(self, reason: StopReason, detail: str, raise_pruned: bool) -> bool:
        if raise_pruned:
            self.stop(reason, detail)
        if self.defer_attrs:
            # The caller stores everything at once with stop() or finish().
            self._pause_clock()
            self.stop_reason, self.stop_detail = reason, detail
            return True
        self._end(reason, detail)
        return True

    def _pause_clock(self) -> None:
        if self._tick is not None:
            if self.device is not None and self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            self.train_seconds += time.perf_counter() - self._tick
            self._tick = None

    def _due_key(self) -> int:
        """The grid point a report now goes to: the last one passed."""
        return self.cursor.last_passed(self.training_ms())

    def report(
        self,
        value: float,
        *,
        samples_seen: int | None = None,
        train_seconds: float | None = None,
        raise_pruned: bool = True,
    ) -> bool:
        """Report an evaluation at the grid point just reached; prune if the pruner says so.

        The step key is the grid point (samples seen, or training ms for a time budget),
        identical for every trial. When a step passed several points at once, the report
        goes to the last of them.

        Args:
            value: the validation metric.
            samples_seen: the samples seen so far, for a loop that counts them itself (then
                :meth:`step` need not be called); must be at or past the next grid point.
            train_seconds: the training time so far, for a loop that times itself (then the
                reporter's own clock is replaced); decides the point of a time budget.
            raise_pruned: raise ``optuna.TrialPruned`` when the run stops (default). With
                ``False`` it returns ``True`` instead and the caller ends the run (its
                attributes are stored already).

        Returns:
            ``False`` to go on; ``True`` when the run stopped (only with ``raise_pruned=False``).

        Raises:
            optuna.TrialPruned: the pruner stopped the trial (stop reason ``pruned``), or the
                training loss diverged (``diverged``); the attributes are stored first.
            ValueError: no grid point was reached yet.
        """
        if self.done:
            raise RuntimeError(
                "FairReporter.report() was called after the run ended "
                f"({self.stop_reason or 'every grid point reported'})."
            )
        _check_fraction(self.metric, value)
        self._catch_up(samples_seen, train_seconds)
        if not self.due:
            raise ValueError(
                f"report() goes at grid points, but the next one is at "
                f"{self.cursor.next_point:,} {self._unit_name()} and the run is at "
                f"{self.cursor.position(self.training_ms()):,.0f}. Call it when "
                "reporter.step(...) returns True."
            )
        key = self._due_key()
        if not self.timed:
            self.grid_overshoot = max(self.grid_overshoot, self.samples_seen - key)
        self.cursor.advance(past=key)
        assert self._due_at is not None
        self.eval_seconds += time.perf_counter() - self._due_at
        self._due_at = None
        value = float(value)
        self.history.append((key, value))
        stop = self._interval_check()
        if stop is None:
            stop = self._report_to_trial(key, value)
        if stop is not None:
            return self._halt(*stop, raise_pruned)
        if not self.done:
            self._tick = time.perf_counter()
        return False

    def _catch_up(self, samples_seen: int | None, train_seconds: float | None) -> None:
        """Take the samples seen and the training time of a loop that counts them itself."""
        if train_seconds is not None:
            if not (isinstance(train_seconds, (int, float)) and train_seconds >= 0):
                raise ValueError(f"train_seconds must be >= 0, but got {train_seconds!r}.")
            self._tick = None
            self.train_seconds = float(train_seconds)
            if self.timed and self.cursor.reached(self.training_ms()):
                self._due_at = self._due_at or time.perf_counter()
        if samples_seen is not None:
            if isinstance(samples_seen, bool) or not isinstance(samples_seen, int):
                raise ValueError(f"samples_seen must be an integer, but got {samples_seen!r}.")
            if samples_seen < self.samples_seen:
                raise ValueError(
                    f"samples_seen only grows: it is {self.samples_seen:,}, but got "
                    f"{samples_seen:,}."
                )
            self.cursor.samples_seen = samples_seen
            if not self.timed and self.cursor.reached():
                self._pause_clock()
                self._due_at = self._due_at or time.perf_counter()

    def _interval_check(self) -> tuple[StopReason, str] | None:
        reason = self.cursor.close_interval(self.divergence)
        return (StopReason.DIVERGED, reason) if reason is not None else None

    def _report_to_trial(self, key: int, value: float) -> tuple[StopReason, str] | None:
        study = getattr(self.trial, "study", None)
        if study is not None and len(study.directions) > 1:
            return None  # Optuna neither takes reports nor prunes for several objectives
        reported = _REPORTED.setdefault(self.trial, set())
        if key not in reported:
            reported.add(key)
            self.trial.report(value, key)
        if self.trial.should_prune():
            return (
                StopReason.PRUNED,
                f"pruned at {key:,} {self._unit_name()} with {self.metric}={value:.4g}",
            )
        return None

    # -- the end of the run -----------------------------------------------------------------

    @property
    def value(self) -> float:
        """The last reported value (NaN before the first report)."""
        return self.history[-1][1] if self.history else math.nan

    def set_attrs(self, **attrs: object) -> None:
        """More user attributes to store with the standard ones (e.g. ``optimizer="sgd"``)."""
        self.extra_attrs.update(attrs)
        if self._stored:
            for key, item in attrs.items():
                self.trial.set_user_attr(key, item)

    def attrs(self) -> dict[str, object]:
        """The standard user attributes of the run so far, by name.

        The same names as bsopt's own objective: ``effective_batch_size``,
        ``micro_batch_size``, ``accumulation_steps``, ``lr``, ``samples_seen``,
        ``optimizer_steps``, ``epochs``, ``samples_per_second``, ``train_seconds``,
        ``eval_seconds``, ``wall_seconds``, ``peak_memory_mb``, ``device``, ``amp``, ``seed``,
        ``stop_reason`` and ``stop_detail`` (when there are details), ``grid_overshoot``
        (samples past a grid point at its report; 0 when batches were cut there).
        """
        train_seconds = self.train_seconds
        if self._tick is not None:
            train_seconds += time.perf_counter() - self._tick
        device = self.device or torch.device("cpu")
        attrs: dict[str, object] = {
            "effective_batch_size": self.batch_size,
            "micro_batch_size": self.micro_batch_size,
            "accumulation_steps": math.ceil(self.batch_size / self.micro_batch_size),
            "samples_seen": self.samples_seen,
            "optimizer_steps": self.optimizer_steps,
            "epochs": round(self.samples_seen / self.n_train, 4),
            "samples_per_second": round(self.samples_seen / train_seconds, 1)
            if train_seconds > 0
            else 0.0,
            "train_seconds": round(train_seconds, 4),
            "eval_seconds": round(self.eval_seconds, 4),
            "wall_seconds": round(time.perf_counter() - self._created, 4),
            "peak_memory_mb": round(peak_memory_mb(device), 1),
            "device": str(device),
            "amp": self.amp,
            "grid_overshoot": self.grid_overshoot,
            "stop_reason": (self.stop_reason or StopReason.COMPLETED).value,
        }
        if self.lr is not None:
            attrs["lr"] = self.lr
        if self.seed is not None:
            attrs["seed"] = self.seed
        if self.stop_detail:
            attrs["stop_detail"] = self.stop_detail
        return attrs | self.extra_attrs

    def _end(self, reason: StopReason, detail: str | None) -> None:
        self._pause_clock()
        self._due_at = None
        self.stop_reason = reason
        self.stop_detail = detail
        if not self._stored:
            store_user_attrs(self.trial, self.attrs())
            self._stored = True

    def stop(self, reason: StopReason | str, detail: str | None = None) -> None:
        """End the run early: store the attributes and raise ``optuna.TrialPruned``.

        Raises:
            optuna.TrialPruned: always, with ``detail`` (or the reason) as its message.
        """
        reason = StopReason(reason)
        self._end(reason, detail)
        raise optuna.TrialPruned(detail or reason.value)

    def finish(
        self,
        value: float | None = None,
        *,
        reason: StopReason | str = StopReason.COMPLETED,
        detail: str | None = None,
    ) -> float:
        """End the run: store the attributes and return the trial's value.

        Args:
            value: what the objective returns; default the last reported value.
            reason: why the run ended; ``"completed"`` by default, ``"reached target"`` for a
                run that stopped at a target.
            detail: stored as ``stop_detail``.

        Raises:
            ValueError: no value given and none reported.
        """
        final = self.value if value is None else float(value)
        if value is None and not self.history:
            raise ValueError(
                "finish() has no value: nothing was reported. Pass the final metric, "
                "reporter.finish(value), or call reporter.report(value) at the grid points."
            )
        self._end(StopReason(reason), detail)
        return final


def retry_oom(
    trial: optuna.Trial,
    run: Callable[[int], T],
    *,
    batch_size: int,
    micro_batch_size: int | None = None,
    min_micro_batch_size: int = 8,
    device: str | torch.device | None = None,
    seed: int | None = None,
) -> T:
    """Run ``run(micro_batch_size)``; after an out-of-memory error, again with half of it.

    The effective batch (the searched parameter) never changes: only the micro-batch does,
    and ``run`` reaches the batch by gradient accumulation. ``run`` should restart the trial
    from the same seed, so a retry repeats the same run; reports it repeats are not sent
    twice. When even ``min_micro_batch_size`` runs out of memory, the trial is pruned as
    infeasible: user attribute ``stop_reason="oom"`` and the constraint ``"oom"`` set to 1,
    so a constraint-aware sampler learns to avoid the region, and the study goes on. Errors
    that are not out of memory (:func:`~bsopt.training.is_oom_error`) propagate unchanged.

    Args:
        trial: the trial being run.
        run: trains with the micro-batch size it is given and returns the objective value.
        batch_size: the effective batch size of the trial.
        micro_batch_size: the first micro-batch to try; default ``batch_size``.
        min_micro_batch_size: the floor of the halving.
        device: where memory is released between attempts.
        seed: stored as ``seed`` when the trial is infeasible.

    Returns:
        what ``run`` returned. The user attribute ``oom_retries`` records the restarts.

    Raises:
        optuna.TrialPruned: even the floor ran out of memory.
    """
    _check_trial(trial, "retry_oom")
    _positive_int("batch_size", batch_size)
    _positive_int("min_micro_batch_size", min_micro_batch_size)
    if micro_batch_size is not None:
        _positive_int("micro_batch_size", micro_batch_size)
    resolved = torch.device(device) if device is not None else None
    micro = min(micro_batch_size or batch_size, batch_size)
    retries = 0
    while True:
        try:
            outcome = _run_once(run, micro)
        except Exception:
            trial.set_user_attr("oom_retries", retries)
            raise
        if not isinstance(outcome, _OutOfMemory):
            trial.set_user_attr("oom_retries", retries)
            return outcome
        # Outside the except block, so the failed step's memory can really be freed.
        release_memory(resolved)
        smaller = max(micro // 2, min_micro_batch_size)
        if smaller >= micro:
            detail = (
                f"out of memory at batch_size={batch_size} even with micro-batches of {micro} "
                f"(min_micro_batch_size={min_micro_batch_size}): {outcome.error}"
            )
            _mark_infeasible(
                trial,
                detail,
                {"effective_batch_size": batch_size, "micro_batch_size": micro}
                | {"oom_retries": retries, "oom_error": outcome.error},
                seed,
            )
        retries += 1
        micro = smaller


@dataclass(frozen=True)
class _OutOfMemory:
    error: str  # the error's first line: the traceback would pin the failed step's tensors


def _run_once(run: Callable[[int], T], micro: int) -> T | _OutOfMemory:
    """``run(micro)``, or what remains of an out-of-memory error; any other error propagates."""
    try:
        return run(micro)
    except Exception as caught:
        if not is_oom_error(caught):
            raise
        return _OutOfMemory(f"{type(caught).__name__}: {caught}".splitlines()[0][:300])


def _mark_infeasible(
    trial: optuna.Trial, detail: str, attrs: dict[str, object], seed: int | None
) -> NoReturn:
    """Store why the trial cannot run, mark it infeasible and prune it."""
    attrs |= {"stop_reason": StopReason.OOM.value, "stop_detail": detail}
    if seed is not None:
        attrs["seed"] = seed
    for key, value in attrs.items():
        trial.set_user_attr(key, value)
    # Infeasible (constraint > 0): TPE ranks it after every feasible trial and learns to avoid
    # the region, which a FAILED trial would not teach it.
    trial.set_constraint("oom", 1.0)
    raise optuna.TrialPruned(detail)


class _TrainSize:
    """What the runner reads of a data set: the number of training samples."""

    def __init__(self, n_train: int) -> None:
        self.n_train = n_train

    def __repr__(self) -> str:
        return f"<{self.n_train:,} training samples>"


@dataclass(eq=False)
class LoopObjective:
    """A hand-written objective, described so ``bsopt run`` and workers can run it.

    A study script returns one from ``build_objective(*, seed)``: the runner reads the
    budget and training-set size (to set the pruner on the same grid as the reports), the
    metric and direction, and prints :meth:`describe`. Calling it calls ``fn(trial)``.

    Args:
        fn: the objective, ``fn(trial) -> float``, reporting through a :class:`FairReporter`
            built with the same ``budget`` and ``n_train``.
        budget: the budget every trial trains for.
        n_train: the number of training samples.
        metric: the name of the returned value (e.g. ``"accuracy"``); stored on the study.
        direction: ``"maximize"`` or ``"minimize"``.
        what: one line on the search space and model for :meth:`describe`.
    """

    fn: Callable[[optuna.Trial], float]
    _: KW_ONLY
    budget: Budget
    n_train: int
    metric: str = "accuracy"
    direction: Direction = "maximize"
    what: str = ""
    goal: str = "metric"

    def __post_init__(self) -> None:
        if not callable(self.fn):
            raise ValueError(f"fn must be callable as fn(trial) -> float, but got {self.fn!r}.")
        if self.direction not in ("maximize", "minimize"):
            raise ValueError(
                f"direction must be 'maximize' or 'minimize', but got {self.direction!r}."
            )
        _positive_int("n_train", self.n_train)
        self.budget.grid(self.n_train)  # a budget too small for its evaluations fails here

    @property
    def directions(self) -> list[Direction]:
        return [self.direction]

    @property
    def data(self) -> _TrainSize:
        return _TrainSize(self.n_train)

    def describe(self) -> str:
        head = f"validation {self.metric} ({self.direction})"
        middle = f"; {self.what}" if self.what else ""
        return f"{head}{middle}; {self.budget.describe(self.n_train)}"

    def __call__(self, trial: optuna.Trial) -> float:
        record_metric(trial.study, self.metric, self.direction, goal=self.goal)
        return self.fn(trial)


def _check_fraction(metric: str, value: float) -> None:
    """A value of a fraction metric (accuracy, F1, ...) outside [0, 1] is an error: its rows
    were counted wrong (several rows per item, a sum divided by the wrong total)."""
    from bsopt.training._metrics import METRICS, check_metric_value

    known = METRICS.get(metric)
    if known is not None:
        check_metric_value(known, value)


#: The metrics recorded on each study object already (one storage read per study object).
_RECORDED: weakref.WeakKeyDictionary[optuna.Study, set[str]] = weakref.WeakKeyDictionary()


def record_metric(
    study: optuna.Study, metric: str, direction: str, *, goal: str = "metric"
) -> None:
    """Store what a study's values are, once: the ``metric`` and its direction and unit as
    study attributes (the analysis reads them) and ``"validation <metric>"`` as the metric
    name optuna-dashboard shows instead of "Objective 0". A name already stored is kept."""
    done = _RECORDED.setdefault(study, set())
    if metric in done:
        return
    from bsopt.training._metrics import METRICS

    known = METRICS.get(metric)
    wanted = {
        "metric": metric,
        "metric_direction": direction,
        "metric_unit": known.unit if known is not None else "value",
        "goal": goal,
    }
    stored = study.user_attrs
    for name, value in wanted.items():
        if name not in stored:
            study.set_user_attr(name, value)
    if study.metric_names is None and len(study.directions) == 1:
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names([f"validation {metric}"])
    done.add(metric)
