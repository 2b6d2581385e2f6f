"""TransformersReporter against the real transformers Trainer on the CPU.

A 2-layer BERT with tiny dimensions built from a config (random weights, nothing
downloaded) classifies generated token sequences.
"""

from __future__ import annotations

import os
from pathlib import Path
import socket
from typing import Any

from _accumulated_run import check_accumulated_run
import numpy as np
import optuna
import pytest
import torch
import torch.multiprocessing as mp
from torch.utils.data import Dataset
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    Trainer,
    TrainerCallback,
    TrainingArguments,
)

import bsopt
from bsopt.integrations._transformers import samples_per_step

N_TRAIN = 96


class Tokens(Dataset):
    """Sequences of 8 tokens; the label says whether token 3 occurs."""

    def __init__(self, n: int, seed: int) -> None:
        g = torch.Generator().manual_seed(seed)
        self.ids = torch.randint(4, 30, (n, 8), generator=g)
        self.ids[: n // 2, 2] = 3
        self.labels = (self.ids == 3).any(dim=1).long()

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.ids[i], "labels": self.labels[i]}


def _model() -> BertForSequenceClassification:
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=32,
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=16,
        num_labels=2,
    )
    return BertForSequenceClassification(config)


def _accuracy(prediction: Any) -> dict[str, float]:
    logits, labels = prediction
    return {"accuracy": float((np.argmax(logits, axis=1) == labels).mean())}


