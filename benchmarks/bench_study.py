"""Time to the answer of a whole 30-trial digits study: bsopt against Optuna's example style.

    python benchmarks/bench_study.py [--quick] [--write] [--repeats N] [--trials N]

Every variant is measured as a user runs it: fresh Python processes (this script with
``--worker``), timed from their launch to their exit, so imports, data loading and the
first optimizer's one-time cost are paid once per process and included. Each process calls
``torch.set_num_threads(1)``.

Searched variants (TPE, seed 0):

* ``bsopt x2``: ``build_objective`` of ``studies/digits.py`` (loaded as ``bsopt run``
  loads it), ``bsopt.make_pruner("median", budget, n_train)``, two worker processes sharing
  one SQLite file, each calling ``bsopt.optimize(study, objective, trials=30)``;
* ``bsopt x1``: the same with one process; also with Optuna's ``InMemoryStorage`` (to
  separate what the trainer saves from what the SQLite storage costs);
* ``Optuna example``: the study written the way Optuna's PyTorch example writes it
  (``trial.suggest_*`` for batch size (categorical over powers of two), lr (log) and
  dropout; DataLoaders; accuracy reported with ``trial.report(acc, epoch)`` every epoch;
  ``MedianPruner()``; 10 epochs; in-memory storage), one process.

Fairness variants: the same 30 enqueued parameter sets (six per batch size 16..256, lr and
dropout drawn once from a seeded generator) with pruning off (``NopPruner``), so only the
framework's speed differs: ``bsopt x1`` and the Optuna example, each on SQLite and in
memory, one process. ``--quick`` runs 6 trials, one round, and leaves out the in-memory bsopt
variants and the Optuna example on SQLite.

The SQLite file and its tables are created before the clock starts (as by an earlier run);
the searched studies are created by the workers, the enqueued ones by this script.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
import datetime as dt
import json
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
SEED = 0


# --------------------------------------------------------------------------- workers


def worker_bsopt(args: argparse.Namespace) -> dict[str, Any]:
    _common.pin_threads()
    import optuna

    import bsopt
    from bsopt._runner import load_study_definition

    _, build_objective = load_study_definition(str(_common.ROOT / "studies" / "digits.py"))
    objective = build_objective(seed=SEED)
    pruner = bsopt.make_pruner(args.pruner, objective.budget, objective.data.n_train)
    in_memory = args.storage is None
    study = bsopt.create_study(
        args.study,
        storage=optuna.storages.InMemoryStorage() if in_memory else args.storage,
        direction=objective.direction,
        pruner=pruner,
        seed=SEED,
    )
    if args.enqueue:
        for p in json.loads(Path(args.enqueue).read_text()):
            study.enqueue_trial(_bsopt_params(p))
    ran = bsopt.optimize(study, objective, trials=args.trials, show_progress_bar=False)
    out: dict[str, Any] = {"ran_here": ran}
    if in_memory:
        out["trials"] = [_trial_record(t) for t in study.trials]
    return out


def _bsopt_params(p: dict[str, float]) -> dict[str, float]:
    """A parameter set in bsopt's names: the batch size is searched as its exponent."""
    log2 = int(p["batch_size"]).bit_length() - 1
    return {"log2_batch_size": log2, "lr": p["lr"], "dropout": p["dropout"]}


