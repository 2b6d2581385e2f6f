"""The per-trial overhead of bsopt + Optuna + SQLite on a training of about 3 s.

    python benchmarks/bench_overhead.py [--quick] [--write] [--repeats N]

``direct``: seed, build the MLP and call ``bsopt.training.train`` with fixed Params (batch size 16,
lr 1e-3, dropout 0), no report callback.

``trial`` variants: the same Params as one trial of ``bsopt.make_objective`` in a study
created by ``bsopt.create_study`` (the median pruner of ``bsopt.make_pruner``, each
evaluation reported, the user attributes written), timed around
``bsopt.optimize(study, objective, trials=1)``. The Params come from ``study.enqueue_trial``;
each repeat uses a fresh study, so the trial is number 0 and trains with the same seed as
``direct``: all produce the same accuracy. The headline variant passes a SQLite URL (bsopt
opens it with heartbeats, WAL, ``synchronous=NORMAL``, the attributes in one transaction);
the others change one thing each (Optuna's own ``RDBStorage`` on the same file, heartbeats
off, Optuna's journal-file and in-memory storages) to show where the time goes
(``--quick`` runs the headline variant and Optuna's ``RDBStorage``).

All variants run in every repeat, in a rotating order; the overhead is the median over
repeats of (trial - direct) / direct, each measured side by side. Then the cost of one
``trial.report`` + ``trial.should_prune`` and of one ``trial.set_user_attr``, median of many
calls, per storage.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
import gc
import itertools
from pathlib import Path
import sys
import tempfile
import time
import warnings

import _common

_common.pin_threads()

import optuna  # noqa: E402
from optuna.storages.journal import JournalFileBackend  # noqa: E402
import torch  # noqa: E402

import bsopt  # noqa: E402
from bsopt.search._fair import store_user_attrs  # noqa: E402

EPOCHS = 40  # about 3 s of training at batch size 16 on the reference machine
EVALS = 10
BATCH_SIZE, LR, DROPOUT = 16, 1e-3, 0.0
PARAMS = {"log2_batch_size": BATCH_SIZE.bit_length() - 1, "lr": LR, "dropout": DROPOUT}
SEED = 0
END_ATTRS = {f"attr_{i}": float(i) for i in range(25)}


def budget() -> bsopt.Budget:
    return bsopt.Budget(EPOCHS, "epochs", evals=EVALS)


def run_direct(data: bsopt.TensorData) -> tuple[float, float, float]:
    """(wall s, train_seconds + eval_seconds, accuracy) of a direct bsopt.training.train call."""
    t0 = time.perf_counter()
    torch.manual_seed(SEED)
    model = bsopt.training.mlp(data.n_features, 10, hidden=(128,), dropout=DROPOUT)
    result = bsopt.training.train(
        model,
        data,
        bsopt.Params(batch_size=BATCH_SIZE, lr=LR, dropout=DROPOUT),
        budget=budget(),
        metric="accuracy",
        device="cpu",
        seed=SEED,
    )
    wall = time.perf_counter() - t0
    return wall, result.train_seconds + result.eval_seconds, result.value


def _optuna_rdb(url: str) -> optuna.storages.RDBStorage:
    """Optuna's own SQL storage on ``url``: rollback journal, ``synchronous=FULL``, one
    commit per user attribute; heartbeats as bsopt sets them."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.storages.RDBStorage(
            url,
            engine_kwargs={"connect_args": {"timeout": 60}},
            heartbeat_interval=60,
            heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(
                max_retry=3
            ),
        )


# How each trial variant gets its storage; called once per repeat, outside the timing.
STORAGES: dict[str, Callable[[Path], str | optuna.storages.BaseStorage]] = {
    # What a user does: a URL, opened by bsopt (heartbeats, WAL, attributes batched).
    "sqlite": lambda folder: f"sqlite:///{folder / 'b.db'}",
    "sqlite, Optuna's RDBStorage": lambda folder: _optuna_rdb(f"sqlite:///{folder / 'o.db'}"),
    "sqlite, no heartbeats": lambda folder: bsopt.open_storage(
        f"sqlite:///{folder / 'nohb.db'}", heartbeat_interval=None
    ),
    "journal file": lambda folder: optuna.storages.JournalStorage(
        JournalFileBackend(str(folder / "journal.log"))
    ),
    "in memory": lambda folder: optuna.storages.InMemoryStorage(),
}


