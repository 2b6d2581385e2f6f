"""Seeded `--jobs 2` runs: the same trials in every rerun, and what the ordering costs.

    python benchmarks/bench_reproducible.py [--repeats 3] [--trials 20] [--write]
    python benchmarks/bench_reproducible.py --quick       # 1 repeat, 12 trials

Each repeat runs the README's study (`bsopt run digits --jobs 2`) three times, arms taking
turns: twice seeded (`--seed 0`: the ordered sampler, trial n sampled from (seed, n) and the
trials up to n - 2 once finished, the pruner judging by the same trials) and once with the
sampler unseeded (what a run without ordering costs; `bsopt.runs._runner.run_session` with
`sampler_seed=None`). Reported: whether the two seeded runs stored the same trials (number,
params, state, value), and the median wall time of each arm (launch to summary, in this
process; the workers are forked).

Not part of bsopt.
"""

from __future__ import annotations

import argparse
from pathlib import Path
import statistics
import sys
import tempfile
import time

import _common


def _run(url: str, trials: int, seed: int | None) -> tuple[float, list[tuple[object, ...]]]:
    import optuna

    from bsopt.runs._runner import digits, run_session
    from bsopt.runs._session import RunSettings

    settings = RunSettings(
        "digits", trials, storage=url, sampler_seed=seed, jobs=2, show_progress_bar=False
    )
    began = time.perf_counter()
    run_session(digits, settings, echo=lambda _: None)
    seconds = time.perf_counter() - began
    stored = optuna.load_study(study_name="digits", storage=url).trials
    return seconds, sorted(
        (t.number, tuple(sorted(t.params.items())), t.state.name, t.value) for t in stored
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--quick", action="store_true", help="1 repeat of 12 trials")
    parser.add_argument("--write", action="store_true", help="replace this script's section")
    args = parser.parse_args()
    repeats, trials = (1, 12) if args.quick else (args.repeats, args.trials)
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    facts = _common.machine_facts()
    load_start, began = _common.uptime_line(), time.perf_counter()
    times: dict[str, list[float]] = {"seeded (ordered)": [], "unseeded": []}
    same = []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(repeats):
            runs = []
            arms = (("seeded (ordered)", 0), ("unseeded", None), ("seeded (ordered)", 0))
            for i, (arm, seed) in enumerate(arms):
                url = f"sqlite:///{Path(tmp) / f'{r}-{i}.db'}"
                seconds, stored = _run(url, trials, seed)
                times[arm].append(seconds)
                if seed is not None:
                    runs.append(stored)
            same.append(runs[0] == runs[1])
            print(f"repeat {r}: seeded runs identical: {same[-1]}", flush=True)
    rows = [
        (arm, f"{statistics.median(v):.1f}", _common.spread(v), str(len(v)))
        for arm, v in times.items()
    ]
    ratio = statistics.median(times["seeded (ordered)"]) / statistics.median(times["unseeded"])
    text = "\n".join(
        [
            "## bench_reproducible: seeded `--jobs 2` runs give the same trials",
            "",
            f"`bsopt run digits --trials {trials} --jobs 2` (forked workers, SQLite): the two "
            f"seeded runs of each repeat stored identical trials (number, params, state, "
            f"value) in **{sum(same)} of {len(same)}** repeats. Wall time, launch to summary:",
            "",
            _common.table(("arm", "median s", "min..max", "runs"), rows),
            "",
            f"Ordering costs **{ratio:.2f}x** the unseeded run's wall time (trial n waits for "
            "trial n − 2 to finish).",
            "",
            _common.machine_block(
                facts, load_start, _common.uptime_line(), time.perf_counter() - began
            ),
        ]
    )
    print(text)
    if args.write:
        _common.write_section("bench_reproducible", text)
    return 0 if all(same) else 1


if __name__ == "__main__":
    sys.exit(main())