class SeenAtEvaluation(TrainerCallback):  # type: ignore[misc]
    """Records the global step of every evaluation."""

    def __init__(self) -> None:
        self.steps: list[int] = []

    def on_evaluate(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.steps.append(state.global_step)


def _args(tmp_path: Path, **overrides: Any) -> TrainingArguments:
    settings: dict[str, Any] = {
        "output_dir": str(tmp_path / "out"),
        "learning_rate": 1e-3,
        "report_to": "none",
        "save_strategy": "no",
        "disable_tqdm": True,
        "use_cpu": True,
        "seed": 0,
    }
    return TrainingArguments(**(settings | overrides))


def _trainer(args: TrainingArguments, callbacks: list[Any], n_train: int = N_TRAIN) -> Trainer:
    """A Trainer of the tiny model on ``n_train`` tokens, evaluated on 32 others."""
    return Trainer(
        model=_model(),
        args=args,
        train_dataset=Tokens(n_train, 0),
        eval_dataset=Tokens(32, 1),
        compute_metrics=_accuracy,
        callbacks=callbacks,
    )


def _run(
    trial: optuna.Trial,
    tmp_path: Path,
    budget: bsopt.Budget,
    batch_size: int,
    *,
    micro_batch_size: int | None = None,
    seen: SeenAtEvaluation | None = None,
    n_train: int = N_TRAIN,
    **overrides: Any,
) -> float:
    reporter = bsopt.TransformersReporter(
        trial, budget, n_train, batch_size=batch_size, monitor="eval_accuracy", lr=1e-3, seed=0
    )
    args = reporter.configure(_args(tmp_path, **overrides), micro_batch_size=micro_batch_size)
    _trainer(args, [reporter] + ([seen] if seen else []), n_train).train()
    return reporter.finish()


def _one_trial(
    tmp_path: Path,
    budget: bsopt.Budget,
    batch_size: int,
    *,
    pruner: optuna.pruners.BasePruner | None = None,
    **options: Any,
) -> tuple[optuna.trial.FrozenTrial, SeenAtEvaluation]:
    """The one trial of a fresh study, and the optimizer steps at which it evaluated."""
    seen = SeenAtEvaluation()
    study = _study(tmp_path, pruner)
    study.optimize(lambda t: _run(t, tmp_path, budget, batch_size, seen=seen, **options), 1)
    return study.trials[0], seen


def _study(tmp_path: Path, pruner: optuna.pruners.BasePruner | None = None) -> optuna.Study:
    return bsopt.create_study(
        "transformers",
        storage=f"sqlite:///{tmp_path / 'hf.db'}",
        pruner=pruner or optuna.pruners.NopPruner(),
    )


def test_samples_per_update_follow_the_trainer_batching() -> None:
    # 100 samples in batches of 16: six full and one of 4; updates of two batches.
    assert samples_per_step(100, per_device=16, accumulation=2, world_size=1, drop_last=False) == [
        32,
        32,
        32,
        4,
    ]
    assert samples_per_step(100, per_device=16, accumulation=2, world_size=1, drop_last=True) == [
        32,
        32,
        32,
    ]
    # Two processes read 50 each (padded), in batches of 16, 16, 16, 2.
    assert samples_per_step(100, per_device=16, accumulation=1, world_size=2, drop_last=False) == [
        32,
        32,
        32,
        4,
    ]


def test_evaluations_land_on_the_sample_grid_with_accumulation(tmp_path: Path) -> None:
    budget = bsopt.Budget(2, "epochs", evals=4)  # points 48, 96, 144, 192
    trial, seen = _one_trial(tmp_path, budget, 16, micro_batch_size=8)
    check_accumulated_run(trial, lr=1e-3)
    assert seen.steps == [3, 6, 9, 12]  # updates of 16 samples: 48, 96, 144, 192


def test_a_batch_that_does_not_divide_the_grid_evaluates_at_the_next_update(
    tmp_path: Path,
) -> None:
    budget = bsopt.Budget(2, "epochs", evals=4)
    trial, seen = _one_trial(tmp_path, budget, 40)
    # Epochs of 96 come as 40, 40, 16: 40, 80, 96 | 136, 176, 192 samples.
    assert seen.steps == [2, 3, 5, 6]
    assert sorted(trial.intermediate_values) == [48, 96, 144, 192]
    attrs = trial.user_attrs
    assert (attrs["grid_overshoot"], attrs["optimizer_steps"], attrs["samples_seen"]) == (
        32,
        6,
        192,
    )


def test_an_epoch_ending_inside_an_accumulation_counts_its_real_samples(
    tmp_path: Path,
) -> None:
    budget = bsopt.Budget(2, "epochs", evals=2)  # points 100, 200
    # 100 samples in micro-batches of 16: 6 x 16 + 4 per epoch; updates of 3 micro-batches
    # are 48, 48 and the epoch's last 4.
    trial, seen = _one_trial(tmp_path, budget, 48, micro_batch_size=16, n_train=100)
    assert seen.steps == [3, 6]
    assert sorted(trial.intermediate_values) == [100, 200]
    assert trial.user_attrs["samples_seen"] == 200
    assert trial.user_attrs["grid_overshoot"] == 0


def test_the_pruner_stops_the_trainer_and_the_trial_is_pruned(tmp_path: Path) -> None:
    budget = bsopt.Budget(2, "epochs", evals=4)
    trial, seen = _one_trial(
        tmp_path, budget, 16, pruner=optuna.pruners.ThresholdPruner(lower=1.1)
    )
    assert trial.state == optuna.trial.TrialState.PRUNED
    assert seen.steps == [3]  # stopped at the first evaluation
    assert list(trial.intermediate_values) == [48]
    assert trial.user_attrs["stop_reason"] == "pruned"
    assert trial.user_attrs["stop_detail"].startswith(
        "pruned at 48 samples seen with eval_accuracy="
    )


def test_a_diverged_loss_stops_training_as_diverged(tmp_path: Path) -> None:
    budget = bsopt.Budget(2, "epochs", evals=4)
    study = _study(tmp_path)
    # An absurd learning rate: the logged loss turns NaN or grows tenfold.
    study.optimize(
        lambda t: _run(t, tmp_path, budget, 16, learning_rate=1e6, max_grad_norm=0.0),
        n_trials=1,
    )
    trial = study.trials[0]
    assert trial.state == optuna.trial.TrialState.PRUNED
    assert trial.user_attrs["stop_reason"] == "diverged"
    assert "non-finite" in trial.user_attrs["stop_detail"]
    assert len(trial.intermediate_values) < 4


# -- bad input ---------------------------------------------------------------------------------


def test_auto_find_batch_size_is_refused(tmp_path: Path) -> None:
    reporter = bsopt.TransformersReporter(
        optuna.trial.FixedTrial({}), bsopt.Budget(2), N_TRAIN, batch_size=16, monitor="eval_loss"
    )
    with pytest.raises(ValueError, match=r"auto_find_batch_size=True\) halves the batch size"):
        reporter.configure(_args(tmp_path, auto_find_batch_size=True))


def test_arguments_not_built_by_configure_are_caught(tmp_path: Path) -> None:
    reporter = bsopt.TransformersReporter(
        optuna.trial.FixedTrial({}), bsopt.Budget(2), N_TRAIN, batch_size=16, monitor="eval_loss"
    )
    trainer = Trainer(
        model=_model(),
        args=_args(tmp_path, per_device_train_batch_size=32, max_steps=2),
        train_dataset=Tokens(N_TRAIN, 0),
        callbacks=[reporter],
    )
    with pytest.raises(
        ValueError, match=r"= 32 samples per update, not the searched batch_size=16"
    ):
        trainer.train()


def test_configure_sets_the_batch_split_and_the_budget_length(tmp_path: Path) -> None:
    reporter = bsopt.TransformersReporter(
        optuna.trial.FixedTrial({}),
        bsopt.Budget(300, "samples", evals=3),
        N_TRAIN,
        batch_size=64,
        monitor="eval_loss",
    )
    args = reporter.configure(_args(tmp_path), micro_batch_size=16)
    assert (args.per_device_train_batch_size, args.gradient_accumulation_steps) == (16, 4)
    # Epochs of 96 samples are updates of 64 and 32: 300 samples take 6 of them (64+32)x3=288,
    # then one more.
    assert args.max_steps == 7
    assert args.logging_steps == 1
    assert args.learning_rate == 1e-3  # the rest is kept


def test_a_callback_without_a_trial_and_a_short_budget_are_refused() -> None:
    with pytest.raises(ValueError, match=r"TransformersReporter needs the optuna\.Trial"):
        bsopt.TransformersReporter(None, bsopt.Budget(2), 96, batch_size=16, monitor="eval_loss")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="evaluates every 19 samples, less than one optimizer"):
        bsopt.TransformersReporter(
            optuna.trial.FixedTrial({}), bsopt.Budget(1), 192, batch_size=32, monitor="eval_loss"
        )


