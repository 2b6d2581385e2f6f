"""bsopt.training.train against a DataLoader loop and a bare tensor loop, side by side.

    python benchmarks/bench_trainer.py [--quick] [--write] [--repeats N] [--profile]

Digits (bsopt.load_digits(seed=0): 1,437 train / 360 val), a 64-128-10 MLP without dropout,
AdamW (lr 1e-3, weight decay 0), ten epochs evaluated ten times (once per epoch), batch
sizes 16..256. Three loops train the same model from the same initial weights:

* ``bsopt``: ``bsopt.training.train`` (its own ``train_seconds`` / ``eval_seconds``);
* ``bsopt dict``: the same, with the inputs as a dict batch ``{"pixels": x}`` and a model
  called as ``model(pixels=...)``: the cost of bsopt's structured-batch path;
* ``DataLoader``: the style of Optuna's PyTorch example: ``TensorDataset`` + ``DataLoader``
  (``shuffle=True``) for training and a ``DataLoader`` (same batch size, as the example uses
  one batch-size constant for both) for evaluation, ``.to(device)`` per batch, accuracy by
  ``argmax`` and ``.sum().item()`` per batch, evaluation once per epoch;
* ``bare``: no framework: per-epoch ``randperm``, one gather, slicing, forward / backward /
  step, evaluation as a single forward over the validation tensor.

Training time is the time spent in the epochs' training loops (shuffling included),
evaluation time is the ten evaluations summed. Every repeat runs the three loops back to back
for every batch size, in a rotating order, so machine noise falls on all of them alike; the
ratios are medians of the per-repeat ratios (each measured side by side), the times medians.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
import cProfile
import gc
import pstats
import sys
import time

import _common

_common.pin_threads()

import torch  # noqa: E402
from torch import nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch.utils.data import DataLoader, TensorDataset  # noqa: E402

import bsopt  # noqa: E402

BATCH_SIZES = (16, 32, 64, 128, 256)
EPOCHS = 10
LR = 1e-3
SEED = 0
DEVICE = torch.device("cpu")
LOOPS = ("bsopt", "bsopt dict", "DataLoader", "bare")

# (train seconds, eval seconds, final validation accuracy); measure() appends the thread's
# CPU seconds for the whole call (setup, training and evaluation).
Run = tuple[float, ...]


def build_model() -> nn.Module:
    torch.manual_seed(SEED)
    return bsopt.training.mlp(64, 10, hidden=(128,), dropout=0.0)


def make_adamw(model: nn.Module) -> torch.optim.Optimizer:
    # bsopt's AdamW for Params(lr=1e-3) has weight_decay=0.0; the same here.
    return torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=0.0)


def run_bsopt(data: bsopt.TensorData, batch_size: int) -> Run:
    return _train(build_model(), data, batch_size)


def _train(model: nn.Module, data: bsopt.TensorData, batch_size: int) -> Run:
    result = bsopt.training.train(
        model,
        data,
        bsopt.Params(batch_size=batch_size, lr=LR),
        budget=bsopt.Budget(EPOCHS, "epochs", evals=EPOCHS),
        metric="accuracy",
        device=DEVICE,
        seed=SEED,
    )
    assert result.stop_reason == "completed", result.stop_reason
    return result.train_seconds, result.eval_seconds, result.value


class DictInput(nn.Module):
    """The same MLP, taking its input by keyword from a dict batch."""

    def __init__(self) -> None:
        super().__init__()
        self.mlp = build_model()

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.mlp(pixels)  # type: ignore[no-any-return]


def as_dict(data: bsopt.TensorData) -> bsopt.TensorData:
    return bsopt.TensorData(
        {"pixels": data.x_train}, data.y_train, {"pixels": data.x_val}, data.y_val, name="dict"
    )


def run_bsopt_dict(data: bsopt.TensorData, batch_size: int) -> Run:
    return _train(DictInput(), DICT_DATA.setdefault("digits", as_dict(data)), batch_size)


DICT_DATA: dict[str, bsopt.TensorData] = {}


def run_dataloader(data: bsopt.TensorData, batch_size: int) -> Run:
    """The per-batch-loader style of Optuna's PyTorch example, on the same tensors."""
    model = build_model().to(DEVICE)
    optimizer = make_adamw(model)
    train_loader = DataLoader(
        TensorDataset(data.x_train, data.y_train),
        batch_size=batch_size,
        shuffle=True,
        generator=torch.Generator().manual_seed(SEED),
    )
    valid_loader = DataLoader(TensorDataset(data.x_val, data.y_val), batch_size=batch_size)
    n_valid = len(valid_loader.dataset)  # type: ignore[arg-type]
    train_s = eval_s = 0.0
    accuracy = 0.0
    for _epoch in range(EPOCHS):
        t0 = time.perf_counter()
        model.train()
        for inputs, targets in train_loader:
            inputs, targets = inputs.to(DEVICE), targets.to(DEVICE)
            optimizer.zero_grad()
            loss = F.cross_entropy(model(inputs), targets)
            loss.backward()
            optimizer.step()
        t1 = time.perf_counter()
        model.eval()
        correct = 0
        with torch.no_grad():
            for inputs, targets in valid_loader:
                inputs, targets = inputs.to(DEVICE), targets.to(DEVICE)
                predicted = model(inputs).argmax(dim=1)
                correct += (predicted == targets).sum().item()
        accuracy = correct / n_valid
        t2 = time.perf_counter()
        train_s += t1 - t0
        eval_s += t2 - t1
    return train_s, eval_s, accuracy


