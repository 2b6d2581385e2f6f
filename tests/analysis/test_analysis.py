"""Known answers for the analysis: importance, the lr-batch fit, the verdict."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path
import statistics
from types import ModuleType

import numpy as np
import optuna
from optuna.distributions import FloatDistribution, IntDistribution
import pytest
from scipy import stats

import bsopt
from bsopt.analysis._findings import verdict_lines
from bsopt.analysis._importance import EVALUATORS
from bsopt.analysis._text import plain

ROOT = Path(__file__).resolve().parents[2]


def _module(name: str, path: Path) -> ModuleType:
    """A module loaded from its file (studies/ and benchmarks/ are not packages)."""
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


synthetic = _module("synthetic_analysis", ROOT / "studies" / "synthetic_analysis.py")


def _nqm() -> ModuleType:
    return _module("bench_nqm", ROOT / "benchmarks" / "nqm.py")


@pytest.mark.parametrize(("depends_on", "expected"), [("batch_size", "batch_size"), ("lr", "lr")])
def test_importance_ranks_the_only_parameter_the_objective_depends_on_first(
    sqlite_url: str, depends_on: str, expected: str
) -> None:
    synthetic.build_study(
        sqlite_url, "one", n_trials=40, depends_on=depends_on, mixed=False, detail=False
    )
    importances = bsopt.param_importances("one", storage=sqlite_url, seeds=2)
    for evaluator in EVALUATORS:
        ranking = importances.ranking(evaluator)
        assert ranking[0] == expected, (evaluator, ranking)
        # The searched exponent is reported under the stable name; the record is not counted.
        assert sorted(ranking) == ["batch_size", "dropout", "lr"]
    rows = {(r.evaluator, r.param): r for r in importances.rows}
    top = rows[("fANOVA", expected)]
    assert top.n_trials == 40 and top.n_seeds == 2 and top.mean > 0.5
    assert rows[("PED-ANOVA", expected)].n_seeds == 1
    assert "batch_size" in importances.to_markdown()


def _add(study: optuna.Study, params: dict[str, float], value: float) -> None:
    distributions = {
        "lr": FloatDistribution(1e-4, 1e-1, log=True),
        "a_warmup": FloatDistribution(0.0, 0.5),
        "log2_batch_size": IntDistribution(4, 8),
    }
    study.add_trial(
        optuna.trial.create_trial(
            value=value,
            params=params,
            distributions={k: distributions[k] for k in params},
        )
    )


def test_a_conditional_parameter_is_evaluated_on_the_trials_that_have_it(
    sqlite_url: str,
) -> None:
    # "a_warmup" sorts before the common parameters: Optuna's MDI evaluator mislabels its
    # columns unless the names are passed sorted; this catches a regression of that.
    study = optuna.create_study(storage=sqlite_url, study_name="cond", direction="maximize")
    rng = np.random.default_rng(0)
    for i in range(40):
        lr = float(10 ** rng.uniform(-4, -1))
        exponent = int(rng.integers(4, 9))
        if i % 2:
            warmup = float(rng.uniform(0, 0.5))
            params = {"lr": lr, "log2_batch_size": exponent, "a_warmup": warmup}
            _add(study, params, 0.9 - 4 * (warmup - 0.3) ** 2)
        else:
            _add(study, {"lr": lr, "log2_batch_size": exponent}, 0.5 + 0.01 * exponent)
    importances = bsopt.param_importances(study, seeds=2)
    cond = [r for r in importances.rows if r.param == "a_warmup"]
    assert {r.evaluator for r in cond} == set(EVALUATORS)
    for row in cond:
        assert row.conditional and row.n_trials == 20
    for evaluator in ("fANOVA", "MDI forest"):
        (row,) = [r for r in cond if r.evaluator == evaluator]
        assert row.mean > 0.6, row
    common = [r for r in importances.rows if r.param == "lr"]
    assert all(r.n_trials == 40 and not r.conditional for r in common)
    assert any("Conditional parameters (a_warmup)" in n for n in importances.notes)
    assert "*(conditional)*" in importances.to_markdown()


def _interaction_study(url: str, *, pure: bool) -> optuna.Study:
    """60 random trials over (batch size, lr, dropout). ``pure``: the value is lr × dropout
    centred, so neither has a main effect and batch size none at all; else lr alone."""
    study = optuna.create_study(storage=url, study_name=f"pure{pure}", direction="maximize")
    dist = {
        "log2_batch_size": IntDistribution(4, 8),
        "lr": FloatDistribution(1e-4, 1e-1, log=True),
        "dropout": FloatDistribution(0.0, 0.5),
    }
    rng = np.random.default_rng(1)
    for _ in range(60):
        u, v = rng.uniform(0, 1, size=2)
        params = {"log2_batch_size": int(rng.integers(4, 9)), "lr": 10 ** (-4 + 3 * u),
                  "dropout": 0.5 * v}  # fmt: skip
        value = (u - 0.5) * (v - 0.5) if pure else -((u - 0.5) ** 2)
        study.add_trial(optuna.trial.create_trial(value=value, params=params, distributions=dist))
    return study


def test_importance_reports_a_planted_interaction(sqlite_url: str) -> None:
    importances = bsopt.param_importances(_interaction_study(sqlite_url, pure=True), seeds=2)
    i = importances.interactions
    assert i is not None
    # Main effects explain little of a pure product; the pair is named and explains more.
    assert i.main_share < 0.6 and set(i.pair or ()) == {"lr", "dropout"}
    assert i.pair_share > 0.3
    notes = importances.to_markdown()
    assert f"Main effects explain {100 * i.main_share:.0f}% of the variance" in notes
    assert "the table's shares are of that part only" in notes
    assert "Strongest interaction: dropout × lr" in notes
    # Here the evaluators do not agree on the first parameter, and the notes say so.
    assert i.disagree() and "The evaluators disagree (PED-ANOVA ranks" in notes
    # Without an interaction: main effects explain most, and no pair is named.
    plain_study = _interaction_study(sqlite_url, pure=False)
    additive = bsopt.param_importances(plain_study, seeds=2).interactions
    assert additive is not None and additive.main_share > 0.8
    assert additive.pair_share < 0.1
    assert additive.leaders and {p for _, p in additive.leaders} == {"lr"}
    assert not additive.disagree()


def test_importance_says_when_there_are_too_few_trials(sqlite_url: str) -> None:
    study = synthetic.build_study(sqlite_url, "few", n_trials=3, mixed=False, detail=False)
    importances = bsopt.param_importances(study)
    assert importances.rows == ()
    assert "Too few completed trials for importance: 3" in importances.notes[0]


def test_param_importances_rejects_unknown_evaluators(sqlite_url: str) -> None:
    with pytest.raises(ValueError, match="evaluators must be chosen from") as e:
        bsopt.param_importances("x", storage=sqlite_url, evaluators=["SHAP"])
    assert "'SHAP'" in str(e.value)
    with pytest.raises(ValueError, match="seeds must be an integer >= 1, but got 0"):
        bsopt.param_importances("x", storage=sqlite_url, seeds=0)


def test_fit_lr_scaling_is_exact_on_exact_points() -> None:
    fit = bsopt.fit_lr_scaling([(b, 0.01 * b**0.5) for b in (16, 32, 64, 128)])
    assert fit is not None
    assert fit.slope == pytest.approx(0.5, abs=1e-12)
    assert fit.stderr == pytest.approx(0.0, abs=1e-9)
    assert fit.lr_at(64) == pytest.approx(0.08)
    assert fit.critical_batch_size is None
    assert "square-root" in fit.rule()
    two = bsopt.fit_lr_scaling([(16, 0.1), (32, 0.2)])
    assert two is not None and two.slope == pytest.approx(1.0) and two.stderr is None
    assert "too few batch sizes" in two.rule()
    assert bsopt.fit_lr_scaling([(16, 0.1), (16, 0.2)]) is None


def test_the_rule_is_named_only_when_the_interval_excludes_the_others() -> None:
    # Four noisy points with slope ~0.5: 2 degrees of freedom, t = 4.30, so the 95% interval
    # is wide and holds more than one rule.
    noisy = [(16, 0.010), (32, 0.021), (64, 0.015), (128, 0.031)]
    fit = bsopt.fit_lr_scaling(noisy)
    assert fit is not None and fit.interval is not None and fit.stderr is not None
    from scipy import stats

    half = stats.t.ppf(0.975, 2) * fit.stderr
    assert fit.interval == pytest.approx((fit.slope - half, fit.slope + half))
    assert fit.interval[0] < 0.5 < fit.interval[1] and fit.interval[1] > 1.0
    assert fit.rule().startswith(
        "the data cannot tell apart the linear rule, the square-root rule and no coupling"
    )
    assert "consistent with" not in fit.rule()


def test_two_regimes_find_the_critical_batch_size_of_exact_points() -> None:
    # lr* = 1e-3 B up to 256, then flat at 0.256: the kink is found, the slope below is 1.
    points = [(b, 1e-3 * min(b, 256)) for b in (16, 32, 64, 128, 256, 512, 1024, 2048)]
    fit = bsopt.fit_lr_scaling(points)
    assert fit is not None and fit.critical_batch_size is not None
    assert fit.critical_batch_size == pytest.approx(256, rel=0.05)
    assert fit.slope == pytest.approx(1.0, abs=0.02)
    assert fit.lr_at(4096) == pytest.approx(0.256, rel=0.05)
    assert fit.line_slope is not None and fit.line_slope < 0.8  # one line would bend it


@pytest.mark.slow
def test_the_critical_batch_size_of_a_noisy_quadratic_model(sqlite_url: str) -> None:
    # Known answer (Zhang et al. 2019): on the NQM lr* grows as B up to a critical batch and
    # is flat above it. A random search (30 lrs per batch size) stored as a study; the
    # analysis must find the kink within 2x of the truth and the slope below it within 0.2
    # of 1. Over seeds 0-9 the fit found 188-400 for a truth of 259 and slopes 0.83-1.05.
    nqm = _nqm()
    h = nqm.curvatures(1000)
    samples = 2**18
    truth = nqm.critical_batch(samples, h)
    assert 200 < truth < 330
    study = optuna.create_study(storage=sqlite_url, study_name="nqm", direction="minimize")
    dist = {"log2_batch_size": IntDistribution(3, 12), "lr": FloatDistribution(1e-3, 3, log=True)}
    batches = [2**k for k in range(3, 13)]
    study.add_trials(
        [
            optuna.trial.create_trial(
                value=loss,
                params={"log2_batch_size": int(math.log2(b)), "lr": lr},
                distributions=dist,
            )
            for b, lr, loss in nqm.random_search(batches, 30, (1e-3, 3.0), samples, h, seed=1)
        ]
    )
    analysis = bsopt.analyze_batch_sizes(study)
    fit = analysis.lr_fit
    assert fit is not None and fit.critical_batch_size is not None
    assert truth / 2 <= fit.critical_batch_size <= 2 * truth
    assert fit.slope == pytest.approx(1.0, abs=0.2)
    assert fit.kink_p_value is not None and fit.kink_p_value < 0.05
    assert f"**Critical batch size ≈ {fit.critical_batch_size:,.0f}**" in analysis.verdict
    assert "beyond it the best lr stays flat" in analysis.verdict


def test_mccandlish_critical_batch_from_samples_to_target() -> None:
    # E(B) = E_min + S_min B with E_min = 2,000 samples, S_min = 10 steps: B_crit = 200.
    points = [(b, 2000 + 10 * b) for b in (16, 32, 64, 128, 256, 512)]
    fit = bsopt.fit_critical_batch(points)
    assert fit is not None
    assert fit.critical_batch_size == pytest.approx(200)
    assert fit.e_min == pytest.approx(2000) and fit.s_min == pytest.approx(10)
    # Samples that do not grow with the batch give no critical batch size.
    assert bsopt.fit_critical_batch([(16, 1400), (32, 1400), (64, 2000), (128, 1400)]) is None
    assert bsopt.fit_critical_batch([(16, 100), (32, 200)]) is None


@pytest.mark.parametrize(("alpha", "rule"), [(1.0, "linear rule"), (0.5, "square-root rule")])
def test_lr_batch_fit_recovers_the_constructed_slope(
    sqlite_url: str, alpha: float, rule: str
) -> None:
    # 150 random trials, best lr constructed as 1e-3 * (b/16)**alpha. Over seeds 0-19 the
    # fitted slope stayed within 0.12 of alpha (100 trials: 0.24); the test allows 0.15.
    synthetic.build_study(sqlite_url, "fit", n_trials=150, alpha=alpha, mixed=False, detail=False)
    analysis = bsopt.analyze_batch_sizes("fit", storage=sqlite_url)
    fit = analysis.lr_fit
    assert fit is not None
    assert fit.slope == pytest.approx(alpha, abs=0.15)
    assert fit.stderr is not None and fit.stderr < 0.15
    assert [b for b, _ in fit.points] == [16, 32, 64, 128, 256]
    assert rule in fit.rule() and "excludes the other rules" in fit.rule()
    assert fit.critical_batch_size is None  # a power law: no kink
    assert f"Best lr scales as batch^{fit.slope:.2f}" in analysis.verdict
    assert analysis.best_batch_size == 64


def test_verdict_says_too_few_trials_on_a_tiny_study(sqlite_url: str) -> None:
    study = synthetic.build_study(sqlite_url, "tiny", n_trials=3, mixed=False)
    analysis = bsopt.analyze_batch_sizes(study)
    assert not analysis.enough_data
    assert analysis.verdict.startswith("**Too few trials to tell** which batch size is best")
    assert "at least 3 needed" in analysis.verdict
    assert "3 trials — 3 complete, 0 pruned, 0 failed" in analysis.verdict


def test_verdict_on_a_study_without_completed_trials(sqlite_url: str) -> None:
    study = optuna.create_study(storage=sqlite_url, study_name="empty")
    analysis = bsopt.analyze_batch_sizes(study)
    assert analysis.best_batch_size is None and analysis.per_batch == ()
    assert analysis.verdict.startswith("**Too few trials to tell**: no completed trial yet")


@pytest.fixture(scope="module")
def mixed_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    url = f"sqlite:///{tmp_path_factory.mktemp('mixed') / 'mixed.db'}"
    synthetic.build_study(url, "mixed", n_trials=40, noise=0.002)
    return url


def test_batch_size_analysis_of_a_mixed_study(mixed_url: str) -> None:
    analysis = bsopt.analyze_batch_sizes("mixed", storage=mixed_url)
    assert analysis.counts == {"COMPLETE": 40, "PRUNED": 2, "FAIL": 1, "RUNNING": 1}
    assert analysis.enough_data and analysis.best_batch_size == 64
    assert analysis.metric == "validation accuracy" and analysis.fraction
    by_size = {s.batch_size: s for s in analysis.per_batch}
    assert sorted(by_size) == [16, 32, 64, 128, 256]
    assert sum(s.n_complete for s in by_size.values()) == 40
    assert sum(s.n_pruned for s in by_size.values()) == 2
    assert sum(s.n_failed for s in by_size.values()) == 1
    assert sum(s.n_running for s in by_size.values()) == 1
    best = by_size[64]
    assert best.best is not None and best.top_mean is not None and best.best >= best.top_mean
    # Throughput was constructed as 1000 * sqrt(b).
    assert by_size[256].samples_per_second == pytest.approx(16000)
    # Default target: the worst per-batch-size best, reached by every batch size's best trial.
    assert analysis.target == pytest.approx(min(s.best for s in by_size.values() if s.best))
    assert all(s.samples_to_target is not None for s in by_size.values())
    s64 = by_size[64]
    assert s64.seconds_to_target == pytest.approx((s64.samples_to_target or 0) / 8000)
    verdict = analysis.verdict
    # The search selects the leader; the same values cannot also test it.
    assert verdict.startswith("Leading in the search: **64**")
    assert "Not yet tested" in verdict and "Best batch size" not in verdict
    assert "Each batch size against 64" in verdict and "1 running or waiting" in verdict
    assert {s.status for s in by_size.values()} == {"leader", "untested"}
    assert all(s.p_value is None for s in by_size.values())
    assert "Gradient noise scale: not recorded" in verdict
    assert "| 64 |" in analysis.to_markdown()


def test_a_target_nobody_reached_leaves_time_to_target_empty(mixed_url: str) -> None:
    analysis = bsopt.analyze_batch_sizes("mixed", storage=mixed_url, target=0.999)
    assert all(s.samples_to_target is None for s in analysis.per_batch)
    assert "Time to target" not in analysis.verdict


def _planted(
    study: optuna.Study,
    values: dict[int, list[float]],
    *,
    speed: dict[int, float] | None = None,
    lr: float = 0.01,
    user_attrs: dict[str, float] | None = None,
) -> None:
    dist = {"log2_batch_size": IntDistribution(4, 8), "lr": FloatDistribution(1e-3, 1e-1)}
    for exponent, vals in values.items():
        attrs = {"samples_per_second": speed[exponent]} if speed else {}
        attrs.update(user_attrs or {})
        for v in vals:
            study.add_trial(
                optuna.trial.create_trial(
                    value=v,
                    params={"log2_batch_size": exponent, "lr": lr},
                    distributions=dist,
                    user_attrs=attrs,
                )
            )


def _reruns(study: optuna.Study, values: dict[int, list[float]]) -> None:
    """Confirm reruns of each batch size's best search trial, stored where confirm stores
    them (the linked study ``<name>:confirm``)."""
    from bsopt.runs._confirm import open_confirm_study

    reruns = open_confirm_study(study)
    for exponent, vals in values.items():
        ranked = [
            t
            for t in study.trials
            if t.params["log2_batch_size"] == exponent and t.value is not None
        ]
        best = max(ranked, key=lambda t: t.value or 0.0)
        for k, v in enumerate(vals):
            reruns.add_trial(
                optuna.trial.create_trial(
                    value=v,
                    params=best.params,
                    distributions=best.distributions,
                    user_attrs={**best.user_attrs, "confirm_of": best.number, "confirm_seed": k},
                )
            )


def test_the_verdict_calls_differences_within_the_spread_a_tie(sqlite_url: str) -> None:
    study = optuna.create_study(storage=sqlite_url, study_name="tie", direction="maximize")
    _planted(study, {4: [0.90, 0.86, 0.82], 5: [0.89, 0.85, 0.81]})
    _reruns(study, {4: [0.90, 0.86, 0.82], 5: [0.89, 0.85, 0.81]})
    analysis = bsopt.analyze_batch_sizes(study)
    assert analysis.basis == "confirm"
    assert analysis.best_batch_size == 16 and analysis.tied == (16, 32)
    assert analysis.stats(32).status == "tie"
    assert analysis.stats(32).difference == pytest.approx(-0.01)
    # Welch's t with 4 degrees of freedom, one comparison (Holm leaves p as it is).
    t = 0.01 / (2 * 0.04**2 / 3) ** 0.5
    assert analysis.stats(32).p_value == pytest.approx(2 * stats.t.sf(t, 4))
    assert analysis.verdict.startswith("**Tie**: the confirm reruns cannot separate 16 from 32")
    # No throughput stored: the tie cannot be broken, and the verdict says so.
    assert analysis.cost_basis is None and analysis.recommended_batch_size == 16
    assert "No cost was measured for all of them" in analysis.verdict
    assert "32 −1 pp [" in analysis.verdict and "— cannot be separated" in analysis.verdict


def _exact_tie(url: str) -> optuna.Study:
    """352/360 validation images at both 32 and 64, three times each; 64 trains faster."""
    study = optuna.create_study(storage=url, study_name="exact", direction="maximize")
    study.set_user_attr("metric", "accuracy")
    acc = 352 / 360
    values = {
        5: [acc, acc - 1 / 360, acc - 2 / 360],
        6: [acc, acc - 1 / 360, acc - 2 / 360],
        7: [0.90, 0.89, 0.88],
    }
    _planted(study, values, speed={5: 4000.0, 6: 7000.0, 7: 9000.0})
    _reruns(study, values)
    return study


def test_an_exact_tie_names_the_cheaper_batch_size(sqlite_url: str) -> None:
    study = _exact_tie(sqlite_url)
    analysis = bsopt.analyze_batch_sizes(study)
    assert analysis.tied == (32, 64)
    # The exact tie goes to the cheaper one, whichever comes first.
    assert analysis.best_batch_size == 64 and analysis.recommended_batch_size == 64
    assert analysis.cost_basis == "samples/s"
    verdict = analysis.verdict
    assert verdict.startswith("**Tie**: the confirm reruns cannot separate 64 from 32")
    assert "The cheaper choice is **64** by measured cost (64: 7,000 samples/s; 32: 4,000" in (
        verdict
    )
    assert analysis.stats(128).status == "worse" and "128 −8.5 pp [" in verdict
    assert "32 0 pp [−0.63, +0.63] — cannot be separated (adjusted p = 1)" in verdict


def test_every_batch_size_is_compared_with_the_best(sqlite_url: str) -> None:
    # 128 and 16 are as close to 64 as 32 is: all three are ties, not only the runner-up.
    study = optuna.create_study(storage=sqlite_url, study_name="all", direction="maximize")
    study.set_user_attr("metric", "accuracy")
    study.set_user_attr("metric_unit", "fraction")
    values = {
        4: [0.965, 0.955, 0.950],
        5: [0.975, 0.962, 0.955],
        6: [0.978, 0.965, 0.955],
        7: [0.974, 0.963, 0.956],
        8: [0.90, 0.89, 0.885],
    }
    _planted(study, values, speed={4: 2000.0, 5: 3000.0, 6: 5000.0, 7: 8000.0, 8: 12000.0})
    _reruns(study, values)
    analysis = bsopt.analyze_batch_sizes(study)
    assert analysis.best_batch_size == 64
    assert set(analysis.tied) == {16, 32, 64, 128}
    assert analysis.stats(256).status == "worse"
    assert analysis.recommended_batch_size == 128
    assert "cannot separate 64 from 16, 32 and 128" in analysis.verdict


def test_a_clear_winner_is_named_without_a_tie(sqlite_url: str) -> None:
    study = optuna.create_study(storage=sqlite_url, study_name="clear", direction="maximize")
    _planted(study, {5: [0.95, 0.949, 0.948], 6: [0.90, 0.899, 0.897]})
    assert bsopt.analyze_batch_sizes(study).findings.headline.kind == "leading"
    _reruns(study, {5: [0.95, 0.949, 0.948], 6: [0.90, 0.899, 0.897]})
    analysis = bsopt.analyze_batch_sizes(study)
    assert analysis.tied == (32,) and analysis.stats(64).status == "worse"
    assert analysis.verdict.startswith("Best batch size for this model: **32**")
    assert "every other batch size rerun is worse (Holm-adjusted p < 0.05)" in analysis.verdict
    # The reruns live in their own study: the search study is as it was.
    assert len(study.trials) == 6 and study.best_trial.number == 0


def test_holm_corrects_across_the_comparisons(sqlite_url: str) -> None:
    # Each of 16 and 64 alone is worse than 32 at p < 0.05, but not after Holm's correction.
    study = optuna.create_study(storage=sqlite_url, study_name="holm", direction="maximize")
    search = {4: [0.90, 0.89, 0.88], 5: [0.95, 0.94, 0.93], 6: [0.90, 0.89, 0.88]}
    _planted(study, search)
    lead = [0.950, 0.940, 0.930, 0.945, 0.935]
    _reruns(study, {5: lead, 4: [v - 0.0135 for v in lead], 6: [v - 0.0125 for v in lead]})
    analysis = bsopt.analyze_batch_sizes(study)
    raw = {b: analysis.stats(b).p_value for b in (16, 64)}
    p16 = 2 * stats.t.sf(0.0135 / (2 * statistics.variance(lead) / 5) ** 0.5, 8)
    p64 = 2 * stats.t.sf(0.0125 / (2 * statistics.variance(lead) / 5) ** 0.5, 8)
    assert p16 < p64 < 0.05 < 2 * p16
    # Holm: the smaller p times 2, the larger times 1 but never below the one before.
    assert raw[16] == pytest.approx(2 * p16) and raw[64] == pytest.approx(max(2 * p16, p64))
    assert analysis.stats(16).status == analysis.stats(64).status == "tie"


@pytest.mark.parametrize(
    ("attrs", "direction", "values", "pp"),
    [
        ({"metric": "loss"}, "minimize", [0.30, 0.31, 0.32], False),
        ({"metric": "mae", "metric_unit": "value"}, "minimize", [0.30, 0.31, 0.32], False),
        ({"metric": "r2", "metric_unit": "value"}, "maximize", [0.80, 0.79, 0.78], False),
        ({"metric": "roc_auc", "metric_unit": "fraction"}, "maximize", [0.8, 0.79, 0.78], True),
        ({}, "maximize", [0.80, 0.79, 0.78], True),  # an old study: judged from the values
    ],
)
def test_percentage_points_only_for_fractions(
    sqlite_url: str, attrs: dict[str, str], direction: str, values: list[float], pp: bool
) -> None:
    study = optuna.create_study(storage=sqlite_url, study_name="units", direction=direction)
    for key, value in attrs.items():
        study.set_user_attr(key, value)
    worse = [v + (0.2 if direction == "minimize" else -0.2) for v in values]
    _planted(study, {5: values, 6: worse})
    analysis = bsopt.analyze_batch_sizes(study)
    assert analysis.fraction is pp
    assert (" pp" in analysis.verdict) is pp
    gap = "−20 pp" if pp else ("+0.2" if direction == "minimize" else "−0.2")
    assert f"64 {gap} [" in analysis.verdict


def test_reruns_that_contradict_the_search_leave_it_unsettled(sqlite_url: str) -> None:
    # Reruns stored in the search study itself, as bsopt did before confirm studies.
    study = optuna.create_study(storage=sqlite_url, study_name="conf", direction="maximize")
    study.set_user_attr("metric", "accuracy")
    _planted(study, {5: [0.98, 0.95, 0.94], 6: [0.975, 0.96, 0.955], 7: [0.9, 0.89]})
    reruns = {5: (0, [0.970, 0.966, 0.972, 0.968, 0.969]), 6: (3, [0.974, 0.975, 0.973, 0.976])}
    for exponent, (of, vals) in reruns.items():
        _planted(study, {exponent: vals}, user_attrs={"confirm_of": of})
    analysis = bsopt.analyze_batch_sizes(study)
    assert analysis.basis == "confirm" and analysis.n_confirm == 9
    # The search selected 32 (0.98, a lucky trial); its reruns lose to 64's.
    assert analysis.best_batch_size == 32 and analysis.stats(64).status == "better"
    s32, s64 = analysis.stats(32), analysis.stats(64)
    assert s32.n_complete == 3 and s32.best == 0.98  # reruns stay out of the search figures
    assert s32.compared == (0.970, 0.966, 0.972, 0.968, 0.969) and s32.confirm_of == (0,)
    assert s64.compared_mean == pytest.approx(0.9745)
    assert s64.interval is not None and s64.interval[0] < 0.9745 < s64.interval[1]
    assert analysis.findings.headline.kind == "contradicted"
    assert analysis.verdict.startswith(
        "**Not settled**: the search selected 32, but in the confirm reruns 64 did better"
    )
    assert "Best batch size" not in analysis.verdict
    assert "8 trials — 8 complete" in analysis.verdict and "9 confirm reruns" in analysis.verdict
    assert "Not compared (no confirm reruns, or fewer than two): 128" in analysis.verdict
    importances = bsopt.param_importances(study, min_trials=2)
    assert all(r.n_trials == 8 for r in importances.rows)


def test_the_noise_scale_is_shown_next_to_the_best_batch_size(sqlite_url: str) -> None:
    study = optuna.create_study(storage=sqlite_url, study_name="noise", direction="maximize")
    dist = {"log2_batch_size": IntDistribution(4, 8), "lr": FloatDistribution(1e-3, 1e-1)}
    for i, exponent in enumerate([4, 4, 4, 6, 6, 6]):
        study.add_trial(
            optuna.trial.create_trial(
                value=0.8 + 0.01 * i + (0.1 if exponent == 6 else 0.0),
                params={"log2_batch_size": exponent, "lr": 0.01},
                distributions=dist,
                user_attrs={"noise_scale": [None, 150.0 + i]} if i % 2 else {},
            )
        )
    analysis = bsopt.analyze_batch_sizes(study)
    assert analysis.noise_scale == pytest.approx(153.0)  # median of 151, 153, 155
    assert analysis.noise_scale_trials == 3
    assert (
        "B_noise ≈ 153 (median of 3 trials; range over trials 151–155); the leading batch "
        "size 64 is below it" in analysis.verdict
    )


def test_a_batch_size_within_the_noise_scales_range_is_not_placed(sqlite_url: str) -> None:
    # Issue 22: "B_noise ≈ 182 ... 64 is below it" while the range over trials held 64.
    study = optuna.create_study(storage=sqlite_url, study_name="range", direction="maximize")
    dist = {"log2_batch_size": IntDistribution(4, 8), "lr": FloatDistribution(1e-3, 1e-1)}
    for i, scale in enumerate([33.0, 182.0, 457.0]):
        for exponent in (4, 6):
            study.add_trial(
                optuna.trial.create_trial(
                    value=0.8 + 0.01 * i + (0.1 if exponent == 6 else 0.0),
                    params={"log2_batch_size": exponent, "lr": 0.01},
                    distributions=dist,
                    user_attrs={"noise_scale": scale},
                )
            )
    verdict = bsopt.analyze_batch_sizes(study).verdict
    assert "range over trials 33–457" in verdict
    assert "64 lies within that range, so the data do not place it" in verdict
    assert "is below it" not in verdict


def test_equal_samples_to_target_are_not_ranked(sqlite_url: str) -> None:
    study = optuna.create_study(storage=sqlite_url, study_name="eq", direction="maximize")
    study.set_user_attr("metric", "accuracy")
    dist = {"log2_batch_size": IntDistribution(4, 8), "lr": FloatDistribution(1e-3, 1e-1)}
    for exponent, curve in [(4, {100: 0.5, 200: 0.9}), (5, {100: 0.6, 200: 0.91}),
                            (6, {100: 0.5, 200: 0.6, 300: 0.92})] * 3:  # fmt: skip
        study.add_trial(
            optuna.trial.create_trial(
                value=max(curve.values()),
                params={"log2_batch_size": exponent, "lr": 0.01},
                distributions=dist,
                intermediate_values=curve,
            )
        )
    verdict = bsopt.analyze_batch_sizes(study).verdict
    # 16 and 32 both reach the default target (0.9, the worst best value) at 200 samples.
    assert "fewest samples at 16 and 32 (200 each)" in verdict
    assert "the worst of the batch sizes' best values" in verdict
    assert "64 needed 300" in verdict
    given = bsopt.analyze_batch_sizes(study, target=0.5).verdict
    assert "(validation accuracy 0.5):" in given and "worst of" not in given


def test_an_interval_of_a_fraction_is_clipped_to_its_range(sqlite_url: str) -> None:
    # Issue 22: a transformers study printed an accuracy interval of ±300 pp.
    study = optuna.create_study(storage=sqlite_url, study_name="clip", direction="maximize")
    study.set_user_attr("metric", "accuracy")
    study.set_user_attr("metric_unit", "fraction")
    _planted(study, {5: [0.9, 0.5, 0.2], 6: [0.3, 0.2, 0.1]})
    _reruns(study, {5: [1.0, 0.2], 6: [0.1, 0.15]})
    verdict = bsopt.analyze_batch_sizes(study).verdict
    assert "(validation accuracy 0.6 [0, 1], mean of 1 configuration rerun" in verdict
    assert "±" not in verdict.split(".")[0]


def test_a_multi_objective_study_is_judged_on_its_first_objective(sqlite_url: str) -> None:
    study = optuna.create_study(
        storage=sqlite_url, study_name="mo", directions=["maximize", "minimize"]
    )
    dist = {"log2_batch_size": IntDistribution(4, 6), "lr": FloatDistribution(1e-3, 1e-1)}
    for exponent, acc in [(4, 0.8), (5, 0.9), (6, 0.85)] * 3:
        study.add_trial(
            optuna.trial.create_trial(
                values=[acc, 2.0**exponent],
                params={"log2_batch_size": exponent, "lr": 0.01},
                distributions=dist,
            )
        )
    study.set_metric_names(["validation accuracy", "train seconds"])
    analysis = bsopt.analyze_batch_sizes(study)
    assert analysis.best_batch_size == 32 and analysis.direction == "maximize"
    assert math.isclose(analysis.stats(32).best or 0.0, 0.9)
    # 64 is beaten on both (0.85 < 0.9, 64 s > 32 s); 16 and 32 trade accuracy for time.
    assert sorted({b for _, b in analysis.pareto}) == [16, 32]
    assert (
        "This study has several objectives (validation accuracy and train seconds); the batch "
        "sizes are compared on the first alone. Its Pareto front, the trials no other beats on "
        "every objective, holds 6 trials at batch sizes 16 and 32" in analysis.verdict
    )
    from bsopt.runs._study import summary

    assert "6 Pareto-optimal trials (validation accuracy, train seconds):" in summary(study)


def test_unknown_study_names_the_stored_ones(mixed_url: str) -> None:
    with pytest.raises(ValueError, match="holds no study named 'nope'") as e:
        bsopt.analyze_batch_sizes("nope", storage=mixed_url)
    assert "'mixed'" in str(e.value) and "bsopt studies" in str(e.value)


def test_analysis_options_are_validated(mixed_url: str) -> None:
    with pytest.raises(ValueError, match="min_trials must be an integer >= 1, but got 0"):
        bsopt.analyze_batch_sizes("mixed", storage=mixed_url, min_trials=0)
    with pytest.raises(ValueError, match="batch_size 48 was not tried") as e:
        bsopt.analyze_batch_sizes("mixed", storage=mixed_url).stats(48)
    assert "[16, 32, 64, 128, 256]" in str(e.value)


#: The whole verdict of the exact-tie study, word for word: a change of wording shows up
#: here.
EXACT_TIE_VERDICT = (
    "**Tie**: the confirm reruns cannot separate 64 from 32 (Holm-adjusted p ≥ 0.05). The "
    "cheaper choice is **64** by measured cost (64: 7,000 samples/s; 32: 4,000 samples/s). "
    "Leading value: **64** (validation accuracy 0.975 ± 0.69 pp, mean of 1 configuration "
    "rerun with fresh seeds (3 runs), 95% t-interval, lr 0.01).\n\n"
    "Study **exact** (maximize validation accuracy): 9 trials — 9 complete, 0 pruned, 0 "
    "failed; 9 confirm reruns kept apart from them.\n\n"
    "Each batch size against 64 (the mean of each batch size's rerun configurations, Welch "
    "tests Holm-corrected over 2 comparisons; 95% intervals): 32 0 pp [−0.63, +0.63] — cannot "
    "be separated (adjusted p = 1); 128 −8.5 pp [−11, −6.2] — worse (adjusted p = "
    "0.0054).\n\n"
    "Best lr scales as batch^0.00 over 3 batch sizes (log-log fit): consistent with no "
    "coupling (the best lr does not move with the batch size) (95% interval [0.00, 0.00] "
    "excludes the other rules).\n\n"
    "Critical batch size: too few batch sizes (3) to look for one in the best lr (4 "
    "needed).\n\n"
    "Throughput: 64 trains at 7,000 samples/s; fastest 128 at 9,000, slowest 32 at 4,000.\n\n"
    "Gradient noise scale: not recorded by these trials (no `noise_scale` user attribute: "
    "made with `measure_noise_scale=False`, by an own loop, or by an older bsopt), so the "
    "leading batch size cannot be compared with it."
)


def test_the_verdict_is_the_findings_in_words(sqlite_url: str) -> None:
    study = _exact_tie(sqlite_url)
    analysis = bsopt.analyze_batch_sizes(study)
    assert analysis.verdict == EXACT_TIE_VERDICT
    findings = analysis.findings
    head = findings.headline
    assert head.kind == "tie" and head.leader is not None and head.leader.batch_size == 64
    assert head.tied_with == (32,) and [s.batch_size for s in head.by_cost] == [64, 32]
    assert head.cost_basis == "samples/s" and head.value == pytest.approx(351 / 360)
    assert findings.comparisons is not None
    assert [(c.batch_size, c.status) for c in findings.comparisons.items] == [
        (32, "tie"),
        (128, "worse"),
    ]
    assert findings.study.total == 9 and findings.level == "95%"
    # The same paragraphs as plain text: no Markdown markers.
    paragraphs = [plain(p) for p in verdict_lines(findings)]
    assert paragraphs[0].startswith("Tie: the confirm reruns cannot separate 64 from 32")
    assert "\n\n".join(paragraphs) == EXACT_TIE_VERDICT.replace("**", "").replace("`", "")


def test_a_batch_size_tuned_less_is_flagged_when_found_worse(sqlite_url: str) -> None:
    study = optuna.create_study(storage=sqlite_url, study_name="uneven", direction="maximize")
    _planted(study, {5: [0.95 - 0.001 * i for i in range(8)], 6: [0.93, 0.92, 0.91]})
    _reruns(study, {5: [0.950, 0.951, 0.949], 6: [0.930, 0.931, 0.929]})
    analysis = bsopt.analyze_batch_sizes(study)
    assert analysis.stats(64).status == "worse"
    assert "Tuned unevenly: 64 had 3 completed trials, 32 had 8." in analysis.verdict
    # Sampled alike: no such caveat.
    even = optuna.create_study(storage=sqlite_url, study_name="even", direction="maximize")
    _planted(even, {5: [0.95, 0.949, 0.948], 6: [0.93, 0.92, 0.91]})
    _reruns(even, {5: [0.950, 0.951, 0.949], 6: [0.930, 0.931, 0.929]})
    assert "Tuned unevenly" not in bsopt.analyze_batch_sizes(even).verdict


def test_the_critical_batch_is_stated_once_and_censored_points_are_not_fitted(
    sqlite_url: str,
) -> None:
    # 64 and 128 reach the target (0.9) at their first evaluation: their samples to target
    # are upper bounds, so McCandlish's fit has two points left and is refused, with why.
    study = optuna.create_study(storage=sqlite_url, study_name="cens", direction="maximize")
    dist = {"log2_batch_size": IntDistribution(4, 8), "lr": FloatDistribution(1e-3, 1e-1)}
    curves = {4: {100: 0.5, 300: 0.9}, 5: {100: 0.5, 200: 0.9}, 6: {400: 0.9}, 7: {800: 0.9}}
    for exponent, curve in curves.items():
        for lr in (0.01, 0.02, 0.03):
            study.add_trial(
                optuna.trial.create_trial(
                    value=0.9 if lr == 0.02 else 0.85,
                    params={"log2_batch_size": exponent, "lr": lr},
                    distributions=dist,
                    intermediate_values=curve,
                )
            )
    analysis = bsopt.analyze_batch_sizes(study)
    assert analysis.critical_batch is None
    assert analysis.stats(64).target_censored and not analysis.stats(32).target_censored
    reason = analysis.critical_batch_reason
    assert reason is not None and "64 and 128" in reason
    verdict = analysis.verdict
    assert verdict.count("Critical batch size") == 1 and "B_crit" not in verdict
    assert "steps against samples to the target were not fitted: " in verdict
