"""Your own PyTorch training loop, searched fairly across batch sizes with bsopt.

    python studies/own_loop.py --trials 20
    bsopt run studies/own_loop.py --trials 20

The loop below is plain PyTorch: a DataLoader, AdamW, cross-entropy. bsopt adds four lines
to it. ``FairReporter`` cuts the batches so evaluations fall after the same samples for
every batch size, reports them to the trial (pruning with the reason), stops a diverged
run, and stores the attributes ``bsopt report`` and the dashboard read. ``retry_oom``
restarts a trial with half the micro-batch when the device runs out of memory.
"""

from __future__ import annotations

import optuna
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import bsopt

SPACE = bsopt.SearchSpace(batch_size=(16, 256), lr=(1e-4, 1e-1), dropout=(0.0, 0.5))
BUDGET = bsopt.Budget(10, "epochs", evals=10)


def build_objective(*, seed: int = 0) -> bsopt.LoopObjective:
    data = bsopt.load_digits(seed=seed)  # 1,437 training and 360 validation images
    x_train, y_train, x_val, y_val = data.x_train, data.y_train, data.x_val, data.y_val
    n_train = len(x_train)

    def evaluate(model: nn.Module) -> float:
        model.eval()
        with torch.no_grad():
            correct = (model(x_val).argmax(dim=1) == y_val).sum().item()
        model.train()
        return correct / len(y_val)

    def objective(trial: optuna.Trial) -> float:
        params = SPACE.suggest(trial)  # batch_size, lr, dropout
        # From the params, not the trial's number: a --jobs N rerun trains each alike.
        trial_seed = bsopt.search.trial_seed(seed, trial.params)

        def run(micro_batch_size: int) -> float:
            torch.manual_seed(trial_seed)
            model = nn.Sequential(
                nn.Linear(64, 128), nn.ReLU(), nn.Dropout(params.dropout), nn.Linear(128, 10)
            )
            optimizer = torch.optim.AdamW(model.parameters(), lr=params.lr)
            loader = DataLoader(
                TensorDataset(x_train, y_train),
                batch_size=params.batch_size,
                shuffle=True,
                generator=torch.Generator().manual_seed(trial_seed),
            )
            reporter = bsopt.FairReporter(
                trial,
                BUDGET,
                n_train,
                batch_size=params.batch_size,
                lr=params.lr,
                micro_batch_size=micro_batch_size,
                seed=trial_seed,
                metric="accuracy",
            )
            for x, y in reporter.batches(loader):
                optimizer.zero_grad()
                # Gradient accumulation over micro-batches: the update is the whole batch's.
                batch_loss = torch.zeros(())
                for xm, ym in zip(
                    x.split(micro_batch_size), y.split(micro_batch_size), strict=True
                ):
                    loss = nn.functional.cross_entropy(model(xm), ym) * (len(xm) / len(x))
                    loss.backward()
                    batch_loss += loss.detach()
                optimizer.step()
                if reporter.step((x, y), batch_loss):
                    reporter.report(evaluate(model))  # raises optuna.TrialPruned if pruned
            return reporter.finish()

        return bsopt.retry_oom(trial, run, batch_size=params.batch_size, seed=trial_seed)

    return bsopt.LoopObjective(
        objective,
        budget=BUDGET,
        n_train=n_train,
        metric="accuracy",
        direction="maximize",
        what="own loop: MLP 64-128-10, AdamW; batch size 16..256, lr 1e-4..0.1, dropout 0..0.5",
    )


if __name__ == "__main__":
    raise SystemExit(bsopt.cli.run_script(build_objective, name="own_loop"))
