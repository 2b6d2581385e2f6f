"""The report's forecast plot: per-budget points, the power law and its band to 8x."""

from __future__ import annotations

import math

import numpy as np
import optuna

from bsopt.report._report import plot_forecast


def _study(levels: tuple[int, ...]) -> optuna.Study:
    # The batch within tolerance grows as sqrt(D): loss = (1 + (b / Bc)^2) * exp(spread^2 / 2).
    study = optuna.create_study()
    dists = {"log2_batch_size": optuna.distributions.IntDistribution(0, 10)}
    for samples in levels:
        for k in range(11):
            for step in np.linspace(-2.1, 1.9, 5):
                loss = (1 + (2**k * 4 / math.sqrt(samples)) ** 2) * math.exp(step**2 / 2)
                study.add_trial(
                    optuna.trial.create_trial(
                        params={"log2_batch_size": k},
                        distributions=dists,
                        value=loss,
                        user_attrs={"samples_seen": samples, "lr": 0.01 * math.exp(step)},
                    )
                )
    return study


def test_the_plot_shows_each_budget_and_the_forecast_at_8x() -> None:
    fig = plot_forecast(_study((2**14, 2**16, 2**18)))
    left, right = fig.axes
    # Five lrs per batch size do not resolve a 1% tolerance: the title says the fit does not
    # hold, and the plot still shows what the unsupported extrapolation says.
    assert left.get_title() == "No forecast for 2,097,152 samples: the fit does not hold."
    assert left.get_xscale() == right.get_xscale() == "log"
    # The three measured budgets, then the forecast star at 8x the largest.
    measured, star = left.collections[0], left.collections[-1]
    assert [round(x) for x, _ in measured.get_offsets()] == [2**14, 2**16, 2**18]
    assert round(star.get_offsets()[0][0]) == 8 * 2**18
    labels = left.get_legend_handles_labels()[1]
    assert "95% band" in labels


def test_one_budget_says_there_is_no_forecast() -> None:
    fig = plot_forecast(_study((2**14,)))
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert any("Trials at one budget: no forecast" in t for t in texts)
