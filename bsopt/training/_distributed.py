"""One trial on several devices: the process group, its ranks and the collectives training needs.

A trial spread over ``N`` processes trains the same model on ``N`` slices of every global
batch. The searched ``batch_size`` is that global batch; each rank takes its share of it,
accumulates its micro-batch gradients weighted by their share of the *global* batch, and
one all-reduce (a sum) gives every rank the gradient of the whole batch. So an update equals
the single-process update of the same batch up to float rounding, and ``samples_seen``
counts global samples.

Two channels connect the ranks:

* the **process group** (gloo on the CPU, NCCL on CUDA) carries tensors: the initial
  weights, and per step one all-reduce of the gradients with a few numbers appended (the
  step loss and each rank's out-of-memory and error flags, so every rank learns of a failure
  on any rank at the same step and all stop together);
* the **store** (the rendezvous key-value store) carries small JSON messages from rank 0:
  which trial to run next, and after each evaluation the value and whether to stop. Waiting
  on the store polls and never times out, so followers can wait for as long as rank 0
  spends sampling, probing, validating or talking to the study's storage.

Rank 0 is the process that owns the Optuna trial. It either starts the other ranks itself
(:func:`start_group`: spawned processes, a rendezvous on 127.0.0.1) or joins a group started
by ``torchrun`` (:func:`join_from_env`). Nothing here imports Optuna.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
import contextlib
from dataclasses import dataclass, field
import datetime
import json
import math
import multiprocessing
import os
import signal
import sys
import threading
import time
from typing import Any, Protocol

import torch
import torch.distributed as dist

from bsopt.training._memory import is_oom_error

# Seconds a collective may wait for the other ranks before the trial is failed. Between two
# training steps no rank waits on anything else, so this only bounds a rank that hangs (one
# that dies is noticed at once on gloo). Override with BSOPT_DIST_TIMEOUT.
DEFAULT_TIMEOUT = 300.0
ENV_TIMEOUT = "BSOPT_DIST_TIMEOUT"
_FLAG_OK, _FLAG_OOM, _FLAG_ERROR = 0, 1, 2


class DistributedError(RuntimeError):
    """A rank died, hung past the timeout or left: the trial cannot go on with this group."""


class RankError(RuntimeError):
    """Training raised on some rank; every rank raises this at the same step, so none hangs.

    The group stays usable: the ranks wait for rank 0's next command.
    """


class SharedOutOfMemory(torch.OutOfMemoryError):
    """An out-of-memory error on one or more ranks, raised by every rank at the same step.

    It is an ``torch.OutOfMemoryError``, so the single-process OOM rules apply unchanged: the
    trial restarts with half the per-device micro-batch on every rank, down to the floor.
    """


def timeout_seconds() -> float:
    """The collective timeout: ``$BSOPT_DIST_TIMEOUT`` seconds, else 300."""
    raw = os.environ.get(ENV_TIMEOUT)
    if raw is None:
        return DEFAULT_TIMEOUT
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not (value > 0 and math.isfinite(value)):
        raise ValueError(
            f"{ENV_TIMEOUT} must be a positive number of seconds, but got {raw!r}. "
            f"Unset it for the default ({DEFAULT_TIMEOUT:g} s)."
        )
    return value


def check_devices(devices: object) -> int:
    """``devices`` as an int >= 1, or a ``ValueError`` that names the fix."""
    if isinstance(devices, bool) or not isinstance(devices, int) or devices < 1:
        raise ValueError(
            f"devices must be an integer >= 1 (processes per trial, one per device), but got "
            f"{devices!r}. Use devices=1 for one process per trial."
        )
    return devices


def backend_for(device_type: str) -> str:
    return "nccl" if device_type == "cuda" else "gloo"


def rank_device(device_type: str, local_rank: int) -> torch.device:
    """The device of a rank: ``cuda:<local rank>`` on CUDA, the CPU otherwise."""
    return torch.device("cuda", local_rank) if device_type == "cuda" else torch.device("cpu")


def share(n: int, rank: int, size: int) -> tuple[int, int]:
    """``(start, stop)`` of ``rank``'s slice of ``n`` samples: sizes differ by at most one,
    the first ``n % size`` ranks taking one more."""
    base, extra = divmod(n, size)
    start = rank * base + min(rank, extra)
    return start, start + base + (rank < extra)


@dataclass(eq=False)
class World:
    """One rank's view of the trial's process group.

    ``rank`` 0 owns the trial (samples, reports, decides); ``size`` is the number of
    processes; ``device`` this rank's device. ``store`` is the key-value store of the
    rendezvous, used for JSON messages from rank 0.
    """

    rank: int
    size: int
    device: torch.device
    store: Any = field(repr=False)
    timeout: float = DEFAULT_TIMEOUT
    sequence: int = 0  # the command being run (rank 0 numbers them, followers follow)
    alive: Callable[[], bool] | None = field(default=None, repr=False)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def backend(self) -> str:
        return backend_for(self.device.type)

    def share(self, n: int) -> tuple[int, int]:
        """This rank's ``(start, stop)`` within a global batch of ``n`` samples."""
        return share(n, self.rank, self.size)

    # -- tensors: the process group ------------------------------------------------------
    def _collective(self, what: str, call: Callable[..., object], *args: Any, **kw: Any) -> None:
        try:
            call(*args, **kw)
        except RuntimeError as error:  # gloo/NCCL report a dead or late peer this way
            raise DistributedError(
                f"rank {self.rank}: {what} failed, another rank died or hung "
                f"({str(error).splitlines()[0][:200]})"
            ) from None

    def broadcast_state(self, module: torch.nn.Module) -> None:
        """Every rank starts from rank 0's parameters and buffers (one broadcast per dtype)."""
        tensors = [t for t in module.state_dict(keep_vars=True).values()]
        by_dtype: dict[torch.dtype, list[torch.Tensor]] = {}
        for t in tensors:
            by_dtype.setdefault(t.dtype, []).append(t)
        for group in by_dtype.values():
            flat = torch.cat([t.detach().reshape(-1) for t in group])
            self._collective("broadcasting the initial weights", dist.broadcast, flat, 0)
            offset = 0
            with torch.no_grad():
                for t in group:
                    t.copy_(flat[offset : offset + t.numel()].view_as(t))
                    offset += t.numel()

    def reduce_gradients(
        self, parameters: Sequence[torch.nn.Parameter], extras: Sequence[float | torch.Tensor]
    ) -> list[float]:
        """Sum the gradients of ``parameters`` over the ranks in place, and ``extras`` with them.

        A parameter without a gradient on this rank (no samples, or unused) counts as zero.
        The gradients go in one flat buffer, one collective per step; ``extras`` (scalars)
        ride at its end and come back summed over the ranks.
        """
        grads: list[torch.Tensor] = []
        for p in parameters:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
            grads.append(p.grad)
        dtype = grads[0].dtype if grads else torch.float32
        tail = (
            torch.stack(
                [
                    e.detach().to(self.device, dtype)
                    if isinstance(e, torch.Tensor)
                    else torch.tensor(float(e), device=self.device, dtype=dtype)
                    for e in extras
                ]
            )
            if extras
            else torch.zeros(0, device=self.device, dtype=dtype)
        )
        flat = torch.cat([g.reshape(-1).to(dtype) for g in grads] + [tail])
        self._collective("the gradient all-reduce", dist.all_reduce, flat)
        offset = 0
        for g in grads:
            g.copy_(flat[offset : offset + g.numel()].view_as(g))
            offset += g.numel()
        return flat[offset:].tolist()

    def reduce_flags(self, flag: int) -> int:
        """The largest failure flag of any rank (0 fine, 1 out of memory, 2 error)."""
        buf = torch.tensor([float(flag)], device=self.device)
        self._collective("the final check", dist.all_reduce, buf, op=dist.ReduceOp.MAX)
        return int(buf.item())

    # -- messages: the store -------------------------------------------------------------
    def post(self, key: str, message: dict[str, Any]) -> None:
        """Rank 0 publishes ``message`` (JSON) under ``key`` for the other ranks."""
        try:
            self.store.set(f"bsopt/{key}", json.dumps(message))
        except RuntimeError as error:
            raise DistributedError(f"the rendezvous store is gone ({error})") from None

    def wait(self, key: str) -> dict[str, Any]:
        """Wait for rank 0's message ``key``, for as long as it takes (polling the store).

        Raises:
            DistributedError: the store went away (rank 0 died) or ``alive()`` said no.
        """
        name = f"bsopt/{key}"
        pause = 0.0005
        try:
            while not self.store.check([name]):
                if self.alive is not None and not self.alive():
                    raise DistributedError(f"rank {self.rank}: rank 0 is gone")
                time.sleep(pause)
                pause = min(pause * 1.5, 0.02)
            raw = self.store.get(name)
        except RuntimeError as error:
            if isinstance(error, DistributedError):
                raise
            raise DistributedError(
                f"rank {self.rank}: the rendezvous store is gone, rank 0 died ({error})"
            ) from None
        message: dict[str, Any] = json.loads(raw.decode() if isinstance(raw, bytes) else raw)
        return message

    def note_error(self, text: str) -> None:
        """Leave this rank's error message where rank 0 can read it."""
        with contextlib.suppress(RuntimeError):
            self.store.set(f"bsopt/error/{self.sequence}/{self.rank}", text[:500])

    def errors(self) -> list[str]:
        """The error messages the ranks left for the current command."""
        found = []
        for rank in range(self.size):
            name = f"bsopt/error/{self.sequence}/{rank}"
            with contextlib.suppress(RuntimeError):
                if self.store.check([name]):
                    found.append(f"rank {rank}: {self.store.get(name).decode()}")
        return found

    def close(self) -> None:
        if dist.is_initialized():
            with contextlib.suppress(Exception):
                dist.destroy_process_group()


