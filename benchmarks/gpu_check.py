"""One command that checks bsopt's CUDA path and measures its GPU figures (< 5 min, one GPU).

    python benchmarks/gpu_check.py [--quick] [--json PATH] [--only NAME ...]

Prints one table (check, status, figure, goal, detail) and exits 1 when any row FAILs, 0
otherwise. Each check runs in a process of its own with its own time limit, so a check
that breaks the CUDA context, hangs in NCCL or leaks memory cannot spoil the next one; a
check that outlives its limit is stopped (with every process it started) and FAILs. The
limits add up to under five minutes on one GPU (three times as long on a CPU). Every study
lives in a temporary SQLite file, never in ``storage/``; nothing here needs the network.

The checks, in order (``--only NAME`` runs one; repeat it for several):

* ``trainer``: ``bsopt.training.train`` against a bare loop (``randperm``, slices, forward,
  backward, AdamW) on the same small ResNet-style CNN, data and initial weights, under
  bf16 autocast on CUDA. Figure: training samples/s of the trainer over the bare loop (the
  median of per-pair ratios, the two loops alternating); goal >= 0.8 (CUDA). Also checked:
  ``samples_seen`` exact, ``amp`` bfloat16.
* ``probe``: ``Objective.probe`` finds the largest micro-batch of a model sized from the
  free GPU memory (its activations fill about 90% of it at 32k samples); a searched batch
  above that limit then trains by accumulation: ``samples_seen`` exact, no OOM, and the
  trial's peak memory at least half the GPU's.
* ``oom``: a trial whose batch needs about 7x the free memory: a real CUDA out-of-memory
  error, recovered by halving the micro-batch (or the trial pruned as infeasible); the
  next trial completes, and ``torch.cuda.memory_allocated`` after each of the three trials
  is the same.
* ``memory``: ``torch.cuda.memory_allocated`` after each of 5 trials (batch sizes 32..1024,
  probing) equals its value after a first, warm-up trial.
* ``nccl``: one run of the trainer through a process group of one rank (NCCL on CUDA: the
  weight broadcast and gradient all-reduce of ``--devices``) equals the run in one
  process; then ``torchrun --nproc-per-node 1 -m bsopt run digits --devices 1`` finishes.
* ``jobs``: ``bsopt run digits --jobs 2`` on one GPU: exactly the requested trials, none
  failed, every trial on CUDA, two trials running at once.
* ``digits``: time to the answer of ``bsopt run digits --trials 30`` against Optuna's
  PyTorch-example pattern (DataLoaders, ``trial.report`` per epoch, ``MedianPruner``) on the
  same device, each timed from launch to exit; goal <= 1.0x (CUDA). On the CPU every
  command gets one torch thread (``OMP_NUM_THREADS=1``), on CUDA torch's default.

Without CUDA the CPU parts run: the same code at small sizes, with device memory simulated
by ``bsopt.training.MemoryBudget`` (probe, OOM) and live tensors counted through the
garbage collector (memory); gloo instead of NCCL. Timing goals apply on CUDA only; ``oom``
and ``nccl`` are SKIP when their CPU stand-in passed (FAIL when it did not), and the last
line says "CUDA not available". ``--quick``: smoke sizes, fewer repeats and trials.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
import contextlib
from dataclasses import asdict, dataclass, field
import functools
import gc
import json
import math
import os
from pathlib import Path
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from typing import Any

import _common
import optuna
from optuna.trial import FrozenTrial
import torch
from torch import nn
import torch.nn.functional as F

import bsopt
from bsopt.training import TrainResult, mlp, train
from bsopt.training._distributed import start_group
from bsopt.training._memory import live_tensors

PASS, FAIL, SKIP = "PASS", "FAIL", "SKIP"
NO_CUDA = "CUDA not available"
HEADER = ("check", "status", "figure", "goal", "detail")
TOTAL_LIMIT_S = 290.0  # all checks on one GPU, from the first child's start
CPU_FACTOR = 3.0  # the limits on a CPU-only machine, relative to one GPU's
MARGIN_S = 5.0  # a check stops its own commands this long before the parent stops it
LR = 1e-3
FEATURES = 32  # inputs of the memory-hungry model
TARGET = 2**15  # the batch that fills about 90% of the free GPU memory in probe and oom


@dataclass
class Row:
    """One line of the table: what was checked, and whether it held."""

    name: str
    status: str
    figure: str
    goal: str
    detail: str
    seconds: float = 0.0


@dataclass(frozen=True)
class Ctx:
    """Where a check runs: CUDA or the CPU, smoke sizes or not, its own folder, and the
    wall-clock time (``time.time()``) by which it must have stopped its commands."""

    quick: bool
    cuda: bool
    folder: Path
    deadline: float = math.inf

    @property
    def device(self) -> torch.device:
        return torch.device("cuda" if self.cuda else "cpu")

    def url(self, name: str) -> str:
        return f"sqlite:///{self.folder / name}.db"


@dataclass(frozen=True)
class Check:
    name: str
    run: Callable[[Ctx], Row]
    goal: str
    limit_s: float  # on one GPU; CPU_FACTOR times this without CUDA


@dataclass
class Verdict:
    """The conditions a check asserts: the row FAILs naming each one that did not hold."""

    failed: list[str] = field(default_factory=list)

    def need(self, condition: bool, what: str) -> None:
        if not condition:
            self.failed.append(what)

    def row(self, name: str, figure: str, detail: str, *, cpu_skip: bool = False) -> Row:
        """FAIL on a failed condition; else SKIP for a check whose subject needs CUDA run on
        its CPU stand-in (``cpu_skip``), else PASS. The goal is filled in from CHECKS."""
        if self.failed:
            return Row(name, FAIL, figure, "", "; ".join(self.failed) + f" | {detail}")
        if cpu_skip:
            return Row(name, SKIP, figure, "", f"{NO_CUDA}; CPU stand-in passed: {detail}")
        return Row(name, PASS, figure, "", detail)


# --------------------------------------------------------------------------- models, data


def _conv(cin: int, cout: int, stride: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout)]


class Residual(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            *_conv(channels, channels), nn.ReLU(), *_conv(channels, channels)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x + self.body(x))


def resnet(width: int, classes: int = 10) -> nn.Module:
    """A small ResNet-style CNN: a stem, a residual block, a strided convolution, a residual
    block at twice the width, global average pooling and a linear head."""
    return nn.Sequential(
        *_conv(3, width),
        nn.ReLU(),
        Residual(width),
        *_conv(width, 2 * width, 2),
        nn.ReLU(),
        Residual(2 * width),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(2 * width, classes),
    )


def build_resnet(width: int, params: bsopt.Params) -> nn.Module:
    return resnet(width)


class Scale(nn.Module):
    """``tanh(x * w)``: cheap to compute, and autograd keeps its fp32 output."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(x * self.weight)