class TrialRunner:
    """Runs one enqueued trial per call, each in a fresh study of the same storage."""

    def __init__(self, data: bsopt.TensorData, folder: Path, storage: str) -> None:
        self.folder = folder
        self.storage = storage
        self.objective = bsopt.make_objective(
            bsopt.mlp_builder(data, hidden=(128,)), data, budget=budget(), device="cpu", seed=SEED
        )
        self.pruner = bsopt.make_pruner("median", budget(), data.n_train)
        self.count = 0
        self.n_attrs = 0

    def __call__(self) -> tuple[float, float, float]:
        self.count += 1
        study = bsopt.create_study(
            f"overhead-{self.count}",
            storage=STORAGES[self.storage](self.folder),
            direction=self.objective.direction,
            pruner=self.pruner,
            seed=SEED,
        )
        study.enqueue_trial(PARAMS)
        gc.collect()
        t0 = time.perf_counter()
        bsopt.optimize(study, self.objective, trials=1, show_progress_bar=False)
        wall = time.perf_counter() - t0
        (trial,) = study.get_trials(deepcopy=False)
        assert trial.state == optuna.trial.TrialState.COMPLETE, trial.state
        batch = 2 ** trial.params["log2_batch_size"]
        assert trial.number == 0 and batch == BATCH_SIZE, trial.params
        assert len(trial.intermediate_values) == EVALS
        attrs = trial.user_attrs
        self.n_attrs = len(attrs)
        inside = attrs["train_seconds"] + attrs["eval_seconds"]
        assert trial.value is not None
        return wall, inside, trial.value


def _storage_for(setup: str, folder: Path) -> optuna.storages.BaseStorage | None:
    if setup == "in memory":
        return None
    if setup == "journal file":
        return optuna.storages.JournalStorage(
            JournalFileBackend(str(folder / "report-journal.log"))
        )
    path = folder / f"report-{len(setup)}-{setup[:10].replace(' ', '-').replace(',', '')}.db"
    if setup.startswith("SQLite, Optuna"):
        return _optuna_rdb(f"sqlite:///{path}")
    return bsopt.open_storage(f"sqlite:///{path}")


STEADY = ("sqlite", "sqlite, Optuna's RDBStorage")


def steady_overhead(
    data: bsopt.TensorData, folder: Path, rounds: int, n: int = 6
) -> dict[str, list[float]]:
    """Ms outside train+eval per trial in the middle of a run: trials 2..n of one call.

    One ``bsopt.optimize(study, objective, trials=n)`` per round on ``n`` enqueued copies of
    the Params; a trial's cost is the time from the previous trial's completion to its own
    minus its ``train_seconds + eval_seconds``, so what a run pays once (creating or
    checking the study, the first trial's set-up) is left out.
    """
    out: dict[str, list[float]] = {key: [] for key in STEADY}
    runners = {key: TrialRunner(data, folder, key) for key in STEADY}
    for r in range(rounds):
        for key in STEADY[r % 2 :] + STEADY[: r % 2]:
            runner = runners[key]
            runner.count += 1
            study = bsopt.create_study(
                f"steady-{runner.count}",
                storage=STORAGES[key](folder),
                direction=runner.objective.direction,
                pruner=runner.pruner,
                seed=SEED,
            )
            for _ in range(n):
                study.enqueue_trial(PARAMS)
            gc.collect()
            bsopt.optimize(study, runner.objective, trials=n, show_progress_bar=False)
            trials = sorted(study.get_trials(deepcopy=False), key=lambda t: t.number)
            for before, trial in itertools.pairwise(trials):
                assert before.datetime_complete and trial.datetime_complete
                gap = (trial.datetime_complete - before.datetime_complete).total_seconds()
                inside = trial.user_attrs["train_seconds"] + trial.user_attrs["eval_seconds"]
                out[key].append(1000 * (gap - inside))
    return out


