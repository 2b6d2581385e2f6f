"""Time to the answer of the 30-trial digits study: the README's command against Optuna's example.

    python benchmarks/bench_study.py [--quick] [--write] [--seeds 0 1 2] [--trials 30]

Every variant runs as a user runs it: a fresh process (or processes) timed from launch to
exit, each in a fresh SQLite file, so imports, data loading, table creation and the
first optimizer's one-time cost are included. The variants take turns within each seed.

* ``README command``: ``bsopt run digits --trials 30 --seed S --storage sqlite:///FILE``,
  the console script with its defaults (worker processes, pruner, storage settings).
* ``README command --jobs 1``: the same in one process: the effect of using both cores.
* ``bsopt library, bsopt's storage`` / ``... Optuna's RDBStorage``: ``studies/digits.py``'s
  objective run by ``bsopt.optimize`` in one process, on the storage ``bsopt.open_storage``
  opens (WAL, ``synchronous=NORMAL``, a trial's attributes in one transaction) or on
  ``optuna.storages.RDBStorage(url)`` with the same heartbeat: the effect of the storage
  settings (one torch thread in both).
* ``bsopt library, one process, Optuna's MedianPruner``: the library variant with
  ``optuna.pruners.MedianPruner`` (same warm-up), which reads the study at every report,
  instead of bsopt's, which reads the completed trials once per trial.
* ``bsopt library, 2 worker processes, forked`` / ``... spawned``: the README command's
  path without the command line (the parent builds the objective, ``bsopt.run_workers``
  runs two workers), with the workers forked and inheriting the objective (what ``bsopt
  run`` does for CPU trials on Linux) or spawned, each importing torch and building its
  own (what it did before).
* ``Optuna example``: the search written as Optuna's PyTorch example writes it
  (``suggest_categorical`` batch size over 16..256, log lr, dropout, DataLoaders, one
  ``trial.report(acc, epoch)`` per epoch, ``MedianPruner()``, TPE seeded with S, 10 epochs)
  on SQLite (``optuna.create_study(storage=URL)``), with torch's default threads as a user
  runs it, and pinned to one thread; the faster of the two (by median) is the reference.

Both sides see the same data for a seed: the example takes its tensors from
``bsopt.load_digits(seed=S)`` (the split ``bsopt run digits --seed S`` trains on), so the
best accuracies compare the searches, not the splits. The ratio for a seed is the
variant's wall time over the reference's in that seed; the table gives medians over seeds.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
import datetime as dt
import os
from pathlib import Path
import subprocess
import sys
import tempfile
import time
from typing import Any

import _common

EPOCHS = 10
BATCH_SIZES = (16, 32, 64, 128, 256)
BIN = Path(sys.executable).parent


# --------------------------------------------------------------------------- workers


def worker_library(args: argparse.Namespace) -> None:
    """``bsopt run digits``'s objective and pruner through the library, one process.

    One torch thread (as each worker process of ``bsopt run`` has), so that the storage is
    the only difference between the two library variants: two OpenMP threads on a shared
    2-core machine stall whenever another process takes a core.
    """
    _common.pin_threads()
    import optuna

    import bsopt
    from bsopt.runs._runner import digits

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    objective = digits(seed=args.seed)
    if args.workers:
        # The README command's path without the command line: the parent builds the
        # objective and creates the study, two worker processes run the trials.
        bsopt.create_study(args.study, storage=args.storage, direction=objective.direction)
        bsopt.run_workers(
            digits,
            study_name=args.study,
            trials=args.trials,
            jobs=2,
            storage=args.storage,
            seed=args.seed,
            show_progress_bar=False,
            objective=objective if args.workers == "fork" else None,
        )
        return
    if args.plain:
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            storage: optuna.storages.BaseStorage = optuna.storages.RDBStorage(
                args.storage,
                heartbeat_interval=60,
                heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(
                    max_retry=3
                ),
            )
    else:
        storage = bsopt.open_storage(args.storage)
    pruner = bsopt.make_pruner("median", objective.budget, objective.data.n_train)
    if args.optuna_pruner:  # Optuna's own, same settings: reads the study at every report
        assert isinstance(pruner, optuna.pruners.MedianPruner)
        pruner = optuna.pruners.MedianPruner(
            n_startup_trials=pruner._n_startup_trials, n_warmup_steps=pruner._n_warmup_steps
        )
    study = bsopt.create_study(
        args.study, storage=storage, direction=objective.direction, pruner=pruner, seed=args.seed
    )
    bsopt.optimize(study, objective, trials=args.trials, show_progress_bar=False)


def worker_optuna(args: argparse.Namespace) -> None:
    """Optuna's PyTorch example, adapted to digits and a searched batch size."""
    import torch

    if args.one_thread:
        torch.set_num_threads(1)
    optuna_example("cpu", args.trials, args.seed, args.storage, study_name=args.study)


