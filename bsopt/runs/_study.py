"""Creating, resuming and summarising studies in persistent storage.

Besides Optuna's own create/optimize, this module holds what makes a stop-and-resume safe:
a sampler seed that moves on with the study (a resumed seeded study continues its search
instead of replaying it), the retry of a trial cut short by Ctrl-C, the search space kept
with the study (a resume with another space is refused), and the clean-up of trials left
RUNNING by a dead worker once the study has its total.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
import contextlib
import dataclasses
import datetime
import json
import logging
import os
import signal
import sys
import threading
import time
from types import FrameType
from typing import Any, Literal

import optuna
from optuna.trial import FrozenTrial, TrialState

from bsopt.core._attrs import CONFIRM_ATTR
from bsopt.core._space import batch_size_from_params, shown_params
from bsopt.search._pruners import PercentilePruner, default_pruner
from bsopt.store import (
    STORAGE_ENV,
    StorageError,
    mask_url,
    open_storage,
    resolve_storage_url,
    storage_error,
)

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
Direction = Literal["maximize", "minimize"]
#: Optuna's RDB schema holds study names of up to 512 characters (PostgreSQL and MySQL
#: refuse longer ones; SQLite would store them, so every storage gets the same rule).
MAX_STUDY_NAME = 512
#: Study user attributes that record what the study is, compared on every resume: what it
#: searches, and the fingerprint of what it trains on (see :func:`describe_definition`).
DEFINITION_KEYS = ("search_space", "budget", "definition")
#: How to go on with a study despite another definition.
OVERRIDE = "--allow-definition-change (allow_space_change=True in Python)"
INTERRUPTED = "interrupted"  # the value of bsopt.core._stop.StopReason.INTERRUPTED
LOST_REASON = "lost: its worker stopped sending heartbeats; the study already had its total"


def check_trials(trials: object) -> int:
    """``trials`` if it can be the total a study runs to; else a ValueError saying why."""
    if isinstance(trials, bool) or not isinstance(trials, int) or trials < 1:
        raise ValueError(f"trials (the total to reach) must be an integer >= 1, got {trials!r}.")
    return trials


def check_study_name(name: object) -> str:
    """``name`` if it can name a study in every storage; else a ValueError saying why."""
    if not isinstance(name, str) or not name.strip():
        raise ValueError(
            f"The study name must be a non-empty string, but got {name!r}. Pass --study NAME "
            "(or leave it out to use the study's own name)."
        )
    if len(name) > MAX_STUDY_NAME:
        raise ValueError(
            f"The study name has {len(name)} characters, more than the {MAX_STUDY_NAME} "
            f"that Optuna's storages hold (it starts {name[:40]!r}). Use a shorter name."
        )
    if "\x00" in name:
        raise ValueError(f"The study name {name!r} holds a NUL character; remove it.")
    return name


def create_study(
    name: str,
    *,
    storage: str | optuna.storages.BaseStorage | None = None,
    direction: Direction = "maximize",
    directions: Sequence[Direction] | None = None,
    sampler: optuna.samplers.BaseSampler | None = None,
    pruner: optuna.pruners.BasePruner | None = None,
    seed: int | None = 0,
    worker: int = 0,
    parallel: int = 1,
) -> optuna.Study:
    """Create the study ``name``, or load it if it exists (so a rerun resumes it).

    Args:
        name: the study name in the storage (at most 512 characters).
        storage: a URL or an Optuna storage; ``None`` resolves ``$BSOPT_STORAGE`` then
            ``sqlite:///storage/bsopt.db``. URLs are opened with heartbeats and retries.
        direction: ``"maximize"`` or ``"minimize"``; pass ``objective.direction``.
        directions: for a multi-objective study, one direction per value (pass
            ``objective.directions``); replaces ``direction``.
        sampler: default: TPE. With a ``seed``, an
            :class:`~bsopt.search._samplers.OrderedSampler` of TPE: trial ``n`` is sampled
            with a seed from (``seed``, ``n``) and sees only the trials numbered up to
            ``n - parallel``, once they have finished, so a rerun proposes the same
            parameters for every trial number however the workers' timing falls (a resumed
            study continues with new numbers, hence new draws). Without one, a TPE sampler
            seeded at random.
        pruner: default :func:`~bsopt.search._pruners.default_pruner` (the median pruner
            without warm-up); :func:`~bsopt.make_pruner` gives one in the budget's units.
        seed: the study's seed; ``None`` draws one.
        worker: this process's index among the workers started together (``--jobs``).
        parallel: how many workers were started together (``--jobs``); with a ``seed``,
            trial ``n`` waits for trials up to ``n - parallel`` to finish.

    Raises:
        ValueError: the stored study optimises in the other direction, or a bad name.
    """
    check_study_name(name)
    wanted = list(directions) if directions is not None else [direction]
    for d in wanted:
        if d not in ("maximize", "minimize"):
            raise ValueError(f"direction must be 'maximize' or 'minimize', but got {d!r}.")
    if storage is None or isinstance(storage, str):
        storage = open_storage(storage)
    try:
        study = optuna.create_study(
            storage=storage,
            study_name=name,
            directions=wanted,
            sampler=sampler or _default_sampler(seed, parallel),
            pruner=pruner or default_pruner(),
            load_if_exists=True,
        )
    except Exception as e:
        url = getattr(getattr(storage, "_backend", storage), "url", None)
        error = storage_error(e, url if isinstance(url, str) else None)
        if error is None:
            raise
        raise error from e
    stored = [d.name.lower() for d in study.directions]
    if stored != wanted:
        asked = wanted[0] if len(wanted) == 1 else wanted
        raise ValueError(
            f"The study {name!r} already exists in this storage and optimises "
            f"{' and '.join(stored)}, but direction={asked!r} was asked for. Its trials "
            "are kept as they are: use another study name, or the same goal as before."
        )
    if seed is not None and isinstance(study.pruner, PercentilePruner):
        # Seeded: the pruner judges trial n by trials up to n - parallel only, as the
        # sampler does, so no worker's timing changes a decision.
        study.pruner.order_by_number(parallel)
    return study


def _default_sampler(seed: int | None, parallel: int) -> optuna.samplers.BaseSampler:
    if seed is None:
        return optuna.samplers.TPESampler()
    from bsopt.search._samplers import OrderedSampler

    return OrderedSampler(_tpe, seed, lag=parallel)


def _tpe(seed: int) -> optuna.samplers.BaseSampler:
    # A module-level function: the sampler travels to spawned workers with the study.
    return optuna.samplers.TPESampler(seed=seed)


def count_trials(study: optuna.Study) -> Counter[str]:
    """Trials by state name (``"COMPLETE"``, ``"PRUNED"``, ``"FAIL"``, ...)."""
    return Counter(t.state.name for t in study.get_trials(deepcopy=False))


# The user attribute of a `bsopt confirm` rerun: it repeats a trial, so it does not count
# towards the search's total.


def search_trials(trials: Sequence[FrozenTrial]) -> list[FrozenTrial]:
    """The trials of the search itself: without ``bsopt confirm``'s reruns."""
    return [t for t in trials if CONFIRM_ATTR not in t.user_attrs]


