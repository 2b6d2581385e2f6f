"""A Hugging Face Trainer searched fairly across batch sizes: a tiny BERT with bsopt.

    bsopt run studies/transformers_tiny.py --trials 12
    python studies/transformers_tiny.py --trials 12

Needs the extra: ``pip install -c constraints.txt -e '.[transformers]'``. The model is a
2-layer BERT with tiny dimensions built from a config (random weights: nothing is
downloaded), classifying generated token sequences (is token 3 among the first four?).
bsopt's callback has the Trainer evaluate when the samples seen reach a point of the
budget's grid, reports there, prunes with the reason, and stores the attributes
``bsopt report`` reads;
``configure`` maps the searched batch to ``per_device_train_batch_size`` x
``gradient_accumulation_steps`` and refuses ``auto_find_batch_size``.
"""

from __future__ import annotations

import tempfile
from typing import Any

import numpy as np
import optuna
import torch
from torch.utils.data import Dataset
from transformers import BertConfig, BertForSequenceClassification, Trainer, TrainingArguments
from transformers.utils import logging as hf_logging

import bsopt

SPACE = bsopt.SearchSpace(batch_size=(8, 64), lr=(1e-4, 1e-2), dropout=(0.0, 0.3))
BUDGET = bsopt.Budget(3, "epochs", evals=6)


class Tokens(Dataset):
    """Sequences of 16 tokens; the label says whether token 3 is among the first four."""

    def __init__(self, n: int, seed: int) -> None:
        g = torch.Generator().manual_seed(seed)
        self.ids = torch.randint(4, 64, (n, 16), generator=g)
        marked = torch.rand(n, generator=g) < 0.5
        where = torch.randint(0, 4, (n,), generator=g)  # among the first four tokens
        self.ids[marked, where[marked]] = 3
        self.labels = marked.long()

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.ids[i], "labels": self.labels[i]}


def accuracy(prediction: Any) -> dict[str, float]:
    logits, labels = prediction
    return {"accuracy": float((np.argmax(logits, axis=1) == labels).mean())}


def tiny_bert(dropout: float = 0.1) -> BertForSequenceClassification:
    """A 2-layer BERT with tiny dimensions and random weights, built from a config."""
    config = BertConfig(
        vocab_size=64,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=32,
        hidden_dropout_prob=dropout,
        num_labels=2,
    )
    return BertForSequenceClassification(config)


def build_objective(*, seed: int = 0) -> bsopt.LoopObjective:
    train, val = Tokens(384, seed), Tokens(256, seed + 1)
    hf_logging.set_verbosity_error()

    def objective(trial: optuna.Trial) -> float:
        params = SPACE.suggest(trial)
        # From the params, not the trial's number: a --jobs N rerun trains each alike.
        trial_seed = bsopt.search.trial_seed(seed, trial.params)
        torch.manual_seed(trial_seed)
        reporter = bsopt.TransformersReporter(
            trial,
            BUDGET,
            len(train),
            batch_size=params.batch_size,
            monitor="eval_accuracy",
            lr=params.lr,
            seed=trial_seed,
            metric="accuracy",
        )
        with tempfile.TemporaryDirectory() as out:
            args = TrainingArguments(
                output_dir=out,
                learning_rate=params.lr,
                seed=trial_seed,
                use_cpu=True,
                report_to="none",
                save_strategy="no",
                disable_tqdm=True,
            )
            trainer = Trainer(
                model=tiny_bert(params.dropout),
                args=reporter.configure(args),
                train_dataset=train,
                eval_dataset=val,
                compute_metrics=accuracy,
                callbacks=[reporter],
            )
            trainer.train()
        return reporter.finish()  # raises optuna.TrialPruned for a pruned trial

    return bsopt.LoopObjective(
        objective,
        budget=BUDGET,
        n_train=len(train),
        metric="accuracy",
        direction="maximize",
        what="tiny BERT (2 layers, width 32); batch size 8..64, lr 1e-4..0.01, dropout 0..0.3",
    )


if __name__ == "__main__":
    raise SystemExit(bsopt.cli.run_script(build_objective, name="transformers_tiny"))
