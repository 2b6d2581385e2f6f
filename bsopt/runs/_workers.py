"""Many workers on one study: exact totals, worker processes, GPUs and threads per worker.

Optuna's own distributed mode is many processes sharing one storage. Two things it leaves
to us: (1) ``MaxTrialsCallback`` is checked only after a trial, so N workers finishing
together start up to N-1 trials past the target; :func:`work` gates every trial on the
storage so the study ends at exactly the target. (2) One process per worker, each with
its share of the CPU threads and one GPU, and one progress bar in the parent.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
import ipaddress
import logging
import multiprocessing
import multiprocessing.connection
import os
import pickle
import signal
import socket
import sys
import threading
import time
from typing import TYPE_CHECKING, Any, Literal
import warnings

import optuna
from optuna.trial import FrozenTrial, TrialState

from bsopt.runs._session import RunSettings, open_study, settings_of
from bsopt.runs._study import (
    FINISHED,
    check_definition,
    check_trials,
    echo_stderr,
    held_signals,
    n_finished,
    quiet_interrupts,
    raise_held_signal,
    running,
    search_trials,
    signal_of,
    stop_signals,
)
from bsopt.search._pruners import PrunerName
from bsopt.store import mask_url, open_storage, resolve_storage_url, scrub, storage_error

if TYPE_CHECKING:  # the trainer (torch) loads in the worker processes, not here
    from bsopt.search._objective import Objective

LIVE = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING, TrialState.WAITING)
SURPLUS_REASON = "surplus: the study already had its target number of finished or running trials"
Decision = Literal["run", "stop", "yield", "wait"]


class WorkerError(RuntimeError):
    """A worker process failed; its own message was printed by the worker."""


class _SurplusTrial(Exception):
    """Ends a trial created past the target; it is recorded as FAIL and never trained."""


class _HideSurplusWarnings(logging.Filter):
    # Optuna logs every caught exception as a failed trial; a surplus trial is bookkeeping.
    def filter(self, record: logging.LogRecord) -> bool:
        return "_SurplusTrial" not in record.getMessage()


logging.getLogger("optuna.study._optimize").addFilter(_HideSurplusWarnings())


def _has_heartbeat(study: optuna.Study) -> bool:
    # NOTE: Optuna exposes the check only privately; heartbeats exist on RDBStorage only.
    from optuna.storages._heartbeat import is_heartbeat_enabled

    return is_heartbeat_enabled(study._storage)


def _fail_stale(study: optuna.Study) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)


def _queue_key(trial: FrozenTrial) -> tuple[int, int]:
    # A retried trial takes the place of the trial whose worker died, not a new place.
    original = trial.system_attrs.get("failed_trial", trial.number)
    return int(original), trial.number


def decide(trials: Sequence[FrozenTrial], total: int, *, me: int | None) -> Decision:
    """Whether a worker may run a trial so that the study ends at exactly ``total``.

    ``me`` is the number of the worker's just-created trial, or ``None`` before creating
    one. Live trials (finished, running, queued) ahead of it hold the places: with fewer
    than ``total`` ahead there is a place (``"run"``); with ``total`` finished the study is
    done (``"stop"``); with a queued retry among them the worker should take that instead
    (``"yield"``); otherwise a running trial ahead may still fail (``"wait"``).
    """
    trials = search_trials(trials)
    finished = sum(t.state in FINISHED for t in trials)
    if finished >= total:
        return "stop"
    live = [t for t in trials if t.state in LIVE]
    if me is not None:
        mine = next(_queue_key(t) for t in trials if t.number == me)
        live = [t for t in live if _queue_key(t) < mine]
    if len(live) < total:
        return "run"
    if any(t.state == TrialState.WAITING for t in live):
        return "yield"
    return "wait"


class _ExactTotal:
    """Trial gate and callback: no trial starts past ``total`` live trials.

    With ``wait`` false (the one process that finishes a study, :func:`~bsopt.optimize`) a
    trial RUNNING elsewhere does not hold its place: its worker may be dead, and this
    process trains in its place instead of waiting for the grace period.
    """

    def __init__(self, total: int, *, poll_interval: float, wait: bool = True) -> None:
        self.total = total
        self.poll_interval = poll_interval
        self.wait = wait
        self.ran = 0
        self.blocked_by: list[int] = []
        self.far_from_end = False
        self.workers_seen = 1
        self.last_number: int | None = None

    def settle(self, study: optuna.Study, me: int | None) -> Decision:
        """Decide, waiting while the outcome hangs on running trials that might fail.

        The first polls come quickly (50 ms, doubling up to ``poll_interval``): at the end
        of a study the trial waited for is usually about to finish, and this worker's exit
        is what the run waits for.
        """
        delay = min(0.05, self.poll_interval)
        while True:
            trials = study.get_trials(deepcopy=False)
            running = sum(t.state == TrialState.RUNNING for t in trials)
            self.workers_seen = max(self.workers_seen, running)
            decision = decide(trials, self.total, me=me)
            if decision != "wait":
                return decision
            if not self.wait:
                return "run"
            if not _has_heartbeat(study):
                # Without heartbeats a dead worker's trial stays RUNNING forever: waiting
                # could hang, so leave the remaining places to the workers running them.
                self.blocked_by = [t.number for t in trials if t.state == TrialState.RUNNING]
                return "stop"
            _fail_stale(study)
            with held_signals(hold=False):  # waiting: no trial of this worker to lose
                time.sleep(delay)
            delay = min(2 * delay, self.poll_interval)

    def wrap(self, objective: Callable[[optuna.Trial], Any]) -> Callable[[optuna.Trial], Any]:
        def gated(trial: optuna.Trial) -> Any:
            # Trials are numbered in creation order and a live retry stands in for a failed
            # trial numbered below it, so at most trial.number live trials are ahead: below
            # the total this trial runs without reading the storage (a round trip saved).
            decision = (
                "run" if trial.number < self.total else self.settle(trial.study, trial.number)
            )
            if decision != "run":
                trial.set_user_attr("stop_reason", SURPLUS_REASON)
                if decision == "stop":
                    trial.study.stop()
                raise _SurplusTrial(SURPLUS_REASON)
            self.ran += 1
            # Other workers created the trials numbered between this worker's last two:
            # a free estimate of how many are at work.
            if self.last_number is not None:
                self.workers_seen = max(self.workers_seen, trial.number - self.last_number)
            self.last_number = trial.number
            # The check after this trial can be skipped while two more trials per worker
            # would still be numbered below the total.
            self.far_from_end = trial.number + 2 * self.workers_seen < self.total
            return objective(trial)

        return gated

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        if self.far_from_end:
            self.far_from_end = False
            return
        if self.settle(study, None) == "stop":
            study.stop()

    def warn_if_blocked(self, study: optuna.Study) -> None:
        """Name the running trials this worker left the last places to, if short of total."""
        if self.blocked_by and n_finished(study) < self.total:
            numbers = ", ".join(f"#{n}" for n in self.blocked_by)
            print(
                f"bsopt: the last places are held by running trials {numbers}. This storage "
                "has no heartbeat: if their worker died they stay RUNNING; finish the study "
                "with one `bsopt run` process, which does not wait for them.",
                file=sys.stderr,
            )


class _Progress:
    """One progress bar of the study's finished trials towards the total, counting only
    this run's, with its running and failed trials; also a trial callback."""

    def __init__(self, total: int, *, show: bool) -> None:
        from tqdm import tqdm

        self.total = total
        self.show = show
        self.bar = tqdm(total=total, disable=not show, unit="trial", dynamic_ncols=True)
        self.baseline: int | None = None
        self.shown: tuple[int, int, int] | None = None
        self.level = optuna.logging.get_verbosity()

    def __enter__(self) -> _Progress:
        if self.show:
            # Per-trial log lines would break the bar; the summary reports the result instead.
            optuna.logging.set_verbosity(logging.WARNING)
        return self

    def __exit__(self, *exc: object) -> None:
        self.bar.close()
        if self.show:
            optuna.logging.set_verbosity(self.level or logging.INFO)

    def __call__(self, study: optuna.Study, trial: FrozenTrial | None = None) -> None:
        if self.show:
            self.update(study.get_trials(deepcopy=False))

    def update(self, trials: Sequence[FrozenTrial]) -> None:
        states = [t.state for t in search_trials(trials)]
        done = sum(s in FINISHED for s in states)
        if self.baseline is None:
            # Count this run's trials only, so the rate shown is this run's.
            self.baseline = done
            self.bar.reset(total=max(0, self.total - done))
            if done:
                self.bar.set_description(f"{done} finished before")
        shown = (
            min(done, self.total) - self.baseline,
            sum(s == TrialState.RUNNING for s in states),
            sum(s == TrialState.FAIL for s in states),
        )
        if shown == self.shown:
            return  # redrawn only on a change: a log file gets one line per change
        self.shown = shown
        self.bar.update(max(0, shown[0] - self.bar.n))
        self.bar.set_postfix(running=shown[1], failed=shown[2], refresh=False)
        self.bar.refresh()


