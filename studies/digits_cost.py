"""Accuracy against training time on digits: which batch sizes are on the Pareto front?

    python studies/digits_cost.py --trials 40

A multi-objective study: maximise validation accuracy, minimise training seconds. Optuna
does not prune multi-objective trials, so each trial trains its whole budget; the summary
lists the Pareto-optimal trials.
"""

from __future__ import annotations

import bsopt


def build_objective(*, seed: int = 0) -> bsopt.Objective:
    data = bsopt.load_digits(seed=seed)
    return bsopt.make_objective(
        bsopt.mlp_builder(data, hidden=(128,)),
        data,
        space=bsopt.SearchSpace(batch_size=(8, 512)),
        budget=bsopt.Budget(5, "epochs", evals=5),
        goal="metric_and_time",
        seed=seed,
    )


if __name__ == "__main__":
    raise SystemExit(bsopt.cli.run_script(build_objective, name="digits-cost"))