def n_finished(study: optuna.Study) -> int:
    """Finished (complete or pruned) trials of the search, the count ``trials=`` reaches."""
    return len(search_trials(study.get_trials(deepcopy=False, states=FINISHED)))


# --- what the study is: kept with it, compared on resume -----------------------------------


def describe_definition(objective: object, *, name: str | None = None) -> dict[str, Any] | None:
    """What ``objective`` searches and trains on, as stored with a study (``None`` for an
    objective without ``space`` and ``budget``).

    ``search_space`` and ``budget`` are the JSON form of ``objective.space`` and
    ``objective.budget``; ``definition`` is ``objective.fingerprint()`` (data, model, metric
    and seed, see :meth:`~bsopt.Objective.fingerprint`) with ``study``, the built-in study's
    name or the study script's file name, where ``name`` gives it.
    """
    space = getattr(objective, "space", None)
    budget = getattr(objective, "budget", None)
    if not (dataclasses.is_dataclass(space) and dataclasses.is_dataclass(budget)):
        return None
    if isinstance(space, type) or isinstance(budget, type):
        return None
    described: dict[str, Any] = {
        "search_space": dataclasses.asdict(space),
        "budget": dataclasses.asdict(budget),
    }
    fingerprint = getattr(objective, "fingerprint", None)
    if callable(fingerprint):
        described["definition"] = ({"study": name} if name else {}) | dict(fingerprint())
    return dict(json.loads(json.dumps(described, default=repr)))


