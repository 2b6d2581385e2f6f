"""Throughput of many workers on one study: SQLite, journal file and PostgreSQL.

For 1, 2, 4 and 8 worker processes, each running ``bsopt.work`` on the same study, measures
finished trials per second with an I/O-bound objective (it sleeps 1 s) and a CPU-bound one
(a fixed pure-Python loop, about 0.2 s on one core). Workers are forked from this process,
so the time is the storage, the sampler and the objective, not importing torch. Errors are
worker processes that exited non-zero and FAIL trials other than a same-instant surplus
(see ``bsopt.work``); both should be zero.

Target (issue 6): 8 workers on PostgreSQL >= 6x one worker on the I/O-bound objective.

Usage: python benchmarks/bench_workers.py [--quick] [--write]
PostgreSQL comes from $BSOPT_BENCH_POSTGRES_URL (default: the local test server); it is
left out, with a note, when unreachable.
"""

from __future__ import annotations

import argparse
from collections import Counter
import multiprocessing
import os
from pathlib import Path
import sys
import tempfile
import time
import uuid

from _common import machine_block, machine_facts, pin_threads, table, uptime_line, write_section
import optuna
from optuna.trial import TrialState

import bsopt

POSTGRES = os.environ.get(
    "BSOPT_BENCH_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
CPU_LOOP = 1_500_000  # about 0.2 s of pure Python on one core of the reference machine


def io_objective(trial: optuna.Trial) -> float:
    x = trial.suggest_float("x", 0.0, 1.0)
    time.sleep(float(os.environ["BENCH_SLEEP"]))
    return x


def cpu_objective(trial: optuna.Trial) -> float:
    x = trial.suggest_float("x", 0.0, 1.0)
    total = 0
    for i in range(CPU_LOOP):
        total += i * i
    return x + total * 0.0


def _worker(url: str, name: str, trials: int, kind: str) -> None:
    pin_threads()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = optuna.load_study(study_name=name, storage=bsopt.open_storage(url))
    objective = io_objective if kind == "io" else cpu_objective
    bsopt.work(study, objective, trials=trials, poll_interval=0.2)


def measure(url: str, workers: int, trials: int, kind: str) -> dict[str, float]:
    """Run one configuration; returns rate (finished/s), wall s, errors, surplus."""
    name = f"bench-workers-{uuid.uuid4().hex[:8]}"
    bsopt.create_study(name, storage=url)
    context = multiprocessing.get_context("fork")
    processes = [
        context.Process(target=_worker, args=(url, name, trials, kind)) for _ in range(workers)
    ]
    start = time.perf_counter()
    for p in processes:
        p.start()
    for p in processes:
        p.join()
    wall = time.perf_counter() - start
    storage = bsopt.open_storage(url, heartbeat_interval=None)
    study = optuna.load_study(study_name=name, storage=storage)
    trials_ = study.get_trials(deepcopy=False)
    counts = Counter(t.state for t in trials_)
    surplus = sum(
        t.state == TrialState.FAIL
        and str(t.user_attrs.get("stop_reason", "")).startswith("surplus")
        for t in trials_
    )
    finished = counts[TrialState.COMPLETE] + counts[TrialState.PRUNED]
    errors = sum(p.exitcode != 0 for p in processes) + counts[TrialState.FAIL] - surplus
    errors += abs(finished - trials)  # a missed or overshot total is an error too
    optuna.delete_study(study_name=name, storage=storage)
    return {"rate": finished / wall, "wall": wall, "errors": errors, "surplus": surplus}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="0.2 s sleeps, fewer trials")
    parser.add_argument("--write", action="store_true", help="write the RESULTS.md section")
    parser.add_argument("--storages", default="SQLite,journal file,PostgreSQL", help="subset")
    parser.add_argument("--kinds", default="io,cpu", help="io, cpu or both")
    parser.add_argument("--workers", default="1,2,4,8", help="worker counts")
    parser.add_argument("--rounds", type=int, default=None, help="trials per worker")
    args = parser.parse_args()
    pin_threads()
    sleep = 0.2 if args.quick else 1.0
    os.environ["BENCH_SLEEP"] = str(sleep)
    rounds = args.rounds or (2 if args.quick else 4)  # trials per worker
    facts = machine_facts()
    load_start = uptime_line()
    began = time.perf_counter()
    folder = Path(tempfile.mkdtemp(prefix="bench-workers-"))
    storages = {
        "SQLite": f"sqlite:///{folder / 'bench.db'}",
        "journal file": f"journal:///{folder / 'bench.log'}",
        "PostgreSQL": POSTGRES,
    }
    notes = []
    try:
        bsopt.open_storage(POSTGRES, heartbeat_interval=None)
    except bsopt.StorageError as e:
        del storages["PostgreSQL"]
        notes.append(f"PostgreSQL left out: {e}")
    storages = {k: v for k, v in storages.items() if k in args.storages.split(",")}
    worker_counts = [int(w) for w in args.workers.split(",")]
    rows = []
    results: dict[tuple[str, str, int], dict[str, float]] = {}
    kinds = {"io": f"I/O-bound (sleep {sleep:g} s)", "cpu": "CPU-bound"}
    for kind in args.kinds.split(","):
        label = kinds[kind]
        for storage_name, url in storages.items():
            for workers in worker_counts:
                r = measure(url, workers, rounds * workers, kind)
                results[(kind, storage_name, workers)] = r
                base = results[(kind, storage_name, worker_counts[0])]["rate"]
                rows.append(
                    [
                        label,
                        storage_name,
                        str(workers),
                        str(rounds * workers),
                        f"{r['rate']:.2f}",
                        f"{r['rate'] / base:.2f}x",
                        f"{r['wall']:.1f}",
                        str(int(r["errors"])),
                        str(int(r["surplus"])),
                    ]
                )
                print(" | ".join(rows[-1]), flush=True)
    seconds = time.perf_counter() - began
    header = [
        "objective",
        "storage",
        "workers",
        "trials",
        "finished/s",
        "vs 1 worker",
        "wall s",
        "errors",
        "surplus",
    ]
    lines = [
        "## Many workers on one study (bench_workers.py)",
        "",
        f"Each worker is a forked process running `bsopt.work` on one shared study until it "
        f"holds exactly `trials` finished trials ({rounds} per worker); finished/s = finished "
        "trials / wall time from forking the first worker to the last one's exit (process "
        "start and the end of the study included). errors = workers that exited non-zero + "
        "FAIL trials other than surplus + |finished - trials|; surplus = trials two workers "
        "created at the same instant past the target, recorded FAIL and never run.",
        "",
        table(header, rows),
        "",
    ]
    key = ("io", "PostgreSQL", 8)
    if key in results:
        ratio = results[key]["rate"] / results[("io", "PostgreSQL", 1)]["rate"]
        errors = sum(int(r["errors"]) for r in results.values())
        verdict = "met" if ratio >= 6 and errors == 0 else "NOT met"
        lines.append(
            f"- Target (8 workers on PostgreSQL >= 6x one worker, I/O-bound, zero errors): "
            f"{verdict}: {ratio:.2f}x, {errors} errors in all configurations."
        )
    lines.append(
        "- The CPU-bound rows are bounded by the cores: this machine has "
        f"{facts['nproc']}, shared with other processes, so more workers cannot go faster "
        "than that many objectives at once."
    )
    lines.extend(f"- {n}" for n in notes)
    lines.append(machine_block(facts, load_start, uptime_line(), seconds))
    text = "\n".join(lines)
    print(text)
    if args.write:
        write_section("bench_workers", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
