"""A stored study with known answers, for the analysis, the report and the dashboard.

No model is trained: trials are written straight into storage (``study.add_trials``; the
running one with ``study.ask``) in the shape bsopt's objective writes them
(``log2_batch_size`` searched, ``batch_size`` recorded, intermediate values at samples seen,
bsopt's user attributes). The constructed truth:

* the value peaks at batch size ``best_batch`` (default 64);
* the best learning rate scales as ``lr*(b) = 1e-3 · (b / 16) ** alpha``;
* dropout does nothing (unless ``depends_on`` says otherwise);
* throughput grows as ``sqrt(b)``.

Pruned, failed and running trials are mixed in when ``mixed=True``; trials are drawn at
random (seeded) over the search space, as a random sampler would.

Run it to get a study to browse: ``python studies/synthetic_analysis.py sqlite:///storage/x.db``,
then ``bsopt report --storage sqlite:///storage/x.db --study synthetic-analysis``.
"""

from __future__ import annotations

import math
import sys
from typing import Literal

import numpy as np
import optuna

GRID = [200 * i for i in range(1, 11)]  # samples seen at each evaluation, for every batch size


def value_at(
    batch_size: int,
    lr: float,
    dropout: float,
    *,
    alpha: float,
    best_batch: int = 64,
    depends_on: Literal["all", "batch_size", "lr", "dropout"] = "all",
) -> float:
    """The constructed final value (an accuracy in [0, 1])."""
    lr_star = 1e-3 * (batch_size / 16) ** alpha
    lr_term = 0.05 * (math.log10(lr) - math.log10(lr_star)) ** 2
    batch_term = 0.02 * (math.log2(batch_size) - math.log2(best_batch)) ** 2
    dropout_term = 0.2 * (dropout - 0.3) ** 2
    if depends_on == "batch_size":
        return 0.95 - batch_term
    if depends_on == "lr":
        return 0.95 - lr_term
    if depends_on == "dropout":
        return 0.95 - dropout_term
    return max(0.0, 0.95 - lr_term - batch_term)


def build_study(
    storage: str,
    name: str = "synthetic-analysis",
    *,
    n_trials: int = 60,
    alpha: float = 0.5,
    seed: int = 0,
    mixed: bool = True,
    depends_on: Literal["all", "batch_size", "lr", "dropout"] = "all",
    noise: float = 0.0,
    lr_range: tuple[float, float] = (1e-4, 1e-1),
    detail: bool = True,
) -> optuna.Study:
    """Write ``n_trials`` completed trials (plus, with ``mixed``, pruned/failed/running ones).

    ``detail=False`` leaves out the curves and all user attributes but ``lr``: a SQLite
    study then builds about three times faster (each stored value is a query).
    """
    rng = np.random.default_rng(seed)
    study = optuna.create_study(
        storage=storage, study_name=name, direction="maximize", load_if_exists=True
    )
    study.set_user_attr("metric", "accuracy")
    batch_dist = optuna.distributions.IntDistribution(4, 8)
    lr_dist = optuna.distributions.FloatDistribution(lr_range[0], lr_range[1], log=True)
    dropout_dist = optuna.distributions.FloatDistribution(0.0, 0.5)
    kinds = ["complete"] * n_trials + (["pruned", "pruned", "fail", "running"] if mixed else [])
    frozen = []
    for i, kind in enumerate(kinds):
        exponent = int(rng.integers(4, 9))
        batch = 2**exponent
        lr = float(np.exp(rng.uniform(np.log(lr_range[0]), np.log(lr_range[1]))))
        dropout = float(rng.uniform(0.0, 0.5))
        final = value_at(batch, lr, dropout, alpha=alpha, depends_on=depends_on)
        final = float(np.clip(final + noise * rng.standard_normal(), 0.0, 1.0))
        # Smaller batches learn faster per sample; every curve ends at the final value.
        rate = 9.0 / (1.0 + exponent / 4)
        speed = 1000.0 * math.sqrt(batch)
        steps = GRID if kind == "complete" else GRID[:4]
        params = {"log2_batch_size": exponent, "batch_size": batch, "lr": lr, "dropout": dropout}
        distributions = {
            "log2_batch_size": batch_dist,
            "batch_size": optuna.distributions.IntDistribution(batch, batch, log=True),
            "lr": lr_dist,
            "dropout": dropout_dist,
        }
        attrs = {
            "effective_batch_size": batch,
            "micro_batch_size": batch,
            "accumulation_steps": 1,
            "lr": lr,
            "samples_per_second": speed,
            "samples_seen": steps[-1],
            "train_seconds": steps[-1] / speed,
            "device": "cpu",
            "seed": i,
            "stop_reason": "pruned" if kind == "pruned" else "completed",
        }
        # The last evaluation is the final value, as bsopt's trainer reports it.
        shape = 1 - math.exp(-rate)
        curve = {s: final * (1 - math.exp(-rate * s / GRID[-1])) / shape for s in steps}
        if not detail:
            attrs, curve = {"lr": lr}, {}
        if kind == "running":
            # A worker mid-trial: asked, a few evaluations reported, never told.
            trial = study.ask(distributions)
            for step, value in curve.items():
                trial.report(value, step)
            for key, value in attrs.items():
                trial.set_user_attr(key, value)
            continue
        state = {
            "complete": optuna.trial.TrialState.COMPLETE,
            "pruned": optuna.trial.TrialState.PRUNED,
            "fail": optuna.trial.TrialState.FAIL,
        }[kind]
        frozen.append(
            optuna.trial.create_trial(
                state=state,
                value=final if kind == "complete" else None,
                params=params,
                distributions=distributions,
                user_attrs=attrs,
                intermediate_values=curve if kind != "fail" else {},
            )
        )
    # One insert per trial: ask/report/tell would commit every value separately (slow).
    study.add_trials(frozen)
    return study


if __name__ == "__main__":
    url = sys.argv[1] if len(sys.argv) > 1 else "sqlite:///storage/bsopt.db"
    built = build_study(url, noise=0.005)
    print(f"Wrote study {built.study_name!r} with {len(built.trials)} trials to {url}.")