def memory_hog(width: int, depth: int, params: bsopt.Params | None = None) -> nn.Module:
    """A model whose activations, about ``4 * width * (depth + 1)`` bytes a sample, fill a
    GPU at a chosen batch while its compute stays small (memory-bound elementwise layers)."""
    layers = [Scale(width) for _ in range(depth)]
    return nn.Sequential(nn.Linear(FEATURES, width), *layers, nn.Linear(width, 4))


def hog_bytes(width: int, depth: int) -> int:
    """The estimated activation bytes per sample of :func:`memory_hog`."""
    return 4 * width * (depth + 1)


def hog_shape(free_bytes: int, target: int, width: int = 65536) -> tuple[int, int]:
    """``(width, depth)`` of a :func:`memory_hog` whose training step at ``target`` samples
    needs about 90% of ``free_bytes``."""
    depth = round(0.9 * free_bytes / target / (4 * width)) - 1
    return width, max(2, min(64, depth))


def teacher_data(n: int, shape: tuple[int, ...], *, n_val: int = 512) -> bsopt.TensorData:
    """``n`` training and ``n_val`` validation Gaussian inputs labelled (10 classes for
    images, else 4) by a fixed random linear teacher: learnable, and made at once."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n + n_val, *shape, generator=g)
    w = torch.randn(math.prod(shape), 10 if len(shape) == 3 else 4, generator=g)
    y = (x.flatten(1) @ w).argmax(1)
    return bsopt.TensorData(x[:n], y[:n], x[n:], y[n:], name="teacher")


def on_device(data: bsopt.TensorData, device: torch.device) -> None:
    # TensorData keeps one copy per device for every trial: move it before any baseline.
    next(iter(data.val_batches(device)))


def device_memory(device: torch.device) -> int:
    """Bytes of live tensors: ``torch.cuda.memory_allocated`` on CUDA; on the CPU the tensors
    reachable by the garbage collector (each storage once)."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        return int(torch.cuda.memory_allocated(device))
    return live_tensors()[1]


def warm_up(device: torch.device) -> None:
    """A matmul forward and backward: cuBLAS keeps a workspace per thread from the first
    one on, which is no trial's leak."""
    a = torch.ones(64, 64, device=device, requires_grad=True)
    (a @ a).sum().backward()


def new_study(ctx: Ctx, name: str, objective: bsopt.Objective) -> optuna.Study:
    return bsopt.create_study(
        name,
        storage=ctx.url(name),
        direction=objective.direction,
        pruner=optuna.pruners.NopPruner(),
    )