def run_bare(data: bsopt.TensorData, batch_size: int) -> Run:
    """No framework: tensors, a permutation per epoch, slices."""
    model = build_model().to(DEVICE)
    optimizer = make_adamw(model)
    x_train, y_train = data.x_train.to(DEVICE), data.y_train.to(DEVICE)
    x_val, y_val = data.x_val.to(DEVICE), data.y_val.to(DEVICE)
    generator = torch.Generator().manual_seed(SEED)
    n = len(x_train)
    train_s = eval_s = 0.0
    accuracy = 0.0
    for _epoch in range(EPOCHS):
        t0 = time.perf_counter()
        model.train()
        order = torch.randperm(n, generator=generator).to(DEVICE)
        xs, ys = x_train[order], y_train[order]
        for start in range(0, n, batch_size):
            loss = F.cross_entropy(
                model(xs[start : start + batch_size]), ys[start : start + batch_size]
            )
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
        t1 = time.perf_counter()
        model.eval()
        with torch.inference_mode():
            accuracy = (model(x_val).argmax(dim=1) == y_val).sum().item() / len(x_val)
        t2 = time.perf_counter()
        train_s += t1 - t0
        eval_s += t2 - t1
    return train_s, eval_s, accuracy


RUNNERS: dict[str, Callable[[bsopt.TensorData, int], Run]] = {
    "bsopt": run_bsopt,
    "bsopt dict": run_bsopt_dict,
    "DataLoader": run_dataloader,
    "bare": run_bare,
}


def measure(
    data: bsopt.TensorData, repeats: int, batch_sizes: tuple[int, ...]
) -> dict[tuple[str, int], list[Run]]:
    # Warm-up: the first AdamW in a process pays ~1.5 s of one-time imports, and the first
    # forward/backward allocates; neither belongs to any loop.
    for name in LOOPS:
        RUNNERS[name](data, 64)
    runs: dict[tuple[str, int], list[Run]] = {(n, b): [] for n in LOOPS for b in batch_sizes}
    for rep in range(repeats):
        order = LOOPS[rep % len(LOOPS) :] + LOOPS[: rep % len(LOOPS)]
        for batch_size in batch_sizes:
            for name in order:
                gc.collect()
                cpu = time.thread_time()
                run = RUNNERS[name](data, batch_size)
                runs[name, batch_size].append((*run, time.thread_time() - cpu))
        print(f"  repeat {rep + 1}/{repeats} done (load {_common.load_average()})", flush=True)
    return runs


def paired_ratio(runs: dict[tuple[str, int], list[Run]], a: str, b: str, bs: int, i: int) -> float:
    return _common.median([ra[i] / rb[i] for ra, rb in zip(runs[a, bs], runs[b, bs], strict=True)])


def report(runs: dict[tuple[str, int], list[Run]], batch_sizes: tuple[int, ...]) -> str:
    med = _common.median
    header = [
        "batch",
        "train s bsopt",
        "train s bsopt dict",
        "train s DataLoader",
        "train s bare",
        "eval s bsopt",
        "eval s DataLoader",
        "eval s bare",
        "train bsopt/bare",
        "train bsopt dict/bare",
        "train DL/bare",
        "eval bsopt/bare",
        "eval DL/bare",
        "val acc bsopt / dict / DL / bare",
    ]
    rows = []
    for bs in batch_sizes:
        tr = {n: med([r[0] for r in runs[n, bs]]) for n in LOOPS}
        ev = {n: med([r[1] for r in runs[n, bs]]) for n in LOOPS}
        acc = {n: runs[n, bs][-1][2] for n in LOOPS}
        rows.append(
            [
                str(bs),
                f"{tr['bsopt']:.3f}",
                f"{tr['bsopt dict']:.3f}",
                f"{tr['DataLoader']:.3f}",
                f"{tr['bare']:.3f}",
                f"{ev['bsopt'] * 1000:.1f} ms",
                f"{ev['DataLoader'] * 1000:.1f} ms",
                f"{ev['bare'] * 1000:.1f} ms",
                f"{paired_ratio(runs, 'bsopt', 'bare', bs, 0):.3f}x",
                f"{paired_ratio(runs, 'bsopt dict', 'bare', bs, 0):.3f}x",
                f"{paired_ratio(runs, 'DataLoader', 'bare', bs, 0):.2f}x",
                f"{paired_ratio(runs, 'bsopt', 'bare', bs, 1):.2f}x",
                f"{paired_ratio(runs, 'DataLoader', 'bare', bs, 1):.1f}x",
                f"{acc['bsopt']:.4f} / {acc['bsopt dict']:.4f} / {acc['DataLoader']:.4f} / "
                f"{acc['bare']:.4f}",
            ]
        )
    return _common.table(header, rows)


