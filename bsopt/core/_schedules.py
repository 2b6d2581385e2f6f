"""Learning-rate and batch-size schedules, as pure functions of training progress.

Progress is the fraction of the budget spent (samples seen over the sample budget, or
training time over the time budget), so a schedule means the same for every batch size.

Batch-size schedules change the batch only at evaluation points of the budget's grid:
every boundary lands on a step key the pruner compares, and an evaluation interval is
trained at one batch size.
"""

from __future__ import annotations

import math
from typing import Literal

LrSchedule = Literal["constant", "cosine", "step", "onecycle"]
BatchSchedule = Literal["constant", "grow", "ramp", "adaptive"]
LR_SCHEDULES: tuple[str, ...] = ("constant", "cosine", "step", "onecycle")
BATCH_SCHEDULES: tuple[str, ...] = ("constant", "grow", "ramp", "adaptive")

# Step decay: x0.1 at half and at three quarters of the budget (the classic ImageNet recipe).
STEP_MILESTONES = (0.5, 0.75)
STEP_GAMMA = 0.1
# One-cycle: rise from lr/25 to lr over 30% of the budget, then anneal to lr/1e4.
ONECYCLE_RISE = 0.3
ONECYCLE_START = 1 / 25
ONECYCLE_END = 1e-4
# Batch growth: x2 at half and at three quarters, ending at the sampled batch size.
GROW_MILESTONES = (0.5, 0.75)
GROW_FACTOR = 2
# Linear ramp from an eighth of the sampled batch, reaching it at half the budget.
RAMP_START_FRACTION = 1 / 8
RAMP_END = 0.5


def lr_factor(progress: float, schedule: LrSchedule | str, warmup: float = 0.0) -> float:
    """The multiplier of the peak learning rate at ``progress`` in [0, 1].

    ``warmup`` is the fraction of the budget over which the rate rises linearly from 0 to
    its peak; the schedule then runs over the rest of the budget. One-cycle has its own
    rise and uses ``warmup`` instead when it is positive.
    """
    if not 0.0 <= warmup < 1.0:
        raise ValueError(f"warmup must be a fraction in [0, 1), but got {warmup}.")
    if schedule not in LR_SCHEDULES:
        raise ValueError(
            f"lr_schedule must be one of {', '.join(LR_SCHEDULES)}, but got {schedule!r}."
        )
    p = min(max(progress, 0.0), 1.0)
    if schedule == "onecycle":
        rise = warmup or ONECYCLE_RISE
        if p < rise:
            return ONECYCLE_START + (1 - ONECYCLE_START) * p / rise
        anneal = 0.5 * (1 + math.cos(math.pi * (p - rise) / (1 - rise)))
        return ONECYCLE_END + (1 - ONECYCLE_END) * anneal
    if p < warmup:
        return p / warmup
    if schedule == "constant":
        return 1.0
    after = (p - warmup) / (1 - warmup)
    if schedule == "cosine":
        return 0.5 * (1 + math.cos(math.pi * after))
    return STEP_GAMMA ** sum(after >= m for m in STEP_MILESTONES)


def batch_size_at(
    point_index: int,
    n_points: int,
    *,
    schedule: BatchSchedule | str,
    final: int,
    noise_scale: float | None = None,
    minimum: int = 1,
) -> int:
    """The batch size to train with after ``point_index`` evaluations of ``n_points``.

    ``final`` is the sampled batch size: growing and ramping schedules end there, so the
    largest batch a trial uses (and its memory) is the one the search space sampled.
    ``adaptive`` follows the measured gradient noise scale, clamped to
    ``[minimum, final]``; before a first measurement it starts at ``minimum``.
    """
    if schedule not in BATCH_SCHEDULES:
        raise ValueError(
            f"batch_schedule must be one of {', '.join(BATCH_SCHEDULES)}, but got {schedule!r}."
        )
    progress = point_index / n_points
    if schedule == "constant":
        return final
    if schedule == "grow":
        # Milestones are evaluation points, so boundaries land exactly on the grid.
        milestones = [round(m * n_points) for m in GROW_MILESTONES]
        remaining = sum(point_index < m for m in milestones)
        return max(minimum, final // GROW_FACTOR**remaining)
    if schedule == "ramp":
        start = max(minimum, round(final * RAMP_START_FRACTION))
        share = min(1.0, progress / RAMP_END)
        return max(minimum, round(start + (final - start) * share))
    if noise_scale is None or not math.isfinite(noise_scale):
        return max(1, min(minimum, final))
    return int(min(max(round(noise_scale), minimum), final))