def mib(n: float) -> str:
    return f"{n / 2**20:,.1f} MiB"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def gpu_name() -> str:
    props = torch.cuda.get_device_properties(0)
    return f"{props.name}, {props.total_memory / 2**30:.0f} GiB"


# --------------------------------------------------------------------------- trainer


def bare_loop(model: nn.Module, data: bsopt.TensorData, batch: int, device: torch.device) -> float:
    """Samples per second of one epoch of a loop with nothing but the essentials, timed as
    the trainer times itself (the shuffle in, evaluation and set-up out)."""
    model.to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=0.0)
    autocast: contextlib.AbstractContextManager[object] = contextlib.nullcontext()
    if device.type == "cuda":
        autocast = torch.autocast("cuda", dtype=torch.bfloat16)
    x, y = data.x_train.to(device), data.y_train.to(device)
    n = len(x)
    sync(device)
    tick = time.perf_counter()
    order = torch.randperm(n, generator=torch.Generator().manual_seed(0)).to(device)
    xs, ys = x[order], y[order]
    for start in range(0, n, batch):
        with autocast:
            loss = F.cross_entropy(model(xs[start : start + batch]), ys[start : start + batch])
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    sync(device)
    return n / (time.perf_counter() - tick)


def check_trainer(ctx: Ctx) -> Row:
    width, side, n, batch = (64, 32, 16384, 512) if ctx.cuda else (8, 8, 1024, 64)
    if ctx.quick and not ctx.cuda:
        n, batch = 512, 32
    repeats = 3 if ctx.quick else 5
    data = teacher_data(n, (3, side, side))
    on_device(data, ctx.device)

    def model() -> nn.Module:
        torch.manual_seed(0)
        return resnet(width)

    def trainer() -> TrainResult:
        params = bsopt.Params(batch_size=batch, lr=LR)
        budget = bsopt.Budget(1, evals=1)
        return train(model(), data, params, budget=budget, device=ctx.device, amp="bf16")

    trainer(), bare_loop(model(), data, batch, ctx.device)  # warm-up: kernels, cuDNN, AdamW
    ratios, results = [], []
    for i in range(repeats):
        # Alternate which loop goes first, so a drift of the machine falls on both alike.
        bare = bare_loop(model(), data, batch, ctx.device) if i % 2 else 0.0
        results.append(trainer())
        bare = bare or bare_loop(model(), data, batch, ctx.device)
        ratios.append(results[-1].samples_per_second / bare)
    ratio = _common.median(ratios)
    amp = "bfloat16" if ctx.cuda else "off"
    v = Verdict()
    v.need(all(r.samples_seen == n for r in results), f"samples_seen != {n}")
    v.need(all(r.amp == amp for r in results), f"amp {results[-1].amp}, not {amp}")
    if ctx.cuda:
        v.need(ratio >= 0.8, f"ratio {ratio:.2f} < 0.8")
    rate = _common.median([r.samples_per_second for r in results])
    # The trainer runs with its defaults, so whatever it measures besides (the noise scale)
    # counts against it.
    noise = results[-1].noise_summary.get("noise_scale_measurements", 0)
    where = gpu_name() if ctx.cuda else "CPU fp32 (autocast is CUDA's), ratio not gated"
    detail = (
        f"ResNet width {width}, {n} images 3x{side}x{side}, batch {batch}, {repeats} pairs "
        f"(ratios {_common.spread(ratios)}); trainer {rate:,.0f} samples/s with its defaults "
        f"({noise} noise-scale measurements a run); {where}"
    )
    return v.row("trainer", f"{ratio:.2f}x", detail)


# --------------------------------------------------------------------------- probe, OOM


@dataclass(frozen=True)
class Hog:
    """The memory-hungry model of a check and what it was sized from."""

    width: int
    depth: int
    free: int  # free device bytes when sized (CUDA), else 0
    budget_mb: float | None  # the simulated device memory on the CPU

    def build(self) -> Callable[[bsopt.Params], nn.Module]:
        return functools.partial(memory_hog, self.width, self.depth)

    def describe(self) -> str:
        shape = f"{self.width}x{self.depth}"
        if self.budget_mb is not None:
            return f"hog {shape} under a simulated {self.budget_mb:g} MiB device"
        per_sample = mib(hog_bytes(self.width, self.depth))
        return f"hog {shape}, {per_sample} a sample, free {mib(self.free)}"


def sized_hog(ctx: Ctx) -> Hog:
    """A hog whose step at :data:`TARGET` samples needs about 90% of the free GPU memory;
    on the CPU a small one under a simulated 1 MiB device (it fits about 700 samples)."""
    if not ctx.cuda:
        return Hog(64, 4, 0, 1.0)
    warm_up(ctx.device)
    free, _total = torch.cuda.mem_get_info()
    return Hog(*hog_shape(free, TARGET), free, None)


