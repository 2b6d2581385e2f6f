"""A PyTorch Lightning model searched fairly across batch sizes: digits with bsopt.

    bsopt run studies/lightning_digits.py --trials 20
    python studies/lightning_digits.py --trials 20

Needs the extra: ``pip install -c constraints.txt -e '.[lightning]'``. The LightningModule
and DataModule are ordinary Lightning code. bsopt's callback has Lightning validate when the
samples seen reach a point of the budget's grid (the same points for every batch size),
reports there, prunes with the reason, and stores the attributes ``bsopt report`` reads;
``configure`` maps the searched batch to the DataModule's batch size and gradient
accumulation.
"""

from __future__ import annotations

from typing import Any

import lightning.pytorch as L
import optuna
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import bsopt

SPACE = bsopt.SearchSpace(batch_size=(16, 256), lr=(1e-4, 1e-1), dropout=(0.0, 0.5))
BUDGET = bsopt.Budget(10, "epochs", evals=10)


class Digits(L.LightningDataModule):
    def __init__(self, data: bsopt.TensorData, batch_size: int = 32, seed: int = 0) -> None:
        super().__init__()
        self.data = data
        self.batch_size = batch_size
        self.seed = seed

    def train_dataloader(self) -> DataLoader:
        return DataLoader(
            TensorDataset(self.data.x_train, self.data.y_train),
            batch_size=self.batch_size,
            shuffle=True,
            generator=torch.Generator().manual_seed(self.seed),
        )

    def val_dataloader(self) -> DataLoader:
        return DataLoader(TensorDataset(self.data.x_val, self.data.y_val), batch_size=512)


class MLP(L.LightningModule):
    def __init__(self, lr: float, dropout: float) -> None:
        super().__init__()
        self.lr = lr
        self.net = nn.Sequential(
            nn.Linear(64, 128), nn.ReLU(), nn.Dropout(dropout), nn.Linear(128, 10)
        )

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        return nn.functional.cross_entropy(self.net(x), y)

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        accuracy = (self.net(x).argmax(dim=1) == y).float().mean()
        self.log("val_acc", accuracy, batch_size=len(x))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.AdamW(self.parameters(), lr=self.lr)


def build_objective(*, seed: int = 0) -> bsopt.LoopObjective:
    data = bsopt.load_digits(seed=seed)  # 1,437 training and 360 validation images
    n_train = len(data.x_train)

    def objective(trial: optuna.Trial) -> float:
        params = SPACE.suggest(trial)
        # From the params, not the trial's number: a --jobs N rerun trains each alike.
        trial_seed = bsopt.search.trial_seed(seed, trial.params)
        L.seed_everything(trial_seed, verbose=False)
        datamodule = Digits(data, seed=trial_seed)
        reporter = bsopt.LightningReporter(
            trial,
            BUDGET,
            n_train,
            batch_size=params.batch_size,
            monitor="val_acc",
            lr=params.lr,
            seed=trial_seed,
            metric="accuracy",
        )
        trainer = L.Trainer(
            accelerator="cpu",
            devices=1,
            callbacks=[reporter],
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            **reporter.configure(datamodule),
        )
        trainer.fit(MLP(params.lr, params.dropout), datamodule=datamodule)
        return reporter.finish()  # raises optuna.TrialPruned for a pruned trial

    return bsopt.LoopObjective(
        objective,
        budget=BUDGET,
        n_train=n_train,
        metric="accuracy",
        direction="maximize",
        what="Lightning MLP 64-128-10, AdamW; batch size 16..256, lr 1e-4..0.1, dropout 0..0.5",
    )


if __name__ == "__main__":
    raise SystemExit(bsopt.cli.run_script(build_objective, name="lightning_digits"))