#: How a difference in the stored ``definition`` reads, e.g. "data: 1437 train rows -> 800".
_SAID = {
    "definition.study": "study definition: {old} -> {new}",
    "definition.data.name": "data: {old} -> {new}",
    "definition.data.train_rows": "data: {old} train rows -> {new}",
    "definition.data.val_rows": "data: {old} validation rows -> {new}",
    "definition.data.classes": "data: {old} classes -> {new}",
    "definition.data.sample": "data: other rows (sample hash {old} -> {new})",
    "definition.model.class": "model: {old} -> {new}",
    "definition.model.parameters": "model: {old} parameters -> {new}",
    "definition.model.shapes": "model: other parameter shapes (hash {old} -> {new})",
    "definition.metric": "metric: {old} -> {new}",
    "definition.seed": "seed (data split and training): {old} -> {new}",
}


def _differences(old: Any, new: Any, path: str = "") -> list[str]:
    """One line per difference between a stored definition and a new one.

    In the search space and budget a key on one side only is a difference too; in the
    fingerprint (``definition``) only keys on both sides are compared, since a key is left
    out where it cannot be known (a study script's name outside ``bsopt run``).
    """
    if isinstance(old, dict) and isinstance(new, dict):
        common = path.startswith("definition")
        found: list[str] = []
        # The fingerprint in its stored order (the study, data, model, ...), the rest sorted.
        keys = [*old, *(k for k in new if k not in old)] if common else sorted({*old, *new})
        for key in keys:
            where = f"{path}.{key}" if path else str(key)
            shown = where.removeprefix("search_space.")
            if key in old and key in new:
                found.extend(_differences(old[key], new[key], where))
            elif common:
                continue
            elif key not in old:
                found.append(f"{shown} added ({new[key]!r})")
            else:
                found.append(f"{shown} removed (was {old[key]!r})")
        return found
    if old == new:
        return []
    if path in _SAID:
        return [_SAID[path].format(old=old, new=new)]
    return [f"{path.removeprefix('search_space.')} {old!r} -> {new!r}"]


def definition_differences(stored: dict[str, Any], described: dict[str, Any]) -> list[str]:
    """The differences of what is stored on both sides: search space, budget, fingerprint."""
    found = [
        line
        for key in DEFINITION_KEYS
        if key in stored and key in described
        for line in _differences(stored[key], described[key], key)
    ]
    if any(" parameters -> " in line for line in found):
        # Other shapes go without saying when the parameter count differs.
        found = [line for line in found if not line.startswith("model: other parameter")]
    return found


def stored_definition(study: optuna.Study) -> dict[str, Any]:
    """The definition kept with ``study``: the keys of :data:`DEFINITION_KEYS` it holds."""
    attrs = study.user_attrs
    return {k: attrs[k] for k in DEFINITION_KEYS if k in attrs}


def _listed(differences: Sequence[str], most: int = 12) -> str:
    lines = [f"  {d}" for d in differences[:most]]
    if len(differences) > most:
        lines.append(f"  ... and {len(differences) - most} more")
    return "\n".join(lines)


def definition_error(
    study: optuna.Study, differences: Sequence[str], *, fix: str | None = None
) -> ValueError:
    """The refusal of another definition: one line per difference, then what to do."""
    fingerprint = tuple(said.split("{")[0] for said in _SAID.values())
    in_space = not any(d.startswith(fingerprint) for d in differences)
    what = "search space or budget" if in_space else "definition"
    return ValueError(
        f"The study {study.study_name!r} was created with another {what} (stored -> now); "
        f"its trials would not be comparable with new ones, and nothing was trained:\n"
        f"{_listed(differences)}\n"
        + (fix or f"Use another --study name, or pass {OVERRIDE} to continue it with the "
           "new definition.")
    )  # fmt: skip


def check_definition(
    study: optuna.Study,
    objective: object,
    *,
    name: str | None = None,
    allow_change: bool = False,
    echo: Callable[[str], None] | None = None,
) -> None:
    """Keep the objective's definition with ``study``; refuse another on resume.

    The first run stores it (:func:`describe_definition`: the search space, the budget and
    the fingerprint of the study definition ``name``, the data, the model, the metric and
    the seed) as the study user attributes ``search_space``, ``budget`` and ``definition``.
    A later run with a different one would mix incomparable trials in one study (the sampler,
    the pruner, ``--trials`` and the analysis would count both), so it is refused with one
    line per difference, unless ``allow_change`` (``--allow-definition-change``), which
    stores the new definition. A study stored before bsopt kept the fingerprint gets it
    now, and ``echo`` says so. A study holding finished trials that bsopt did not make (no
    stored definition, no ``stop_reason`` on its trials: plain Optuna) is refused too, unless
    ``allow_change`` adopts them.

    Raises:
        ValueError: the stored definition differs, or the study holds trials bsopt did not
            make, and ``allow_change`` is false.
    """
    # Read the trials before the attributes: a study whose first trial finished before this
    # read had its definition stored before that trial started.
    foreign = _foreign_trials(study)
    described = describe_definition(objective, name=name)
    if described is None:
        return
    stored = stored_definition(study)
    if not stored and foreign:
        if not allow_change:
            raise _foreign_error(study, foreign)
        if echo is not None:
            echo(f"bsopt: adopted the {foreign} finished trials of {study.study_name!r} that "
                 "bsopt did not make into this definition, on request.")  # fmt: skip
    differences = definition_differences(stored, described)
    if differences and not allow_change:
        raise definition_error(study, differences)
    if differences and echo is not None:
        echo("bsopt: definition changed on request: " + "; ".join(differences) + ".")
    if stored and "definition" not in stored and "definition" in described and echo is not None:
        echo(
            f"bsopt: the study {study.study_name!r} was stored before bsopt kept a study's data, "
            "model, metric and seed; they are stored with it now, and later runs are checked "
            "against them."
        )
    _store_definition(study, stored, described)


