"""The forecast of batch size and lr at a budget not searched, on studies with known answers."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import optuna
import pytest

import bsopt
from bsopt.analysis._forecast import forecast, profile
from bsopt.cli import main

# The constructed problem: the loss is L0 * (1 + (b / Bc(D))^2) * exp((log lr - log lr*)^2 / 2)
# with Bc(D) = sqrt(D) / 4 and lr*(b, D) = 0.01 * sqrt(b) * (D / 2^14)^0.25. A batch is within
# tolerance t of the best when (b / Bc)^2 <= t (nearly: the smallest batch is not quite free),
# so the batch within tolerance is sqrt(t) * Bc(D) ∝ D^0.5, and its lr ∝ D^0.5.
TOL = 0.25
LEVELS = (2**14, 2**16, 2**18)
TARGET = 8 * LEVELS[-1]


def critical(samples: float, bend: float = 0.0) -> float:
    # bend > 0: the exponent grows with D, as on the noisy quadratic model.
    return math.sqrt(samples) / 4 * math.exp(bend * math.log(samples / 2**14) ** 2)


def best_lr(batch: float, samples: float) -> float:
    return 0.01 * math.sqrt(batch) * (samples / 2**14) ** 0.25


def loss(batch: int, lr: float, samples: int, bend: float = 0.0) -> float:
    spread = math.log(lr / best_lr(batch, samples))
    return 0.5 * (1 + (batch / critical(samples, bend)) ** 2) * math.exp(spread**2 / 2)


def true_batch(samples: float, tol: float = TOL, bend: float = 0.0) -> float:
    c = critical(samples, bend)
    return c * math.sqrt((1 + tol) * (1 + (1 / c) ** 2) - 1)


def power_law_study(
    levels: tuple[int, ...] = LEVELS,
    *,
    plain: bool = False,
    direction: str = "minimize",
    lrs: int = 9,
    bend: float = 0.0,
) -> optuna.Study:
    """Trials on ``lrs`` lrs around the best at each power-of-two batch 1..1024 and budget; bsopt's
    own parameters and attributes, or (``plain``) a plain Optuna study's ``batch_size`` and
    ``lr`` parameters without user attributes but ``samples_seen``."""
    study = optuna.create_study(direction=direction)
    sign = -1.0 if direction == "maximize" else 1.0
    trials = []
    for samples in levels:
        for k in range(11):
            for step in np.linspace(-2.1, 1.9, lrs):
                lr = best_lr(2**k, samples) * math.exp(step)
                if plain:
                    params, attrs = {"batch_size": 2**k, "lr": lr}, {"samples_seen": samples}
                    dists = {
                        "batch_size": optuna.distributions.IntDistribution(1, 1024, log=True),
                        "lr": optuna.distributions.FloatDistribution(1e-6, 10.0, log=True),
                    }
                else:
                    params = {"log2_batch_size": k, "dropout": 0.1}
                    attrs = {"samples_seen": samples, "lr": lr, "stop_reason": "completed"}
                    dists = {
                        "log2_batch_size": optuna.distributions.IntDistribution(0, 10),
                        "dropout": optuna.distributions.FloatDistribution(0.0, 0.5),
                    }
                trials.append(
                    optuna.trial.create_trial(
                        params=params,
                        distributions=dists,
                        value=sign * loss(2**k, lr, samples, bend),
                        user_attrs=attrs,
                    )
                )
    study.add_trials(trials)
    return study


@pytest.mark.parametrize("plain", [False, True])
def test_forecast_recovers_the_power_law_and_the_batch_at_8x(plain: bool) -> None:
    fc = forecast(power_law_study(plain=plain), samples=TARGET, tolerance=TOL, resamples=40)
    assert fc.ok, fc.reasons
    assert fc.exponents["batch_size"].value == pytest.approx(0.5, abs=0.03)
    assert fc.batch_size == pytest.approx(true_batch(TARGET), rel=0.15)
    assert fc.interval is not None
    assert fc.interval[0] <= fc.batch_size <= fc.interval[1]
    assert fc.interval[1] / fc.interval[0] < 4
    # The lr at the forecast batch follows lr*(b, D) at that batch and budget.
    assert fc.lr == pytest.approx(best_lr(fc.batch_size, TARGET), rel=0.15)
    assert fc.exponents["lr"].value == pytest.approx(0.5, abs=0.05)
    assert [lv.samples for lv in fc.levels] == list(LEVELS)
    assert fc.samples_spent == sum(LEVELS) * 11 * 9
    assert fc.direct_samples == 3 * 11 * 9 * TARGET
    assert "Forecast for 2,097,152 samples: batch size" in fc.text


def test_a_maximised_metric_is_read_the_right_way_round() -> None:
    study = power_law_study(direction="maximize")
    fc = forecast(study, samples=TARGET, tolerance=0.1, resamples=20)
    # -loss is negative: the tolerance is a fraction of the best's size, as for accuracy.
    assert fc.exponents["batch_size"].value == pytest.approx(0.5, abs=0.05)


def test_the_profile_finds_the_best_lr_between_the_lrs_tried() -> None:
    study = power_law_study(levels=(2**16,))
    from bsopt.analysis._forecast import budget_groups, usable_trials

    [(samples, rows)] = budget_groups(usable_trials(study))
    _, values, log_lr, logged = profile(rows)
    assert logged
    assert np.exp(log_lr) == pytest.approx([best_lr(2**k, samples) for k in range(11)], rel=1e-6)
    expected = [math.log(loss(2**k, best_lr(2**k, samples), samples)) for k in range(11)]
    assert values == pytest.approx(expected, rel=1e-6)


def test_a_bend_in_log_d_widens_the_interval_to_hold_the_truth() -> None:
    # The batch within tolerance bends upwards in log D, as on the noisy quadratic model: the
    # line through three budgets lands low at 8x, and the interval must say so.
    bend = 0.01
    truth = true_batch(TARGET, bend=bend)
    straight = forecast(power_law_study(), samples=TARGET, tolerance=TOL, resamples=20)
    bent = forecast(power_law_study(bend=bend), samples=TARGET, tolerance=TOL, resamples=20)
    assert bent.batch_size is not None and bent.interval is not None
    assert straight.interval is not None
    assert bent.batch_size < 0.95 * truth  # the line alone lands low ...
    assert bent.interval[0] <= truth <= bent.interval[1]  # ... its interval holds it
    assert straight.interval[1] / straight.interval[0] < 1.05  # no bend: as narrow as before
    assert bent.interval[1] / bent.interval[0] > 1.2


def test_a_batch_whose_lrs_missed_its_best_is_held_to_its_neighbours() -> None:
    # A best over the lrs tried is never below the true best: where no lr came near, the
    # batch's value is taken down to the mean of its neighbours'.
    from bsopt.analysis._forecast import budget_groups, usable_trials

    study = power_law_study(levels=(2**16,))
    [(samples, rows)] = budget_groups(usable_trials(study))
    far = np.abs(np.log(rows[:, 1] / [best_lr(b, samples) for b in rows[:, 0]])) > 1.0
    sparse = rows[(rows[:, 0] != 16) | far]  # batch 16 keeps only lrs e-fold off its best
    _, values, _, _ = profile(sparse)
    k = 4  # batch 16
    assert values[k] == pytest.approx((values[k - 1] + values[k + 1]) / 2)
    truth = math.log(loss(16, best_lr(16, samples), samples))
    raw = math.log(float(sparse[sparse[:, 0] == 16][:, 2].min()))
    assert abs(values[k] - truth) < 0.1 * abs(raw - truth)


def test_the_profile_finds_the_best_lr_through_noise() -> None:
    # 40 lrs within the parabola's window of the best lr 0.01, each value off by 1% noise:
    # the lowest trial's lr is wherever the noise put it, the fitted parabola's is near 0.01,
    # and the value is never above the lowest trial's (which bounds the best from above).
    rng = np.random.default_rng(0)
    log_lr = rng.uniform(-0.25, 0.25, 40) + math.log(0.01)
    noisy = np.exp((log_lr - math.log(0.01)) ** 2 * 4) * (1 + 0.01 * rng.standard_normal(40))
    rows = np.column_stack([np.full(40, 8.0), np.exp(log_lr), noisy])
    _, values, fitted_lr, _ = profile(rows)
    lowest = float(np.exp(log_lr[np.argmin(noisy)]))
    assert abs(math.log(math.exp(fitted_lr[0]) / 0.01)) < 0.5 * abs(math.log(lowest / 0.01))
    assert values[0] <= math.log(noisy.min())


def test_noise_above_the_tolerance_is_refused_as_too_wide_and_says_what_helps() -> None:
    # Every value off by 5% noise, a 2% tolerance: the budgets' batch within tolerance
    # jumps, the interval passes 4x, and the reason names what would and would not help.
    rng = np.random.default_rng(0)
    study = optuna.create_study()
    for t in power_law_study().trials:
        noisy = t.value * (1 + 0.05 * rng.standard_normal())  # type: ignore[operator]
        study.add_trial(
            optuna.trial.create_trial(
                params=t.params, distributions=t.distributions, value=noisy,
                user_attrs=dict(t.user_attrs),
            )
        )  # fmt: skip
    fc = forecast(study, samples=TARGET, tolerance=0.02, resamples=20)
    assert not fc.ok
    [reason] = [r for r in fc.reasons if r.startswith("the interval is")]
    assert fc.interval is not None and fc.interval[1] / fc.interval[0] > 4
    assert "only a coarser tolerance would" in reason


def test_too_few_budgets_is_said_and_no_batch_is_claimed() -> None:
    fc = forecast(power_law_study(levels=LEVELS[:2]), samples=TARGET, tolerance=TOL)
    assert fc.status == "no fit"
    assert not fc.ok
    assert "too few budgets" in fc.reasons[0]
    assert "2 distinct budget(s)" in fc.reasons[0]
    assert fc.text.startswith("No forecast for 2,097,152 samples: the fit does not hold.")


def test_no_trend_is_said() -> None:
    # Every level the same study: the batch within tolerance does not move with D.
    study = optuna.create_study()
    for samples in LEVELS:
        for trial in power_law_study(levels=(2**16,)).trials:
            trial.user_attrs["samples_seen"] = samples
            study.add_trial(
                optuna.trial.create_trial(
                    params=trial.params,
                    distributions=trial.distributions,
                    value=trial.value,
                    user_attrs=dict(trial.user_attrs),
                )
            )
    fc = forecast(study, samples=TARGET, tolerance=TOL, resamples=20)
    assert fc.status == "no fit"
    assert any(reason.startswith("no trend") for reason in fc.reasons)


def test_pruned_and_early_stopped_trials_do_not_count() -> None:
    study = power_law_study()
    n_before = len(forecast(study, samples=TARGET, tolerance=TOL, resamples=10).levels)
    # A trial that reached a target early ran no complete budget: it is left out.
    study.add_trial(
        optuna.trial.create_trial(
            params={"log2_batch_size": 3, "dropout": 0.1},
            distributions=study.trials[0].distributions,
            value=0.0,
            user_attrs={"samples_seen": 100, "lr": 0.01, "stop_reason": "reached target"},
        )
    )
    fc = forecast(study, samples=TARGET, tolerance=TOL, resamples=10)
    assert len(fc.levels) == n_before == 3


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"samples": 0}, "samples must be a whole number"),
        ({"samples": 1.5}, "samples must be a whole number"),
        ({"samples": 10, "tolerance": 1.0}, r"tolerance must be a fraction in \[0, 1\)"),
        ({"samples": 10, "resamples": 2}, "resamples must be an integer of at least 10"),
    ],
)
def test_bad_arguments_are_refused(options: dict[str, float], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        forecast(optuna.create_study(), **options)  # type: ignore[arg-type]


def test_public_names() -> None:
    assert bsopt.forecast is forecast
    assert bsopt.Forecast is bsopt.analysis.Forecast


@pytest.fixture
def journal_url(tmp_path: Path) -> str:
    # A journal file takes a few hundred trials at once; SQLite would commit each one.
    return f"journal:///{tmp_path / 'bsopt.log'}"


def _stored(url: str) -> None:
    study = optuna.create_study(study_name="levels", storage=bsopt.open_storage(url))
    study.add_trials(power_law_study(lrs=5).trials)


def test_cli_forecast_prints_the_forecast(
    journal_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    _stored(journal_url)
    args = ["forecast", "--storage", journal_url, "--study", "levels"]
    assert main([*args, "--samples", str(TARGET), "--tolerance", str(TOL)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("Forecast for 2,097,152 samples: batch size ")
    assert "Exponent of batch size in D: 0.5" in out
    assert "searched at 262,144 samples: 55 complete trials" in out


@pytest.mark.parametrize(
    ("bad", "named"),
    [(["--samples", "0"], "--samples"), (["--samples", "10", "--tolerance", "2"], "--tolerance")],
)
def test_cli_forecast_bad_input_is_one_line_naming_the_option(
    sqlite_url: str, capsys: pytest.CaptureFixture[str], bad: list[str], named: str
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["forecast", "--storage", sqlite_url, "--study", "levels", *bad])
    assert exit_info.value.code == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert len(errors) == 1
    assert f"argument {named}" in errors[0]


def test_cli_forecast_of_a_missing_study_is_one_line(
    sqlite_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    optuna.create_study(study_name="levels", storage=sqlite_url)
    assert main(["forecast", "--storage", sqlite_url, "--study", "nope", "--samples", "9"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert "holds no study named 'nope'" in err[0]
