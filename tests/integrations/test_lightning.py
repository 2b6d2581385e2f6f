"""LightningReporter against the real lightning package on the CPU: tiny models, real trials."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from _accumulated_run import check_accumulated_run
import lightning.pytorch as L
import optuna
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import bsopt

N_TRAIN = 96


def _tensors(n: int, seed: int) -> TensorDataset:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 8, generator=g)
    return TensorDataset(x, (x[:, 0] > 0).long())


class Data(L.LightningDataModule):
    def __init__(self, batch_size: int = 32, n_train: int = N_TRAIN) -> None:
        super().__init__()
        self.batch_size = batch_size
        self.train = _tensors(n_train, 0)
        self.val = _tensors(32, 1)

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.train, batch_size=self.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val, batch_size=64)


class Classifier(L.LightningModule):
    def __init__(self, lr: float = 0.05, blow_up_at: int | None = None) -> None:
        super().__init__()
        self.net = nn.Linear(8, 2)
        self.lr = lr
        self.blow_up_at = blow_up_at
        self.trained_samples = 0
        self.samples_at_validation: list[int] = []

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        self.trained_samples += len(x)
        loss = nn.functional.cross_entropy(self.net(x), y)
        if self.blow_up_at is not None and self.global_step >= self.blow_up_at:
            loss = loss * float("nan")
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        if batch_idx == 0:
            self.samples_at_validation.append(self.trained_samples)
        acc = (self.net(x).argmax(dim=1) == y).float().mean()
        self.log("val_acc", acc)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=self.lr)


def _trainer(reporter: Any, kwargs: dict[str, Any]) -> Any:
    return L.Trainer(
        accelerator="cpu",
        devices=1,
        callbacks=[reporter],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        **kwargs,
    )


def _study(tmp_path: Path, pruner: optuna.pruners.BasePruner | None = None) -> optuna.Study:
    return bsopt.create_study(
        "lightning",
        storage=f"sqlite:///{tmp_path / 'lightning.db'}",
        pruner=pruner or optuna.pruners.NopPruner(),
    )


def _one_trial(
    tmp_path: Path,
    budget: bsopt.Budget,
    *,
    batch_size: int,
    n_train: int = N_TRAIN,
    micro_batch_size: int | None = None,
    plan: tuple[int, int] | None = None,
    pruner: optuna.pruners.BasePruner | None = None,
    module: Classifier | None = None,
    **options: Any,
) -> tuple[optuna.trial.FrozenTrial, Classifier]:
    """One trial fitting ``module`` (default a Classifier) under a LightningReporter.

    ``plan`` is the (per-device batch, accumulation) that ``configure`` must choose.
    """
    fitted = module or Classifier()

    def objective(trial: optuna.Trial) -> float:
        data = Data(n_train=n_train)
        reporter = bsopt.LightningReporter(
            trial, budget, n_train, batch_size=batch_size, monitor="val_acc", **options
        )
        kwargs = reporter.configure(data, micro_batch_size=micro_batch_size)
        if plan is not None:
            assert (data.batch_size, kwargs["accumulate_grad_batches"]) == plan
        _trainer(reporter, kwargs).fit(fitted, datamodule=data)
        return reporter.finish()

    study = _study(tmp_path, pruner)
    study.optimize(objective, n_trials=1)
    return study.trials[0], fitted


def _fixed_reporter(
    budget: bsopt.Budget, batch_size: int, *, monitor: str = "val_acc"
) -> bsopt.LightningReporter:
    """A reporter outside any study, for the checks that need no trial."""
    return bsopt.LightningReporter(
        optuna.trial.FixedTrial({}), budget, 96, batch_size=batch_size, monitor=monitor
    )


def test_validation_runs_on_the_sample_grid_with_accumulation(tmp_path: Path) -> None:
    budget = bsopt.Budget(2, "epochs", evals=4)  # 192 samples: points 48, 96, 144, 192
    trial, module = _one_trial(
        tmp_path, budget, batch_size=16, micro_batch_size=8, plan=(8, 2), lr=0.05, seed=1
    )
    check_accumulated_run(trial, lr=0.05, seed=1)
    # Batches of 16 reach every point exactly: validation after exactly those samples.
    assert module.samples_at_validation == [48, 96, 144, 192]
    assert module.trained_samples == 192


def test_a_batch_that_does_not_divide_the_grid_validates_at_the_next_step(
    tmp_path: Path,
) -> None:
    budget = bsopt.Budget(2, "epochs", evals=4)  # points 48, 96, 144, 192
    trial, module = _one_trial(tmp_path, budget, batch_size=40)
    # Epochs of 96 samples come as 40, 40, 16: 40, 80, 96 | 136, 176, 192.
    assert module.samples_at_validation == [80, 96, 176, 192]
    assert sorted(trial.intermediate_values) == [48, 96, 144, 192]
    assert trial.user_attrs["grid_overshoot"] == 32
    assert trial.user_attrs["samples_seen"] == 192


def test_an_epoch_ending_inside_an_accumulation_counts_its_real_samples(
    tmp_path: Path,
) -> None:
    # 100 samples in micro-batches of 16: 6 x 16 + 4 per epoch; updates of 3 micro-batches
    # are 48, 48 and the epoch's last 4 (Lightning steps at the end of an epoch).
    budget = bsopt.Budget(2, "epochs", evals=2)  # points 100, 200
    trial, module = _one_trial(
        tmp_path, budget, batch_size=48, n_train=100, micro_batch_size=16, plan=(16, 3)
    )
    assert module.samples_at_validation == [100, 200]
    assert trial.user_attrs["samples_seen"] == 200
    assert trial.user_attrs["optimizer_steps"] == 6
    assert trial.user_attrs["grid_overshoot"] == 0


def test_the_pruner_stops_lightning_and_the_trial_is_pruned(tmp_path: Path) -> None:
    budget = bsopt.Budget(2, "epochs", evals=4)
    trial, module = _one_trial(
        tmp_path, budget, batch_size=16, pruner=optuna.pruners.ThresholdPruner(lower=1.1)
    )
    assert trial.state == optuna.trial.TrialState.PRUNED
    assert list(trial.intermediate_values) == [48]
    assert module.trained_samples == 48  # training stopped at the first point
    assert trial.user_attrs["stop_reason"] == "pruned"
    assert trial.user_attrs["stop_detail"].startswith("pruned at 48 samples seen with val_acc=")


def test_a_diverged_loss_stops_training_as_diverged(tmp_path: Path) -> None:
    budget = bsopt.Budget(2, "epochs", evals=4)
    trial, _ = _one_trial(tmp_path, budget, batch_size=16, module=Classifier(blow_up_at=4))
    assert trial.state == optuna.trial.TrialState.PRUNED
    assert trial.user_attrs["stop_reason"] == "diverged"
    assert "non-finite" in trial.user_attrs["stop_detail"]
    assert trial.user_attrs["samples_seen"] == 80  # the fifth step; validation at 96 is skipped
    assert list(trial.intermediate_values) == [48]


# -- bad input ---------------------------------------------------------------------------------


def test_a_callback_without_a_trial_says_how_to_pass_one() -> None:
    with pytest.raises(ValueError, match=r"LightningReporter needs the optuna\.Trial"):
        bsopt.LightningReporter(None, bsopt.Budget(1), 96, batch_size=16, monitor="val_acc")  # type: ignore[arg-type]


def test_a_time_budget_is_refused() -> None:
    with pytest.raises(ValueError, match="epochs or samples"):
        _fixed_reporter(bsopt.Budget(5, "seconds"), 16)


def test_an_evaluation_interval_shorter_than_one_step_is_refused() -> None:
    reporter = _fixed_reporter(bsopt.Budget(1, "epochs", evals=8), 32)
    data = Data()
    with pytest.raises(ValueError, match="evaluates every 12 samples, less than one optimizer"):
        _trainer(reporter, reporter.configure(data)).fit(Classifier(), datamodule=data)


def test_a_datamodule_without_a_batch_size_is_refused() -> None:
    class NoBatchSize(L.LightningDataModule):
        def train_dataloader(self) -> DataLoader:
            return DataLoader(_tensors(N_TRAIN, 0), batch_size=32)

    reporter = _fixed_reporter(bsopt.Budget(1), 16)
    with pytest.raises(
        ValueError, match=r"NoBatchSize has no batch_size to set.*self\.batch_size"
    ):
        reporter.configure(NoBatchSize())


def test_a_datamodule_that_ignores_its_batch_size_is_caught() -> None:
    class Ignores(Data):
        def train_dataloader(self) -> DataLoader:
            return DataLoader(self.train, batch_size=32)

    reporter = _fixed_reporter(bsopt.Budget(1, evals=2), 16)
    data = Ignores()
    with pytest.raises(ValueError, match="does not use its batch_size"):
        _trainer(reporter, reporter.configure(data)).fit(Classifier(), datamodule=data)


def test_a_fit_without_validation_is_refused() -> None:
    class TrainOnly(Data):
        val_dataloader = None  # type: ignore[assignment]

    reporter = _fixed_reporter(bsopt.Budget(1, evals=2), 16)
    data = TrainOnly()
    with pytest.raises(ValueError, match="this fit has no validation"):
        _trainer(reporter, reporter.configure(data)).fit(Classifier(), datamodule=data)


def test_an_unlogged_monitor_lists_the_logged_metrics(tmp_path: Path) -> None:
    reporter = _fixed_reporter(bsopt.Budget(1, evals=2), 16, monitor="val_accuracy")
    data = Data()
    with pytest.raises(ValueError, match=r"monitor='val_accuracy'.*logged: val_acc"):
        _trainer(reporter, reporter.configure(data)).fit(Classifier(), datamodule=data)


def test_trainer_settings_that_skip_grid_points_are_refused() -> None:
    reporter = _fixed_reporter(bsopt.Budget(4), 16)
    data = Data()
    kwargs = reporter.configure(data) | {"max_epochs": 2}
    with pytest.raises(ValueError, match="max_epochs=2 stops training before the budget"):
        _trainer(reporter, kwargs).fit(Classifier(), datamodule=data)
    kwargs = reporter.configure(data) | {"check_val_every_n_epoch": 2, "val_check_interval": 1.0}
    with pytest.raises(ValueError, match="check_val_every_n_epoch=2 would skip them"):
        _trainer(reporter, kwargs).fit(Classifier(), datamodule=data)


# -- DDP: two real processes on gloo -----------------------------------------------------------


class RankRecorder(Classifier):
    """Writes each rank's trained samples to a file: the spawned ranks' state does not come
    back to the test process."""

    def __init__(self, folder: str) -> None:
        super().__init__()
        self.folder = folder

    def on_fit_end(self) -> None:
        path = Path(self.folder) / f"rank{self.global_rank}.txt"
        path.write_text(str(self.trained_samples))


@pytest.mark.slow
def test_under_ddp_rank_0_reports_and_every_rank_stops_at_the_prune(tmp_path: Path) -> None:
    budget = bsopt.Budget(2, "epochs", evals=4)  # points 48, 96, 144, 192

    def objective(trial: optuna.Trial) -> float:
        data = Data()
        reporter = bsopt.LightningReporter(
            trial, budget, N_TRAIN, batch_size=16, monitor="val_acc"
        )
        kwargs = reporter.configure(data, devices=2)
        assert (data.batch_size, kwargs["accumulate_grad_batches"]) == (8, 1)
        trainer = L.Trainer(
            accelerator="cpu",
            devices=2,
            strategy="ddp_fork",
            callbacks=[reporter],
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            **kwargs,
        )
        trainer.fit(RankRecorder(str(tmp_path)), datamodule=data)
        return reporter.finish()

    # Never good enough, but the first evaluation is warm-up: pruned at the second one.
    study = _study(tmp_path, optuna.pruners.ThresholdPruner(lower=1.1, n_warmup_steps=96))
    study.optimize(objective, n_trials=1)
    trial = study.trials[0]
    assert trial.state == optuna.trial.TrialState.PRUNED
    assert sorted(trial.intermediate_values) == [48, 96]  # reported once, by rank 0
    assert trial.user_attrs["stop_reason"] == "pruned"
    assert trial.user_attrs["samples_seen"] == 96  # 16 per update: 8 per rank x 2 ranks
    assert trial.user_attrs["world_size"] == 2
    assert trial.user_attrs["micro_batch_size"] == 8
    assert trial.user_attrs["accumulation_steps"] == 1
    # Both ranks stopped at the same step, after 48 samples each.
    assert (tmp_path / "rank0.txt").read_text() == "48"
    assert (tmp_path / "rank1.txt").read_text() == "48"


def test_configure_with_a_dataloader_points_at_a_datamodule() -> None:
    reporter = _fixed_reporter(bsopt.Budget(1), 16)
    loader = DataLoader(_tensors(N_TRAIN, 0), batch_size=32)
    with pytest.raises(ValueError, match=r"needs a LightningDataModule, but got a DataLoader"):
        reporter.configure(loader)  # type: ignore[arg-type]


def test_lightning_objective_searches_in_one_call_and_names_the_metric(
    tmp_path: Path,
) -> None:
    import logging

    objective = bsopt.integrations.lightning_objective(
        lambda params: Classifier(lr=params.lr),
        Data,
        budget=bsopt.Budget(2, "epochs", evals=2),
        monitor="val_acc",
        space=bsopt.SearchSpace(batch_size=(16, 32), lr=(0.01, 0.1)),
        trainer_options={"accelerator": "cpu", "devices": 1},
    )
    assert objective.n_train == N_TRAIN  # read from the DataModule
    study = _study(tmp_path)
    bsopt.optimize(study, objective, trials=2, show_progress_bar=False)
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE] * 2
    assert study.metric_names == ["validation val_acc"]
    for trial in study.trials:
        assert trial.user_attrs["samples_seen"] == 2 * N_TRAIN
    assert logging.getLogger("lightning.pytorch").level == logging.WARNING  # quiet after one