def _foreign_trials(study: optuna.Study) -> int:
    """Finished search trials without bsopt's ``stop_reason``: trials bsopt did not make."""
    trials = search_trials(study.get_trials(deepcopy=False, states=FINISHED))
    return sum("stop_reason" not in t.user_attrs for t in trials)


def _foreign_error(study: optuna.Study, foreign: int) -> ValueError:
    return ValueError(
        f"The study {study.study_name!r} holds {foreign} finished trials that bsopt did not "
        "make: no bsopt definition is stored with it, and its trials lack bsopt's attributes "
        "(stop_reason). They would count toward --trials and mix with this experiment, so "
        f"nothing was trained. Use a new --study name, or pass {OVERRIDE} to adopt its trials "
        "into this definition."
    )


def _store_definition(
    study: optuna.Study, stored: dict[str, Any], described: dict[str, Any]
) -> None:
    """Write what ``described`` adds to or changes in ``stored``, and nothing else."""
    wanted = dict(described)
    if "definition" in stored and "definition" in described:
        # Keys a caller cannot know (the study's name, to a plain optimize()) are kept.
        wanted["definition"] = stored["definition"] | described["definition"]
    # The fingerprint first: a worker reading meanwhile never takes this study for one
    # stored before bsopt kept it.
    order = ("definition", *(k for k in wanted if k != "definition"))
    changed = {k: wanted[k] for k in order if k in wanted and stored.get(k) != wanted[k]}
    try:
        for key, value in changed.items():
            study.set_user_attr(key, value)
    except Exception:
        # Workers started together all find no definition and store it at once; on a
        # database server all but one insert hits the unique key. The same definition
        # stored by another worker is what was wanted.
        attrs = study.user_attrs
        if any(attrs.get(k) != v for k, v in changed.items()):
            raise


# --- stop signals: SIGINT, SIGTERM and SIGHUP stop a run as Ctrl-C does ---------------------

#: Ctrl-C; kill, timeout, systemd, Slurm and Kubernetes; a closed terminal.
STOP_SIGNALS = tuple(
    getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name)
)


class Interrupted(KeyboardInterrupt):
    """A stop signal arrived; the run stops as after Ctrl-C. ``signum`` says which."""

    def __init__(self, signum: int = signal.SIGINT) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = int(signum)


def signal_of(interrupt: BaseException) -> int:
    """The signal behind ``interrupt``: its ``signum``, else SIGINT (a plain Ctrl-C)."""
    return int(getattr(interrupt, "signum", signal.SIGINT))


class _StopSignals:
    """The process's stop-signal handler and its state (Python runs it in the main thread).

    A stop signal raises :class:`Interrupted` at once, unless ``deferred`` (Optuna creating
    or recording a trial): then it is held and raised once the trial is stored, so a
    finished result is never lost. After the first, signals are ignored: a second Ctrl-C
    must not cut short the marking of the running trial.
    """

    def __init__(self) -> None:
        self.depth = 0  # nested stop_signals()
        self.previous: dict[int, Any] = {}
        self.reset()

    def reset(self) -> None:
        self.deferred = False
        self.pending: int | None = None
        self.raised = False

    def active(self) -> bool:
        return self.depth > 0 and threading.current_thread() is threading.main_thread()

    def handle(self, signum: int, frame: FrameType | None) -> None:
        if self.raised:
            return
        if self.deferred:
            self.pending = self.pending or signum
            return
        self.raised = True
        raise Interrupted(signum)

    def raise_pending(self) -> None:
        if self.pending is not None and not self.raised:
            signum, self.pending = self.pending, None
            self.raised = True
            raise Interrupted(signum)

    def hold(self, interrupt: BaseException) -> None:
        """Hold ``interrupt`` (it came as a trial ended) until Optuna has stored the trial."""
        self.deferred, self.raised, self.pending = True, False, signal_of(interrupt)


