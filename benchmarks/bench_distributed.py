"""One trial on two processes against one, at the same global batch (CPU, gloo).

    python benchmarks/bench_distributed.py [--quick] [--write] [--rounds 5]

No GPU was lent to this task: this measures the CPU path (gloo) only.

1. **Throughput.** A 64-512-512-10 MLP on 8,192 synthetic samples, global batches 64, 256
   and 1,024, trained by ``bsopt.training.train`` for one epoch per run: in one process with one
   torch thread, in one process with two threads (the same two cores), and on two ranks
   with one thread each (``train(world=...)``: each rank trains its half of every global
   batch, one gradient all-reduce per step). Samples per second of training (evaluation
   excluded), the median over ``--rounds`` runs, the three set-ups interleaved per round.
2. **Start-up cost.** Starting the process group (spawning the other rank, importing torch
   and bsopt there, rendezvous on 127.0.0.1), which an objective pays once and again after
   a rank died; and the fixed cost each trial pays on two ranks: the median wall time of a
   one-step trial on two ranks minus in one process (the command through the store, the
   other rank building its model, broadcasting the initial weights, the evaluation message
   and the final check).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
import time
from typing import Any

import _common

_common.pin_threads()

import torch  # noqa: E402

import bsopt  # noqa: E402
from bsopt.training._distributed import Group, World, start_group  # noqa: E402

HIDDEN = (512, 512)
FEATURES = 64
BATCHES = (64, 256, 1024)


def make_data() -> bsopt.TensorData:
    return bsopt.make_synthetic(8192, n_features=FEATURES, n_classes=10, seed=0)


def build() -> torch.nn.Module:
    torch.manual_seed(0)
    return bsopt.training.mlp(FEATURES, 10, hidden=HIDDEN)


def run_train(
    data: bsopt.TensorData, message: dict[str, Any], world: World | None
) -> bsopt.training.TrainResult:
    params = bsopt.Params(batch_size=message["batch"], lr=1e-3)
    budget = bsopt.Budget(message["amount"], message["unit"], evals=message["evals"])
    return bsopt.training.train(
        build(), data, params, budget=budget, seed=0, device="cpu", world=world
    )


class Follower:
    """The other rank: trains whatever rank 0 commands, until told to stop."""

    def prepare(self, rank: int) -> Callable[[World], None]:
        data = make_data()

        def loop(world: World) -> None:
            while True:
                world.sequence += 1
                message = world.wait(f"cmd/{world.sequence}")
                if message["kind"] != "trial":
                    return
                run_train(data, message, world)

        return loop


def distributed(group: Group, data: bsopt.TensorData, message: dict[str, Any]) -> Any:
    group.command({"kind": "trial", **message})
    return run_train(data, message, group.world)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 rounds, 1 group start")
    parser.add_argument("--write", action="store_true", help="update benchmarks/RESULTS.md")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--starts", type=int, default=3, help="group starts to time")
    args = parser.parse_args()
    rounds, starts = (2, 1) if args.quick else (args.rounds, args.starts)
    facts = _common.machine_facts()
    load_start = _common.uptime_line()
    began = time.perf_counter()
    data = make_data()

    start_seconds = []
    for _ in range(starts - 1):
        group = start_group(2, Follower())
        start_seconds.append(group.started_seconds)
        group.close()
    group = start_group(2, Follower())
    start_seconds.append(group.started_seconds)
    print(f"group start: {_common.spread(start_seconds)} s")

    rates: dict[tuple[int, str], list[float]] = {}
    try:
        for r in range(rounds):
            for batch in BATCHES:
                message = {"batch": batch, "amount": 1, "unit": "epochs", "evals": 1}
                torch.set_num_threads(1)
                one = run_train(data, message, None).samples_per_second
                torch.set_num_threads(2)
                two = run_train(data, message, None).samples_per_second
                torch.set_num_threads(1)
                ranks = distributed(group, data, message).samples_per_second
                for key, value in (("1 process, 1 thread", one), ("1 process, 2 threads", two)):
                    rates.setdefault((batch, key), []).append(value)
                rates.setdefault((batch, "2 processes"), []).append(ranks)
                print(f"round {r} batch {batch}: {one:,.0f} / {two:,.0f} / {ranks:,.0f} samples/s")
        tiny = {"batch": 64, "amount": 64, "unit": "samples", "evals": 1}
        walls: dict[str, list[float]] = {"single": [], "two": []}
        for _ in range(10 if args.quick else 30):
            tick = time.perf_counter()
            run_train(data, tiny, None)
            walls["single"].append(time.perf_counter() - tick)
            tick = time.perf_counter()
            distributed(group, data, tiny)
            walls["two"].append(time.perf_counter() - tick)
    finally:
        group.close()
    per_trial_ms = (_common.median(walls["two"]) - _common.median(walls["single"])) * 1000
    seconds = time.perf_counter() - began
    load_end = _common.uptime_line()

    rows = []
    for batch in BATCHES:
        one = _common.median(rates[(batch, "1 process, 1 thread")])
        two = _common.median(rates[(batch, "1 process, 2 threads")])
        ranks = _common.median(rates[(batch, "2 processes")])
        rows.append(
            [
                str(batch),
                f"{one:,.0f}",
                f"{two:,.0f}",
                f"{ranks:,.0f}",
                f"{ranks / two:.2f}x",
                f"{ranks / one:.2f}x",
                _common.spread(rates[(batch, "2 processes")]),
            ]
        )
    table = _common.table(
        [
            "global batch",
            "1 proc 1 thread",
            "1 proc 2 threads",
            "2 ranks x 1 thread",
            "2 ranks / 1 proc 2 thr",
            "2 ranks / 1 proc 1 thr",
            "2 ranks spread",
        ],
        rows,
    )
    body = "\n".join(
        [
            "## One trial on two processes (`bench_distributed.py`)",
            "",
            _common.machine_block(facts, load_start, load_end, seconds),
            "- No GPU was lent to this task: CPU and gloo only; the NCCL path was not run.",
            "",
            f"Training samples per second (median of {rounds} rounds, one epoch of 8,192 "
            "samples, a 64-512-512-10 MLP, AdamW), same global batch in every column:",
            "",
            table,
            "",
            f"- Starting the process group (spawn the other rank, import torch and bsopt "
            f"there, rendezvous): {_common.median(start_seconds):.1f} s "
            f"(range {_common.spread(start_seconds)} s over {len(start_seconds)} starts), "
            "paid once per objective (and after a rank died), not per trial.",
            f"- Fixed cost per trial on two ranks: {per_trial_ms:.0f} ms (median wall time "
            "of a one-step trial on two ranks minus in one process: "
            f"{_common.median(walls['two']) * 1000:.0f} ms vs "
            f"{_common.median(walls['single']) * 1000:.0f} ms).",
            "- The machine is shared: see the load averages above; the spread column shows "
            "the noise of the two-rank runs.",
        ]
    )
    print(body)
    if args.write:
        _common.write_section("bench_distributed", body)


if __name__ == "__main__":
    main()
