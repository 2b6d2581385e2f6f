"""Confirm reruns: in this process (as `bsopt confirm` ran them before) vs joblib workers.

    python benchmarks/bench_confirm.py [--repeats 3] [--seeds 5] [--write]

One 20-trial digits search (``bsopt run digits``'s objective, seed 0) is made once and
copied (SQLite's backup API) for every arm and repeat, so each confirm starts from the same
stored study and reruns the same configurations with the same seeds. The arms take turns
in each repeat:

* ``1 process, 2 threads``: ``confirm(..., jobs=1)`` with torch's default threads, what
  ``bsopt confirm`` did before it had ``--jobs``;
* ``1 process, 1 thread``: the same with ``torch.set_num_threads(1)``;
* ``2 workers``: ``confirm(..., jobs=2)``, the new default of `bsopt confirm` on this
  2-core machine: two worker processes with one thread each, forked from this one with the
  objective (a ``retrain=`` function, or a GPU objective, goes to joblib's spawned workers
  instead); their start-up is in every call.

Wall time is the whole ``confirm`` call (training, storing, the analysis at the end).
"""

from __future__ import annotations

import argparse
from pathlib import Path
import sqlite3
import sys
import tempfile
import time

import _common

ARMS = ("1 process, 2 threads", "1 process, 1 thread", "2 workers")


def _search(folder: Path) -> Path:
    import optuna

    import bsopt
    from bsopt.runs._runner import digits

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    path = folder / "search.db"
    study = bsopt.create_study("confirm-bench", storage=f"sqlite:///{path}", seed=0)
    bsopt.optimize(study, digits(seed=0), trials=20, show_progress_bar=False)
    bsopt.store.close_connections(study._storage)
    return path


def _copy(source: Path, target: Path) -> str:
    with sqlite3.connect(source) as old, sqlite3.connect(target) as new:
        old.backup(new)
    return f"sqlite:///{target}"


def _confirm(url: str, arm: str, seeds: int) -> tuple[float, list[tuple[int, int, float]]]:
    import optuna
    import torch

    import bsopt
    from bsopt.runs._runner import digits

    torch.set_num_threads(2 if arm == "1 process, 2 threads" else 1)
    study = optuna.load_study(study_name="confirm-bench", storage=bsopt.open_storage(url))
    objective = digits(seed=0)
    start = time.perf_counter()
    result = bsopt.confirm(study, objective, seeds=seeds, jobs=2 if arm == "2 workers" else 1)
    seconds = time.perf_counter() - start
    values = [(r.of, r.seed, r.value) for r in result.runs]
    return seconds, values  # type: ignore[return-value]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--write", action="store_true", help="replace this script's section")
    args = parser.parse_args()
    facts = _common.machine_facts()
    load_start, began = _common.uptime_line(), time.perf_counter()
    times: dict[str, list[float]] = {arm: [] for arm in ARMS}
    values: dict[str, list[tuple[int, int, float]]] = {}
    reruns = 0
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        search = _search(folder)
        for repeat in range(args.repeats):
            order = ARMS[repeat % 3 :] + ARMS[: repeat % 3]
            for arm in order:
                url = _copy(search, folder / f"r{repeat}-{ARMS.index(arm)}.db")
                seconds, got = _confirm(url, arm, args.seeds)
                times[arm].append(seconds)
                values.setdefault(arm, got)
                reruns = len(got)
                print(f"  repeat {repeat + 1}: {arm} {seconds:.1f} s", flush=True)
    same = all(values[arm] == values[ARMS[0]] for arm in ARMS)
    base = _common.median(times[ARMS[0]])
    rows = [
        [
            arm,
            f"{_common.median(times[arm]):.1f}",
            _common.spread(times[arm]),
            f"{_common.median(times[arm]) / reruns:.2f}",
            f"{base / _common.median(times[arm]):.2f}x",
        ]
        for arm in ARMS
    ]
    header = ["arm", "wall s (median)", "min..max", "s per rerun", "speed-up vs 1 process"]
    text = "\n\n".join(
        [
            "## bench_confirm: confirm reruns in one process vs joblib workers",
            __doc__.split("\n\n", 2)[2].strip(),
            _common.machine_block(
                facts, load_start, _common.uptime_line(), time.perf_counter() - began
            ),
            f"{reruns} reruns per confirm ({args.seeds} seeds for the best configuration of "
            f"each batch size), {args.repeats} repeats. The stored values are "
            f"{'the same in every arm' if same else 'NOT the same in every arm'}.",
            _common.table(header, rows),
        ]
    )
    print(text)
    if args.write:
        _common.write_section("bench_confirm", text)
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
