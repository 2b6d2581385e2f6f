"""Time inside the median pruner: bsopt's (reads completed trials once per trial) vs Optuna's.

    python benchmarks/bench_pruner_reads.py [--rounds 3] [--write]

The 30-trial digits study (``bsopt run digits``'s objective, seed 0) runs in this process
with ``bsopt.optimize`` on a fresh SQLite file per run, once with ``bsopt.make_pruner
("median", ...)`` and once with ``optuna.pruners.MedianPruner`` with the same warm-up, the
two taking turns. Every ``prune`` call is timed. Both pruners make the same decisions (the
studies train the same trials), so the difference is the pruner's reading of the study:
Optuna's reads it at each of a trial's reports, bsopt's at the first. Wall times of whole
studies vary by 10-20% between identical runs on this machine (the training itself does),
more than this lever; the time inside ``prune``, and the time per trial outside training
and evaluation, do not.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from typing import Any

import _common

TRIALS = 30


def run(kind: str, folder: str, index: int) -> dict[str, Any]:
    import optuna

    import bsopt
    from bsopt.runs._runner import digits

    objective = digits(seed=0)
    pruner = bsopt.make_pruner("median", objective.budget, objective.data.n_train)
    if kind == "optuna":
        assert isinstance(pruner, optuna.pruners.MedianPruner)
        pruner = optuna.pruners.MedianPruner(
            n_startup_trials=pruner._n_startup_trials, n_warmup_steps=pruner._n_warmup_steps
        )
    spent: list[float] = []
    inner = pruner.prune

    def timed(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
        t0 = time.perf_counter()
        decision = inner(study, trial)
        spent.append(time.perf_counter() - t0)
        return decision

    pruner.prune = timed  # type: ignore[method-assign]
    study = bsopt.create_study(
        f"{kind}-{index}",
        storage=f"sqlite:///{folder}/{kind}-{index}.db",
        direction=objective.direction,
        pruner=pruner,
        seed=0,
    )
    t0 = time.perf_counter()
    bsopt.optimize(study, objective, trials=TRIALS, show_progress_bar=False)
    wall = time.perf_counter() - t0
    trials = study.get_trials(deepcopy=False)
    states = [t.state.name for t in trials]
    inside = sum(t.user_attrs["train_seconds"] + t.user_attrs["eval_seconds"] for t in trials)
    return {
        "wall": wall,
        "outside_ms": 1000 * (wall - inside) / len(trials),
        "prune_ms": 1000 * sum(spent),
        "calls": len(spent),
        "per_call_ms": 1000 * _common.median(spent),
        "pruned": states.count("PRUNED"),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=4, help="runs of each pruner")
    parser.add_argument("--write", action="store_true", help="replace this script's section")
    args = parser.parse_args()
    _common.pin_threads()
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    facts = _common.machine_facts()
    load_start = _common.uptime_line()
    t_start = time.perf_counter()
    results: dict[str, list[dict[str, Any]]] = {"bsopt": [], "optuna": []}
    with tempfile.TemporaryDirectory(prefix="bsopt-pruner-") as folder:
        run("bsopt", folder, -1)  # warm-up: the first optimizer imports torch._dynamo
        for i in range(args.rounds):
            for kind in ("bsopt", "optuna") if i % 2 == 0 else ("optuna", "bsopt"):
                r = run(kind, folder, i)
                results[kind].append(r)
                print(
                    f"  round {i}: {kind:6} wall {r['wall']:.2f} s, in prune {r['prune_ms']:.0f} "
                    f"ms over {r['calls']} calls, pruned {r['pruned']} "
                    f"(load {_common.load_average()})",
                    flush=True,
                )
    med = _common.median
    rows = [
        [
            label,
            f"{med([r['prune_ms'] for r in results[kind]]):.0f}",
            f"{med([r['per_call_ms'] for r in results[kind]]):.2f}",
            str(results[kind][0]["calls"]),
            f"{med([r['wall'] for r in results[kind]]):.2f}",
            f"{med([r['outside_ms'] for r in results[kind]]):.0f}",
            "/".join(str(r["pruned"]) for r in results[kind]),
        ]
        for kind, label in (
            ("bsopt", "bsopt.make_pruner('median')"),
            ("optuna", "optuna.pruners.MedianPruner"),
        )
    ]
    table = _common.table(
        [
            "pruner",
            f"ms in prune per {TRIALS}-trial study",
            "ms per call (median)",
            "calls",
            "study wall s (median)",
            "outside train+eval ms per trial (median)",
            "pruned trials per run",
        ],
        rows,
    )
    load_end = _common.uptime_line()
    print(table)
    if args.write:
        section = "\n\n".join(
            [
                "## bench_pruner_reads: time inside the median pruner",
                __doc__.split("\n\n", 2)[2].strip(),
                _common.machine_block(facts, load_start, load_end, time.perf_counter() - t_start),
                table,
            ]
        )
        _common.write_section("bench_pruner_reads", section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
