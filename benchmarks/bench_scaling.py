"""How the per-trial cost of bsopt + Optuna grows with the study: trial 10, 100 and 500.

    python benchmarks/bench_scaling.py [--quick] [--write] [--trials N] [--storages ...]

One study per storage, run by ``bsopt.optimize`` in one process with everything a real
study has: ``bsopt.make_objective`` (a 20-16-4 MLP on 256 synthetic samples, one epoch with
10 evaluations, so training takes milliseconds), TPE from ``bsopt.create_study``, the
median pruner from ``bsopt.make_pruner``, heartbeats on. The cost of a trial is the time
from the end of the previous trial to the end of this one (``bsopt.optimize``'s callback)
minus what the trial spent training and evaluating (its ``train_seconds + eval_seconds``):
what the framework adds per trial, which is the same for a 3-second trial.

Where the time goes: the sampler's, the pruner's and the storage's methods are wrapped with
timers (exclusive time: a storage read made by the pruner counts as storage, not pruner).
'other' is the rest: the objective's own Python (model build, preflight-free bookkeeping),
Optuna's trial loop, the heartbeat thread's start and stop.

Reported at trial 10, 100 and 500: medians over the 9 trials around each.
"""

from __future__ import annotations

import argparse
from collections import defaultdict
import functools
from pathlib import Path
import sys
import tempfile
import threading
import time
from typing import Any
import uuid
import warnings

import _common

_common.pin_threads()

import optuna  # noqa: E402

import bsopt  # noqa: E402

POSTGRES = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
CHECKPOINTS = (10, 100, 500)
CATEGORIES = ("sampler", "pruner", "storage")


class Timers:
    """Exclusive time per category in the thread that created it: nested calls subtracted.

    Only the trial's own thread counts: the heartbeat thread's writes overlap the trial, and
    they cost the trial only where they hold a lock it waits for (then they show as storage
    time of the trial's own calls).
    """

    def __init__(self) -> None:
        self._thread = threading.get_ident()
        self.totals: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self._local = threading.local()
        self._lock = threading.Lock()

    def wrap(self, obj: Any, name: str, category: str) -> None:
        method = getattr(obj, name)
        timers = self

        @functools.wraps(method)
        def timed(*args: Any, **kwargs: Any) -> Any:
            if threading.get_ident() != timers._thread:
                return method(*args, **kwargs)
            stack = timers._stack()
            stack.append(0.0)  # time spent in nested wrapped calls
            t0 = time.perf_counter()
            try:
                return method(*args, **kwargs)
            finally:
                spent = time.perf_counter() - t0
                nested = stack.pop()
                if stack:
                    stack[-1] += spent
                with timers._lock:
                    timers.totals[category] += spent - nested
                    timers.calls[category] += 1

        setattr(obj, name, timed)

    def _stack(self) -> list[float]:
        if not hasattr(self._local, "stack"):
            self._local.stack = []
        stack: list[float] = self._local.stack
        return stack

    def snapshot(self) -> dict[str, float]:
        with self._lock:
            return dict(self.totals)


def instrument(study: optuna.Study, timers: Timers) -> None:
    for name in (
        "infer_relative_search_space",
        "sample_relative",
        "sample_independent",
        "before_trial",
        "after_trial",
    ):
        timers.wrap(study.sampler, name, "sampler")
    timers.wrap(study.pruner, "prune", "pruner")
    storage = study._storage  # Optuna's caching wrapper around the RDB storage
    for name in dir(type(storage)):
        if name.startswith("__") or not callable(getattr(storage, name, None)):
            continue
        if name in ("get_heartbeat_interval", "is_heartbeat_enabled"):
            continue
        timers.wrap(storage, name, "storage")