def report_costs(data: bsopt.TensorData, folder: Path, n_calls: int) -> dict[str, list[float]]:
    """Milliseconds of report + should_prune and of set_user_attr per storage setup."""
    grid = budget().grid(data.n_train).points
    pruner = bsopt.make_pruner("median", budget(), data.n_train)
    dists: dict[str, optuna.distributions.BaseDistribution] = {
        "lr": optuna.distributions.FloatDistribution(1e-4, 1e-1, log=True)
    }
    out: dict[str, list[float]] = {}
    setups = [
        ("SQLite, Optuna's RDBStorage", 30),
        ("SQLite, bsopt", 0),
        ("SQLite, bsopt", 30),
        ("journal file", 30),
        ("in memory", 30),
    ]
    for setup, prior in setups:
        study = optuna.create_study(
            storage=_storage_for(setup, folder), direction="maximize", pruner=pruner
        )
        for k in range(prior):
            # Finished trials as a real study holds them: ten intermediate values each.
            study.add_trial(
                optuna.trial.create_trial(
                    params={"lr": 1e-3},
                    distributions=dists,
                    value=0.9 + k / 1000,
                    intermediate_values={s: 0.5 + 0.04 * i + k / 1000 for i, s in enumerate(grid)},
                )
            )
        report_ms: list[float] = []
        attr_ms: list[float] = []
        end_ms: list[float] = []
        while len(report_ms) < n_calls:
            with warnings.catch_warnings():
                # study.ask() on a storage with heartbeats warns; the timing is the same.
                warnings.simplefilter("ignore")
                trial = study.ask()
            for i, step in enumerate(grid):
                t0 = time.perf_counter()
                trial.report(0.5 + 0.04 * i, step)
                trial.should_prune()
                report_ms.append((time.perf_counter() - t0) * 1000)
            for key in ("a", "b", "c", "d"):
                t0 = time.perf_counter()
                trial.set_user_attr(key, 1.0)
                attr_ms.append((time.perf_counter() - t0) * 1000)
            # What FairReporter does at the end of a run: its attributes, batched where the
            # storage can (bsopt's SQL storage), one call each elsewhere.
            t0 = time.perf_counter()
            store_user_attrs(trial, END_ATTRS)
            end_ms.append((time.perf_counter() - t0) * 1000)
            # Not added to the COMPLETE trials the pruner reads, so the study stays the same.
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
        where = f"{setup}, {prior} finished trials"
        out[f"report + should_prune, {where}"] = report_ms
        out[f"set_user_attr, {where}"] = attr_ms
        out[f"{len(END_ATTRS)} user attributes at the end of a run, {where}"] = end_ms
    return out


