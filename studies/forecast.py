"""Search short, forecast, confirm long: the batch size for the run you will actually do.

    bsopt run studies/forecast.py --trials 216 --pruner none     # search at 1/8, 1/4, 1/2
    bsopt forecast --study forecast --samples 22992              # the full budget, 16 epochs
    bsopt confirm studies/forecast.py --samples 22992            # train it there and check

A search answers for the budget it trained, and the best batch size grows as training goes
on. Here every trial draws its budget from 1/8, 1/4 and 1/2 of the full run (16 epochs of
digits, 22,992 samples), stored as the parameter ``budget_level``; ``bsopt run`` queues every
(level, batch size) pair in turn (18 of them: 216 trials give each 12 lrs to search) and the
sampler searches the lr. ``bsopt forecast`` fits how the batch within tolerance, its lr and
the critical batch move with the samples trained and extrapolates to the full run, with
intervals, or says why it cannot; ``bsopt confirm --samples`` trains the forecast and its
half and double batch at the full run, three seeds each, and prints predicted against
measured and whether the seeds settle it. The search costs about 29% of the samples that as
many trials at the full budget would.

Pruning: trials of different levels report at shared sample counts, comparable only under a
constant lr schedule (this study's); ``--pruner none`` keeps every trial a complete run.
"""

from __future__ import annotations

from torch import nn

import bsopt
from bsopt.search import BudgetLevels


def build_model(params: bsopt.Params) -> nn.Module:
    return nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))


def build_objective(*, seed: int = 0) -> BudgetLevels:
    data = bsopt.load_digits(seed=seed)  # 1,437 training and 360 validation images
    full_run = bsopt.make_objective(
        build_model,
        data,
        # No dropout: one searched dimension less, so that each level's profile is sharper.
        space=bsopt.SearchSpace(batch_size=(8, 256), lr=(1e-4, 1e-1), dropout=0.0),
        budget=bsopt.Budget(16, "epochs", evals=4),
        metric="loss",
        seed=seed,
    )
    return BudgetLevels(full_run, (1 / 8, 1 / 4, 1 / 2))


if __name__ == "__main__":
    raise SystemExit(bsopt.cli.run_script(build_objective, name="forecast"))  # type: ignore[arg-type]