def check_probe(ctx: Ctx) -> Row:
    hog = sized_hog(ctx)
    top = 4 * TARGET if ctx.cuda else 1024
    objective = bsopt.make_objective(
        hog.build(),
        teacher_data(top, (FEATURES,)),
        space=bsopt.SearchSpace(batch_size=(16, top), lr=(LR, LR), dropout=(0.0, 0.0)),
        budget=bsopt.Budget(1, evals=1),
        device=ctx.device,
        memory_budget_mb=hog.budget_mb,
        probe=True,
    )
    study = new_study(ctx, "probe", objective)
    probed = objective.probe(study)
    batch = 2 ** probed.limit.bit_length()  # the smallest power of two above the limit
    v = Verdict()
    v.need(not probed.capped, f"every batch up to {top} fits: the model is too small")
    v.need(batch <= top, f"the limit {probed.limit} is too close to the data's {top}")
    if v.failed:
        return v.row("probe", str(probed.limit), f"{hog.describe()}: {probed.describe()}")
    study.enqueue_trial({"log2_batch_size": batch.bit_length() - 1})
    bsopt.optimize(study, objective, trials=1, show_progress_bar=False)
    trial = study.trials[-1]
    a = trial.user_attrs
    micro = a.get("micro_batch_size")
    v.need(trial.state.name == "COMPLETE", f"trial {trial.state.name}")
    v.need(a.get("samples_seen") == top, f"samples_seen {a.get('samples_seen')} != {top}")
    v.need(micro == probed.micro_batch_size, f"micro-batch {micro} != {probed.micro_batch_size}")
    v.need(a.get("accumulation_steps", 0) >= 2, "no accumulation")
    v.need(a.get("oom_retries") == 0, f"{a.get('oom_retries')} OOM retries")
    peak = ""
    if ctx.cuda:
        total = torch.cuda.get_device_properties(0).total_memory
        share = a.get("peak_memory_mb", 0) * 2**20 / total
        v.need(share >= 0.5, f"peak {share:.0%} of the GPU's memory, under 50%")
        peak = f"; trial peak {share:.0%} of {mib(total)}"
    detail = (
        f"{hog.describe()}: {probed.describe()}; batch {batch} trained as "
        f"{a.get('accumulation_steps')} x {micro}, samples_seen {a.get('samples_seen')}{peak}"
    )
    return v.row("probe", f"limit {probed.limit}, micro {probed.micro_batch_size}", detail)


def check_oom(ctx: Ctx) -> Row:
    hog = sized_hog(ctx)
    # 8x the batch that fills 90% of the free memory: the first attempts must run out.
    huge = 8 * TARGET if ctx.cuda else 4096
    data = teacher_data(huge, (FEATURES,))
    on_device(data, ctx.device)
    objective = bsopt.make_objective(
        hog.build(),
        data,
        space=bsopt.SearchSpace(batch_size=(64, huge), lr=(LR, LR), dropout=(0.0, 0.0)),
        budget=bsopt.Budget(1, evals=1),
        device=ctx.device,
        memory_budget_mb=hog.budget_mb,
        probe=False,
        min_micro_batch_size=huge // 16,
    )
    study = new_study(ctx, "oom", objective)
    small = 1024 if ctx.cuda else 64
    memory: list[int] = []
    for batch in (small, huge, 2 * small):  # a warm-up trial, the OOM trial, the next one
        study.enqueue_trial({"log2_batch_size": batch.bit_length() - 1})
        bsopt.optimize(study, objective, trials=len(memory) + 1, show_progress_bar=False)
        memory.append(device_memory(ctx.device))
    first, oom, after = study.trials
    a = oom.user_attrs
    retries = a.get("oom_retries", 0)
    recovered = oom.state.name == "COMPLETE" and retries >= 1 and a.get("samples_seen") == huge
    infeasible = oom.state.name == "PRUNED" and a.get("stop_reason") == "oom"
    v = Verdict()
    v.need(first.state.name == "COMPLETE", f"the warm-up trial {first.state.name}")
    v.need(recovered or infeasible, f"the OOM trial {oom.state.name}, {retries} retries")
    v.need(after.state.name == "COMPLETE", f"the next trial {after.state.name}")
    v.need(memory[0] == memory[1] == memory[2], "memory differs after the trials")
    outcome = (
        f"recovered after {retries} halvings (micro-batch {a.get('micro_batch_size')})"
        if recovered
        else f"pruned as infeasible ({str(a.get('stop_detail'))[:150]})"
    )
    need = huge * hog_bytes(hog.width, hog.depth)
    kind = (
        f"CUDA OOM (needs ~{need / max(hog.free, 1):.1f}x the free memory)"
        if ctx.cuda
        else "simulated OOM"
    )
    detail = (
        f"{hog.describe()}; batch {huge}: {kind} {outcome}; the next trial "
        f"{after.state.name}; memory after the 3 trials {', '.join(mib(m) for m in memory)}"
    )
    figure = f"{retries} halvings" if recovered else "pruned (oom)"
    return v.row("oom", figure, detail, cpu_skip=not ctx.cuda)


