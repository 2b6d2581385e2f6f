"""What both framework callbacks must store for the same run: a batch of 16 as 2 x 8 over two
epochs of 96 samples, evaluated four times."""

from __future__ import annotations

import optuna

GRID = [48, 96, 144, 192]
ATTRS = {
    "effective_batch_size": 16,
    "micro_batch_size": 8,
    "accumulation_steps": 2,
    "samples_seen": 192,
    "optimizer_steps": 12,
    "epochs": 2.0,
    "world_size": 1,
    "grid_overshoot": 0,
    "stop_reason": "completed",
}


def check_accumulated_run(trial: optuna.trial.FrozenTrial, **attrs: object) -> None:
    """The trial completed on the grid and stored :data:`ATTRS` and ``attrs``."""
    assert trial.state == optuna.trial.TrialState.COMPLETE
    assert sorted(trial.intermediate_values) == GRID
    assert trial.value == trial.intermediate_values[192]
    expected = ATTRS | attrs
    assert {key: trial.user_attrs[key] for key in expected} == expected
    assert trial.user_attrs["samples_per_second"] > 0
