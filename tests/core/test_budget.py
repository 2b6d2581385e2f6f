from __future__ import annotations

import sys

import pytest

from bsopt import Budget
from bsopt.core._budget import GridCursor
from bsopt.core._stop import DivergenceCheck


def test_epoch_budget_grid_is_in_samples() -> None:
    grid = Budget(10, evals=10).grid(1437)
    assert grid.unit == "samples"
    assert grid.points == tuple(1437 * k for k in range(1, 11))
    assert grid.total == 14370


def test_sample_budget_grid_rounds_evenly() -> None:
    assert Budget(1000, "samples", evals=3).grid(50).points == (333, 667, 1000)


def test_time_budget_grid_is_in_milliseconds() -> None:
    grid = Budget(2.5, "seconds", evals=5).grid(100)
    assert grid.unit == "ms"
    assert grid.points == (500, 1000, 1500, 2000, 2500)


def test_describe_reads_like_a_user_thinks() -> None:
    assert Budget(10).describe(1437) == (
        "10 epochs = 14,370 samples; evaluate every 1,437 samples (10 evaluations)"
    )
    assert Budget(3000, "samples", evals=2).describe(1000) == (
        "3,000 samples = 3 epochs; evaluate every 1,500 samples (2 evaluations)"
    )
    assert "evaluate every 0.5 s" in Budget(1, "seconds", evals=2).describe(10)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"amount": 0}, r"Budget amount must be a positive number of epochs, but got 0"),
        ({"amount": float("nan")}, r"positive number"),
        ({"unit": "steps"}, r"Budget unit must be one of .*'steps'"),
        ({"evals": 0}, r"Budget evals must be an integer of at least 1, got 0"),
    ],
)
def test_bad_budget_is_refused(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Budget(**kwargs)  # type: ignore[arg-type]


def test_budget_smaller_than_its_evaluations_is_refused() -> None:
    with pytest.raises(ValueError, match=r"is 5 samples, fewer than the 10 evaluations"):
        Budget(5, "samples", evals=10).grid(100)


@pytest.mark.parametrize("amount", ["10", None, True, [10]])
def test_amount_of_another_type_is_named_with_the_fix(amount: object) -> None:
    with pytest.raises(
        ValueError,
        match=rf"Budget amount must be a number of epochs, but got {type(amount).__name__} .*"
        r"e\.g\. Budget\(10\) for ten epochs",
    ):
        Budget(amount)  # type: ignore[arg-type]


def test_numpy_amounts_are_numbers() -> None:
    import numpy as np

    assert Budget(np.float64(2.0)).grid(10).total == 20


def test_grid_cursor_walks_the_sample_grid() -> None:
    cursor: GridCursor[str] = GridCursor(Budget(100, "samples", evals=4).grid(50))
    assert (cursor.next_point, cursor.room, cursor.done) == (25, 25, False)
    cursor.samples_seen = 24
    assert not cursor.reached() and cursor.room == 1
    cursor.samples_seen = 60  # one step passed two points
    assert cursor.reached() and cursor.last_passed() == 50
    cursor.advance(past=cursor.last_passed())
    assert (cursor.index, cursor.next_point, cursor.room) == (2, 75, 15)
    cursor.advance()
    cursor.advance()
    assert cursor.done and cursor.next_point is None and cursor.room == sys.maxsize
    assert not cursor.reached()


def test_grid_cursor_keeps_the_tail_of_a_cut_batch_once() -> None:
    cursor: GridCursor[str] = GridCursor(Budget(10, "samples", evals=2).grid(10))
    assert cursor.take_leftover() is None
    cursor.leftover = "tail"
    assert cursor.take_leftover() == "tail"
    assert cursor.take_leftover() is None


def test_grid_cursor_on_a_time_grid_counts_milliseconds_and_never_cuts() -> None:
    cursor: GridCursor[str] = GridCursor(Budget(2, "seconds", evals=2).grid(10))
    cursor.samples_seen = 10**9
    assert cursor.timed and cursor.room == sys.maxsize
    assert not cursor.reached(999.0)
    assert cursor.reached(1000.0) and cursor.last_passed(2500.0) == 2000


def test_grid_cursor_checks_the_mean_interval_loss_and_starts_a_new_interval() -> None:
    cursor: GridCursor[str] = GridCursor(Budget(10, "samples", evals=2).grid(10))
    check = DivergenceCheck(2.0)
    assert cursor.close_interval(check) is None  # no loss added: nothing to check
    for loss in (1.0, 3.0):
        cursor.add_loss(loss)
    assert cursor.close_interval(check) is None  # the first interval's mean, 2.0
    assert (cursor.interval_loss, cursor.interval_steps) == (0.0, 0)
    cursor.add_loss(5.0)
    reason = cursor.close_interval(check)
    assert reason is not None and "training loss 5 > 2 x the first interval's 2" in reason