def test_an_unknown_monitor_lists_the_metrics(tmp_path: Path) -> None:
    reporter = bsopt.TransformersReporter(
        optuna.trial.FixedTrial({}),
        bsopt.Budget(1, evals=2),
        N_TRAIN,
        batch_size=16,
        monitor="accuracy",
    )
    trainer = _trainer(reporter.configure(_args(tmp_path)), [reporter])
    with pytest.raises(ValueError, match=r"monitor='accuracy'.*eval_accuracy"):
        trainer.train()


# -- DDP: two real processes on gloo -----------------------------------------------------------


def _ddp_worker(rank: int, url: str, folder: str, port: int) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE="2",
        LOCAL_WORLD_SIZE="2",
    )
    study = optuna.load_study(
        study_name="transformers",
        storage=url,
        pruner=optuna.pruners.ThresholdPruner(lower=1.1, n_warmup_steps=96),
    )
    # Rank 0 runs the trial; the other ranks only need its parameters (none here).
    trial = study.ask() if rank == 0 else optuna.trial.FixedTrial({})
    reporter = bsopt.TransformersReporter(
        trial, bsopt.Budget(2, "epochs", evals=4), N_TRAIN, batch_size=16, monitor="eval_accuracy"
    )
    args = reporter.configure(_args(Path(folder)))
    trainer = _trainer(args, [reporter])
    trainer.train()
    (Path(folder) / f"rank{rank}.txt").write_text(f"{args.world_size} {trainer.state.global_step}")
    if rank == 0:
        try:
            study.tell(trial, reporter.finish())
        except optuna.TrialPruned:
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)


@pytest.mark.slow
def test_under_ddp_rank_0_reports_and_every_process_stops_at_the_prune(tmp_path: Path) -> None:
    study = _study(tmp_path)
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    url = f"sqlite:///{tmp_path / 'hf.db'}"
    mp.start_processes(_ddp_worker, args=(url, str(tmp_path), port), nprocs=2, start_method="fork")
    trial = study.trials[0]
    assert trial.state == optuna.trial.TrialState.PRUNED
    assert sorted(trial.intermediate_values) == [48, 96]  # reported once, by rank 0
    assert trial.user_attrs["stop_reason"] == "pruned"
    assert trial.user_attrs["samples_seen"] == 96  # 8 per process x 2 per update
    assert trial.user_attrs["world_size"] == 2
    assert trial.user_attrs["micro_batch_size"] == 8
    # Both processes stopped at the same update.
    assert (tmp_path / "rank0.txt").read_text() == "2 6"
    assert (tmp_path / "rank1.txt").read_text() == "2 6"


def test_transformers_objective_searches_in_one_call_and_names_the_metric(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    objective = bsopt.integrations.transformers_objective(
        lambda params: _model(),
        _args(tmp_path),
        Tokens(N_TRAIN, 0),
        Tokens(32, 1),
        budget=bsopt.Budget(1, "epochs", evals=2),
        monitor="eval_accuracy",
        direction="maximize",
        compute_metrics=_accuracy,
        space=bsopt.SearchSpace(batch_size=(16, 32), lr=(1e-3, 1e-2)),
    )
    study = bsopt.create_study(
        "tf", storage=f"sqlite:///{tmp_path / 'tf.db'}", direction="maximize"
    )
    bsopt.optimize(study, objective, trials=2, show_progress_bar=False)
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE] * 2
    assert study.metric_names == ["validation eval_accuracy"]
    for trial in study.trials:
        assert trial.user_attrs["samples_seen"] == N_TRAIN
        assert trial.user_attrs["lr"] == trial.params["lr"]
    # The Trainer's printed logs: two evaluations of the first trial, none of the second.
    assert capsys.readouterr().out.count("'eval_loss'") == 2