def worker_optuna(args: argparse.Namespace) -> dict[str, Any]:
    """Optuna's PyTorch example, adapted to digits and a searched batch size."""
    _common.pin_threads()
    import numpy as np
    import optuna
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split
    import torch
    from torch import nn
    import torch.nn.functional as F
    from torch.utils.data import DataLoader, TensorDataset

    device = torch.device("cpu")
    # The same split and standardisation as bsopt.load_digits(seed=0).
    x, y = load_digits(return_X_y=True)
    x_tr, x_va, y_tr, y_va = train_test_split(x, y, test_size=0.2, random_state=SEED, stratify=y)
    mean, std = x_tr.mean(axis=0), x_tr.std(axis=0)
    std[std == 0] = 1.0
    train_set = TensorDataset(
        torch.as_tensor((x_tr - mean) / std, dtype=torch.float32),
        torch.as_tensor(y_tr.astype(np.int64)),
    )
    valid_set = TensorDataset(
        torch.as_tensor((x_va - mean) / std, dtype=torch.float32),
        torch.as_tensor(y_va.astype(np.int64)),
    )

    def objective(trial: optuna.Trial) -> float:
        batch_size = trial.suggest_categorical("batch_size", list(BATCH_SIZES))
        lr = trial.suggest_float("lr", 1e-4, 1e-1, log=True)
        dropout = trial.suggest_float("dropout", 0.0, 0.5)
        torch.manual_seed(SEED + trial.number)
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

    pruner: optuna.pruners.BasePruner = (
        optuna.pruners.MedianPruner() if args.pruner == "median" else optuna.pruners.NopPruner()
    )
    study = optuna.create_study(
        study_name=args.study,
        storage=args.storage,  # None: in memory, as in the example
        direction="maximize",
        sampler=optuna.samplers.TPESampler(seed=SEED),
        pruner=pruner,
        load_if_exists=True,
    )
    if args.enqueue:
        for params in json.loads(Path(args.enqueue).read_text()):
            study.enqueue_trial(params)
    study.optimize(objective, n_trials=args.trials)
    return {"trials": [_trial_record(t) for t in study.trials]}


def _trial_record(trial: Any) -> dict[str, Any]:
    return {
        "state": trial.state.name,
        "value": trial.value,
        "params": trial.params,
        "start": trial.datetime_start.isoformat() if trial.datetime_start else None,
        "complete": trial.datetime_complete.isoformat() if trial.datetime_complete else None,
        "inside": trial.user_attrs.get("train_seconds", 0.0)
        + trial.user_attrs.get("eval_seconds", 0.0),
    }


def worker_main(args: argparse.Namespace) -> int:
    out = worker_bsopt(args) if args.worker == "bsopt" else worker_optuna(args)
    Path(args.out).write_text(json.dumps(out))
    return 0


# --------------------------------------------------------------------------- parent


def fairness_params(trials: int) -> list[dict[str, float]]:
    """``trials`` parameter sets, the batch sizes in equal shares, lr and dropout seeded."""
    import numpy as np

    rng = np.random.default_rng(SEED)
    sizes = [BATCH_SIZES[i % len(BATCH_SIZES)] for i in range(trials)]
    rng.shuffle(sizes)
    return [
        {
            "batch_size": int(b),
            "lr": float(10 ** rng.uniform(-4, -1)),
            "dropout": float(rng.uniform(0.0, 0.5)),
        }
        for b in sizes
    ]


class Variant:
    def __init__(
        self,
        key: str,
        label: str,
        worker: str,
        processes: int,
        pruner: str,
        storage: str,
        enqueue: bool,
    ) -> None:
        self.key, self.label, self.worker = key, label, worker
        self.processes, self.pruner, self.storage, self.enqueue = (
            processes,
            pruner,
            storage,
            enqueue,
        )


VARIANTS = [
    Variant("bsopt2", "bsopt x2 (SQLite, median)", "bsopt", 2, "median", "sqlite", False),
    Variant("bsopt1", "bsopt x1 (SQLite, median)", "bsopt", 1, "median", "sqlite", False),
    Variant(
        "optuna", "Optuna example (in memory, median)", "optuna", 1, "median", "memory", False
    ),
    Variant("bsopt1_mem", "bsopt x1 (in memory, median)", "bsopt", 1, "median", "memory", False),
    Variant("fair_bsopt", "fair: bsopt x1 (SQLite)", "bsopt", 1, "none", "sqlite", True),
    Variant("fair_bsopt_mem", "fair: bsopt x1 (in memory)", "bsopt", 1, "none", "memory", True),
    Variant(
        "fair_optuna", "fair: Optuna example (in memory)", "optuna", 1, "none", "memory", True
    ),
    Variant(
        "fair_optuna_sql", "fair: Optuna example (SQLite)", "optuna", 1, "none", "sqlite", True
    ),
]