_SIGNALS = _StopSignals()


@contextlib.contextmanager
def stop_signals(*, forked: bool = False) -> Iterator[None]:
    """Inside, SIGINT, SIGTERM and SIGHUP raise :class:`Interrupted` (a KeyboardInterrupt),
    so each stops a run the way Ctrl-C does: the running trial marked and queued again.

    Only signals at their default are taken: a handler of the caller's own, or SIGHUP
    ignored under ``nohup``, is kept; the previous handlers return on exit. Nothing changes
    outside the main thread. ``forked``: a worker forked mid-run forgets the parent's state.
    """
    state = _SIGNALS
    if forked:
        state.reset()
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    if state.depth == 0:
        for signum in STOP_SIGNALS:
            if signal.getsignal(signum) in (signal.SIG_DFL, signal.default_int_handler):
                state.previous[signum] = signal.signal(signum, state.handle)
    state.depth += 1
    try:
        yield
    finally:
        state.depth -= 1
        if state.depth == 0:
            for signum, handler in state.previous.items():
                signal.signal(signum, handler)
            state.previous.clear()
            state.reset()


@contextlib.contextmanager
def held_signals(*, hold: bool) -> Iterator[None]:
    """Hold stop signals inside (``hold``: Optuna creating or recording a trial; a held one
    is raised on a clean exit), or let them through (training, waiting; a held one too)."""
    state = _SIGNALS
    if not state.active():
        yield
        return
    before, state.deferred = state.deferred, hold
    try:
        if not hold:
            state.raise_pending()
        yield
    finally:
        state.deferred = before
    if not before:
        state.raise_pending()


def raise_held_signal(study: optuna.Study, trial: FrozenTrial) -> None:
    """A trial callback: stop the run once a trial is stored, if a signal came meanwhile."""
    if _SIGNALS.active():
        _SIGNALS.raise_pending()


# --- Ctrl-C: a clean message, the reason stored, the trial retried -------------------------


class _HideInterrupts(logging.Filter):
    # Optuna logs the interrupted trial with the whole stack, then its value (None) on a
    # second line; bsopt prints one line instead.
    def __init__(self) -> None:
        super().__init__()
        self.numbers: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[0] if record.exc_info else None
        text = record.getMessage()
        if (error is not None and issubclass(error, KeyboardInterrupt)) or (
            "KeyboardInterrupt" in text
        ):
            self.numbers.add(text.split(" ", 2)[1])
            return False
        return not (text.startswith("Trial ") and text.split(" ", 2)[1] in self.numbers)


@contextlib.contextmanager
def quiet_interrupts() -> Iterator[None]:
    """Hide Optuna's "Trial N failed ... KeyboardInterrupt()" warning and stack inside."""
    hide = _HideInterrupts()
    logger = logging.getLogger("optuna.study._optimize")
    logger.addFilter(hide)
    try:
        yield
    finally:
        logger.removeFilter(hide)


@contextlib.contextmanager
def running(study: optuna.Study, trials: int) -> Iterator[Interrupts]:
    """What every run loop does around Optuna's, given the :class:`Interrupts` to wrap with.

    At the total, trials a dead worker left RUNNING are failed; after Ctrl-C the cut trial
    is queued again; a storage fault becomes a one-line :class:`~bsopt.StorageError`.
    """
    interrupts = Interrupts()
    try:
        yield interrupts
        if n_finished(study) >= trials:
            close_lost_trials(study)
    except KeyboardInterrupt:
        interrupts.retry(study)
        raise
    except Exception as e:
        raise_storage_fault(e, study)
        raise


