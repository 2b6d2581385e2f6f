"""What measuring the gradient noise scale costs on the digits study, and what it reads.

    python benchmarks/bench_noise.py            # 5 rounds, batch sizes 16..256
    python benchmarks/bench_noise.py --quick    # 2 rounds

For each batch size of the digits search space, trains the digits MLP (10 epochs, 10
evaluations, the built-in study's budget) with ``measure_noise_scale`` off, at the trainer's
default (on, every 24th step), as often as 5% of the training time allows
(``noise_every=None``), on every 4th step (the default before issue 22) and on every step,
rounds interleaved so that machine noise hits all alike. Reports the median training seconds
of each and the overhead against "off", the time budget's own reading of its share, and the
noise scale each run ended with. One torch thread (``_common.pin_threads``).

Not part of bsopt.
"""

from __future__ import annotations

import argparse
import math
import statistics
import time

from _common import cpu_model, pin_threads, uptime_line
from torch import nn

import bsopt

BATCH_SIZES = (16, 32, 64, 128, 256)
# (batch, noise_every) -> the measurement's share of the step time, by the trainer's own clock.
SHARES: dict[tuple[int, int | str | None], list[float]] = {}
# Mode -> noise_every; "off" switches the measurement off.
MODES: dict[str, int | str | None] = {
    "off": "off",
    "default (every 24th step)": 24,
    "5% time budget (noise_every=None)": None,
    "every 4th step": 4,
    "every step": 1,
}


def _model(dropout: float) -> nn.Module:
    return nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Dropout(dropout), nn.Linear(128, 10))


def _run(
    data: bsopt.TensorData, batch: int, every: int | str | None, seed: int
) -> tuple[float, float]:
    import torch

    torch.manual_seed(seed)
    result = bsopt.training.train(
        _model(0.2),
        data,
        bsopt.Params(batch_size=batch, lr=0.01, dropout=0.2),
        budget=bsopt.Budget(10, "epochs", evals=10),
        device="cpu",
        seed=seed,
        measure_noise_scale=every != "off",
        noise_every=None if isinstance(every, str) else every,
    )
    last = result.noise_history[-1] if result.noise_history else math.nan
    SHARES.setdefault((batch, every), []).append(
        result.noise_summary.get("noise_scale_time_share", math.nan)
    )
    return result.train_seconds, last


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 rounds instead of 5")
    args = parser.parse_args()
    pin_threads()
    rounds = 2 if args.quick else 5
    data = bsopt.load_digits(seed=0)
    seconds: dict[tuple[int, str], list[float]] = {}
    scales: dict[tuple[int, str], list[float]] = {}
    _run(data, 64, "off", 0)  # warm-up
    start = time.perf_counter()
    for r in range(rounds):
        for batch in BATCH_SIZES:
            for mode, every in MODES.items():
                spent, scale = _run(data, batch, every, seed=r)
                seconds.setdefault((batch, mode), []).append(spent)
                scales.setdefault((batch, mode), []).append(scale)
    print(f"CPU: {cpu_model()}; {uptime_line()}")
    print(f"{rounds} rounds in {time.perf_counter() - start:.0f} s; training seconds (median):")
    print()
    measured = [m for m in MODES if m != "off"]
    print("Measuring's share of the step time by the trainer's own clock (time budget), median:")
    print(
        "  "
        + ", ".join(
            f"batch {b}: {100 * statistics.median(SHARES[(b, None)]):.1f}%" for b in BATCH_SIZES
        )
    )
    print()
    print("| batch | off (s) | " + " | ".join(measured) + " | noise scale at the end (default) |")
    print("|---:|---:|" + "---:|" * len(measured) + "---|")
    for batch in BATCH_SIZES:
        base = statistics.median(seconds[(batch, "off")])
        cells = [f"{base:.2f}"]
        for mode in measured:
            t = statistics.median(seconds[(batch, mode)])
            cells.append(f"{t:.2f} ({100 * (t / base - 1):+.0f}%)")
        values = scales[(batch, "default (every 24th step)")]
        finite = [v for v in values if math.isfinite(v)]
        read = (
            f"{statistics.median(finite):,.0f} (median of {len(finite)}; "
            f"{len(values) - len(finite)} not enough signal)"
            if finite
            else f"not enough signal in all {len(values)}"
        )
        print(f"| {batch} | " + " | ".join(cells) + f" | {read} |")
    total_off = sum(statistics.median(seconds[(b, "off")]) for b in BATCH_SIZES)
    for mode in measured:
        total = sum(statistics.median(seconds[(b, mode)]) for b in BATCH_SIZES)
        print(f"\nAll batch sizes together, {mode}: {100 * (total / total_off - 1):+.1f}%")


if __name__ == "__main__":
    main()