def _init_group(world: World, *, init_store: Any | None) -> None:
    options: dict[str, Any] = {
        "backend": world.backend,
        "rank": world.rank,
        "world_size": world.size,
        "timeout": datetime.timedelta(seconds=world.timeout),
    }
    if world.device.type == "cuda":
        torch.cuda.set_device(world.device)
        options["device_id"] = world.device
    if init_store is not None:
        options["store"] = init_store
    else:
        options["init_method"] = "env://"
    dist.init_process_group(**options)


# -- rank 0 starts the others ----------------------------------------------------------------


class Follower(Protocol):
    """What a spawned rank runs: ``prepare()`` (build the model and data, before the group
    forms, so a broken study fails fast) returns ``run(world)``, the follower loop."""

    def prepare(self, rank: int) -> Callable[[World], None]: ...


@dataclass(eq=False)
class Group:
    """The process group of a trial as rank 0 holds it: its :class:`World` and the ranks it
    started (none under ``torchrun``)."""

    world: World
    processes: list[multiprocessing.process.BaseProcess] = field(default_factory=list)
    started_seconds: float = 0.0
    closed: bool = False

    def command(self, message: dict[str, Any]) -> None:
        """Send the next command to every rank; it becomes ``world.sequence``."""
        self.world.sequence += 1
        self.world.post(f"cmd/{self.world.sequence}", message)

    def healthy(self) -> bool:
        return not self.closed and all(p.is_alive() for p in self.processes)

    def close(self, *, graceful: bool = True, wait: float = 10.0) -> None:
        """Stop the ranks: a ``stop`` command when ``graceful``, then a kill after ``wait``."""
        if self.closed:
            return
        self.closed = True
        if graceful and self.healthy_processes():
            with contextlib.suppress(DistributedError):
                self.command({"kind": "stop"})
            deadline = time.monotonic() + wait
            for p in self.processes:
                p.join(timeout=max(0.0, deadline - time.monotonic()))
        for p in self.processes:
            if p.is_alive():
                p.kill()
            p.join(timeout=5.0)
        self.world.close()

    def healthy_processes(self) -> bool:
        return all(p.is_alive() for p in self.processes)