class Interrupts:
    """Wraps an objective to mark a trial cut short by a stop signal, then queues its retry."""

    def __init__(self) -> None:
        self.trial_ids: list[int] = []

    def wrap(self, objective: Callable[[optuna.Trial], Any]) -> Callable[[optuna.Trial], Any]:
        def interruptible(trial: optuna.Trial) -> Any:
            value: Any = None
            done = False
            try:
                with held_signals(hold=False):
                    value = objective(trial)
                    done = True
                return value
            except KeyboardInterrupt as e:
                if done and _SIGNALS.active():
                    # The signal came as the trial ended: Optuna stores its value first,
                    # then raise_held_signal stops the run.
                    _SIGNALS.hold(e)
                    return value
                self.trial_ids.append(trial._trial_id)
                with contextlib.suppress(Exception):
                    trial.set_user_attr("stop_reason", INTERRUPTED)
                raise

        return interruptible

    def retry(self, study: optuna.Study) -> None:
        """Queue each interrupted (now FAIL) trial again with its params, ahead of new ones."""
        for trial_id in self.trial_ids:
            with contextlib.suppress(Exception):
                retry_failed_trial(study, study._storage.get_trial(trial_id))
        self.trial_ids.clear()


def retry_failed_trial(study: optuna.Study, trial: FrozenTrial) -> None:
    """Queue ``trial`` again (WAITING, same params), the way a heartbeat retry does."""
    if trial.state != TrialState.FAIL or not trial.params:
        return
    system_attrs: dict[str, Any] = {
        "failed_trial": trial.number,
        "retry_history": [],
        **trial.system_attrs,
    }
    system_attrs["retry_history"] = [*system_attrs["retry_history"], trial.number]
    study.add_trial(
        optuna.trial.create_trial(
            state=TrialState.WAITING,
            params=trial.params,
            distributions=trial.distributions,
            system_attrs=system_attrs,
        )
    )


def storage_url_of(study: optuna.Study) -> str | None:
    """The URL of the SQL database behind ``study`` (``None`` for other storages)."""
    storage = study._storage
    backend = getattr(storage, "_backend", storage)
    url = getattr(backend, "url", None)
    return url if isinstance(url, str) else None


def raise_storage_fault(e: BaseException, study: optuna.Study) -> None:
    """Raise a one-line :class:`StorageError` when ``e`` came from a storage fault."""
    if isinstance(e, StorageError):
        return
    error = storage_error(e, storage_url_of(study))
    if error is not None:
        raise error from e


# --- trials left RUNNING by dead workers ----------------------------------------------------


def echo_stderr(text: str) -> None:
    """Print ``text`` as one line on stderr: where notes beside the results go."""
    print(text, file=sys.stderr)


def _rdb(study: optuna.Study) -> Any:
    storage = study._storage
    backend = getattr(storage, "_backend", storage)
    if isinstance(backend, optuna.storages.RDBStorage) and backend.heartbeat_interval:
        return backend
    return None


def _heartbeats(rdb: Any, trial_ids: Iterable[int]) -> tuple[dict[int, datetime.datetime], Any]:
    # NOTE: Optuna keeps heartbeats in its own table and offers no public read; this reads
    # them the way its stale-trial check does (database clock on both sides).
    from optuna.storages._rdb import models
    import sqlalchemy

    ids = list(trial_ids)
    table = models.TrialHeartbeatModel
    with rdb.engine.connect() as connection:
        now = connection.execute(sqlalchemy.select(sqlalchemy.func.now())).scalar()
        rows = connection.execute(
            sqlalchemy.select(table.trial_id, table.heartbeat).where(table.trial_id.in_(ids))
        ).all()
    return {int(r[0]): r[1] for r in rows}, now


def close_lost_trials(
    study: optuna.Study,
    *,
    slack: float = 5.0,
    echo: Callable[[str], None] | None = echo_stderr,
) -> list[int]:
    """Once ``study`` has its total, fail the trials whose worker died; their numbers.

    A trial still RUNNING then can no longer count. On a storage with heartbeats, each one
    is watched until its heartbeat is overdue by ``slack`` seconds past the heartbeat
    interval, or it has none that long after its start (its worker is gone: it is marked
    FAIL with ``stop_reason`` "lost: ...") or
    a new heartbeat arrives (its worker lives: it is left to finish, and said so). This
    waits at most one heartbeat interval plus ``slack``, and only when such trials exist.
    Without heartbeats (journal, gRPC) nothing can tell, and this says so.
    """
    running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    if not running:
        return []
    rdb = _rdb(study)
    if rdb is None:
        if echo is not None:
            listed = ", ".join(f"#{t.number}" for t in running)
            echo(
                f"bsopt: trials {listed} are still RUNNING, but the study has its total. This "
                "storage has no heartbeat, so bsopt cannot tell whether their worker died; "
                "they are not counted as finished either way."
            )
        return []
    lost, alive = _watch_heartbeats(study, rdb, running, slack=slack, echo=echo)
    if echo is not None and lost:
        echo(
            f"bsopt: trial(s) {_numbers(lost)} were still "
            "RUNNING without heartbeat (their worker died) and are now marked failed."
        )
    if echo is not None and alive:
        echo(
            f"bsopt: trial(s) {_numbers(alive)} still run in "
            "other workers (fresh heartbeats); they finish there, past the total."
        )
    return sorted(lost)


