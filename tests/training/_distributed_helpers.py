"""Module-level models and builders for tests/training/test_distributed.py.

The other ranks of a trial run in spawned processes, which unpickle the objective: its
``build_model`` must be importable by name, so these live in a module of their own. They
record what each rank saw in files under ``$BSOPT_TEST_RECORD`` (the environment reaches
spawned processes).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
import signal
import time

import torch
from torch import nn
import torch.distributed as dist

import bsopt

RECORD = "BSOPT_TEST_RECORD"


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def folder() -> Path:
    return Path(os.environ[RECORD])


KILL = "kill-rank-1"  # rank 1 kills itself (SIGKILL) in its next training forward
OOM = "oom-rank-1"  # rank 1 cannot train more than 16 samples at once
ERROR = "error-rank-1"  # rank 1's forward raises an ordinary error
HANG = "hang-rank-1"  # rank 1 stops responding (sleeps) in its next training forward


class Recording(nn.Module):
    """An MLP that appends the size of every training batch it sees to a file.

    On rank 1 it also plays the failures the tests ask for through marker files: the
    process killed, a device out of memory (the one seam: the error text is the CUDA
    allocator's), or a bug that shows on one rank only.
    """

    def __init__(self, inner: nn.Module, path: Path) -> None:
        super().__init__()
        self.inner = inner
        self.path = str(path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            with open(self.path, "a") as out:
                out.write(f"{len(x)}\n")
            if rank() == 1:
                here = Path(self.path).parent
                if (here / KILL).exists():
                    (here / KILL).unlink()
                    os.kill(os.getpid(), signal.SIGKILL)
                if (here / OOM).exists() and len(x) > 16:
                    raise torch.OutOfMemoryError("CUDA out of memory (simulated above 16)")
                if (here / ERROR).exists():
                    raise ValueError("shape mismatch on rank 1 (simulated)")
                if (here / HANG).exists():
                    (here / HANG).unlink()
                    time.sleep(600)
        return self.inner(x)


def build_recording(params: bsopt.Params) -> nn.Module:
    """Record the params (one JSON line per build) and every training batch, per rank."""
    here = folder()
    r = rank()
    log = here / f"rank{r}-params.jsonl"
    builds = len(log.read_text().splitlines()) if log.exists() else 0
    with open(log, "a") as out:
        out.write(json.dumps({"lr": params.lr, **params.as_dict()}) + "\n")
    inner = bsopt.training.mlp(8, 3, hidden=(16,), dropout=params.dropout)
    return Recording(inner, here / f"rank{r}-samples-{builds}.txt")


class SaveAfterTraining:
    """A follower for the trainer-level tests: for each command, trains on its rank and
    saves the final weights, what the run recorded and the samples it trained on."""

    def __init__(self, out: str) -> None:
        self.out = out

    def prepare(self, rank: int):  # type: ignore[no-untyped-def]
        data = bsopt.make_synthetic(400, n_features=8, n_classes=3, seed=0)

        def run(world: object) -> None:
            while True:
                world.sequence += 1  # type: ignore[attr-defined]
                message = world.wait(f"cmd/{world.sequence}")  # type: ignore[attr-defined]
                if message["kind"] != "trial":
                    return
                tag = message["tag"]
                torch.manual_seed(0)
                model = Recording(
                    bsopt.training.mlp(8, 3, hidden=(16,)),
                    Path(self.out) / f"{tag}-rank{rank}.txt",
                )
                result = bsopt.training.train(
                    model,
                    data,
                    bsopt.Params(**message["params"]),
                    budget=bsopt.Budget(message["epochs"], evals=message["evals"]),
                    seed=7,
                    device="cpu",
                    micro_batch_size=message["micro"],
                    measure_noise_scale=message["noise"],
                    world=world,  # type: ignore[arg-type]
                )
                torch.save(
                    {
                        "state": model.state_dict(),
                        "samples_seen": result.samples_seen,
                        "noise_history": result.noise_history,
                        "batch_history": result.batch_history,
                    },
                    Path(self.out) / f"{tag}-rank{rank}.pt",
                )

        return run