def work(
    study: optuna.Study,
    objective: Callable[[optuna.Trial], Any],
    *,
    trials: int,
    poll_interval: float = 1.0,
    timeout: float | None = None,
    callbacks: Iterable[Callable[[optuna.Study, FrozenTrial], None]] = (),
    catch: Sequence[type[Exception]] = (),
    allow_space_change: bool = False,
    show_progress_bar: bool = False,
    wait_for_running: bool = True,
) -> int:
    """Run ``objective`` as one of many workers until ``study`` holds ``trials`` finished.

    Unlike :func:`~bsopt.optimize`, any number of workers (threads, processes, hosts) calling
    this on the same study stop at exactly ``trials`` finished trials: a worker starts a
    trial only while fewer than ``trials`` trials are finished, running or queued, and waits
    (polling every ``poll_interval`` seconds) while the last places are held by running
    trials that may still fail. On storages with heartbeats a trial whose worker died is
    failed after the grace period and retried in its place. A trial that two workers
    created at the same instant past the target is recorded as FAIL with
    ``stop_reason`` "surplus: ..." and never trained. Returns the trials trained here.

    As in :func:`~bsopt.optimize`: the search space is checked against the study's, a
    trial cut short by Ctrl-C, SIGTERM or SIGHUP is queued again (in the main thread these
    raise :class:`~bsopt.runs._study.Interrupted` in the objective or in a wait, and wait
    while Optuna records a trial, so a finished result is kept), storage faults raise a one-line
    :class:`~bsopt.StorageError`, and at the total, trials of dead workers are failed.
    ``timeout`` (seconds) ends the run early; ``show_progress_bar`` shows one bar of the
    study's finished trials. With ``wait_for_running`` false, trials RUNNING elsewhere do
    not hold their places: this process trains in their place instead of waiting, as
    :func:`~bsopt.optimize` does to finish a study whose worker may have died.
    """
    check_trials(trials)
    if isinstance(poll_interval, bool) or not poll_interval > 0:
        raise ValueError(f"poll_interval must be > 0 seconds, got {poll_interval!r}.")
    gate = _ExactTotal(trials, poll_interval=poll_interval, wait=wait_for_running)
    with (
        stop_signals(),
        running(study, trials) as interrupts,
        _Progress(trials, show=show_progress_bar) as bar,
    ):
        check_definition(study, objective, allow_change=allow_space_change, echo=echo_stderr)
        bar(study)
        while gate.settle(study, None) != "stop":
            try:
                # Stop signals reach the objective at once; in Optuna's creating and
                # recording of a trial they wait until the trial is stored.
                with quiet_interrupts(), held_signals(hold=True):
                    study.optimize(
                        interrupts.wrap(gate.wrap(objective)),
                        n_trials=None,
                        timeout=timeout,
                        catch=(*catch, _SurplusTrial),
                        callbacks=[raise_held_signal, gate, bar, *callbacks],
                        show_progress_bar=False,
                    )
                break
            except ValueError as e:
                # Another process closed this worker's trial (it found the study at its
                # total and took the trial for lost); Optuna then cannot record it.
                if not str(e).startswith("Cannot tell a"):
                    raise
    gate.warn_if_blocked(study)
    return gate.ran


