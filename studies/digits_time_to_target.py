"""How fast does each batch size reach 95% validation accuracy on digits?

    python studies/digits_time_to_target.py --trials 40

The objective is the number of training samples until validation accuracy first reaches
the target ("steps to result"), minimised. Training stops as soon as the target is reached;
trials that never reach it complete with a score worse than any trial that did, so the
sampler still learns from them. Use samples seen (not optimizer steps) so batch sizes are
compared on the data they consumed.
"""

from __future__ import annotations

import bsopt

TARGET_ACCURACY = 0.95


def build_objective(*, seed: int = 0) -> bsopt.Objective:
    data = bsopt.load_digits(seed=seed)
    return bsopt.make_objective(
        bsopt.mlp_builder(data, hidden=(128,)),
        data,
        space=bsopt.SearchSpace(batch_size=(8, 256)),
        budget=bsopt.Budget(10, "epochs", evals=20),
        goal="time_to_target",
        target=TARGET_ACCURACY,
        seed=seed,
    )


if __name__ == "__main__":
    raise SystemExit(bsopt.cli.run_script(build_objective, name="digits-time-to-target"))
