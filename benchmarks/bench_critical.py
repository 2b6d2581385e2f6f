"""Does the lr fit find the critical batch size of a noisy quadratic model, under random
search and under TPE?

    python benchmarks/bench_critical.py                     # 20 seeds, random search and TPE
    python benchmarks/bench_critical.py --quick             # 5 seeds
    python benchmarks/bench_critical.py --sampler tpe       # one sampler only

On the NQM (``benchmarks/nqm.py``) the best lr grows as the batch size up to a critical
batch and is flat above it. Each seed runs 300 trials over batch sizes 8..4096 (powers of
two) and lr 0.001..3 (log): a random search (30 log-uniform lrs per batch size) or Optuna's
TPE (``TPESampler(seed=s)``, ask/tell over the batch size's exponent and the log lr), which
spends most trials on the batch sizes it judges good and leaves the large ones with 4-11.
A diverged trial (the NQM's second moments grow without bound) is passed to the analysis
as a non-finite value, as bsopt stores it (pruned, stop reason "diverged").

Two estimators of the best lr per batch size feed :func:`bsopt.fit_lr_scaling`: the best
trial's lr ("best trial", the analysis before issue 22) and
:func:`bsopt.analysis.best_lr_per_batch` ("censored"), which marks a best lr that sat at the
top or bottom of the lrs tried at its batch size as a bound, not a value. Reported: how often
the two-regime fit is chosen and lands within 2x of the true critical batch, the slope below
it, and how often the kink's 95% interval holds the truth (the asymptotes' crossing) and the
kink fitted to the exact best lrs (the broken line's own target; the NQM's best lr bends
smoothly, so the two differ). Then, on pure power laws with no critical batch, how often a
kink is claimed anyway. No training, about 20 s in all.

Not part of bsopt.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
import importlib.util
import math
from pathlib import Path
import statistics
import time

import numpy as np

import bsopt
from bsopt.analysis import best_lr_per_batch

HERE = Path(__file__).resolve().parent
BATCHES = [2**k for k in range(3, 13)]
SAMPLES = 2**18
LR_RANGE = (1e-3, 3.0)
TRIALS = 30 * len(BATCHES)

Trials = list[tuple[int, float, float]]


def _nqm():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("nqm", HERE / "nqm.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


NQM = _nqm()
H = NQM.curvatures(1000)


def _value(lr: float, batch: int) -> float:
    value = NQM.log_loss(lr, batch, SAMPLES, H)
    return math.inf if value >= NQM.DIVERGED else value


def random_trials(seed: int) -> Trials:
    rows = NQM.random_search(BATCHES, TRIALS // len(BATCHES), LR_RANGE, SAMPLES, H, seed=seed)
    return [(b, lr, math.inf if v >= NQM.DIVERGED else v) for b, lr, v in rows]


def tpe_trials(seed: int) -> Trials:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=seed))
    rows = []
    for _ in range(TRIALS):
        trial = study.ask()
        batch = 2 ** trial.suggest_int("batch_size_exponent", 3, 12)
        lr = trial.suggest_float("lr", *LR_RANGE, log=True)
        value = _value(lr, batch)
        # TPE learns nothing from a failed trial; a diverged one is told as very bad.
        study.tell(trial, value if math.isfinite(value) else NQM.DIVERGED)
        rows.append((batch, lr, value))
    return rows


def best_trial_points(trials: Trials) -> list[tuple[int, float]]:
    best: dict[int, tuple[float, float]] = {}
    for b, lr, value in trials:
        if math.isfinite(value) and (b not in best or value < best[b][1]):
            best[b] = (lr, value)
    return [(b, best[b][0]) for b in sorted(best)]


def _row(name: str, fits: list[bsopt.analysis.LrFit], truth: float, exact: float) -> str:
    crit = [f.critical_batch_size for f in fits if f.critical_batch_size is not None]
    within = sum(truth / 2 <= c <= 2 * truth for c in crit)
    slopes = [f.slope for f in fits if f.critical_batch_size is not None]
    slope_ok = sum(abs(s - 1.0) <= 0.2 for s in slopes)
    holds = [f.critical_interval for f in fits if f.critical_interval is not None]
    cover = sum(lo <= truth <= hi for lo, hi in holds)
    cover_exact = sum(lo <= exact <= hi for lo, hi in holds)
    widths = [hi / lo for lo, hi in holds]
    n = len(fits)
    spread = f"{statistics.median(crit):.0f} ({min(crit):.0f}-{max(crit):.0f})" if crit else "–"
    width = f"{statistics.median(widths):.2f}x" if widths else "–"
    return (
        f"| {name} | {len(crit)}/{n} | **{within}/{n}** | {spread} | {slope_ok}/{n} | "
        f"{cover}/{n} | {cover_exact}/{n} | {width} |"
    )


def run_sampler(name: str, make: Callable[[int], Trials], seeds: range, truth: float) -> None:
    exact_points = NQM.grid_optimum(BATCHES, np.logspace(-3, math.log10(3.0), 2001), SAMPLES, H)
    exact_fit = bsopt.fit_lr_scaling([(b, lr) for b, (lr, _) in exact_points[1].items()])
    assert exact_fit is not None and exact_fit.critical_batch_size is not None
    exact = exact_fit.critical_batch_size
    old, new, counts = [], [], []
    start = time.perf_counter()
    for seed in seeds:
        trials = make(seed)
        counts.append([sum(b == batch for b, _, _ in trials) for batch in BATCHES])
        old.append(bsopt.fit_lr_scaling(best_trial_points(trials)))
        new.append(bsopt.fit_lr_scaling(best_lr_per_batch(trials)))
    per_batch = [int(statistics.median(c[i] for c in counts)) for i in range(len(BATCHES))]
    spent = time.perf_counter() - start
    print(
        f"\n{name}: {len(seeds)} seeds, {TRIALS} trials each ({spent:.0f} s);"
        f" median trials per batch size 8..4096: {per_batch}."
    )
    print(
        "| best lr per batch size | two regimes | within 2x | median (range) | slope 1 ± 0.2 "
        f"| interval holds {truth:.0f} | holds {exact:.0f} | median width |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    print(_row("best trial (before)", [f for f in old if f is not None], truth, exact))
    print(_row("censored (`best_lr_per_batch`)", [f for f in new if f is not None], truth, exact))


def false_alarms(seeds: range) -> None:
    """A pure power law (no critical batch) over the same batch sizes, 30 lrs each."""
    for alpha in (0.5, 1.0):
        kinks, rules = 0, {}
        for seed in seeds:
            rng = np.random.default_rng(seed)
            trials = []
            for b in BATCHES:
                lrs = np.exp(rng.uniform(np.log(1e-5), np.log(10.0), 30))
                target = 1e-4 * b**alpha
                # The constructed loss: quadratic in log lr around the target, plus noise.
                loss = (np.log10(lrs) - np.log10(target)) ** 2 + 0.05 * rng.standard_normal(30)
                trials += [(b, float(lr), float(v)) for lr, v in zip(lrs, loss, strict=True)]
            fit = bsopt.fit_lr_scaling(best_lr_per_batch(trials))
            assert fit is not None
            kinks += fit.critical_batch_size is not None
            rule = fit.rule().split(" (")[0]
            rules[rule] = rules.get(rule, 0) + 1
        n = len(seeds)
        print(
            f"Power law lr* ∝ B^{alpha} (no critical batch), random search, censored estimator: "
            f"two regimes chosen in {kinks}/{n}; rule: "
            + "; ".join(f"{c}/{n} {r}" for r, c in rules.items())
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="5 seeds instead of 20")
    parser.add_argument("--sampler", choices=["random", "tpe", "both"], default="both")
    args = parser.parse_args()
    truth = NQM.critical_batch(SAMPLES, H)
    seeds = range(5 if args.quick else 20)
    print(f"NQM, h_i = 1/i (d = 1000), {SAMPLES:,} samples per trial, batch sizes 8..4096,")
    print(f"lr 0.001..3 (log); true critical batch size {truth:.0f} (the asymptotes' crossing).")
    if args.sampler in ("random", "both"):
        run_sampler("Random search (30 lrs per batch size)", random_trials, seeds, truth)
    if args.sampler in ("tpe", "both"):
        run_sampler("TPE (TPESampler(seed=s))", tpe_trials, seeds, truth)
    print()
    false_alarms(seeds)


if __name__ == "__main__":
    main()