def close_objective(objective: object) -> None:
    """Stop what the objective started: the other ranks of its trials, if any."""
    close = getattr(objective, "close", None)
    if callable(close):
        close()


def attach_worker(
    build_objective: Callable[..., Objective],
    *,
    study_name: str,
    trials: int,
    storage: str | None = None,
    seed: int = 0,
    sampler_seed: int | None = None,
    worker: int = 0,
    pruner: PrunerName = "median",
    create: bool = False,
    heartbeat_interval: int | None = 60,
    grace_period: int | None = None,
    poll_interval: float = 1.0,
    dry_run: bool = False,
    echo: Callable[[str], None] | None = print,
    allow_space_change: bool = False,
    devices: int = 1,
) -> optuna.Study | None:
    """Join the study ``study_name`` as one more worker and run it to ``trials`` finished.

    With ``devices`` > 1 each of this worker's trials trains on that many processes, one
    device each (see the option ``devices`` of :func:`~bsopt.make_objective`); under
    ``torchrun`` this process is one rank of such a group, and only rank 0 works on the
    study (the others follow its trials and return ``None``).

    Args:
        build_objective: the study's ``build_objective(*, seed)``; every worker must build
            the same objective (same data split), so ``seed`` is the study's seed.
        sampler_seed: the study's sampler seed; ``None`` draws one. With a seed, trial
            ``n`` is sampled with a seed from (``sampler_seed``, ``n``) (see
            :class:`~bsopt.search._samplers.OrderedSampler`): no two workers, and no
            resumed run, replay another's draws.
        worker: this worker's index among those started together (``--jobs``).
        create: create the study if it does not exist (safe when many workers start at
            once); otherwise a missing study is an error.
        dry_run: only check that the study exists (or create it); run no trial.
        The other settings: see :class:`~bsopt.runs._session.RunSettings`.

    Raises:
        ValueError: the study does not exist (and ``create`` is false), optimises
            another direction, or was created with another search space.
    """
    settings = settings_of(locals())
    return attach(
        build_objective, settings, worker=worker, create=create, dry_run=dry_run, echo=echo
    )