def free_threads(devices: int) -> int:
    """CPU threads for each of ``devices`` ranks sharing this process's threads."""
    return max(1, torch.get_num_threads() // devices)


def start_group(
    devices: int,
    follower: Follower,
    *,
    device_type: str = "cpu",
    timeout: float | None = None,
    start_timeout: float = 300.0,
) -> Group:
    """Make this process rank 0 of a new group of ``devices`` processes.

    Starts ``devices - 1`` ranks (spawned interpreters) with a rendezvous store on
    127.0.0.1 at a port the system picks, waits until each has run ``follower.prepare``,
    then forms the process group (gloo on the CPU, NCCL on CUDA, rank ``r`` on
    ``cuda:r``). On the CPU the ranks share this process's torch threads.

    Raises:
        DistributedError: a rank failed to start (its error message is included) or did not
            join within ``start_timeout`` seconds.
    """
    check_devices(devices)
    if dist.is_initialized():
        raise DistributedError(
            "This process already holds a process group (torch.distributed's default "
            "group), and a process can be rank 0 of one group at a time. Close the other one "
            "first: Objective.close(), Group.close() or torch.distributed.destroy_process_group()."
        )
    timeout = timeout or timeout_seconds()
    began = time.perf_counter()
    store = dist.TCPStore(
        "127.0.0.1",
        0,
        world_size=devices,
        is_master=True,
        timeout=datetime.timedelta(seconds=timeout),
        wait_for_workers=False,
    )
    threads = free_threads(devices) if device_type == "cpu" else torch.get_num_threads()
    context = multiprocessing.get_context("spawn")
    processes: list[multiprocessing.process.BaseProcess] = []
    for rank in range(1, devices):
        process = context.Process(
            target=_follower_main,
            args=(rank, devices, store.port, follower, device_type, threads, os.getpid(), timeout),
            name=f"bsopt-rank-{rank}",
        )
        process.start()
        processes.append(process)
    world = World(0, devices, rank_device(device_type, 0), store, timeout)
    group = Group(world, processes)
    try:
        _await_ranks(world, processes, start_timeout)
        if device_type == "cpu":
            torch.set_num_threads(threads)
        _init_group(world, init_store=store)
    except BaseException:
        group.close(graceful=False)
        raise
    group.started_seconds = time.perf_counter() - began
    return group


def _await_ranks(
    world: World, processes: Sequence[multiprocessing.process.BaseProcess], limit: float
) -> None:
    deadline = time.monotonic() + limit
    waiting = set(range(1, world.size))
    while waiting:
        for rank in sorted(waiting):
            if world.store.check([f"bsopt/ready/{rank}"]):
                waiting.discard(rank)
            elif world.store.check([f"bsopt/failed/{rank}"]):
                text = world.store.get(f"bsopt/failed/{rank}").decode()
                raise DistributedError(f"rank {rank} could not start: {text}")
            elif not processes[rank - 1].is_alive():
                raise DistributedError(
                    f"rank {rank} exited while starting (exit code "
                    f"{processes[rank - 1].exitcode})."
                )
        if waiting and time.monotonic() > deadline:
            raise DistributedError(f"ranks {sorted(waiting)} did not start within {limit:g} s.")
        if waiting:
            time.sleep(0.01)


def _watch_parent(parent: int) -> None:
    # A rank whose rank 0 died (even by SIGKILL) must not linger holding a device.
    while True:
        if os.getppid() != parent:
            os._exit(3)
        time.sleep(0.5)


def _follower_main(
    rank: int,
    size: int,
    port: int,
    follower: Follower,
    device_type: str,
    threads: int,
    parent: int,
    timeout: float,
) -> None:
    """Entry point of a spawned rank."""
    # Ctrl-C reaches every process of the terminal: rank 0 decides, the others follow it.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    threading.Thread(target=_watch_parent, args=(parent,), daemon=True).start()
    torch.set_num_threads(threads)
    store = dist.TCPStore(
        "127.0.0.1",
        port,
        world_size=size,
        is_master=False,
        timeout=datetime.timedelta(seconds=timeout),
    )
    try:
        run = follower.prepare(rank)
    except Exception as error:
        store.set(f"bsopt/failed/{rank}", f"{type(error).__name__}: {error}"[:500])
        sys.exit(1)
    world = World(
        rank,
        size,
        rank_device(device_type, rank),
        store,
        timeout,
        alive=lambda: os.getppid() == parent,
    )
    store.set(f"bsopt/ready/{rank}", "1")
    _init_group(world, init_store=store)
    try:
        run(world)
    except DistributedError as error:
        print(f"bsopt: {error}", file=sys.stderr)
        sys.exit(1)
    except Exception as error:
        # Rank 0 sees this rank leave and fails the trial with this message.
        text = f"{type(error).__name__}: {error}"
        world.note_error(text)
        print(f"bsopt: rank {rank}: {text}", file=sys.stderr)
        sys.exit(1)
    finally:
        world.close()


# -- torchrun -------------------------------------------------------------------------------


def launched_by_torchrun() -> bool:
    """Whether this process is one rank of a group that ``torchrun`` started."""
    return all(k in os.environ for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR"))


def join_from_env(device_type: str = "cpu", *, timeout: float | None = None) -> World:
    """Join the group ``torchrun`` started (``env://``): rank and size from the environment.

    Rank ``r`` uses ``cuda:<LOCAL_RANK>`` on CUDA. The group's store carries the messages.
    """
    rank, size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local = int(os.environ["LOCAL_RANK"])
    world = World(rank, size, rank_device(device_type, local), None, timeout or timeout_seconds())
    _init_group(world, init_store=None)
    # NOTE: the default group's store is private API; it is the store torchrun rendezvoused on.
    world.store = dist.PrefixStore("bsopt-run", dist.distributed_c10d._get_default_store())
    return world


# -- follower-side helpers used by the trainer ----------------------------------------------


def flag_of(error: BaseException) -> int:
    """The failure flag a rank contributes for ``error``: out of memory or another error."""
    return _FLAG_OOM if is_oom_error(error) else _FLAG_ERROR


def raise_flag(world: World, flag: int, where: str) -> None:
    """Raise on every rank at once when any rank failed (``flag`` is the agreed maximum)."""
    if flag == _FLAG_OK:
        return
    detail = "; ".join(world.errors()) or "no message"
    if flag == _FLAG_OOM:
        raise SharedOutOfMemory(
            f"out of memory on a rank during {where}, so every rank retries ({detail})"
        )
    raise RankError(f"training failed on a rank during {where}: {detail}")
