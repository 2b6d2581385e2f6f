"""Pruning on the digits study: median and Hyperband against no pruning, same seeds.

    python benchmarks/bench_pruning.py [--trials 60] [--seeds 0 1 2] [--quick] [--write]

For each pruner and seed a fresh study (TPE with that seed, in-memory storage so storage
cost does not blur the comparison) runs the bundled digits objective to ``--trials``
finished trials. Reported per pruner: samples processed in total (the sum of every trial's
samples seen, pruned ones included), wall time, and the best validation accuracy found.
"""

from __future__ import annotations

import argparse
import time

from _common import (
    machine_block,
    machine_facts,
    median,
    pin_threads,
    spread,
    table,
    uptime_line,
    write_section,
)
import optuna
from optuna.trial import TrialState

import bsopt
from bsopt.runs._runner import digits

PRUNERS = ("none", "median", "hyperband")


def run_one(pruner_name: str, seed: int, trials: int) -> dict[str, float]:
    """``pruner_name`` is a make_pruner name, optionally ``name:warmup_evals``."""
    objective = digits(seed=seed)
    name, _, warmup = pruner_name.partition(":")
    pruner = bsopt.make_pruner(
        name,  # type: ignore[arg-type]
        objective.budget,
        objective.data.n_train,
        warmup_evals=int(warmup) if warmup else None,
    )
    study = optuna.create_study(
        direction="maximize", sampler=optuna.samplers.TPESampler(seed=seed), pruner=pruner
    )
    start = time.perf_counter()
    bsopt.optimize(study, objective, trials=trials, show_progress_bar=False)
    wall = time.perf_counter() - start
    finished = study.get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED))
    return {
        "samples": float(sum(t.user_attrs["samples_seen"] for t in finished)),
        "wall": wall,
        "best": study.best_value,
        "pruned": float(sum(t.state == TrialState.PRUNED for t in finished)),
        "best_bs": float(2 ** study.best_params["log2_batch_size"]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=60)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument(
        "--pruners",
        nargs="+",
        default=list(PRUNERS),
        help="make_pruner names, 'name:warmup_evals' for a warm-up",
    )
    parser.add_argument("--quick", action="store_true", help="12 trials, one seed")
    parser.add_argument("--write", action="store_true", help="update benchmarks/RESULTS.md")
    args = parser.parse_args()
    if args.quick:
        args.trials, args.seeds = 12, [0]
    pin_threads()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    facts, load_start, t0 = machine_facts(), uptime_line(), time.perf_counter()

    pruners = list(dict.fromkeys(["none", *args.pruners]))
    results: dict[str, list[dict[str, float]]] = {p: [] for p in pruners}
    for seed in args.seeds:
        for name in pruners:  # interleaved per seed, so machine noise hits every pruner
            r = run_one(name, seed, args.trials)
            results[name].append(r)
            print(
                f"seed {seed} {name:<9} samples {r['samples']:>11,.0f}  wall {r['wall']:6.1f} s"
                f"  best {r['best']:.4f} (bs {r['best_bs']:.0f})  pruned {r['pruned']:.0f}"
            )

    base = results["none"]
    rows = []
    for name in pruners:
        rs = results[name]
        samples_ratio = [r["samples"] / b["samples"] for r, b in zip(rs, base, strict=True)]
        best_gap = [100 * (r["best"] - b["best"]) for r, b in zip(rs, base, strict=True)]
        rows.append(
            [
                name,
                f"{median([r['samples'] for r in rs]):,.0f}",
                f"{median(samples_ratio):.2f} ({spread(samples_ratio)})",
                f"{median([r['wall'] for r in rs]):.1f}",
                f"{median([r['best'] for r in rs]):.4f} ({spread([r['best'] for r in rs])})",
                f"{median(best_gap):+.2f} ({spread(best_gap)})",
                f"{median([r['pruned'] for r in rs]):.0f}",
            ]
        )
    header = [
        "pruner",
        "samples (median)",
        "samples / none",
        "wall s",
        "best accuracy",
        "best - none (pp)",
        "pruned trials",
    ]
    text = table(header, rows)
    print(text)
    if args.write:
        body = "\n".join(
            [
                "## Pruning on digits (bench_pruning.py)",
                "",
                f"Digits study (10 epochs, evaluation every epoch, TPE), {args.trials} finished "
                f"trials per run, seeds {args.seeds}; medians over seeds, min..max in brackets. "
                "Samples = every sample a trial trained on, pruned trials included.",
                "",
                text,
                "",
                machine_block(facts, load_start, uptime_line(), time.perf_counter() - t0),
            ]
        )
        write_section("bench_pruning", body)


if __name__ == "__main__":
    main()
