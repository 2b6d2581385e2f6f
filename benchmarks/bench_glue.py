"""Lines of glue a search costs over the user's own, unsearched run (issue 23, item 6).

    python benchmarks/bench_glue.py            # prints the Markdown table for RESULTS.md
    python benchmarks/bench_glue.py --quick    # the same (nothing here is timed)

Each scenario holds the user's unsearched run and the same run searched three ways: plain
Optuna (its own Lightning pruning callback, or transformers' ``hyperparameter_search``),
bsopt's reporters (``LightningReporter``/``TransformersReporter`` in an own objective) and
bsopt's one-call objectives (``bsopt.integrations.lightning_objective`` /
``transformers_objective``). The model, data and metric definitions are shared and not
counted. Glue = non-blank, non-comment lines of the searched code minus those of the
unsearched run, formatted at 100 columns as the README shows them. Every snippet is
compiled, so none is pseudo-code.
"""

from __future__ import annotations

import argparse

SCENARIOS: dict[str, dict[str, str]] = {
    "Lightning": {
        "unsearched": """
L.seed_everything(0)
trainer = L.Trainer(max_epochs=10, logger=False, enable_checkpointing=False)
trainer.fit(MLP(1e-3, 0.1), datamodule=Digits(data, batch_size=64))
""",
        "plain Optuna": """
def objective(trial):
    lr = trial.suggest_float("lr", 1e-4, 1e-1, log=True)
    dropout = trial.suggest_float("dropout", 0.0, 0.5)
    batch_size = trial.suggest_categorical("batch_size", [16, 32, 64, 128, 256])
    L.seed_everything(0)
    pruning = PyTorchLightningPruningCallback(trial, monitor="val_acc")
    trainer = L.Trainer(max_epochs=10, logger=False, enable_checkpointing=False,
                        callbacks=[pruning])
    trainer.fit(MLP(lr, dropout), datamodule=Digits(data, batch_size=batch_size))
    return trainer.callback_metrics["val_acc"].item()
study = optuna.create_study(direction="maximize")
study.optimize(objective, n_trials=20)
""",
        "bsopt reporter": """
space, budget = bsopt.SearchSpace(batch_size=(16, 256)), bsopt.Budget(10, evals=10)
def objective(trial):
    params = space.suggest(trial)
    L.seed_everything(bsopt.search.trial_seed(0, trial.params))
    datamodule = Digits(data)
    reporter = bsopt.LightningReporter(trial, budget, 1437, batch_size=params.batch_size,
                                       monitor="val_acc", lr=params.lr)
    trainer = L.Trainer(logger=False, enable_checkpointing=False, callbacks=[reporter],
                        **reporter.configure(datamodule))
    trainer.fit(MLP(params.lr, params.dropout), datamodule=datamodule)
    return reporter.finish()
objective = bsopt.LoopObjective(objective, budget=budget, n_train=1437, metric="val_acc")
study = bsopt.create_study("lightning", direction="maximize")
bsopt.optimize(study, objective, trials=20)
""",
        "bsopt objective": """
objective = bsopt.integrations.lightning_objective(
    lambda params: MLP(params.lr, params.dropout), lambda: Digits(data),
    budget=bsopt.Budget(10, evals=10), monitor="val_acc")
study = bsopt.create_study("lightning", direction=objective.direction)
bsopt.optimize(study, objective, trials=20)
""",
    },
    "transformers": {
        "unsearched": """
args = TrainingArguments("out", learning_rate=1e-3, use_cpu=True, report_to="none")
trainer = Trainer(model=tiny_bert(0.1), args=args, train_dataset=train, eval_dataset=val,
                  compute_metrics=accuracy)
trainer.train()
""",
        "plain Optuna": """
args = TrainingArguments("out", learning_rate=1e-3, use_cpu=True, report_to="none")
def hp_space(trial):
    return {"learning_rate": trial.suggest_float("learning_rate", 1e-4, 1e-2, log=True),
            "per_device_train_batch_size": trial.suggest_categorical(
                "per_device_train_batch_size", [8, 16, 32, 64])}
trainer = Trainer(model_init=lambda trial: tiny_bert(0.1), args=args, train_dataset=train,
                  eval_dataset=val, compute_metrics=accuracy)
best = trainer.hyperparameter_search(direction="maximize", backend="optuna",
                                     hp_space=hp_space, n_trials=12)
""",
        "bsopt reporter": """
args = TrainingArguments("out", learning_rate=1e-3, use_cpu=True, report_to="none")
space, budget = bsopt.SearchSpace(batch_size=(8, 64)), bsopt.Budget(4, evals=4)
def objective(trial):
    params = space.suggest(trial)
    reporter = bsopt.TransformersReporter(trial, budget, len(train),
                                          batch_size=params.batch_size,
                                          monitor="eval_accuracy", lr=params.lr)
    trial_args = reporter.configure(dataclasses.replace(args, learning_rate=params.lr))
    trainer = Trainer(model=tiny_bert(params.dropout), args=trial_args, train_dataset=train,
                      eval_dataset=val, compute_metrics=accuracy, callbacks=[reporter])
    trainer.train()
    return reporter.finish()
objective = bsopt.LoopObjective(objective, budget=budget, n_train=len(train),
                                metric="eval_accuracy")
study = bsopt.create_study("tiny-bert", direction="maximize")
bsopt.optimize(study, objective, trials=12)
""",
        "bsopt objective": """
args = TrainingArguments("out", learning_rate=1e-3, use_cpu=True, report_to="none")
objective = bsopt.integrations.transformers_objective(
    lambda params: tiny_bert(params.dropout), args, train, val, budget=bsopt.Budget(4, evals=4),
    monitor="eval_accuracy", direction="maximize", compute_metrics=accuracy)
study = bsopt.create_study("tiny-bert", direction=objective.direction)
bsopt.optimize(study, objective, trials=12)
""",
    },
}

WAYS = ("plain Optuna", "bsopt reporter", "bsopt objective")


def code_lines(text: str) -> int:
    """Non-blank lines that are not comments."""
    stripped = (line.strip() for line in text.splitlines())
    return sum(1 for line in stripped if line and not line.startswith("#"))


def glue(scenario: dict[str, str]) -> dict[str, int]:
    base = code_lines(scenario["unsearched"])
    for name, text in scenario.items():
        compile(text, f"{name} snippet", "exec")  # real Python, not pseudo-code
        if max(len(line) for line in text.splitlines()) > 100:
            raise ValueError(f"{name}: a line is over 100 columns")
    return {way: code_lines(scenario[way]) - base for way in WAYS}


def table() -> str:
    rows = [
        "| Framework | unsearched run (lines) | plain Optuna glue | bsopt reporters glue | "
        "bsopt objective glue |",
        "|---|---:|---:|---:|---:|",
    ]
    for framework, scenario in SCENARIOS.items():
        counts = glue(scenario)
        rows.append(
            f"| {framework} | {code_lines(scenario['unsearched'])} | "
            + " | ".join(f"+{counts[way]}" for way in WAYS)
            + " |"
        )
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the same: nothing is timed")
    parser.parse_args(argv)
    print(table())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