def attach(
    build_objective: Callable[..., Objective],
    settings: RunSettings,
    *,
    worker: int = 0,
    parallel: int = 1,
    create: bool = False,
    dry_run: bool = False,
    echo: Callable[[str], None] | None = print,
) -> optuna.Study | None:
    """:func:`attach_worker` with its settings in one :class:`RunSettings`; ``parallel``:
    the workers started together with this one (see :func:`~bsopt.create_study`)."""
    session = open_study(
        build_objective, settings, create=create, worker=worker, parallel=parallel,
        spread=not dry_run, echo=echo,
    )  # fmt: skip
    if session is None:
        return None  # another rank of a torchrun group: rank 0 worked on the study
    study, objective, url = session
    if dry_run:
        return study
    if echo is not None:
        echo(
            f"Worker on study {settings.study_name!r} in {mask_url(url)}: "
            f"{n_finished(study)} of {settings.trials} trials finished."
        )
    try:
        # open_study checked the definition (and stored a new one where allowed).
        ran = work(study, objective, trials=settings.trials, poll_interval=settings.poll_interval)
    finally:
        close_objective(objective)
    if echo is not None:
        echo(
            f"Worker trained {ran} trials; the study holds {n_finished(study)} of "
            f"{settings.trials}."
        )
    return study


# ``bsopt run`` without --jobs: at most this many worker processes, each with at least
# TRIALS_PER_WORKER of the trials left: a spawned worker takes seconds to import torch and
# build the objective (a forked one does not), and TPE learns less when many trials run at
# once.
AUTO_JOBS_CAP = 4
TRIALS_PER_WORKER = 5