def cpu_report(runs: dict[tuple[str, int], list[Run]], batch_sizes: tuple[int, ...]) -> str:
    """Thread CPU time of whole runs: insensitive to time spent waiting for a core."""
    med = _common.median
    rows = []
    for bs in batch_sizes:
        cpu = {n: med([r[3] for r in runs[n, bs]]) for n in LOOPS}
        rows.append(
            [
                str(bs),
                f"{cpu['bsopt']:.3f}",
                f"{cpu['DataLoader']:.3f}",
                f"{cpu['bare']:.3f}",
                f"{paired_ratio(runs, 'bsopt', 'bare', bs, 3):.3f}x",
                f"{paired_ratio(runs, 'DataLoader', 'bare', bs, 3):.2f}x",
            ]
        )
    header = ["batch", "CPU s bsopt", "CPU s DataLoader", "CPU s bare", "bsopt/bare", "DL/bare"]
    return _common.table(header, rows)


def train_ratio_range(
    runs: dict[tuple[str, int], list[Run]],
    bss: tuple[int, ...],
    index: int = 0,
    loop: str = "bsopt",
) -> str:
    ratios = [paired_ratio(runs, loop, "bare", bs, index) for bs in bss]
    return f"{min(ratios):.3f}x..{max(ratios):.3f}x"


def profile(data: bsopt.TensorData, batch_size: int) -> None:
    """cProfile one bsopt.training.train and one bare loop at ``batch_size`` (after a warm-up)."""
    for name in ("bsopt", "bare"):
        RUNNERS[name](data, batch_size)
        profiler = cProfile.Profile()
        profiler.enable()
        RUNNERS[name](data, batch_size)
        profiler.disable()
        print(f"\n=== cProfile: {name}, batch size {batch_size} ===")
        pstats.Stats(profiler).sort_stats("tottime").print_stats(18)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="3 repeats instead of 15")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--write", action="store_true", help="replace this script's section")
    parser.add_argument("--profile", action="store_true", help="cProfile bsopt and bare, bs 16")
    args = parser.parse_args()

    data = bsopt.load_digits(seed=0)
    assert (data.n_train, data.n_val) == (1437, 360), (data.n_train, data.n_val)
    if args.profile:
        profile(data, 16)
        return 0

    repeats = args.repeats or (3 if args.quick else 15)
    facts = _common.machine_facts()
    load_start = _common.uptime_line()
    print(f"bench_trainer: {repeats} repeats; {load_start}", flush=True)
    t0 = time.perf_counter()
    runs = measure(data, repeats, BATCH_SIZES)
    seconds = time.perf_counter() - t0
    load_end = _common.uptime_line()
    text = report(runs, BATCH_SIZES)
    cpu_text = cpu_report(runs, BATCH_SIZES)
    print(text)
    print(cpu_text)
    print(f"bsopt/bare training ratio range: {train_ratio_range(runs, BATCH_SIZES)}")
    dict_range = train_ratio_range(runs, BATCH_SIZES, loop="bsopt dict")
    print(f"bsopt dict/bare training ratio range: {dict_range}")
    print(f"bsopt/bare whole-run CPU ratio range: {train_ratio_range(runs, BATCH_SIZES, 3)}")
    print(load_end)

    if args.write:
        section = "\n\n".join(
            [
                "## bench_trainer: bsopt.training.train vs a DataLoader loop vs a bare loop",
                "Digits (1,437 train / 360 val), MLP 64-128-10 without dropout, AdamW lr 1e-3 "
                "(weight decay 0), 10 epochs with 10 evaluations (one per epoch), CPU, "
                "one torch thread. Same initial weights in every loop. Times are medians "
                f"of {repeats} repeats; each repeat runs the three loops back to back per "
                "batch size in a rotating order, and the ratios are medians of the per-repeat "
                "ratios. Training time includes each epoch's shuffle; evaluation time is the "
                "10 evaluations summed. Setup (model, optimizer, loaders) is in neither, and "
                "one warm-up run of each loop precedes the measurements (the first AdamW in a "
                "process costs about 1.5 s of one-time imports).",
                _common.machine_block(facts, load_start, load_end, seconds),
                text,
                f"bsopt/bare training ratio over the batch sizes: "
                f"**{train_ratio_range(runs, BATCH_SIZES)}** (target: within 1.10x); with the "
                f"inputs as a dict batch: **{dict_range}** (target: within 1.15x).",
                "The same runs by the thread's CPU time for the whole call (setup, training "
                "and evaluation; time spent waiting for a core is not counted, so this is the "
                "steadier figure on a shared machine):",
                cpu_text,
                f"bsopt/bare CPU ratio over the batch sizes: "
                f"**{train_ratio_range(runs, BATCH_SIZES, 3)}**.",
            ]
        )
        _common.write_section("bench_trainer", section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