def _numbers(numbers: Iterable[int]) -> str:
    return ", ".join(f"#{n}" for n in sorted(numbers))


def _watch_heartbeats(
    study: optuna.Study,
    rdb: Any,
    running: Sequence[FrozenTrial],
    *,
    slack: float,
    echo: Callable[[str], None] | None,
) -> tuple[list[int], list[int]]:
    """Watch ``running`` trials for a heartbeat: the numbers of the lost and the alive."""
    numbers = {t._trial_id: t.number for t in running}
    interval = float(rdb.heartbeat_interval)
    overdue = datetime.timedelta(seconds=interval + slack)
    started = {t._trial_id: t.datetime_start for t in running}
    first, _ = _heartbeats(rdb, numbers)
    pending = set(numbers)
    lost: list[int] = []
    alive: list[int] = []
    deadline = time.monotonic() + interval + slack + 1.0
    announced = False
    while pending:
        beats, now = _heartbeats(rdb, pending)
        states = {
            t._trial_id: t.state
            for t in study.get_trials(deepcopy=False)
            if t._trial_id in pending
        }
        for trial_id in sorted(pending):
            beat = beats.get(trial_id)
            if states.get(trial_id) != TrialState.RUNNING:
                pending.discard(trial_id)
            elif beat is not None and beat != first.get(trial_id):
                alive.append(numbers[trial_id])
                pending.discard(trial_id)
            elif _silent_for(beat, now, started[trial_id]) > overdue:
                # A worker with heartbeats beats as its trial starts: no beat since then,
                # or none at all, for longer than the interval means it is gone.
                if _fail_lost(rdb, trial_id):
                    lost.append(numbers[trial_id])
                pending.discard(trial_id)
        if not pending or time.monotonic() > deadline:
            break
        if not announced and echo is not None:
            echo(
                f"bsopt: the study has its total, but trial(s) "
                f"{_numbers(numbers[i] for i in pending)} are still RUNNING; "
                f"waiting up to {interval + slack:g} s for a heartbeat to tell whether their "
                "worker lives."
            )
            announced = True
        time.sleep(min(1.0, interval / 4))
    return lost, alive


def _silent_for(
    beat: datetime.datetime | None, now: Any, started: datetime.datetime | None
) -> datetime.timedelta:
    """How long a running trial has been without heartbeat."""
    if beat is not None:
        return _age(now, beat)
    if started is None:
        return datetime.timedelta(0)
    # No heartbeat row: the worker died before its first beat (or runs without heartbeats,
    # which every worker of a heartbeat storage should not). Optuna stamps the start with
    # the worker's local clock.
    return datetime.datetime.now() - started


def _age(now: Any, beat: Any) -> datetime.timedelta:
    # PostgreSQL returns aware datetimes, SQLite and MySQL naive ones: compare as naive.
    age: datetime.timedelta = now.replace(tzinfo=None) - beat.replace(tzinfo=None)
    return age


def _fail_lost(rdb: Any, trial_id: int) -> bool:
    try:
        rdb.set_trial_user_attr(trial_id, "stop_reason", LOST_REASON)
        return bool(rdb.set_trial_state_values(trial_id, state=TrialState.FAIL))
    except optuna.exceptions.UpdateFinishedTrialError:
        return False  # its worker (or another process) finished it meanwhile


# --- the single-process loop ---------------------------------------------------------------