def optuna_example(
    device: str, trials: int, seed: int, storage: str, *, study_name: str = "digits"
) -> None:
    """Optuna's PyTorch example, adapted to digits and a searched batch size, on ``device``
    (``benchmarks/gpu_check.py`` runs it on a GPU)."""
    import optuna
    import torch
    from torch import nn
    import torch.nn.functional as F
    from torch.utils.data import DataLoader, TensorDataset

    from bsopt.training._data import load_digits

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    data = load_digits(seed=seed)  # the split bsopt run digits --seed S trains on
    train_set = TensorDataset(data.x_train, data.y_train)
    valid_set = TensorDataset(data.x_val, data.y_val)

    def objective(trial: optuna.Trial) -> float:
        batch_size = trial.suggest_categorical("batch_size", list(BATCH_SIZES))
        lr = trial.suggest_float("lr", 1e-4, 1e-1, log=True)
        dropout = trial.suggest_float("dropout", 0.0, 0.5)
        torch.manual_seed(seed + trial.number)
        model = nn.Sequential(
            nn.Linear(64, 128), nn.ReLU(), nn.Dropout(dropout), nn.Linear(128, 10)
        ).to(device)
        optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
        train_loader = DataLoader(train_set, batch_size=batch_size, shuffle=True)
        valid_loader = DataLoader(valid_set, batch_size=batch_size)

        accuracy = 0.0
        for epoch in range(EPOCHS):
            model.train()
            for inputs, targets in train_loader:
                inputs, targets = inputs.to(device), targets.to(device)
                optimizer.zero_grad()
                loss = F.cross_entropy(model(inputs), targets)
                loss.backward()
                optimizer.step()

            model.eval()
            correct = 0
            with torch.no_grad():
                for inputs, targets in valid_loader:
                    inputs, targets = inputs.to(device), targets.to(device)
                    predicted = model(inputs).argmax(dim=1)
                    correct += (predicted == targets).sum().item()
            accuracy = correct / len(valid_set)

            trial.report(accuracy, epoch)
            if trial.should_prune():
                raise optuna.TrialPruned()
        return accuracy

    study = optuna.create_study(
        study_name=study_name,
        storage=storage,
        direction="maximize",
        sampler=optuna.samplers.TPESampler(seed=seed),
        pruner=optuna.pruners.MedianPruner(),
    )
    study.optimize(objective, n_trials=trials)


# --------------------------------------------------------------------------- parent


class Variant:
    def __init__(self, key: str, label: str, lever: str = "") -> None:
        self.key, self.label, self.lever = key, label, lever

    def command(self, seed: int, trials: int, url: str, study: str) -> list[str]:
        me = [sys.executable, str(Path(__file__).resolve())]
        common = ["--seed", str(seed), "--trials", str(trials), "--storage", url]
        if self.key.startswith("readme"):
            cmd = [str(BIN / "bsopt"), "run", "digits", *common, "--study", study]
            return cmd + (["--jobs", "1"] if self.key == "readme_jobs1" else [])
        if self.key.startswith("library"):
            extra = {
                "library_plain": ["--plain"],
                "library_optuna_pruner": ["--optuna-pruner"],
                "library_spawn": ["--workers", "spawn"],
                "library_fork": ["--workers", "fork"],
            }.get(self.key, [])
            return [*me, "--worker", "library", "--study", study, *common, *extra]
        one = ["--one-thread"] if self.key == "optuna_1t" else []
        return [*me, "--worker", "optuna", "--study", study, *common, *one]