# --------------------------------------------------------------------------- memory


def check_memory(ctx: Ctx) -> Row:
    width, side, n, top = (32, 32, 4096, 1024) if ctx.cuda else (8, 8, 1024, 256)
    data = teacher_data(n, (3, side, side))
    on_device(data, ctx.device)
    objective = bsopt.make_objective(
        functools.partial(build_resnet, width),
        data,
        space=bsopt.SearchSpace(batch_size=(top // 32, top), dropout=(0.0, 0.0)),
        budget=bsopt.Budget(1, evals=2),
        device=ctx.device,
    )
    study = new_study(ctx, "memory", objective)
    before = device_memory(ctx.device)
    after: list[int] = []
    for batch in (top // 4, top // 32, top, top // 16, top // 2, top // 8):
        study.enqueue_trial({"log2_batch_size": batch.bit_length() - 1})
        bsopt.optimize(study, objective, trials=len(after) + 1, show_progress_bar=False)
        after.append(device_memory(ctx.device))
    base, rest = after[0], after[1:]
    drift = max(abs(m - base) for m in rest)
    v = Verdict()
    v.need(drift == 0, f"memory moved by up to {drift:,} bytes between trials")
    v.need(all(t.state.is_finished() for t in study.trials), "a trial did not finish")
    what = "torch.cuda.memory_allocated" if ctx.cuda else "live tensor bytes (gc)"
    detail = (
        f"{what}: {mib(before)} before, {mib(base)} after a warm-up trial, then "
        f"{', '.join(mib(m) for m in rest)} after 5 trials of batch {top // 32}..{top}"
    )
    return v.row("memory", f"drift {drift:,} bytes", detail)


# --------------------------------------------------------------------------- NCCL


class NoFollower:
    """The follower of a one-rank group, which starts no other ranks."""

    def prepare(self, rank: int) -> Callable[[Any], None]:
        raise RuntimeError("a one-rank group starts no other ranks")


def train_in_group(ctx: Ctx, spread: bool) -> tuple[TrainResult, str]:
    """One seeded run in this process, or through a process group of one rank (NCCL on
    CUDA, gloo on the CPU); the result and the group's backend."""
    data = teacher_data(4096, (FEATURES,))
    torch.manual_seed(0)
    model = mlp(FEATURES, 4, hidden=(256, 256))
    params, budget = bsopt.Params(batch_size=256, lr=LR), bsopt.Budget(2, evals=2)
    # NOTE: no noise scale: one rank has no smaller batch to compare its gradient with.
    options: dict[str, Any] = {"budget": budget, "measure_noise_scale": False}
    if not spread:
        return train(model, data, params, device=ctx.device, **options), ""
    group = start_group(1, NoFollower(), device_type=ctx.device.type)
    try:
        world = group.world
        return train(model, data, params, world=world, **options), world.backend
    finally:
        group.close()


def check_nccl(ctx: Ctx) -> Row:
    alone, _ = train_in_group(ctx, False)
    spread, backend = train_in_group(ctx, True)
    v = Verdict()
    want = "nccl" if ctx.cuda else "gloo"
    v.need(backend == want, f"backend {backend}, not {want}")
    v.need(spread.world_size == 1, f"world_size {spread.world_size}")
    v.need(spread.samples_seen == alone.samples_seen, "samples_seen differ")
    gap = abs(spread.val_loss - alone.val_loss) / max(abs(alone.val_loss), 1e-12)
    v.need(gap < 1e-2, f"val_loss {spread.val_loss:.5f} vs {alone.val_loss:.5f}")
    trials = 2 if ctx.quick else 3
    url = ctx.url("nccl")
    command = [
        *("-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "1"),
        *("-m", "bsopt", "run", "digits", "--devices", "1", "--no-progress"),
        *("--trials", str(trials), "--storage", url, "--study", "nccl"),
    ]
    done = run_command([sys.executable, *command], ctx, "torchrun", {"NCCL_DEBUG": "INFO"})
    v.need(done.code == 0, f"torchrun: {done.failure}")
    finished = finished_trials(url, "nccl") if done.code == 0 else []
    v.need(len(finished) == trials, f"{len(finished)} of {trials} trials finished")
    version = [ln.split("NCCL INFO")[-1].strip() for ln in done.lines if "NCCL version" in ln]
    detail = (
        f"{backend} group of 1 rank: val_loss {spread.val_loss:.5f} vs {alone.val_loss:.5f} "
        f"in one process, samples_seen {spread.samples_seen} both; torchrun --devices 1: "
        f"{len(finished)}/{trials} trials, {done.seconds:.1f} s"
        + (f"; {version[0]}" if version else "")
    )
    return v.row(
        "nccl", f"{backend}, {len(finished)}/{trials} trials", detail, cpu_skip=not ctx.cuda
    )


# --------------------------------------------------------------------------- commands


@dataclass
class Done:
    """A finished command: exit code (None: stopped at the check's deadline), seconds from
    launch to exit, and its output."""

    code: int | None
    seconds: float
    output: str

    @property
    def lines(self) -> list[str]:
        return self.output.strip().splitlines()

    @property
    def failure(self) -> str:
        why = "stopped at the check's deadline" if self.code is None else f"exit code {self.code}"
        return f"{why}: {' / '.join(self.lines[-3:])[-300:]}"


def run_command(
    cmd: Sequence[str], ctx: Ctx, name: str, env: dict[str, str] | None = None
) -> Done:
    """Run ``cmd`` from the check's folder in a session of its own; at the check's deadline
    (or when the check is stopped) it is stopped with every process it started."""
    log = ctx.folder / f"{name}.log"
    environ = command_env(ctx.cuda) | (env or {})
    tick = time.perf_counter()
    code: int | None = None
    with log.open("w") as out:
        process = subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, cwd=ctx.folder, env=environ,
            start_new_session=True,
        )  # fmt: skip
        try:
            code = process.wait(timeout=max(1.0, ctx.deadline - time.time()))
        except subprocess.TimeoutExpired:
            pass
        finally:
            if process.poll() is None:
                stop_group(process)
    return Done(code, time.perf_counter() - tick, log.read_text(errors="replace"))


def stop_group(process: subprocess.Popen[Any]) -> None:
    """SIGTERM to the process group (torchrun and bsopt stop their workers on it), then
    SIGKILL after 5 s."""
    for sig, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, None)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        try:
            process.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def command_env(cuda: bool) -> dict[str, str]:
    """The environment of a command: never the user's storage; on CUDA torch's own thread
    count, as a user runs it; on the CPU one thread, as every benchmark here (two threads
    per process on a loaded 2-core machine made ``bsopt run digits`` 5x slower)."""
    env = {k: v for k, v in os.environ.items() if k not in ("BSOPT_STORAGE", "OMP_NUM_THREADS")}
    return env if cuda else env | {"OMP_NUM_THREADS": "1"}


def finished_trials(url: str, study_name: str) -> list[FrozenTrial]:
    study = optuna.load_study(study_name=study_name, storage=url)
    return [t for t in study.get_trials(deepcopy=False) if t.state.name in ("COMPLETE", "PRUNED")]


def most_at_once(trials: Sequence[FrozenTrial]) -> int:
    """The most trials running at one moment."""
    events = []
    for t in trials:
        if t.datetime_start is not None and t.datetime_complete is not None:
            events += [(t.datetime_start, 1), (t.datetime_complete, -1)]
    running = peak = 0
    for _, step in sorted(events):  # at equal times an end (-1) sorts before a start
        running += step
        peak = max(peak, running)
    return peak


# --------------------------------------------------------------------------- jobs


def check_jobs(ctx: Ctx) -> Row:
    trials = 6 if ctx.quick else 12
    url = ctx.url("jobs")
    cmd = [sys.executable, "-m", "bsopt", "run", "digits", "--jobs", "2", "--no-progress"]
    cmd += ["--trials", str(trials), "--seed", "0", "--storage", url, "--study", "jobs"]
    done = run_command(cmd, ctx, "jobs")
    v = Verdict()
    v.need(done.code == 0, f"bsopt run: {done.failure}")
    if v.failed:
        return v.row("jobs", "-", "")
    everything = optuna.load_study(study_name="jobs", storage=url).get_trials(deepcopy=False)
    finished = finished_trials(url, "jobs")
    devices = sorted({str(t.user_attrs.get("device")) for t in finished})
    at_once = most_at_once(finished)
    want = "cuda" if ctx.cuda else "cpu"
    v.need(len(finished) == trials, f"{len(finished)} finished, not {trials}")
    v.need(not any(t.state.name == "FAIL" for t in everything), "failed trials")
    v.need(all(d.startswith(want) for d in devices), f"trained on {devices}, not {want}")
    v.need(at_once == 2, f"at most {at_once} trials at once")
    v.need("2 worker processes" in done.output, "not run in 2 worker processes")
    detail = (
        f"bsopt run digits --jobs 2 --trials {trials}: {len(finished)} finished, "
        f"{len(everything) - len(finished)} other, on {', '.join(devices)}, {at_once} at once, "
        f"{done.seconds:.1f} s from launch to exit"
    )
    return v.row("jobs", f"{len(finished)}/{trials}, {at_once} at once", detail)


# --------------------------------------------------------------------------- digits


def optuna_example(device: str, trials: int, seed: int, storage: str) -> None:
    """``bench_study.py``'s reference, Optuna's PyTorch example adapted to digits and a
    searched batch size, on ``device``."""
    import bench_study

    bench_study.optuna_example(device, trials, seed, storage)


def best_of(url: str) -> float:
    trials = optuna.load_study(study_name="digits", storage=url).get_trials(deepcopy=False)
    return max(t.value for t in trials if t.value is not None and t.state.name == "COMPLETE")


def check_digits(ctx: Ctx) -> Row:
    trials = 8 if ctx.quick else 30
    common = ["--trials", str(trials), "--seed", "0"]
    commands = {
        "bsopt": [sys.executable, "-m", "bsopt", "run", "digits", "--no-progress", *common],
        "optuna": [sys.executable, str(Path(__file__).resolve()), "--optuna-example"],
    }
    commands["optuna"] += [ctx.device.type, *common]
    runs = {
        side: run_command([*cmd, "--storage", ctx.url(side)], ctx, side)
        for side, cmd in commands.items()
    }
    v = Verdict()
    for side, done in runs.items():
        v.need(done.code == 0, f"{side}: {done.failure}")
    if v.failed:
        return v.row("digits", "-", "")
    bsopt_s, optuna_s = runs["bsopt"].seconds, runs["optuna"].seconds
    ratio = bsopt_s / optuna_s
    if ctx.cuda:
        v.need(ratio <= 1.0, f"bsopt took {ratio:.2f}x the Optuna example's time")
    detail = (
        f"{trials} trials on {ctx.device.type}, launch to exit: bsopt run digits {bsopt_s:.1f} s "
        f"(best {best_of(ctx.url('bsopt')):.4f}), Optuna example {optuna_s:.1f} s "
        f"(best {best_of(ctx.url('optuna')):.4f})"
        + ("" if ctx.cuda else "; one torch thread each; not gated on CPU (see bench_study.py)")
    )
    return v.row("digits", f"{ratio:.2f}x", detail)


# --------------------------------------------------------------------------- the run


CHECKS = {
    c.name: c
    for c in (
        Check("trainer", check_trainer, ">= 0.8x (CUDA)", 30),
        Check("probe", check_probe, "limit < high; batch above it exact", 35),
        Check("oom", check_oom, "recovered or pruned; study goes on", 30),
        Check("memory", check_memory, "0 drift over 5 trials", 25),
        Check("nccl", check_nccl, "same as 1 process; CLI runs", 40),
        Check("jobs", check_jobs, "all trials, 2 at once", 40),
        Check("digits", check_digits, "<= 1.0x (CUDA)", 90),
    )
}


def exit_code(rows: Sequence[Row]) -> int:
    """1 when any row FAILs, else 0 (a SKIP is no failure)."""
    return 1 if any(r.status == FAIL for r in rows) else 0


def render(rows: Sequence[Row]) -> str:
    """The rows as a Markdown table, left-aligned (the details are sentences)."""
    cells = [list(HEADER), *([r.name, r.status, r.figure, r.goal, r.detail] for r in rows)]
    widths = [max(len(c[i]) for c in cells) for i in range(len(HEADER))]
    lines = [
        "| " + " | ".join(c.ljust(w) for c, w in zip(cs, widths, strict=True)) + " |"
        for cs in cells
    ]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def last_line(rows: Sequence[Row], *, seconds: float, gpu: str | None) -> str:
    """The summary; without a GPU (``gpu`` None) it says that CUDA is not available."""
    counts = ", ".join(f"{sum(r.status == s for r in rows)} {s}" for s in (PASS, FAIL, SKIP))
    where = f"on {gpu}" if gpu else f"{NO_CUDA}: CPU parts only, GPU figures not measured"
    return f"gpu_check: {counts} in {seconds:.0f} s; {where}"


def run_in_child(check: Check, folder: Path, *, quick: bool, limit: float) -> Row:
    """Run ``check`` in a process of its own, stopped (with all it started) after ``limit``
    seconds; its output goes to ``folder / "check.log"``."""
    folder.mkdir(parents=True, exist_ok=True)
    out = folder / "row.json"
    deadline = time.time() + limit - MARGIN_S
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", check.name]
    cmd += ["--folder", str(folder), "--deadline", str(deadline), *(["--quick"] * quick)]
    env = {k: v for k, v in os.environ.items() if k != "BSOPT_STORAGE"}
    tick = time.perf_counter()
    with (folder / "check.log").open("w") as log:
        process = subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
        code: int | None = None
        try:
            code = process.wait(timeout=limit)
        except subprocess.TimeoutExpired:
            pass
        finally:  # also on Ctrl-C: the child is in a session of its own
            if process.poll() is None:
                stop_group(process)
    seconds = time.perf_counter() - tick
    if out.exists():
        row = Row(**json.loads(out.read_text()))
    elif code is None:
        row = Row(check.name, FAIL, "-", "", f"stopped at its time limit of {limit:.0f} s")
    else:
        row = Row(check.name, FAIL, "-", "", f"its process exited ({code}) without a result")
    row.goal, row.seconds = check.goal, seconds
    return row


def _exit_on_signal(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def child_main(name: str, folder: Path, deadline: float, quick: bool) -> int:
    """Run one check in this process; write its row to ``folder / "row.json"``."""
    _common.pin_threads()
    optuna.logging.set_verbosity(optuna.logging.WARNING)

    signal.signal(signal.SIGTERM, _exit_on_signal)  # run_command then stops its command
    ctx = Ctx(quick=quick, cuda=torch.cuda.is_available(), folder=folder, deadline=deadline)
    try:
        row = CHECKS[name].run(ctx)
    except Exception as error:
        traceback.print_exc()
        row = Row(name, FAIL, "-", "", f"{type(error).__name__}: {error}"[:400])
    (folder / "row.json").write_text(json.dumps(asdict(row)))
    return 0


def log_tail(folder: Path, lines: int = 15) -> str:
    path = folder / "check.log"
    text = path.read_text(errors="replace") if path.exists() else ""
    return "\n".join("    " + ln for ln in text.rstrip().splitlines()[-lines:])


def parent_main(args: argparse.Namespace) -> int:
    # On SIGTERM unwind like Ctrl-C, so the running check is stopped with what it started.
    signal.signal(signal.SIGTERM, _exit_on_signal)
    # Asks the driver only: a CUDA context here would hold memory the checks need.
    cuda = torch.cuda.is_available()
    names = args.only or list(CHECKS)
    mode = "quick" if args.quick else "full"
    print(f"gpu_check ({mode}): {', '.join(names)}; {'CUDA available' if cuda else NO_CUDA}")
    began = time.perf_counter()
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="bsopt-gpu-check-") as tmp:
        for name in names:
            check = CHECKS[name]
            limit = check.limit_s if cuda else CPU_FACTOR * check.limit_s
            if cuda:  # the whole run stays under five minutes on one GPU
                limit = min(limit, TOTAL_LIMIT_S - (time.perf_counter() - began))
            folder = Path(tmp) / name
            row = run_in_child(check, folder, quick=args.quick, limit=max(limit, MARGIN_S + 1))
            rows.append(row)
            print(f"  {name}: {row.status} {row.figure} ({row.seconds:.1f} s)", flush=True)
            if row.status == FAIL:
                print(f"  {name}'s output, last lines:\n{log_tail(folder)}", flush=True)
    seconds = time.perf_counter() - began
    print(render(rows))
    if args.json:
        blob = {"cuda": cuda, "quick": args.quick, "seconds": round(seconds, 1)}
        blob["rows"] = [asdict(r) for r in rows]
        Path(args.json).write_text(json.dumps(blob, indent=1) + "\n")
    print(last_line(rows, seconds=seconds, gpu=gpu_name() if cuda else None))
    return exit_code(rows)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke sizes, fewer repeats")
    parser.add_argument("--json", metavar="PATH", help="also write the rows to PATH as JSON")
    parser.add_argument(
        "--only", action="append", choices=list(CHECKS), metavar="NAME",
        help=f"run only this check (repeatable): {', '.join(CHECKS)}",
    )  # fmt: skip
    # Internal: one check in this process; the Optuna example of the digits check.
    parser.add_argument("--child", choices=list(CHECKS), help=argparse.SUPPRESS)
    parser.add_argument("--folder", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--deadline", type=float, default=math.inf, help=argparse.SUPPRESS)
    parser.add_argument("--optuna-example", metavar="DEVICE", help=argparse.SUPPRESS)
    parser.add_argument("--trials", type=int, default=30, help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--storage", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return child_main(args.child, args.folder, args.deadline, args.quick)
    if args.optuna_example:
        optuna_example(args.optuna_example, args.trials, args.seed, args.storage)
        return 0
    return parent_main(args)


if __name__ == "__main__":
    sys.exit(main())