def usable_cpus() -> int:
    """The CPU cores this process may run on (its affinity where the OS tells it)."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def default_jobs(objective: object, remaining: int, *, cpus: int | None = None) -> int:
    """Worker processes for a run without ``--jobs``: the cores, for CPU trials.

    One process per core, at most :data:`AUTO_JOBS_CAP`, each with at least
    :data:`TRIALS_PER_WORKER` of the ``remaining`` trials; 1 when the objective trains on a
    GPU or says nothing of its device (give ``--jobs`` to put one worker on each GPU).
    """
    device = getattr(objective, "device", None)
    if getattr(device, "type", device) != "cpu":
        return 1
    cores = cpus if cpus is not None else usable_cpus()
    return max(1, min(cores, AUTO_JOBS_CAP, remaining // TRIALS_PER_WORKER))


def threads_per_worker(jobs: int, cpu_count: int | None = None) -> int:
    """CPU threads for each of ``jobs`` workers: an equal share, at least one."""
    cpus = cpu_count if cpu_count is not None else (os.cpu_count() or 1)
    return max(1, cpus // jobs)


def visible_gpus() -> list[str]:
    """The GPUs this process may use, as ``CUDA_VISIBLE_DEVICES`` entries."""
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        return [d.strip() for d in listed.split(",") if d.strip() and d.strip() != "-1"]
    import torch

    return [str(i) for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []


def assign_gpus(jobs: int, visible: Sequence[str], *, devices: int = 1) -> list[str | None]:
    """The ``CUDA_VISIBLE_DEVICES`` value for each of ``jobs`` workers.

    One GPU per worker in order; with more workers than GPUs they take turns
    (worker ``i`` gets GPU ``i mod len(visible)``); with none, ``None`` (CPU). With
    ``devices`` > 1 each worker's trials span ``devices`` GPUs of their own: worker ``i``
    gets GPUs ``i * devices`` to ``(i + 1) * devices - 1``, so ``jobs * devices`` must be
    visible.
    """
    if jobs < 1:
        raise ValueError(f"jobs must be at least 1, got {jobs}.")
    if not visible:
        return [None] * jobs
    if devices > 1:
        if jobs * devices > len(visible):
            raise ValueError(
                f"--jobs {jobs} --devices {devices} needs {jobs * devices} GPUs (each trial "
                f"spans {devices}), but {len(visible)} are visible. Use --jobs "
                f"{max(1, len(visible) // devices)}, or fewer --devices."
            )
        return [",".join(visible[i * devices : (i + 1) * devices]) for i in range(jobs)]
    return [visible[i % len(visible)] for i in range(jobs)]


def can_fork(objective: object, gpus: Sequence[str | None], threads: int, devices: int) -> bool:
    """Whether worker processes may be forked from this one and inherit ``objective``.

    A forked worker starts in milliseconds with the parent's imports and data; a spawned
    one starts a fresh interpreter, imports torch and builds the objective again (seconds,
    on every core at once). Forking is safe only on Linux, for CPU trials (CUDA does not
    survive a fork), one device per trial, and one torch thread per worker: a process that
    used OpenMP threads cannot use them again in a forked child.
    """
    if sys.platform != "linux" or devices != 1 or threads != 1 or any(gpus):
        return False
    device = getattr(objective, "device", None)
    if getattr(device, "type", device) != "cpu":
        return False
    torch = sys.modules.get("torch")
    return torch is None or not torch.cuda.is_initialized()


def _worker_main(
    index: int,
    build_objective: Callable[..., Objective],
    gpu: str | None,
    threads: int,
    settings: RunSettings,
    inherited: Objective | None = None,
    parallel: int = 1,
) -> None:
    """Entry point of one worker process: spawned (a fresh interpreter), or forked with
    the parent's ``inherited`` objective; ``parallel`` workers were started together."""
    _stop_with_parent()
    if gpu is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = gpu  # before CUDA starts in this process
    import torch

    torch.set_num_threads(threads)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    build = build_objective if inherited is None else lambda **_: inherited
    # A stop signal (the terminal's, or the parent's forwarded one) marks the running trial
    # as in the parent; later ones do not cut that short.
    with stop_signals(forked=inherited is not None):
        try:
            attach(build, settings, worker=index, parallel=parallel, echo=None)
        except KeyboardInterrupt as e:
            # Optuna has marked the running trial FAIL; the parent prints the hint.
            raise SystemExit(128 + signal_of(e)) from None
        except Exception as e:
            url = settings.storage
            fault = storage_error(e, url)
            text = str(fault) if fault is not None else scrub(f"{type(e).__name__}: {e}", url)
            print(f"bsopt: worker {index}: error: {text}", file=sys.stderr)
            raise SystemExit(1) from None


def _stop_with_parent() -> None:
    """Have this worker get SIGTERM (and stop as after Ctrl-C) when its parent dies, even
    by SIGKILL: Linux's PR_SET_PDEATHSIG, elsewhere a thread watching the parent's pid."""
    parent = multiprocessing.parent_process()
    if parent is None or parent.pid is None:
        return
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(1, int(signal.SIGTERM)) != 0:  # 1: PR_SET_PDEATHSIG
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    except (OSError, AttributeError, TypeError):
        threading.Thread(target=_watch_parent, args=(parent.pid,), daemon=True).start()
    if os.getppid() != parent.pid:  # it died before the request took effect
        os.kill(os.getpid(), signal.SIGTERM)