def optimize(
    study: optuna.Study,
    objective: Callable[[optuna.Trial], float | Sequence[float]],
    *,
    trials: int,
    timeout: float | None = None,
    callbacks: Iterable[Callable[[optuna.Study, FrozenTrial], None]] = (),
    show_progress_bar: bool = True,
    catch: Sequence[type[Exception]] = (),
    allow_space_change: bool = False,
) -> int:
    """Run ``objective`` until ``study`` holds ``trials`` finished trials in total.

    Finished means COMPLETE or PRUNED. Running the same call again after an interruption
    continues to the same total instead of adding ``trials`` more; workers in other
    processes sharing the study stop at the same total. Returns the trials run here.

    This is :func:`~bsopt.work`, the one run loop, with a progress bar and a ``timeout``
    (seconds), for the one process that finishes a study: a trial RUNNING elsewhere does
    not hold its place, since its worker may be dead (see :func:`close_lost_trials`), and
    other workers on the study stop at exactly the same total.

    A bsopt objective's search space and budget are kept with the study and compared on
    every resume (see :func:`check_definition`; ``allow_space_change`` accepts a new one).
    A trial cut short by Ctrl-C, SIGTERM or SIGHUP gets ``stop_reason`` "interrupted" and is
    queued again with its params, so the resumed run trains it first. Once the total is
    reached, trials left RUNNING by a dead worker are failed (see :func:`close_lost_trials`).

    Raises:
        StorageError: the storage failed mid-run (read-only, disk full, file deleted or
            damaged, server gone); finished trials are kept.
        KeyboardInterrupt: after marking the running trial FAIL and queueing its retry;
            :class:`Interrupted` (its ``signum``) for SIGTERM and SIGHUP.
    """
    # NOTE: imported here because the loop lives with its gate in _workers, which builds
    # on this module.
    from bsopt.runs._workers import work

    return work(
        study, objective, trials=trials, timeout=timeout, callbacks=callbacks, catch=catch,
        allow_space_change=allow_space_change, show_progress_bar=show_progress_bar,
        wait_for_running=False,
    )  # fmt: skip


def summary(study: optuna.Study, *, storage_url: str | None = None) -> str:
    """A plain-text summary: trial counts by state, the best trial and where the data live."""
    counts = count_trials(study)
    lines = [
        f"Study {study.study_name!r}: "
        + ", ".join(f"{n} {state.lower()}" for state, n in sorted(counts.items()))
    ]
    pruned = study.get_trials(deepcopy=False, states=(TrialState.PRUNED,))
    reasons = Counter(str(t.user_attrs.get("stop_reason", "pruned")) for t in pruned)
    reasons = Counter({("by the pruner" if r == "pruned" else r): n for r, n in reasons.items()})
    if reasons:
        lines.append(
            "Pruned by reason: " + ", ".join(f"{r} {n}" for r, n in reasons.most_common())
        )
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if len(study.directions) == 1 and complete:
        best = study.best_trial
        attrs = best.user_attrs
        # The value's name as the objective recorded it: "validation roc_auc", ...
        names = study.metric_names or []
        label = f"{names[0]} " if names else ""
        lines.append(f"Best trial #{best.number}: {label}{best.value:.4f}")
        for key, value in shown_params(best.params).items():
            text = f"{value:.4g}" if isinstance(value, float) else str(value)
            lines.append(f"  {key:<14} {text}")
        if "samples_per_second" in attrs:
            lines.append(
                f"  trained {attrs.get('samples_seen', 0):,} samples in "
                f"{attrs.get('train_seconds', 0):.2f} s ({attrs['samples_per_second']:,.0f} "
                f"samples/s, {attrs.get('optimizer_steps', 0):,} optimizer steps)"
            )
    elif complete:
        front = sorted(study.best_trials, key=lambda t: t.values[0])
        objectives = study.metric_names or [f"value {i + 1}" for i in range(len(front[0].values))]
        lines.append(f"{len(front)} Pareto-optimal trials ({', '.join(objectives)}):")
        for t in front[:10]:
            values = ", ".join(f"{v:.4g}" for v in t.values)
            batch = batch_size_from_params(t.params)
            lines.append(f"  #{t.number:<4} batch_size {batch}: {values}")
    else:
        lines.append("No completed trial yet.")
    # The study's own storage, not the default one: a study opened elsewhere is named there.
    resolved = resolve_storage_url(storage_url) if storage_url else storage_url_of(study)
    if resolved is None:
        backend = getattr(study._storage, "_backend", study._storage)
        if isinstance(backend, optuna.storages.InMemoryStorage):
            lines.append("Storage: in memory (nothing is saved; pass storage= to keep trials)")
        else:
            lines.append(f"Storage: {type(backend).__name__}")
        return "\n".join(lines)
    lines.append(f"Storage: {mask_url(resolved)}")
    lines.append(browse_hint(resolved))
    return "\n".join(lines)


def browse_hint(url: str) -> str:
    """How to open the dashboard on ``url``, never with a password on the command line."""
    masked = mask_url(url)
    if masked == url:
        return f"Browse it:  optuna-dashboard {url}"
    if os.environ.get(STORAGE_ENV) == url:
        return f"Browse it:  bsopt dashboard   (it reads the URL from ${STORAGE_ENV})"
    return (
        f"Browse it:  export {STORAGE_ENV}='{masked}' with the real password in place of ***, "
        "then: bsopt dashboard   (a password on the command line is visible to other users)"
    )
