"""Does the lr fit find the critical batch size of a noisy quadratic model?

    python benchmarks/bench_critical.py            # 20 seeds
    python benchmarks/bench_critical.py --quick    # 5 seeds

On the NQM (``benchmarks/nqm.py``) the best lr grows as the batch size up to a critical
batch and is flat above it. Each seed runs a random search (30 log-uniform lrs per batch size,
batch sizes 8..4096) and fits :func:`bsopt.fit_lr_scaling` to the best lr of each batch size.
Reported: how often the two-regime fit is chosen, lands within 2x of the true critical batch
and has a slope within 0.2 of 1 below it; what the single straight line would have said
(the rule its 95% interval singles out); and, on pure power laws with no critical batch, how
often a kink is claimed anyway. No training, seconds in all.

Not part of bsopt.
"""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path
import statistics

import bsopt

HERE = Path(__file__).resolve().parent


def _nqm():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("nqm", HERE / "nqm.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="5 seeds instead of 20")
    args = parser.parse_args()
    nqm = _nqm()
    h = nqm.curvatures(1000)
    samples = 2**18
    truth = nqm.critical_batch(samples, h)
    batches = [2**k for k in range(3, 13)]
    seeds = range(5 if args.quick else 20)
    found, within, slope_ok = 0, 0, 0
    crit, slopes, line_rules = [], [], []
    for seed in seeds:
        trials = nqm.random_search(batches, 30, (1e-3, 3.0), samples, h, seed=seed)
        best = {}
        for b, lr, loss in trials:
            if b not in best or loss < best[b][1]:
                best[b] = (lr, loss)
        fit = bsopt.fit_lr_scaling([(b, best[b][0]) for b in batches])
        assert fit is not None
        line = bsopt.fit_lr_scaling([(b, best[b][0]) for b in batches], kink_alpha=0.0)
        assert line is not None
        line_rules.append(line.rule().split(" (")[0])
        if fit.critical_batch_size is None:
            continue
        found += 1
        crit.append(fit.critical_batch_size)
        slopes.append(fit.slope)
        within += truth / 2 <= fit.critical_batch_size <= 2 * truth
        slope_ok += abs(fit.slope - 1.0) <= 0.2
    n = len(seeds)
    print(f"NQM, h_i = 1/i (d = 1000), {samples:,} samples per trial, batch sizes 8..4096,")
    print(f"30 random lrs per batch size; true critical batch size {truth:.0f}; {n} seeds.")
    print(f"Two regimes chosen (F-test p < 0.05): {found}/{n}")
    print(f"Critical batch size within 2x of the truth: {within}/{n}", end="")
    if crit:
        print(f" (median {statistics.median(crit):.0f}, range {min(crit):.0f}-{max(crit):.0f})")
    else:
        print()
    print(f"Slope below it within 0.2 of 1: {slope_ok}/{n}", end="")
    if slopes:
        print(f" (range {min(slopes):.2f}-{max(slopes):.2f})")
    else:
        print()
    counts: dict[str, int] = {}
    for rule in line_rules:
        counts[rule] = counts.get(rule, 0) + 1
    print("One straight line over the whole range would have said:")
    for rule, count in sorted(counts.items(), key=lambda kv: -kv[1]):
        print(f"  {count}/{n}: {rule}")

    # False alarms: a pure power law (no critical batch) over the same batch sizes.
    import numpy as np

    for alpha in (0.5, 1.0):
        kinks, rules = 0, {}
        for seed in seeds:
            rng = np.random.default_rng(seed)
            points = []
            for b in batches:
                lrs = np.exp(rng.uniform(np.log(1e-5), np.log(10.0), 30))
                target = 1e-4 * b**alpha
                # The constructed loss: quadratic in log lr around the target, plus noise.
                loss = (np.log10(lrs) - np.log10(target)) ** 2 + 0.05 * rng.standard_normal(30)
                points.append((b, float(lrs[int(np.argmin(loss))])))
            fit = bsopt.fit_lr_scaling(points)
            assert fit is not None
            kinks += fit.critical_batch_size is not None
            rule = fit.rule().split(" (")[0]
            rules[rule] = rules.get(rule, 0) + 1
        print(
            f"Power law lr* ∝ B^{alpha} (no critical batch), same search: two regimes "
            f"chosen in {kinks}/{n}; rule: " + "; ".join(f"{c}/{n} {r}" for r, c in rules.items())
        )


if __name__ == "__main__":
    main()