def _watch_parent(pid: int) -> None:
    while os.getppid() == pid:
        time.sleep(1.0)
    os.kill(os.getpid(), signal.SIGTERM)


def run_workers(
    build_objective: Callable[..., Objective],
    *,
    study_name: str,
    trials: int,
    jobs: int,
    storage: str | None = None,
    seed: int = 0,
    sampler_seed: int | None = 0,
    pruner: PrunerName = "median",
    heartbeat_interval: int | None = 60,
    grace_period: int | None = None,
    show_progress_bar: bool = True,
    poll_interval: float = 1.0,
    allow_space_change: bool = False,
    devices: int = 1,
    objective: Objective | None = None,
) -> None:
    """Run the existing study ``study_name`` in ``jobs`` worker processes to ``trials``.

    With ``devices`` > 1 every worker is rank 0 of its own trials' process group, one
    device per rank: ``jobs=2, devices=4`` on 8 GPUs gives each worker 4 of them.

    Each process gets ``cpu_count // jobs`` torch threads and one GPU from the visible ones
    (see :func:`assign_gpus`). With a ``sampler_seed``, trial ``n`` is sampled from
    (``sampler_seed``, ``n``) and the trials up to ``n - jobs`` once they have finished, so
    a rerun gives the same trials (``None``: each worker draws its own). The parent
    shows one progress bar read from the storage. ``build_objective`` must be picklable (a
    module-level function; a study script's needs ``if __name__ == "__main__":``).

    ``objective``, the one ``build_objective(seed=seed)`` returned in this process, lets
    the workers inherit it where :func:`can_fork` allows (CPU trials, one thread each, on
    Linux): they are forked and start at once instead of building their own. The other
    settings: see :class:`~bsopt.runs._session.RunSettings`.

    Raises:
        WorkerError: a worker exited with an error (it printed its message).
        KeyboardInterrupt: after passing Ctrl-C, SIGTERM or SIGHUP on to the workers
            (:class:`~bsopt.runs._study.Interrupted` names which); their running trials are
            FAIL and queued again. A worker also stops so when this process dies.
    """
    start_workers(build_objective, settings_of(locals()), objective=objective)


def start_workers(
    build_objective: Callable[..., Objective],
    settings: RunSettings,
    *,
    objective: Objective | None = None,
) -> None:
    """:func:`run_workers` with its settings in one :class:`RunSettings` (``jobs=None``:
    one worker)."""
    _check_picklable(build_objective)
    jobs = settings.jobs or 1
    # Each process is one worker of the study, on the URL resolved here.
    one = settings.replace(storage=settings.url, jobs=1)
    gpus = assign_gpus(jobs, visible_gpus(), devices=settings.devices)
    threads = threads_per_worker(jobs)
    inherited = objective if can_fork(objective, gpus, threads, settings.devices) else None
    context = (
        multiprocessing.get_context("spawn")
        if inherited is None
        else multiprocessing.get_context("fork")
    )
    processes = [
        context.Process(
            target=_worker_main,
            args=(i, build_objective, gpus[i], threads, one, inherited, jobs),
            name=f"bsopt-worker-{i}",
        )
        for i in range(jobs)
    ]
    if inherited is None:
        _start_resource_tracker()
    # SIGTERM and SIGHUP stop the workers as Ctrl-C does; none outlives this process.
    with stop_signals():
        for process in processes:
            process.start()
        try:
            _watch(processes, one)
        except KeyboardInterrupt as e:
            _stop(processes, signal_of(e))
            raise
    failed = [(i, p.exitcode) for i, p in enumerate(processes) if p.exitcode != 0]
    if failed:
        listed = ", ".join(f"worker {i} (exit {code})" for i, code in failed)
        raise WorkerError(
            f"{len(failed)} of {jobs} workers failed: {listed}; their messages are above. "
            "Finished trials are kept: fix the cause and run the same command to resume."
        )


