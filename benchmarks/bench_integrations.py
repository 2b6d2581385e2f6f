"""bsopt's Lightning and transformers callbacks: their overhead, and the fairness they buy.

    python benchmarks/bench_integrations.py [--quick] [--repeats N] [--seeds N] [--trials N]
                                            [--out FILE] [--only overhead|fairness]

**Overhead.** The same framework run with and without bsopt's callback, side by side:

* Lightning: the digits MLP (64-128-10, AdamW) for 10 epochs at batch 16 and 64. Without
  bsopt: ``Trainer(max_epochs=10)``, validating once per epoch. With bsopt:
  ``LightningReporter`` on ``Budget(10, evals=10)`` (validation at the same ten points, the
  epoch ends), reporting to a trial of an in-memory study with the median pruner, its
  ``configure()`` arguments, ``finish()`` storing the attributes.
* transformers: a 2-layer BERT of width 32 built from a config, on 256 generated token
  sequences, 6 epochs at batch 16 and 64. Without bsopt: ``eval_strategy="steps"`` with
  ``eval_steps`` giving six evaluations and the same ``max_steps`` and ``logging_steps``. With
  bsopt: ``TransformersReporter`` on ``Budget(6, evals=6)``.

Each repeat runs every variant once, in a rotating order; the table gives medians of the
wall time of ``fit``/``train`` (plus ``finish``) and the median of the per-repeat ratios.
On a shared machine these wall times are noisy, so the last column measures the callback
directly: the time spent inside its hooks and ``finish()`` (including the trial's
``report``/``should_prune`` and the attributes), as a share of the run.

**Fairness.** One study of 40 random configurations (batch 16..256 as powers of two, lr
1e-4..0.1 log-uniform, dropout 0..0.5) of the digits MLP, each trained for 10 epochs with
AdamW and evaluated both on bsopt's grid (every 1,437 samples) and every 22 optimizer steps
(about ten evaluations at batch 64), from one run. The learning curves are then replayed in
trial order through Optuna's ``MedianPruner`` (5 start-up trials, warm-up of a quarter of the
evaluations) twice: with the report step = samples seen (bsopt) and with the report step =
the optimizer step (``global_step``, as transformers' Optuna backend reports). A trial
counts as "top 25%" when its value after the whole budget is in the top quarter of the
study. Reported: how many top-25% trials each scheme prunes, how many trials it prunes in
all, and the share of the samples it trains. Epoch keys (Optuna's Lightning callback) give
the same decisions as bsopt's grid here, whose points are the epoch ends.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
import logging
from pathlib import Path
import sys
import tempfile
import time
from typing import Any
import warnings

import _common

_common.pin_threads()

import lightning.pytorch as L  # noqa: E402
import numpy as np  # noqa: E402
import optuna  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402
from torch.utils.data import DataLoader, Dataset, TensorDataset  # noqa: E402
from transformers import (  # noqa: E402
    BertForSequenceClassification,
    Trainer,
    TrainingArguments,
)
from transformers.utils import logging as hf_logging  # noqa: E402

import bsopt  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "studies"))
from transformers_tiny import accuracy, tiny_bert  # noqa: E402

optuna.logging.set_verbosity(optuna.logging.WARNING)
hf_logging.set_verbosity_error()
warnings.filterwarnings("ignore")
for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
    logging.getLogger(name).setLevel(logging.ERROR)

DIGITS = bsopt.load_digits(seed=0)
N_DIGITS = len(DIGITS.x_train)


# -- Lightning -----------------------------------------------------------------------------------


class DigitsData(L.LightningDataModule):
    def __init__(self, batch_size: int) -> None:
        super().__init__()
        self.batch_size = batch_size

    def train_dataloader(self) -> DataLoader:
        return DataLoader(
            TensorDataset(DIGITS.x_train, DIGITS.y_train),
            batch_size=self.batch_size,
            shuffle=True,
            generator=torch.Generator().manual_seed(0),
        )

    def val_dataloader(self) -> DataLoader:
        return DataLoader(TensorDataset(DIGITS.x_val, DIGITS.y_val), batch_size=512)


class DigitsMLP(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        return nn.functional.cross_entropy(self.net(x), y)

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        self.log("val_acc", (self.net(x).argmax(dim=1) == y).float().mean(), batch_size=len(x))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.AdamW(self.parameters(), lr=3e-3)


def _lightning_trainer(callbacks: list[Any], **kwargs: Any) -> L.Trainer:
    return L.Trainer(
        accelerator="cpu",
        devices=1,
        callbacks=callbacks,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        **kwargs,
    )


def lightning_plain(batch: int) -> float:
    trainer = _lightning_trainer([], max_epochs=10, num_sanity_val_steps=0)
    start = time.perf_counter()
    trainer.fit(DigitsMLP(), datamodule=DigitsData(batch))
    return time.perf_counter() - start


def _trial() -> optuna.Trial:
    study = optuna.create_study(direction="maximize", pruner=optuna.pruners.MedianPruner())
    return study.ask()


# Seconds spent inside bsopt's callback methods in the last run with bsopt.
HOOK_SECONDS = [0.0]
LIGHTNING_HOOKS = ("on_fit_start", "on_train_start", "on_train_batch_end", "on_validation_end")
TRANSFORMERS_HOOKS = ("on_train_begin", "on_step_end", "on_epoch_end", "on_log", "on_evaluate")


def _timed(reporter: Any, hooks: tuple[str, ...]) -> None:
    """Time every call of the reporter's hooks (instance attributes shadow the methods, and
    both frameworks look hooks up by name on the instance)."""
    HOOK_SECONDS[0] = 0.0
    for name in hooks:
        method = getattr(reporter, name)

        def wrapper(*args: Any, _method: Any = method, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return _method(*args, **kwargs)
            finally:
                HOOK_SECONDS[0] += time.perf_counter() - start

        setattr(reporter, name, wrapper)


def lightning_bsopt(batch: int) -> float:
    data = DigitsData(32)
    reporter = bsopt.LightningReporter(
        _trial(), bsopt.Budget(10, evals=10), N_DIGITS, batch_size=batch, monitor="val_acc"
    )
    _timed(reporter, LIGHTNING_HOOKS)
    trainer = _lightning_trainer([reporter], **reporter.configure(data))
    start = time.perf_counter()
    trainer.fit(DigitsMLP(), datamodule=data)
    finish = time.perf_counter()
    reporter.finish()
    HOOK_SECONDS[0] += time.perf_counter() - finish
    return time.perf_counter() - start


# -- transformers --------------------------------------------------------------------------------


class Tokens(Dataset):
    def __init__(self, n: int, seed: int) -> None:
        g = torch.Generator().manual_seed(seed)
        self.ids = torch.randint(4, 64, (n, 16), generator=g)
        marked = torch.rand(n, generator=g) < 0.5
        self.ids[marked, 0] = 3
        self.labels = marked.long()

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.ids[i], "labels": self.labels[i]}


HF_TRAIN, HF_VAL = Tokens(256, 0), Tokens(128, 1)
HF_BUDGET = bsopt.Budget(6, evals=6)


def _bert() -> BertForSequenceClassification:
    torch.manual_seed(0)
    return tiny_bert()  # the study script's model, hidden dropout 0.1


def _hf_args(out: str, **kwargs: Any) -> TrainingArguments:
    return TrainingArguments(
        output_dir=out,
        learning_rate=1e-3,
        use_cpu=True,
        report_to="none",
        save_strategy="no",
        disable_tqdm=True,
        seed=0,
        **kwargs,
    )


def _hf_reporter(batch: int) -> bsopt.TransformersReporter:
    return bsopt.TransformersReporter(
        _trial(), HF_BUDGET, len(HF_TRAIN), batch_size=batch, monitor="eval_accuracy"
    )


def _hf_train(args: TrainingArguments, callbacks: list[Any]) -> Trainer:
    return Trainer(
        model=_bert(),
        args=args,
        train_dataset=HF_TRAIN,
        eval_dataset=HF_VAL,
        compute_metrics=accuracy,
        callbacks=callbacks,
    )


def transformers_plain(batch: int) -> float:
    with tempfile.TemporaryDirectory() as out:
        # The same steps and logging as bsopt's configure(), evaluation every sixth of them.
        shaped = _hf_reporter(batch).configure(_hf_args(out))
        args = _hf_args(
            out,
            per_device_train_batch_size=batch,
            max_steps=shaped.max_steps,
            logging_steps=shaped.logging_steps,
            eval_strategy="steps",
            eval_steps=max(1, shaped.max_steps // HF_BUDGET.evals),
        )
        trainer = _hf_train(args, [])
        start = time.perf_counter()
        trainer.train()
        return time.perf_counter() - start


def transformers_bsopt(batch: int) -> float:
    with tempfile.TemporaryDirectory() as out:
        reporter = _hf_reporter(batch)
        _timed(reporter, TRANSFORMERS_HOOKS)
        trainer = _hf_train(reporter.configure(_hf_args(out)), [reporter])
        start = time.perf_counter()
        trainer.train()
        finish = time.perf_counter()
        reporter.finish()
        HOOK_SECONDS[0] += time.perf_counter() - finish
        return time.perf_counter() - start


def overhead(repeats: int, batches: tuple[int, ...]) -> str:
    variants: dict[str, tuple[Callable[[int], float], Callable[[int], float]]] = {
        "Lightning": (lightning_plain, lightning_bsopt),
        "transformers": (transformers_plain, transformers_bsopt),
    }
    rows = []
    for framework, (plain, with_bsopt) in variants.items():
        for batch in batches:
            plain(batch), with_bsopt(batch)  # warm-up: imports, allocator, first compile
            times: dict[str, list[float]] = {"plain": [], "bsopt": []}
            in_hooks: list[float] = []
            for rep in range(repeats):
                order = [("plain", plain), ("bsopt", with_bsopt)]
                for name, fn in order if rep % 2 == 0 else order[::-1]:
                    times[name].append(fn(batch))
                    if name == "bsopt":
                        in_hooks.append(HOOK_SECONDS[0] / times[name][-1])
            ratios = [b / p - 1 for p, b in zip(times["plain"], times["bsopt"], strict=True)]
            rows.append(
                [
                    framework,
                    str(batch),
                    f"{_common.median(times['plain']):.2f} ({_common.spread(times['plain'])})",
                    f"{_common.median(times['bsopt']):.2f} ({_common.spread(times['bsopt'])})",
                    f"{100 * _common.median(ratios):+.1f}%",
                    f"{100 * min(ratios):+.1f}..{100 * max(ratios):+.1f}%",
                    f"{100 * _common.median(in_hooks):.2f}%",
                ]
            )
            print(rows[-1], flush=True)
    return _common.table(
        [
            "framework",
            "batch",
            "without bsopt, s (range)",
            "with bsopt, s (range)",
            "overhead (median)",
            "per repeat",
            "in bsopt's hooks",
        ],
        rows,
    )


# -- fairness ------------------------------------------------------------------------------------

STEP_EVERY = 22  # optimizer steps between evaluations in the global-step scheme


def curves(seed: int, trials: int) -> list[dict[str, Any]]:
    """Train ``trials`` random configurations once, evaluating on both grids."""
    rng = np.random.default_rng(seed)
    points = bsopt.Budget(10, evals=10).grid(N_DIGITS).points
    x_val, y_val = DIGITS.x_val, DIGITS.y_val
    runs = []
    for number in range(trials):
        batch = int(2 ** rng.integers(4, 9))
        lr = float(10 ** rng.uniform(-4, -1))
        dropout = float(rng.uniform(0, 0.5))
        torch.manual_seed(seed * 1000 + number)
        model = nn.Sequential(
            nn.Linear(64, 128), nn.ReLU(), nn.Dropout(dropout), nn.Linear(128, 10)
        )
        optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
        generator = torch.Generator().manual_seed(seed * 1000 + number)

        def evaluate(model: nn.Module = model) -> float:
            model.eval()
            with torch.no_grad():
                value = (model(x_val).argmax(dim=1) == y_val).float().mean().item()
            model.train()
            return value

        # (report step, value, samples trained)
        by_samples: list[tuple[int, float, int]] = []
        by_steps: list[tuple[int, float, int]] = []
        samples = steps = 0
        while samples < points[-1]:
            order = torch.randperm(N_DIGITS, generator=generator)
            for start in range(0, N_DIGITS, batch):
                index = order[start : start + batch]
                target = next(p for p in points if p > samples)
                index = index[: target - samples]  # cut at bsopt's grid point
                x, y = DIGITS.x_train[index], DIGITS.y_train[index]
                loss = nn.functional.cross_entropy(model(x), y)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                samples += len(index)
                steps += 1
                on_grid = samples == target
                on_step = steps % STEP_EVERY == 0
                if on_grid or on_step:
                    value = evaluate()
                    if on_grid:
                        by_samples.append((samples, value, samples))
                    if on_step:
                        by_steps.append((steps, value, samples))
                if samples >= points[-1]:
                    break
        runs.append(
            {
                "batch": batch,
                "final": by_samples[-1][1],
                "samples": by_samples,
                "steps": by_steps,
                "steps_total": steps,
            }
        )
    return runs


def replay(runs: list[dict[str, Any]], key: str, warmup: int) -> list[int | None]:
    """The sample count at which each run is pruned (``None``: completed), in trial order,
    with Optuna's median pruner seeing the runs' reports under ``key``."""
    study = optuna.create_study(
        direction="maximize",
        pruner=optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=warmup),
    )
    pruned_at: list[int | None] = []
    for run in runs:
        trial = study.ask()
        stop: int | None = None
        for step, value, samples in run[key]:
            trial.report(value, step)
            if trial.should_prune():
                stop = samples
                break
        if stop is None:
            study.tell(trial, run["final"])
            pruned_at.append(None)
        else:
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            pruned_at.append(stop)
    return pruned_at


def fairness(seeds: int, trials: int) -> str:
    points = bsopt.Budget(10, evals=10).grid(N_DIGITS).points
    rows = []
    totals = {"samples": [0, 0, 0, 0.0], "steps": [0, 0, 0, 0.0]}
    top_total = 0
    # batch size -> [trials, top-25% trials, pruned (samples), pruned (steps),
    #                top pruned (samples), top pruned (steps)]
    by_batch: dict[int, list[int]] = {}
    for seed in range(seeds):
        runs = curves(seed, trials)
        finals = [r["final"] for r in runs]
        cut = float(np.quantile(finals, 0.75))
        top = [f >= cut for f in finals]
        top_total += sum(top)
        full = points[-1] * len(runs)
        for run, is_top in zip(runs, top, strict=True):
            counts = by_batch.setdefault(run["batch"], [0] * 6)
            counts[0] += 1
            counts[1] += is_top
        for key, warmup in (("samples", points[2]), ("steps", 3 * STEP_EVERY)):
            pruned = replay(runs, key, warmup)
            column = 2 if key == "samples" else 3
            for run, p, is_top in zip(runs, pruned, top, strict=True):
                by_batch[run["batch"]][column] += p is not None
                by_batch[run["batch"]][column + 2] += p is not None and is_top
            wrong = sum(1 for p, t in zip(pruned, top, strict=True) if p is not None and t)
            wrong_batches = sorted(
                r["batch"]
                for r, p, t in zip(runs, pruned, top, strict=True)
                if p is not None and t
            )
            n_pruned = sum(p is not None for p in pruned)
            trained = sum(points[-1] if p is None else min(p, points[-1]) for p in pruned)
            totals[key][0] += wrong
            totals[key][1] += n_pruned
            totals[key][2] += len(runs)
            totals[key][3] += trained / full / seeds
            rows.append(
                [
                    str(seed),
                    "samples seen (bsopt)" if key == "samples" else "global step",
                    f"{wrong} of {sum(top)}",
                    ", ".join(map(str, wrong_batches)) or "-",
                    f"{n_pruned} of {len(runs)}",
                    f"{trained / full:.2f}",
                ]
            )
            print(rows[-1], flush=True)
    for key, label in (("samples", "samples seen (bsopt)"), ("steps", "global step")):
        wrong, n_pruned, n, share = totals[key]
        rows.append(
            [
                "all",
                label,
                f"{wrong} of {top_total} ({100 * wrong / max(top_total, 1):.0f}%)",
                "",
                f"{n_pruned} of {n}",
                f"{share:.2f}",
            ]
        )
    overall = _common.table(
        [
            "seed",
            "report step",
            "top-25% trials pruned",
            "their batch sizes",
            "pruned in all",
            "samples trained (share)",
        ],
        rows,
    )
    per_batch = _common.table(
        [
            "batch size",
            "trials",
            "pruned: samples seen",
            "pruned: global step",
            "top-25% trials",
            "top-25% pruned: samples seen",
            "top-25% pruned: global step",
        ],
        [
            [str(b), str(c[0]), str(c[2]), str(c[3]), str(c[1]), str(c[4]), str(c[5])]
            for b, c in sorted(by_batch.items())
        ],
    )
    return f"{overall}\n\nBy batch size, all seeds:\n\n{per_batch}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 repeat, 1 seed of 15 trials")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--trials", type=int, default=40)
    parser.add_argument("--only", choices=("overhead", "fairness"))
    parser.add_argument("--out", type=Path, help="also write the Markdown section to FILE")
    args = parser.parse_args()
    if args.quick:
        args.repeats, args.seeds, args.trials = 1, 1, 15
    facts = _common.machine_facts()
    load_start = _common.uptime_line()
    began = time.perf_counter()
    parts = ["## Integrations: callback overhead and fairness (`bench_integrations.py`)", ""]
    if args.only != "fairness":
        parts += [
            f"Overhead: wall time of one run, median of {args.repeats} repeats, side by side.",
            "",
            overhead(args.repeats, (16, 64)),
            "",
        ]
    if args.only != "overhead":
        parts += [
            f"Fairness: {args.seeds} studies of {args.trials} digits trials, median pruner, "
            f"evaluations every 1,437 samples or every {STEP_EVERY} optimizer steps.",
            "",
            fairness(args.seeds, args.trials),
            "",
        ]
    parts.append(
        _common.machine_block(
            facts, load_start, _common.uptime_line(), time.perf_counter() - began
        )
    )
    text = "\n".join(parts)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