def prepare(variant: Variant, folder: Path, run_id: int, trials: int) -> tuple[str | None, str]:
    """Create the SQLite tables (and the enqueued study); returns (storage URL, study name)."""
    name = f"{variant.key}-{run_id}"
    if variant.storage == "memory":
        return None, name
    url = f"sqlite:///{folder / f'{name}.db'}"
    import optuna

    import bsopt

    storage = bsopt.open_storage(url) if variant.worker == "bsopt" else url
    if not variant.enqueue:
        optuna.storages.RDBStorage(url)  # the tables only
        return url, name
    sets = fairness_params(trials)
    if variant.worker == "bsopt":
        study = bsopt.create_study(name, storage=storage, pruner=optuna.pruners.NopPruner())
        for p in sets:
            study.enqueue_trial(_bsopt_params(p))
    else:
        study = optuna.create_study(study_name=name, storage=url, direction="maximize")
        for p in sets:
            study.enqueue_trial(p)
    return url, name


def run_variant(variant: Variant, folder: Path, run_id: int, trials: int) -> dict[str, Any]:
    url, name = prepare(variant, folder, run_id, trials)
    enqueue_file = folder / f"enqueue-{run_id}.json"
    if variant.enqueue and variant.storage == "memory":
        enqueue_file.write_text(json.dumps(fairness_params(trials)))
    outs = [folder / f"{name}-{i}.json" for i in range(variant.processes)]
    logs = [folder / f"{name}-{i}.log" for i in range(variant.processes)]
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--worker",
        variant.worker,
        "--study",
        name,
        "--trials",
        str(trials),
        "--pruner",
        variant.pruner,
    ]
    if url:
        cmd += ["--storage", url]
    if variant.enqueue and variant.storage == "memory":
        cmd += ["--enqueue", str(enqueue_file)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    launched = dt.datetime.now()
    t0 = time.perf_counter()
    procs = [
        subprocess.Popen(
            [*cmd, "--out", str(out)],
            stdout=log.open("w"),
            stderr=subprocess.STDOUT,
            env=env,
            cwd=_common.ROOT,
        )
        for out, log in zip(outs, logs, strict=True)
    ]
    codes = [p.wait() for p in procs]
    wall = time.perf_counter() - t0
    if any(codes):
        for log in logs:
            sys.stderr.write(log.read_text()[-3000:])
        raise RuntimeError(f"{variant.label}: a worker failed ({codes})")

    if url:
        import optuna

        storage = optuna.storages.RDBStorage(url)
        study = optuna.load_study(study_name=name, storage=storage)
        records = [_trial_record(t) for t in study.trials]
    else:
        records = json.loads(outs[0].read_text())["trials"]
    finished = sorted(
        dt.datetime.fromisoformat(r["complete"])
        for r in records
        if r["state"] in ("COMPLETE", "PRUNED")
    )
    complete = [r for r in records if r["state"] == "COMPLETE"]
    best = max(complete, key=lambda r: r["value"])
    nth = finished[trials - 1] if len(finished) >= trials else finished[-1]
    done = [r for r in records if r["state"] in ("COMPLETE", "PRUNED")]
    starts = sorted(dt.datetime.fromisoformat(r["start"]) for r in done)
    durations = [
        (
            dt.datetime.fromisoformat(r["complete"]) - dt.datetime.fromisoformat(r["start"])
        ).total_seconds()
        for r in done
    ]
    return {
        "startup": (starts[0] - launched).total_seconds(),
        "trial_sum": sum(durations),
        "inside_sum": sum(r["inside"] for r in done),
        "wall": wall,
        "to_nth": (nth - launched).total_seconds(),
        "finished": len(finished),
        "complete": len(complete),
        "pruned": sum(r["state"] == "PRUNED" for r in records),
        "other": sum(r["state"] not in ("COMPLETE", "PRUNED") for r in records),
        "best": best["value"],
        "best_params": {k: v for k, v in best["params"].items() if k != "log2_batch_size"},
    }


def fmt_params(params: dict[str, Any]) -> str:
    parts = []
    for key in ("batch_size", "lr", "dropout"):
        if key in params:
            v = params[key]
            parts.append(f"{key}={v:.3g}" if isinstance(v, float) else f"{key}={v}")
    return ", ".join(parts)


def report(results: dict[str, list[dict[str, Any]]], variants: Sequence[Variant]) -> str:
    med = _common.median
    rows = []
    for v in variants:
        rs = results[v.key]
        if not rs:
            continue
        counts = sorted({r["finished"] for r in rs})
        best = max(rs, key=lambda r: r["best"])
        other = f" (+{max(r['other'] for r in rs)} other)" if any(r["other"] for r in rs) else ""
        rows.append(
            [
                v.label,
                f"{med([r['wall'] for r in rs]):.1f}",
                _common.spread([r["wall"] for r in rs]),
                f"{med([r['to_nth'] for r in rs]):.1f}",
                f"{med([r['startup'] for r in rs]):.1f}",
                f"{med([r['trial_sum'] for r in rs]):.1f}",
                f"{med([r['inside_sum'] for r in rs]):.1f}" if v.worker == "bsopt" else "-",
                "/".join(str(c) for c in counts) + other,
                "/".join(str(r["pruned"]) for r in rs),
                "/".join(f"{r['best']:.4f}" for r in rs),
                fmt_params(best["best_params"]),
            ]
        )
    return _common.table(
        [
            "variant",
            "wall s (median)",
            "min..max",
            "to last finished s",
            "launch to 1st trial s",
            "sum of trial s",
            "of which train+eval s",
            "finished",
            "pruned (per run)",
            "best val acc (per run)",
            "best params (best run)",
        ],
        rows,
    )


def ratios(results: dict[str, list[dict[str, Any]]]) -> list[tuple[str, str, str, float]]:
    """(numerator, denominator, label, median of per-round wall-time ratios)."""
    pairs = [
        ("optuna", "bsopt1", "Optuna example / bsopt x1, searched"),
        ("optuna", "bsopt1_mem", "Optuna example / bsopt x1 in memory, searched"),
        ("optuna", "bsopt2", "Optuna example / bsopt x2, searched"),
        ("bsopt1", "bsopt2", "bsopt x1 / bsopt x2, searched"),
        ("fair_optuna", "fair_bsopt", "fair: Optuna example in memory / bsopt x1 on SQLite"),
        ("fair_optuna_sql", "fair_bsopt", "fair: Optuna example on SQLite / bsopt x1 on SQLite"),
        ("fair_optuna", "fair_bsopt_mem", "fair: Optuna example in memory / bsopt x1 in memory"),
    ]
    out = []
    for a, b, label in pairs:
        if results.get(a) and results.get(b):
            r = _common.median(
                [x["wall"] / y["wall"] for x, y in zip(results[a], results[b], strict=True)]
            )
            out.append((a, b, label, r))
    return out


def overshoot_note(results: dict[str, list[dict[str, Any]]], trials: int) -> str:
    counts = [r["finished"] for r in results.get("bsopt2", [])]
    if not counts:
        return ""
    if all(c == trials for c in counts):
        return f"The two-process runs ended at exactly {trials} finished trials every time."
    return (
        f"The two-process runs ended with {'/'.join(map(str, counts))} finished trials, not "
        f"exactly {trials}: each worker's `bsopt.optimize` stops through Optuna's "
        "`MaxTrialsCallback`, which is checked only after a trial, so a worker still training "
        "when the other reaches the total finishes one trial more. (`bsopt.work`, which "
        "gates every trial on the storage, is documented to stop at exactly the total; it is "
        "not what this benchmark runs.)"
    )


def parent_main(args: argparse.Namespace) -> int:
    trials = args.trials or (6 if args.quick else 30)
    repeats = args.repeats or (1 if args.quick else 3)
    extra = ("fair_optuna_sql", "bsopt1_mem", "fair_bsopt_mem")
    variants = [v for v in VARIANTS if not (args.quick and v.key in extra)]
    _common.pin_threads()  # this process trains nothing; the workers pin themselves
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # this process only
    facts = _common.machine_facts()
    load_start = _common.uptime_line()
    print(f"bench_study: {trials} trials, {repeats} round(s); {load_start}", flush=True)
    t_start = time.perf_counter()
    results: dict[str, list[dict[str, Any]]] = {v.key: [] for v in variants}
    with tempfile.TemporaryDirectory(prefix="bsopt-study-") as tmp:
        folder = Path(tmp)
        run_id = 0
        for rep in range(repeats):
            order = variants[rep % len(variants) :] + variants[: rep % len(variants)]
            for v in order:
                run_id += 1
                r = run_variant(v, folder, run_id, trials)
                results[v.key].append(r)
                print(
                    f"  round {rep + 1}: {v.label:<36} {r['wall']:6.1f} s, finished "
                    f"{r['finished']}, pruned {r['pruned']}, best {r['best']:.4f} "
                    f"(load {_common.load_average()})",
                    flush=True,
                )
    seconds = time.perf_counter() - t_start
    load_end = _common.uptime_line()
    text = report(results, variants)
    ratio_rows = [[label, f"{r:.2f}x"] for _, _, label, r in ratios(results)]
    ratio_text = _common.table(
        ["wall-time ratio (median of per-round ratios)", "ratio"], ratio_rows
    )
    print(text)
    print(ratio_text)
    print(load_end)
    if args.write:
        section = "\n\n".join(
            [
                "## bench_study: time to the answer of a whole digits study",
                f"{trials} finished trials of the digits study (MLP 64-128-10 with searched "
                "dropout, batch size 16..256 on powers of two, lr 1e-4..1e-1 log, dropout "
                f"0..0.5, {EPOCHS} epochs, TPE seed 0). Wall time from launching fresh worker "
                "processes to their exit, as a user runs the study: imports, data loading "
                "and the one-time cost of the first optimizer are paid once per process and "
                "included. 'to last finished' is from launch to the completion time of the "
                f"{trials}th finished trial. Every process calls `torch.set_num_threads(1)`. "
                f"{repeats} round(s), the variants run one after another in a rotating order "
                "in each round; ratios are medians of per-round ratios. `bsopt xN`: "
                "`studies/digits.py`'s `build_objective`, `bsopt.make_pruner('median', "
                "budget, n_train)` (warm-up a quarter of the budget, 5 startup trials), N "
                "processes each calling `bsopt.optimize(study, objective, trials=N_TOTAL)` on "
                "one SQLite file (`in memory`: Optuna's `InMemoryStorage` instead, one "
                "process). `Optuna example`: DataLoaders, `trial.suggest_categorical` "
                "for the batch size, `trial.report(acc, epoch)` each epoch, `MedianPruner()` "
                "(no warm-up), in-memory storage as in the example. `fair`: the same "
                f"{trials} "
                "enqueued parameter sets (6 per batch size), `NopPruner`, one process, on "
                "SQLite or in memory. The SQLite file and tables exist before the clock "
                "starts. 'sum of trial s' adds up each trial's start-to-complete time; 'of "
                "which train+eval s' is bsopt's own `train_seconds + eval_seconds` of those "
                "trials, so the difference is what a trial spends outside its training loop "
                "(suggesting, storage writes and reads, building the model; in a process's "
                "first trial also the ~1.6 s one-time cost of constructing the first torch "
                "optimizer).",
                _common.machine_block(facts, load_start, load_end, seconds),
                text,
                ratio_text,
                overshoot_note(results, trials),
            ]
        )
        _common.write_section("bench_study", section)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="6 trials, one round")
    parser.add_argument("--repeats", type=int, default=None, help="rounds (default 3)")
    parser.add_argument("--trials", type=int, default=None, help="finished trials (default 30)")
    parser.add_argument("--write", action="store_true", help="replace this script's section")
    # Internal: run one worker process.
    parser.add_argument("--worker", choices=("bsopt", "optuna"), help=argparse.SUPPRESS)
    parser.add_argument("--study", help=argparse.SUPPRESS)
    parser.add_argument("--storage", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--pruner", default="median", help=argparse.SUPPRESS)
    parser.add_argument("--enqueue", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker_main(args)
    return parent_main(args)


if __name__ == "__main__":
    sys.exit(main())