def _start_resource_tracker() -> None:
    """Start multiprocessing's resource tracker, which spawned workers share, deaf to SIGHUP.

    It ignores SIGINT and SIGTERM but not SIGHUP: a closed terminal would kill it under the
    workers, which then print its stack. An ignored signal stays ignored in the new process.
    """
    if not hasattr(signal, "SIGHUP") or threading.current_thread() is not threading.main_thread():
        return
    from multiprocessing import resource_tracker

    previous = signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        resource_tracker.ensure_running()
    finally:
        signal.signal(signal.SIGHUP, previous)


def _check_picklable(build_objective: Callable[..., Objective]) -> None:
    try:
        pickle.dumps(build_objective)
    except (pickle.PicklingError, AttributeError, TypeError) as e:
        raise ValueError(
            f"build_objective cannot be sent to worker processes ({e}). Define it at module "
            "level in a study script guarded by if __name__ == '__main__':, or run with --jobs 1."
        ) from None


def _watch(
    processes: Sequence[multiprocessing.process.BaseProcess], settings: RunSettings
) -> None:
    """Wait for the workers, showing the study's finished trials as one progress bar."""
    storage = open_storage(settings.storage, heartbeat_interval=None)
    study_id = storage.get_study_id_from_name(settings.study_name)
    with _Progress(settings.trials, show=settings.show_progress_bar) as progress:
        while True:
            alive = any(p.is_alive() for p in processes)
            progress.update(storage.get_all_trials(study_id, deepcopy=False))
            if not alive:
                break
            # Wakes as soon as a worker exits, so the run ends with its last trial.
            multiprocessing.connection.wait([p.sentinel for p in processes], timeout=1.0)
    for p in processes:
        p.join()


def _stop(processes: Sequence[multiprocessing.process.BaseProcess], signum: int) -> None:
    """Pass a stop signal on to the workers: each marks its running trial FAIL and exits."""
    for p in processes:
        if p.is_alive() and p.pid is not None:
            os.kill(p.pid, signum)
    deadline = time.monotonic() + 15.0
    for p in processes:
        p.join(timeout=max(0.0, deadline - time.monotonic()))
    for p in processes:
        if p.is_alive():
            # Its trial stays RUNNING until the heartbeat grace period fails and retries it.
            p.kill()
            p.join()


def _loopback(host: str) -> bool:
    """Whether ``host`` (a name or an address) is this machine's loopback only."""
    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def serve_proxy(
    storage: str | None = None,
    *,
    host: str = "127.0.0.1",
    port: int = 13000,
    echo: Callable[[str], None] = print,
) -> None:
    """Serve ``storage`` (an SQL database) to workers as ``grpc://host:port`` until Ctrl-C.

    Many workers then hold one gRPC connection each instead of database connections, and
    the proxy caches finished trials. Needs ``pip install 'bsopt[grpc]'``. Workers behind
    the proxy have no heartbeat (Optuna's gRPC client does not send one).
    """
    url = resolve_storage_url(storage)
    scheme = url.split(":", 1)[0]
    if scheme in ("journal", "grpc"):
        raise ValueError(
            f"bsopt proxy serves an SQL database, but got {mask_url(url)!r}. Optuna's gRPC "
            "proxy does not support journal storages; use a PostgreSQL or MySQL URL."
        )
    try:
        import grpc  # noqa: F401
    except ImportError:
        raise ValueError(
            "bsopt proxy needs grpcio. Install it with pip install 'bsopt[grpc]'."
        ) from None
    from optuna.storages import get_storage, run_grpc_proxy_server

    # NOTE: get_storage adds Optuna's trial cache in front of the RDB, as the proxy expects.
    backend = get_storage(open_storage(url, heartbeat_interval=None))
    # A wildcard address listens on every address, but workers cannot connect to it.
    everywhere = host in ("0.0.0.0", "::", "")
    address = f"grpc://{socket.gethostname() if everywhere else host}:{port}"
    where = f"{address} (every address of this host)" if everywhere else address
    echo(f"Serving {mask_url(url)} on {where} (Ctrl-C stops).")
    if not _loopback(host):
        echo(f"Warning: bound to {host}; anyone who can reach it can edit this storage.")
    echo(f"Workers: bsopt worker STUDY --storage {address} --study NAME --trials N")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        try:
            run_grpc_proxy_server(backend, host=host, port=port)
        except KeyboardInterrupt:
            echo("Proxy stopped.")