def run_study(url: str, trials: int, name: str) -> list[dict[str, float]]:
    data = bsopt.make_synthetic(320, seed=0)
    objective = bsopt.make_objective(
        bsopt.mlp_builder(data, hidden=(16,)),
        data,
        budget=bsopt.Budget(1, "epochs", evals=10),
        device="cpu",
        seed=0,
    )
    study = bsopt.create_study(
        name,
        storage=bsopt.open_storage(url) if url != "memory" else optuna.storages.InMemoryStorage(),
        direction=objective.direction,
        pruner=bsopt.make_pruner("median", objective.budget, data.n_train),
        seed=0,
    )
    timers = Timers()
    instrument(study, timers)
    rows: list[dict[str, float]] = []
    state = {"last": time.perf_counter(), "before": timers.snapshot()}

    def record(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        now = time.perf_counter()
        totals = timers.snapshot()
        row = {c: totals.get(c, 0.0) - state["before"].get(c, 0.0) for c in CATEGORIES}
        attrs = trial.user_attrs
        row["cycle"] = now - state["last"]
        row["training"] = attrs.get("train_seconds", 0.0) + attrs.get("eval_seconds", 0.0)
        row["number"] = trial.number
        rows.append(row)
        state["last"], state["before"] = time.perf_counter(), timers.snapshot()

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        state["last"] = time.perf_counter()
        bsopt.optimize(
            study, objective, trials=trials, show_progress_bar=False, callbacks=[record]
        )
    return rows


def _optimize_takes_callbacks() -> bool:
    import inspect

    return "callbacks" in inspect.signature(bsopt.optimize).parameters


def summarise(rows: list[dict[str, float]], at: int) -> dict[str, float] | None:
    window = [r for r in rows if at - 4 <= r["number"] + 1 <= at + 4]
    if len(window) < 3:
        return None
    med = _common.median
    out = {"overhead": med([r["cycle"] - r["training"] for r in window])}
    for c in CATEGORIES:
        out[c] = med([r[c] for r in window])
    out["other"] = out["overhead"] - sum(out[c] for c in CATEGORIES)
    out["training"] = med([r["training"] for r in window])
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="110 trials, SQLite only")
    parser.add_argument("--trials", type=int, default=None, help="default 504")
    parser.add_argument(
        "--storages",
        nargs="+",
        default=None,
        help="sqlite, postgresql, memory (default: the first two)",
    )
    parser.add_argument("--write", action="store_true", help="replace this script's section")
    args = parser.parse_args()
    trials = args.trials or (110 if args.quick else max(CHECKPOINTS) + 4)
    kinds = args.storages or (["sqlite"] if args.quick else ["sqlite", "postgresql"])
    if not _optimize_takes_callbacks():
        raise SystemExit("bsopt.optimize takes no callbacks= here; this benchmark needs them")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    facts = _common.machine_facts()
    load_start = _common.uptime_line()
    print(f"bench_scaling: {trials} trials on {', '.join(kinds)}; {load_start}", flush=True)
    t_start = time.perf_counter()
    results: dict[str, list[dict[str, float]]] = {}
    with tempfile.TemporaryDirectory(prefix="bsopt-scaling-") as tmp:
        urls: dict[str, str] = {
            "sqlite": f"sqlite:///{Path(tmp) / 'scaling.db'}",
            "postgresql": POSTGRES,
            "memory": "memory",
        }
        for kind in kinds:
            name = f"scaling-{uuid.uuid4().hex[:8]}"
            t0 = time.perf_counter()
            results[kind] = run_study(urls[kind], trials, name)
            print(
                f"  {kind}: {len(results[kind])} trials in {time.perf_counter() - t0:.0f} s "
                f"(load {_common.load_average()})",
                flush=True,
            )
            if kind != "memory":
                optuna.delete_study(study_name=name, storage=urls[kind])
    seconds = time.perf_counter() - t_start
    load_end = _common.uptime_line()

    rows = []
    dominant: dict[str, str] = {}
    for kind in kinds:
        for at in CHECKPOINTS:
            s = summarise(results[kind], at)
            if s is None:
                continue
            parts = {c: s[c] for c in (*CATEGORIES, "other")}
            top = max(parts, key=lambda c: parts[c])
            dominant[kind] = f"{top} ({1000 * parts[top]:.0f} of {1000 * s['overhead']:.0f} ms)"
            rows.append(
                [
                    kind,
                    str(at),
                    f"{1000 * s['overhead']:.0f}",
                    f"{100 * s['overhead'] / 2.5:.1f}%",
                    *(f"{1000 * s[c]:.0f}" for c in (*CATEGORIES, "other")),
                    f"{1000 * s['training']:.0f}",
                ]
            )
    text = _common.table(
        [
            "storage",
            "trial",
            "overhead ms",
            "of a 2.5 s trial",
            "sampler ms",
            "pruner ms",
            "storage ms",
            "other ms",
            "(training ms)",
        ],
        rows,
    )
    print(text)
    print(load_end)
    if args.write:
        verdicts = "; ".join(f"{k}: {v}" for k, v in dominant.items())
        section = "\n\n".join(
            [
                "## bench_scaling: per-trial cost at trial 10, 100 and 500 of one study",
                __doc__.split("\n\n", 2)[2].strip(),
                _common.machine_block(facts, load_start, load_end, seconds),
                text,
                f"What dominates at the last checkpoint: {verdicts}.",
            ]
        )
        _common.write_section("bench_scaling", section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