VARIANTS = [
    Variant("readme", "README command: bsopt run digits --trials 30"),
    Variant("readme_jobs1", "README command --jobs 1"),
    Variant("library", "bsopt library, one process, bsopt's storage"),
    Variant("library_plain", "bsopt library, one process, Optuna's RDBStorage"),
    Variant("library_optuna_pruner", "bsopt library, one process, Optuna's MedianPruner"),
    Variant("library_fork", "bsopt library, 2 worker processes, forked"),
    Variant("library_spawn", "bsopt library, 2 worker processes, spawned"),
    Variant("optuna", "Optuna example on SQLite (torch default threads)"),
    Variant("optuna_1t", "Optuna example on SQLite (one torch thread)"),
]
QUICK = ("readme", "readme_jobs1", "optuna")


def run_variant(
    variant: Variant, folder: Path, seed: int, trials: int, env: dict[str, str]
) -> dict[str, Any]:
    name = f"{variant.key}-{seed}"
    db = folder / f"{name}.db"
    url = f"sqlite:///{db}"
    log = folder / f"{name}.log"
    cmd = variant.command(seed, trials, url, "digits")
    launched = dt.datetime.now()
    t0 = time.perf_counter()
    with log.open("w") as out:
        code = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=folder)
    wall = time.perf_counter() - t0
    if code.returncode:
        sys.stderr.write(log.read_text()[-3000:])
        raise RuntimeError(f"{variant.label} (seed {seed}) failed with {code.returncode}")
    import optuna

    study = optuna.load_study(study_name="digits", storage=url)
    trials_ = study.get_trials(deepcopy=False)
    done = [t for t in trials_ if t.state.is_finished() and t.state.name != "FAIL"]
    complete = [t for t in trials_ if t.state.name == "COMPLETE"]
    best = max(complete, key=lambda t: t.value or 0.0)
    batch = best.params.get("batch_size", best.user_attrs.get("effective_batch_size"))
    first = min(t.datetime_start for t in trials_ if t.datetime_start is not None)
    return {
        "wall": wall,
        "startup": (first - launched).total_seconds(),
        "best": best.value,
        "finished": len(done),
        "pruned": sum(t.state.name == "PRUNED" for t in trials_),
        "failed": sum(t.state.name == "FAIL" for t in trials_),
        "batch": batch,
        "samples": sum(int(t.user_attrs.get("samples_seen", 0)) for t in done),
    }


def reference(results: dict[str, list[dict[str, Any]]]) -> str:
    keys = [k for k in ("optuna", "optuna_1t") if results.get(k)]
    return min(keys, key=lambda k: _common.median([r["wall"] for r in results[k]]))


def report(
    results: dict[str, list[dict[str, Any]]], variants: Sequence[Variant], seeds: Sequence[int]
) -> tuple[str, str]:
    med = _common.median
    ref = reference(results)
    rows = []
    for v in variants:
        rs = results[v.key]
        ratios = [r["wall"] / x["wall"] for r, x in zip(rs, results[ref], strict=True)]
        diffs = [100 * (r["best"] - x["best"]) for r, x in zip(rs, results[ref], strict=True)]
        rows.append(
            [
                v.label,
                f"{med([r['wall'] for r in rs]):.1f}",
                _common.spread([r["wall"] for r in rs]),
                f"{med([r['startup'] for r in rs]):.1f}",
                f"**{med(ratios):.2f}x**" if v.key != ref else "1 (reference)",
                f"{med([r['best'] for r in rs]):.4f}",
                "/".join(f"{r['best']:.4f}" for r in rs),
                f"{med(diffs):+.2f}" if v.key != ref else "",
                "/".join(str(r["batch"]) for r in rs),
                "/".join(f"{r['finished']}:{r['pruned']}" for r in rs),
                f"{med([r['samples'] for r in rs]) / 1000:.0f}k" if v.key[:6] != "optuna" else "-",
            ]
        )
    main = _common.table(
        [
            "variant",
            "wall s (median)",
            "min..max",
            "launch to 1st trial s",
            "wall / reference (median over seeds)",
            "best val acc (median)",
            f"best per seed {'/'.join(map(str, seeds))}",
            "best - reference (pp, median)",
            "best batch per seed",
            "finished:pruned per seed",
            "samples trained",
        ],
        rows,
    )

    def lever(a: str, b: str) -> str:
        if not (results.get(a) and results.get(b)):
            return "-"
        pairs = zip(results[a], results[b], strict=True)
        return f"{med([x['wall'] / y['wall'] for x, y in pairs]):.2f}x"

    levers = _common.table(
        ["lever", "compared", "speed-up (median over seeds)"],
        [
            [
                "both cores: worker processes",
                "README command --jobs 1 / README command",
                lever("readme_jobs1", "readme"),
            ],
            [
                "storage: WAL, synchronous=NORMAL, batched attributes, plain-SELECT reads",
                "library on Optuna's RDBStorage / library on bsopt's storage",
                lever("library_plain", "library"),
            ],
            [
                "pruner: completed trials read once per trial, not at every report",
                "library with Optuna's MedianPruner / library with bsopt's",
                lever("library_optuna_pruner", "library"),
            ],
            [
                "workers forked with the parent's objective instead of spawned",
                "library, 2 spawned workers / library, 2 forked workers",
                lever("library_spawn", "library_fork"),
            ],
            [
                "one process: torch's default threads (and the CLI's checks) vs one thread",
                "README command --jobs 1 / library on bsopt's storage",
                lever("readme_jobs1", "library"),
            ],
        ],
    )
    return main, levers