OPTUNA_RDB = "sqlite, Optuna's RDBStorage"
LABELS = {
    "direct": "direct: seed + build + bsopt.training.train",
    "sqlite": "trial, SQLite opened by bsopt (WAL, NORMAL, batched attributes, heartbeats)",
    "sqlite, Optuna's RDBStorage": "trial, SQLite, Optuna's RDBStorage (heartbeats)",
    "sqlite, no heartbeats": "trial, SQLite opened by bsopt, heartbeats off",
    "journal file": "trial, Optuna JournalFileBackend",
    "in memory": "trial, Optuna InMemoryStorage",
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick", action="store_true", help="3 repeats of direct and SQLite trial only"
    )
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--write", action="store_true", help="replace this script's section")
    args = parser.parse_args()
    repeats = args.repeats or (3 if args.quick else 10)
    n_calls = 50 if args.quick else 300
    names = ["direct", "sqlite", "sqlite, Optuna's RDBStorage"] if args.quick else list(LABELS)

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    facts = _common.machine_facts()
    load_start = _common.uptime_line()
    print(f"bench_overhead: {repeats} repeats of {', '.join(names)}; {load_start}", flush=True)
    t_start = time.perf_counter()
    data = bsopt.load_digits(seed=0)

    with tempfile.TemporaryDirectory(prefix="bsopt-bench-") as tmp:
        folder = Path(tmp)
        trial_runners = {n: TrialRunner(data, folder, n) for n in names if n != "direct"}
        runners: dict[str, Callable[[], tuple[float, float, float]]] = {
            "direct": lambda: run_direct(data),
            **trial_runners,
        }
        for run in runners.values():  # one-time costs (first AdamW, TPE imports, tables)
            run()
        results: dict[str, list[tuple[float, float, float]]] = {name: [] for name in names}
        for rep in range(repeats):
            order = names[rep % len(names) :] + names[: rep % len(names)]
            for name in order:
                gc.collect()
                results[name].append(runners[name]())
            d, t = results["direct"][-1], results["sqlite"][-1]
            print(
                f"  repeat {rep + 1}/{repeats}: direct {d[0]:.3f} s, SQLite trial {t[0]:.3f} s, "
                f"overhead {(t[0] - d[0]) * 1000:+.0f} ms (load {_common.load_average()})",
                flush=True,
            )
        costs = report_costs(data, folder, n_calls)
        steady = steady_overhead(data, folder, rounds=2 if args.quick else 4)
    seconds = time.perf_counter() - t_start
    load_end = _common.uptime_line()

    med = _common.median
    direct = [r[0] for r in results["direct"]]
    accs = {rs[-1][2] for rs in results.values()}
    assert len(accs) == 1, f"the variants disagree: {accs}"
    overhead_pct: dict[str, float] = {}
    framework_pct: dict[str, float] = {}
    outside_direct = [r[0] - r[1] for r in results["direct"]]
    rows = []
    for name in names:
        walls = [r[0] for r in results[name]]
        outside = [r[0] - r[1] for r in results[name]]
        ms = [1000 * (w - d) for d, w in zip(direct, walls, strict=True)]
        pct = [100 * (w - d) / d for d, w in zip(direct, walls, strict=True)]
        # The same difference without the run-to-run spread of the training itself: what
        # each side spent outside its own training and evaluation loop.
        fw = [100 * (o - od) / d for d, o, od in zip(direct, outside, outside_direct, strict=True)]
        overhead_pct[name] = med(pct)
        framework_pct[name] = med(fw)
        rows.append(
            [
                LABELS[name],
                f"{med(walls):.3f}",
                _common.spread(walls),
                f"{med([r[1] for r in results[name]]):.3f}",
                f"{med(outside) * 1000:.0f}",
                "" if name == "direct" else f"{med(ms):+.0f} ({min(ms):+.0f}..{max(ms):+.0f})",
                "" if name == "direct" else f"{med(pct):+.1f}%",
                "" if name == "direct" else f"**{med(fw):+.1f}%**",
            ]
        )
    text = _common.table(
        [
            "variant",
            "wall s (median)",
            "min..max",
            "train+eval s",
            "outside train+eval ms",
            "wall - direct ms (min..max)",
            "(wall - direct) / direct",
            "(outside - direct's) / direct",
        ],
        rows,
    )
    cost_rows = [
        [
            name,
            f"{med(v):.2f}",
            f"{_common.median(sorted(v)[: max(1, len(v) // 10)]):.2f}",
            f"{sorted(v)[int(0.9 * (len(v) - 1))]:.2f}",
            str(len(v)),
        ]
        for name, v in costs.items()
    ]
    cost_text = _common.table(
        ["one call", "median ms", "fastest 10% ms", "90th pct ms", "calls"], cost_rows
    )
    direct_s = med(direct)
    steady_rows = [
        [
            LABELS[key],
            f"{med(v):.0f}",
            _common.spread(v),
            f"**{100 * med(v) / 1000 / direct_s:+.1f}%**",
            str(len(v)),
        ]
        for key, v in steady.items()
    ]
    steady_text = _common.table(
        [
            "trial in the middle of a run",
            "outside train+eval ms (median)",
            "min..max",
            "of direct's wall",
            "trials",
        ],
        steady_rows,
    )
    print(text)
    print(steady_text)
    print(cost_text)
    print(f"same validation accuracy in every variant: {accs.pop():.4f}")
    print(load_end)

    if args.write:
        where = "SQLite, bsopt, 30 finished trials"
        before = "SQLite, Optuna's RDBStorage, 30 finished trials"
        report_ms = med(costs[f"report + should_prune, {where}"])
        end_ms = med(costs[f"{len(END_ATTRS)} user attributes at the end of a run, {where}"])
        report_before = med(costs[f"report + should_prune, {before}"])
        end_before = med(costs[f"{len(END_ATTRS)} user attributes at the end of a run, {before}"])
        n_attrs = trial_runners["sqlite"].n_attrs
        section = "\n\n".join(
            [
                "## bench_overhead: bsopt + Optuna + SQLite per trial",
                f"Digits, MLP 64-128-10, batch size 16, lr 1e-3, dropout 0, {EPOCHS} epochs with "
                f"{EVALS} evaluations (about {med(direct):.1f} s of training here). `direct` "
                "seeds, builds the model and calls `bsopt.training.train` without a report "
                "callback. "
                "The `trial` variants run the same Params (enqueued) as one trial of "
                "`bsopt.make_objective` via `bsopt.optimize(study, objective, trials=1)`, timed "
                "at the call's boundaries, in a study made by `bsopt.create_study` with "
                "`bsopt.make_pruner('median', ...)` (10 reports + `should_prune`, "
                f"{n_attrs} user attributes written per trial). The headline variant passes "
                "`storage='sqlite:///<tmpdir>/b.db'`, which bsopt opens with heartbeats, WAL, "
                "`synchronous=NORMAL` and a trial's attributes written in one transaction; the "
                "others change one thing each to show where the time goes. Each repeat is a "
                "fresh study (trial number 0, so the same seed as `direct`; study creation and "
                f"`enqueue_trial` are outside the timing). {repeats} repeats, the variants in a "
                "rotating order; one warm-up of each before. Overheads are medians of the "
                "per-repeat differences to `direct`. Every variant produces the same validation "
                "accuracy. Optuna's INFO log is off.",
                _common.machine_block(facts, load_start, load_end, seconds),
                text,
                "Two estimates of the overhead. `(wall - direct) / direct` is the plain paired "
                "difference; it carries the run-to-run spread of the training itself (the "
                "min..max columns: several hundred ms between identical runs on this shared "
                "virtual machine). `(outside - direct's) / direct` takes from each run only the "
                "time spent outside its own training and evaluation loop (wall minus "
                "`train_seconds + eval_seconds`), which is what Optuna, SQLite and the objective "
                "add, so the spread of training speed cancels; it is the steadier figure. "
                f"Overhead of a trial on bsopt's default SQLite storage: "
                f"**{framework_pct['sqlite']:+.1f}%** by the steadier estimate, "
                f"{overhead_pct['sqlite']:+.1f}% by the paired wall times (target: at most 3%); "
                "on the same file through Optuna's own `RDBStorage`: "
                f"{framework_pct[OPTUNA_RDB]:+.1f}% and {overhead_pct[OPTUNA_RDB]:+.1f}%.",
                "The cost of single storage calls a trial makes, median pruner past its "
                "warm-up. 'SQLite, bsopt': a file on ext4 opened by `bsopt.open_storage` (WAL, "
                "`synchronous=NORMAL`, attributes batched); 'SQLite, Optuna's RDBStorage': "
                "`optuna.storages.RDBStorage(url)` on such a file, SQLite's defaults (rollback "
                "journal, `synchronous=FULL`: every commit waits for the disk), one commit per "
                f"attribute. '{len(END_ATTRS)} user attributes at the end of a run': "
                "`FairReporter`'s write of a trial's attributes (`store_user_attrs`), one "
                "transaction on bsopt's storage, one call each elsewhere; "
                "'journal file': Optuna's `JournalStorage(JournalFileBackend(path))` (an "
                "append-only log, one fsync per write, usable by many processes); "
                "'in memory': Optuna's `InMemoryStorage`. '30 finished trials': the study holds "
                "30 COMPLETE trials with 10 intermediate values each, as at the end of a "
                "30-trial study.",
                "Per trial in the middle of a run. The table above times one trial per "
                "`bsopt.optimize` call, so it also holds what a run pays once (creating and "
                "checking the study, recording its definition and metric, the first trial's "
                "set-up). Here each round runs 6 copies of the same Params in one call, and a "
                "trial's cost is the time from the previous trial's completion to its own "
                "minus its `train_seconds + eval_seconds` (trials 2 to 6; "
                f"{'2' if args.quick else '4'} rounds per storage, alternating). This is the "
                "per-trial overhead of a study; the target is at most 3% of a ~2.5 s trial.",
                steady_text,
                cost_text,
                f"So on bsopt's storage one evaluation reported costs about {report_ms:.1f} ms of "
                f"storage work ({report_before:.1f} ms on Optuna's RDBStorage) and a trial's "
                f"{len(END_ATTRS)} attributes {end_ms:.1f} ms ({end_before:.1f} ms). Reporting "
                "every optimizer step of a "
                "batch-size-16 run (90 steps per epoch) would add about "
                f"{90 * report_ms / 1000:.2f} s per epoch, against about "
                f"{med([r[1] for r in results['direct']]) / EPOCHS:.3f} s of training and "
                "evaluation per epoch; ten reports on a grid of samples seen cost about "
                f"{10 * report_ms:.0f} ms per trial.",
            ]
        )
        _common.write_section("bench_overhead", section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
