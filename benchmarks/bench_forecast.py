"""Does the forecast find the batch size of a run 8x longer than any searched?

    python benchmarks/bench_forecast.py                  # NQM, 5 seeds, tolerances 0.01 0.1 0.2
    python benchmarks/bench_forecast.py --per 32         # a sparser lr search per batch size
    python benchmarks/bench_forecast.py --quick          # NQM, 5 seeds, tolerance 0.1 only
    python benchmarks/bench_forecast.py --lr-search tpe  # TPE chooses each batch's lrs
    python benchmarks/bench_forecast.py --digits         # search short, forecast, confirm long
    python benchmarks/bench_forecast.py --breast-cancer  # the same on studies/breast_cancer.py

**NQM** (``benchmarks/nqm.py``, the exact expected loss of SGD on the noisy quadratic model):
each seed builds a plain Optuna study (``create_trial``, no training) searched at three
budgets D, 2D, 4D (D = 2^15 samples): 13 batch sizes 1..4096, ``--per`` random learning
rates per batch size and budget (log-uniform base lr 0.01..2 scaled by sqrt(batch / 32), as
a coupled search space would), value = the exact expected loss. :func:`bsopt.forecast` then
forecasts the batch within tolerance at N = 32D, 8x the largest budget searched. The truth is
the same quantity from the exact loss on a fine grid (batch sizes 2^(k/4), 600 lrs).
Reported per tolerance: forecasts within 2x of the truth, intervals that hold it, forecasts
that claim a fit (status ok), and the samples the study trained against searching directly
at N with the same trial count. Seconds in all.

**digits / breast cancer** (real training, a minute or two per seed on 2 cores): one study
whose trials draw their budget from 1/8, 1/4 and 1/2 of the full budget
(:class:`bsopt.search.BudgetLevels`, ``--trials`` in all, dropout fixed at 0, no pruning;
``--design cells`` queues every (level, batch size) pair in turn and TPE searches the lr,
``joint`` queues the levels only), then the forecast at the full budget and the check there
(:func:`bsopt.runs._forecast_check.check_forecast`: the forecast batch and its half and
double, trained at the full budget with 3 fresh seeds each).

Not part of bsopt.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path
import statistics
import sys
import time
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent


def truth(nqm: Any, samples: int, tolerance: float, h: np.ndarray) -> float:
    """The largest batch within ``tolerance`` of the best at ``samples``, from the exact loss."""
    exps = np.arange(0, 13.01, 0.25)
    lrs = np.logspace(-4, math.log10(2.0), 600)
    prof = np.array(
        [min(nqm.expected_loss(float(lr), round(2**e), samples, h) for lr in lrs) for e in exps]
    )
    limit = prof.min() * (1 + tolerance)
    k = int(np.flatnonzero(prof <= limit).max())
    if k == len(prof) - 1:
        return float(2 ** exps[k])
    t = (limit - prof[k]) / (prof[k + 1] - prof[k])
    return float(2 ** (exps[k] + t * 0.25))


def best_lr(nqm: Any, samples: int, batch: int, h: np.ndarray) -> float:
    """The best lr of ``batch`` at ``samples``, from the exact loss on a fine grid."""
    lrs = np.logspace(-4, math.log10(2.0), 600)
    return float(
        lrs[int(np.argmin([nqm.expected_loss(float(lr), batch, samples, h) for lr in lrs]))]
    )


def base_lrs(
    nqm: Any, samples: int, batch: int, per: int, search: str, rng: Any, h: np.ndarray
) -> list[float]:
    """``per`` base lrs for one batch size and budget: log-uniform over 0.01..2 (``random``),
    or chosen by Optuna's TPE on the exact loss (``tpe``), which puts most of them near the
    best lr, as a search over lr does (seeded from ``rng``)."""
    if search == "random":
        return list(np.exp(rng.uniform(math.log(1e-2), math.log(2.0), per)))
    import optuna

    def loss(trial: optuna.Trial) -> float:
        base = trial.suggest_float("base_lr", 1e-2, 2.0, log=True)
        value = nqm.expected_loss(base * (batch / 32) ** 0.5, batch, samples, h)
        return value if math.isfinite(value) else 1e6  # diverged: the worst value

    sampler = optuna.samplers.TPESampler(seed=int(rng.integers(2**31)), n_startup_trials=10)
    study = optuna.create_study(sampler=sampler)
    study.optimize(loss, n_trials=per)
    return [t.params["base_lr"] for t in study.trials]


def nqm_study(
    nqm: Any,
    levels: list[int],
    per: int,
    seed: int,
    h: np.ndarray,
    search: str = "random",
    branch: bool = False,
) -> Any:
    """A plain Optuna study of NQM trials at ``levels`` samples (left out where diverged).

    ``branch``: every trial runs the largest level only and reports the exact loss at the
    smaller ones as intermediate values, declared complete runs (``runs_within``), as
    ``BudgetLevels(branch=True)`` does: under a constant lr the first D samples of SGD on the
    NQM are a run of D."""
    import optuna

    rng = np.random.default_rng(seed)
    study = optuna.create_study()
    dists = {
        "log2_batch_size": optuna.distributions.IntDistribution(0, 12),
        "lr": optuna.distributions.FloatDistribution(1e-4, 100.0, log=True),
    }
    trials = []
    for samples in levels[-1:] if branch else levels:
        for k in range(13):
            for base in base_lrs(nqm, samples, 2**k, per, search, rng, h):
                lr = float(base * (2**k / 32) ** 0.5)
                value = nqm.expected_loss(lr, 2**k, samples, h)
                if not math.isfinite(value):
                    continue  # diverged: a failed trial, which the forecast never reads
                within = levels[:-1] if branch else []
                trials.append(
                    optuna.trial.create_trial(
                        params={"log2_batch_size": k, "lr": lr},
                        distributions=dists,
                        value=value,
                        intermediate_values={d: nqm.expected_loss(lr, 2**k, d, h) for d in within},
                        user_attrs={"samples_seen": samples, "runs_within": within},
                    )
                )
    study.add_trials(trials)
    return study


def run_nqm(
    tolerances: list[float], per: int, seeds: int, search: str, branch: bool = False
) -> None:
    import optuna

    import bsopt

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    import nqm  # benchmarks/nqm.py, beside this script

    h = nqm.curvatures(1000)
    base = 2**15
    levels, target = [base, 2 * base, 4 * base], 32 * base
    print(f"NQM (h_i = 1/i, d = 1000): searched at {levels} samples, forecast at {target:,}")
    print(
        f"(8x the largest); {per} lrs per batch size (13 sizes) and budget, {search} search; "
        f"{seeds} seeds"
        + ("; branching: trials at 4D only, their losses at D and 2D as runs." if branch else ".")
    )
    for tol in tolerances:
        true = truth(nqm, target, tol, h)
        within = holds = claimed = lr_within = lr_holds = 0
        shown, spent, seconds, trained = [], [], [], []
        for seed in range(seeds):
            study = nqm_study(nqm, levels, per, seed, h, search, branch)
            start = time.perf_counter()
            fc = bsopt.forecast(study, samples=target, tolerance=tol)
            seconds.append(time.perf_counter() - start)
            b, iv = fc.batch_size, fc.interval
            within += b is not None and true / 2 <= b <= 2 * true
            holds += iv is not None and iv[0] <= true <= iv[1]
            if b is not None and fc.lr is not None:
                best = best_lr(nqm, target, max(1, round(b)), h)
                lr_within += best / 2 <= fc.lr <= 2 * best
                lr_iv = fc.lr_interval
                lr_holds += lr_iv is not None and lr_iv[0] <= best <= lr_iv[1]
            claimed += fc.ok
            spent.append(fc.samples_spent / fc.direct_samples)
            trained.append(fc.samples_spent)
            span = "-" if iv is None else f"{iv[0]:.0f}-{iv[1]:.0f}"
            shown.append(f"{b:.0f} ({span}){'' if fc.ok else ' no fit'}")
        print(
            f"tolerance {tol:g}: truth {true:.0f}; within 2x {within}/{seeds}, interval "
            f"holds it {holds}/{seeds}, fit claimed {claimed}/{seeds}; samples "
            f"{statistics.median(trained) / 1e6:.0f}M, {statistics.median(spent):.1%} of "
            f"as many trials at N; forecast "
            f"{statistics.median(seconds):.2f} s (median)"
        )
        print(
            f"  lr at the forecast batch: within 2x of its true best {lr_within}/{seeds}, "
            f"interval holds it {lr_holds}/{seeds}"
        )
        print("  forecasts: " + "; ".join(shown))


def _mlp_objective(data: Any, hidden: int, *, epochs: int, seed: int) -> Any:
    """A one-hidden-layer MLP ranked by its validation loss, batch 8..256, dropout 0."""
    import bsopt

    return bsopt.make_objective(
        bsopt.mlp_builder(data, hidden=(hidden,)),
        data,
        space=bsopt.SearchSpace(batch_size=(8, 256), lr=(1e-4, 1e-1), dropout=0.0),
        budget=bsopt.Budget(epochs, evals=4),
        metric="loss",
        seed=seed,
    )


def run_real(which: str, trials: int, tolerance: float, design: str, seed: int) -> None:
    import optuna

    import bsopt
    from bsopt.runs._forecast_check import check_forecast
    from bsopt.search import BudgetLevels

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if which == "digits":
        objective = _mlp_objective(bsopt.load_digits(seed=seed), 128, epochs=16, seed=seed)
    elif which == "synthetic":
        # A validation set 10x digits': one run's loss moves less with the seed.
        data = bsopt.make_synthetic(20_000, n_features=20, n_classes=4, seed=seed)
        objective = _mlp_objective(data, 64, epochs=4, seed=seed)
    else:
        from bsopt.runs._runner import load_study_definition

        _, build = load_study_definition(str(HERE.parent / "studies" / "breast_cancer.py"))
        own = build(seed=seed)  # its own model search, loss and ROC-AUC
        # Ranked by the validation loss: a 1% tolerance on a ROC-AUC of 0.99 holds every
        # batch size, so the batch within tolerance would be the largest searched.
        objective = own.with_options(
            space=bsopt.SearchSpace(batch_size=(4, 256), lr=(1e-4, 3e-2), dropout=0.0),
            metric="loss",
        )
    levels = BudgetLevels(objective, (1 / 8, 1 / 4, 1 / 2))
    study = optuna.create_study(
        direction=objective.direction,
        sampler=optuna.samplers.TPESampler(seed=seed),
        pruner=optuna.pruners.NopPruner(),  # levels share report steps: no pruning
    )
    # joint: the levels in turn, batch and lr the sampler's; cells: every (level, batch)
    # pair in turn, the lr the sampler's.
    batches = objective.space.batch_sizes if design == "cells" else None
    levels.enqueue(study, trials, batch_sizes=batches)
    start = time.perf_counter()
    study.optimize(levels, n_trials=trials)
    searched = time.perf_counter() - start
    full_samples = objective.budget.grid(objective.data.n_train).total
    print(f"{which}, seed {seed}, design {design}: {levels.describe()}")
    print(f"{trials} trials in {searched:.0f} s; forecast at the full budget, {full_samples:,}:")
    start = time.perf_counter()
    try:
        checked = check_forecast(
            study, objective, samples=full_samples, tolerance=tolerance, seeds=3, echo=print
        )
    except ValueError as error:
        print(f"no check: {error}\n")
        return
    print(f"(check: {time.perf_counter() - start:.0f} s)\n" + checked.text + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tolerance 0.1 only")
    parser.add_argument("--per", type=int, default=64, help="NQM lrs per batch and budget")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument(
        "--lr-search", choices=("random", "tpe"), default="random", help="NQM lrs: how chosen"
    )
    parser.add_argument("--digits", action="store_true", help="real training on digits")
    parser.add_argument("--breast-cancer", action="store_true", help="studies/breast_cancer.py")
    parser.add_argument(
        "--synthetic", action="store_true", help="20,000 generated rows, 4,000 to validate"
    )
    parser.add_argument("--trials", type=int, default=120, help="trials of a real study")
    parser.add_argument("--tolerance", type=float, default=0.01, help="of a real study")
    parser.add_argument(
        "--design", choices=("joint", "cells"), default="cells", help="a real study's queue"
    )
    parser.add_argument("--search-seeds", type=int, default=1, help="real studies, seeds 0..")
    parser.add_argument(
        "--branch", action="store_true", help="NQM: trials at the largest budget only"
    )
    args = parser.parse_args()
    sys.path.insert(0, str(HERE.parent))
    if args.digits or args.breast_cancer or args.synthetic:
        for seed in range(args.search_seeds):
            which = "digits" if args.digits else "synthetic" if args.synthetic else "breast_cancer"
            run_real(which, args.trials, args.tolerance, args.design, seed)
        return
    tolerances = [0.1] if args.quick else [0.01, 0.1, 0.2]
    run_nqm(tolerances, args.per, args.seeds, args.lr_search, args.branch)


if __name__ == "__main__":
    main()