def parent_main(args: argparse.Namespace) -> int:
    trials = args.trials or (12 if args.quick else 30)
    seeds = args.seeds or ([0] if args.quick else [0, 1, 2])
    variants = [v for v in VARIANTS if not args.quick or v.key in QUICK]
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    facts = _common.machine_facts()
    load_start = _common.uptime_line()
    print(f"bench_study: {trials} trials, seeds {seeds}; {load_start}", flush=True)
    t_start = time.perf_counter()
    env = {k: v for k, v in os.environ.items() if k not in ("BSOPT_STORAGE", "OMP_NUM_THREADS")}
    results: dict[str, list[dict[str, Any]]] = {v.key: [] for v in variants}
    loads: list[str] = []
    with tempfile.TemporaryDirectory(prefix="bsopt-study-") as tmp:
        folder = Path(tmp)
        for i, seed in enumerate(seeds):
            order = variants[i % len(variants) :] + variants[: i % len(variants)]
            for v in order:
                r = run_variant(v, folder, seed, trials, env)
                results[v.key].append(r)
                loads.append(_common.load_average().split()[0])
                print(
                    f"  seed {seed}: {v.label:<52} {r['wall']:6.1f} s, best {r['best']:.4f} "
                    f"(batch {r['batch']}), finished {r['finished']}, pruned {r['pruned']} "
                    f"(load {_common.load_average()})",
                    flush=True,
                )
    seconds = time.perf_counter() - t_start
    load_end = _common.uptime_line()
    main, levers = report(results, variants, seeds)
    print(main)
    print(levers)
    print(load_end)
    if args.write:
        ref = reference(results)
        section = "\n\n".join(
            [
                "## bench_study: time to the answer of the 30-trial digits study",
                __doc__.split("\n\n", 2)[2].strip(),
                _common.machine_block(facts, load_start, load_end, seconds),
                f"1-minute load average after each run: {', '.join(loads)} (2 cores).",
                f"Reference: {next(v.label for v in variants if v.key == ref)}.",
                main,
                "Levers, each measured as the ratio of two variants that differ in it alone:",
                levers,
            ]
        )
        _common.write_section("bench_study", section)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="12 trials, one seed, 3 variants")
    parser.add_argument("--seeds", type=int, nargs="+", default=None, help="default 0 1 2")
    parser.add_argument("--trials", type=int, default=None, help="finished trials (default 30)")
    parser.add_argument("--write", action="store_true", help="replace this script's section")
    # Internal: run one worker process.
    parser.add_argument("--worker", choices=("library", "optuna"), help=argparse.SUPPRESS)
    parser.add_argument("--study", help=argparse.SUPPRESS)
    parser.add_argument("--storage", help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--plain", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--optuna-pruner", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--workers", choices=("spawn", "fork"), help=argparse.SUPPRESS)
    parser.add_argument("--one-thread", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker == "library":
        worker_library(args)
        return 0
    if args.worker == "optuna":
        worker_optuna(args)
        return 0
    return parent_main(args)


if __name__ == "__main__":
    sys.exit(main())
