"""FairReporter, retry_oom and LoopObjective: a hand-written loop on bsopt's sample grid.

Real trials on real SQLite studies, real tiny models; the only seam is bsopt.training.MemoryBudget,
the project's stand-in for device memory on a machine without a GPU.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
import time
import warnings

import optuna
from optuna.trial import FrozenTrial
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import bsopt


def _one_trial(tmp_path: Path, objective: Callable[[optuna.Trial], float]) -> FrozenTrial:
    """The one trial of a fresh study that ran ``objective``."""
    study = _study(tmp_path)
    study.optimize(objective, n_trials=1)
    return study.trials[0]


def _study(tmp_path: Path, pruner: optuna.pruners.BasePruner | None = None) -> optuna.Study:
    return bsopt.create_study(
        "fair",
        storage=f"sqlite:///{tmp_path / 'fair.db'}",
        pruner=pruner or optuna.pruners.NopPruner(),
    )


def _loader(n: int = 40, batch: int = 16, *, seed: int = 0) -> DataLoader:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, generator=g)
    y = (x.sum(dim=1) > 0).long()
    return DataLoader(TensorDataset(x, y), batch_size=batch, shuffle=True, generator=g)


class CountingModel(nn.Module):
    """A linear classifier that counts the samples of its training forward passes."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(4, 2)
        self.seen = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            self.seen += len(x)
        return self.linear(x)


def _train_step(model: nn.Module, opt: torch.optim.Optimizer, batch: tuple) -> torch.Tensor:
    x, y = batch
    loss = nn.functional.cross_entropy(model(x), y)
    opt.zero_grad()
    loss.backward()
    opt.step()
    return loss.detach()


def test_batches_are_cut_at_grid_points_and_reports_land_on_them(tmp_path: Path) -> None:
    budget = bsopt.Budget(100, "samples", evals=4)  # points 25, 50, 75, 100
    pieces: list[int] = []
    seen_at_report: list[int] = []
    models: list[CountingModel] = []

    def objective(trial: optuna.Trial) -> float:
        torch.manual_seed(0)
        model = CountingModel()
        models.append(model)
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        reporter = bsopt.FairReporter(trial, budget, 40, batch_size=16, lr=0.1, seed=3)
        for batch in reporter.batches(_loader()):
            pieces.append(len(batch[0]))
            if reporter.step(batch, _train_step(model, opt, batch)):
                seen_at_report.append(model.seen)
                reporter.report(0.5 + 0.1 * len(seen_at_report))
        return reporter.finish()

    trial = _one_trial(tmp_path, objective)
    assert trial.state == optuna.trial.TrialState.COMPLETE
    assert trial.value == pytest.approx(0.9)
    assert trial.intermediate_values == pytest.approx({25: 0.6, 50: 0.7, 75: 0.8, 100: 0.9})
    # The model had seen exactly the grid's samples at each report.
    assert seen_at_report == [25, 50, 75, 100]
    assert models[0].seen == 100
    # Loader batches of 16, 16, 8 per epoch, cut at 25 | 50 | 75 | 100 samples.
    assert pieces == [16, 9, 7, 8, 10, 6, 16, 3, 5, 16, 4]
    attrs = trial.user_attrs
    assert attrs["samples_seen"] == 100
    assert attrs["optimizer_steps"] == len(pieces)
    assert attrs["effective_batch_size"] == 16
    assert attrs["micro_batch_size"] == 16
    assert attrs["accumulation_steps"] == 1
    assert attrs["epochs"] == 2.5
    assert attrs["lr"] == 0.1
    assert attrs["seed"] == 3
    assert attrs["stop_reason"] == "completed"
    assert attrs["grid_overshoot"] == 0
    assert attrs["samples_per_second"] > 0
    assert attrs["train_seconds"] > 0
    for name in ("eval_seconds", "wall_seconds", "peak_memory_mb", "device", "amp"):
        assert name in attrs


def test_whole_batches_report_at_the_point_passed_with_the_overshoot_recorded(
    tmp_path: Path,
) -> None:
    budget = bsopt.Budget(100, "samples", evals=4)

    def objective(trial: optuna.Trial) -> float:
        reporter = bsopt.FairReporter(trial, budget, 40, batch_size=16)
        while not reporter.done:
            if reporter.step(16):
                reporter.report(float(reporter.samples_seen))
        return reporter.finish()

    trial = _one_trial(tmp_path, objective)
    # Reached at 32, 64, 80 and 112 samples; keys are the grid points.
    assert trial.intermediate_values == {25: 32.0, 50: 64.0, 75: 80.0, 100: 112.0}
    assert trial.user_attrs["grid_overshoot"] == 14
    assert trial.user_attrs["samples_seen"] == 112
    assert trial.user_attrs["optimizer_steps"] == 7


def test_a_step_past_two_points_reports_at_the_later_one(tmp_path: Path) -> None:
    budget = bsopt.Budget(100, "samples", evals=10)

    def objective(trial: optuna.Trial) -> float:
        reporter = bsopt.FairReporter(trial, budget, 100, batch_size=25)
        while not reporter.done:
            if reporter.step(25):
                reporter.report(1.0)
        return reporter.finish()

    study = _study(tmp_path)
    study.optimize(objective, n_trials=1)
    assert sorted(study.trials[0].intermediate_values) == [20, 50, 70, 100]


def test_the_pruner_stops_the_trial_with_the_reason(tmp_path: Path) -> None:
    budget = bsopt.Budget(100, "samples", evals=4)

    def objective(trial: optuna.Trial) -> float:
        reporter = bsopt.FairReporter(trial, budget, 40, batch_size=10, metric="accuracy")
        while not reporter.done:
            if reporter.step(10, 1.0):
                reporter.report(0.1)
        return reporter.finish()

    study = _study(tmp_path, optuna.pruners.ThresholdPruner(lower=0.5))
    study.optimize(objective, n_trials=1)
    trial = study.trials[0]
    assert trial.state == optuna.trial.TrialState.PRUNED
    assert trial.intermediate_values == {25: 0.1}
    assert trial.user_attrs["stop_reason"] == "pruned"
    assert trial.user_attrs["stop_detail"] == "pruned at 25 samples seen with accuracy=0.1"
    assert trial.user_attrs["samples_seen"] == 30


def test_a_non_finite_loss_stops_the_run_at_once(tmp_path: Path) -> None:
    budget = bsopt.Budget(100, "samples", evals=4)
    steps: list[int] = []

    def objective(trial: optuna.Trial) -> float:
        reporter = bsopt.FairReporter(trial, budget, 40, batch_size=10)
        while not reporter.done:
            steps.append(reporter.samples_seen)
            loss = torch.tensor(float("nan")) if reporter.samples_seen == 40 else 1.0
            if reporter.step(10, loss):
                reporter.report(0.9)
        return reporter.finish()

    trial = _one_trial(tmp_path, objective)
    assert trial.state == optuna.trial.TrialState.PRUNED
    assert trial.user_attrs["stop_reason"] == "diverged"
    assert "non-finite" in trial.user_attrs["stop_detail"]
    assert trial.user_attrs["samples_seen"] == 50
    assert steps[-1] == 40


def test_a_growing_interval_loss_stops_the_run_as_diverged(tmp_path: Path) -> None:
    budget = bsopt.Budget(40, "samples", evals=4)

    def objective(trial: optuna.Trial) -> float:
        reporter = bsopt.FairReporter(trial, budget, 40, batch_size=10, divergence_factor=10)
        losses = iter([1.0, 2.0, 30.0, 1.0])
        while not reporter.done:
            if reporter.step(10, next(losses)):
                reporter.report(0.5)
        return reporter.finish()

    trial = _one_trial(tmp_path, objective)
    assert trial.state == optuna.trial.TrialState.PRUNED
    assert trial.user_attrs["stop_reason"] == "diverged"
    assert trial.user_attrs["stop_detail"] == ("training loss 30 > 10 x the first interval's 1")
    # Caught at the 30-sample point, before its evaluation.
    assert trial.intermediate_values == {10: 0.5, 20: 0.5}


def test_report_without_raising_returns_true_and_stores_the_attributes(tmp_path: Path) -> None:
    budget = bsopt.Budget(40, "samples", evals=2)
    stopped: list[bool] = []

    def objective(trial: optuna.Trial) -> float:
        reporter = bsopt.FairReporter(trial, budget, 40, batch_size=20)
        # A loop that counts samples itself, as bsopt's trainer does.
        stopped.append(reporter.report(0.1, samples_seen=20, raise_pruned=False))
        assert reporter.done
        raise optuna.TrialPruned(reporter.stop_detail)

    study = _study(tmp_path, optuna.pruners.ThresholdPruner(lower=0.5))
    study.optimize(objective, n_trials=1)
    assert stopped == [True]
    assert study.trials[0].user_attrs["stop_reason"] == "pruned"
    assert study.trials[0].user_attrs["samples_seen"] == 20


def test_a_time_budget_reports_at_training_milliseconds(tmp_path: Path) -> None:
    budget = bsopt.Budget(0.06, "seconds", evals=3)  # points 20, 40, 60 ms

    def objective(trial: optuna.Trial) -> float:
        reporter = bsopt.FairReporter(trial, budget, 40, batch_size=8)
        reporter.start()
        while not reporter.done:
            time.sleep(0.004)
            if reporter.step(8):
                reporter.report(1.0)
        return reporter.finish()

    trial = _one_trial(tmp_path, objective)
    assert sorted(trial.intermediate_values) == [20, 40, 60]
    assert trial.user_attrs["train_seconds"] >= 0.06


def test_finish_stores_a_target_reached_early(tmp_path: Path) -> None:
    budget = bsopt.Budget(40, "samples", evals=4)

    def objective(trial: optuna.Trial) -> float:
        reporter = bsopt.FairReporter(trial, budget, 40, batch_size=10)
        reporter.step(10)
        reporter.report(0.99)
        return reporter.finish(10.0, reason=bsopt.core.StopReason.REACHED_TARGET)

    study = _study(tmp_path)
    study.optimize(objective, n_trials=1)
    assert study.trials[0].value == 10.0
    assert study.trials[0].user_attrs["stop_reason"] == "reached target"


# -- misuse gets a clear error ---------------------------------------------------------------


def test_a_reporter_without_a_trial_says_how_to_get_one() -> None:
    with pytest.raises(ValueError, match=r"needs the optuna\.Trial .*FixedTrial"):
        bsopt.FairReporter(None, bsopt.Budget(1), 100, batch_size=16)  # type: ignore[arg-type]


def test_a_budget_shorter_than_its_evaluations_is_refused() -> None:
    trial = optuna.trial.FixedTrial({})
    with pytest.raises(ValueError, match="fewer than the 10 evaluations"):
        bsopt.FairReporter(trial, bsopt.Budget(5, "samples", evals=10), 100, batch_size=4)


@pytest.mark.parametrize(
    ("name", "kwargs"),
    [("batch_size", {"batch_size": 0}), ("lr", {"batch_size": 4, "lr": -1.0})],
)
def test_bad_arguments_name_the_parameter(name: str, kwargs: dict) -> None:
    with pytest.raises(ValueError, match=name):
        bsopt.FairReporter(optuna.trial.FixedTrial({}), bsopt.Budget(1), 100, **kwargs)


def test_training_past_an_unreported_point_is_an_error() -> None:
    reporter = bsopt.FairReporter(
        optuna.trial.FixedTrial({}), bsopt.Budget(40, "samples", evals=4), 40, batch_size=10
    )
    with pytest.raises(ValueError, match=r"next one is at 10 samples seen"):
        reporter.report(0.5)
    assert reporter.step(10)
    with pytest.raises(RuntimeError, match=r"Call reporter\.report\(value\)"):
        reporter.step(10)


def test_batches_requires_a_step_per_batch() -> None:
    reporter = bsopt.FairReporter(
        optuna.trial.FixedTrial({}), bsopt.Budget(40, "samples", evals=4), 40, batch_size=8
    )
    batches = reporter.batches(_loader(batch=8))
    next(batches)
    with pytest.raises(RuntimeError, match=r"step\(\) was not called"):
        next(batches)


def test_fixed_trial_runs_the_loop_outside_a_study() -> None:
    reporter = bsopt.FairReporter(
        optuna.trial.FixedTrial({}), bsopt.Budget(40, "samples", evals=2), 40, batch_size=8
    )
    for batch in reporter.batches(_loader(batch=8)):
        if reporter.step(batch):
            reporter.report(0.5)
    assert reporter.finish() == 0.5
    assert reporter.history == [(20, 0.5), (40, 0.5)]


# -- out-of-memory retry -----------------------------------------------------------------------


def _memory_hungry_run(
    trial: optuna.Trial, budget_mb: float, attempts: list[int]
) -> Callable[[int], float]:
    budget = bsopt.Budget(64, "samples", evals=2)

    def run(micro: int) -> float:
        attempts.append(micro)
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(4, 4096), nn.ReLU(), nn.Linear(4096, 2))
        opt = torch.optim.SGD(model.parameters(), lr=0.01)
        reporter = bsopt.FairReporter(
            trial, budget, 64, batch_size=32, micro_batch_size=micro, lr=0.01
        )
        with bsopt.training.MemoryBudget(budget_mb, optimizer_states=0).attach(model):
            for x, y in reporter.batches(_loader(64, 32)):
                opt.zero_grad()
                for start in range(0, len(x), micro):
                    xm, ym = x[start : start + micro], y[start : start + micro]
                    loss = nn.functional.cross_entropy(model(xm), ym) * len(xm) / len(x)
                    loss.backward()
                opt.step()
                if reporter.step((x, y), loss):
                    reporter.report(0.5)
        return reporter.finish()

    return run


def _step_mb(micro: int) -> float:
    model = nn.Sequential(nn.Linear(4, 4096), nn.ReLU(), nn.Linear(4096, 2))
    guard = bsopt.training.MemoryBudget(1e9, optimizer_states=0)
    with guard.attach(model):
        nn.functional.cross_entropy(model(torch.randn(micro, 4)), torch.zeros(micro).long())
    return guard.last_mb


def test_out_of_memory_halves_the_micro_batch_and_keeps_the_effective_batch(
    tmp_path: Path,
) -> None:
    # Room for a micro-batch of 8 but not of 16.
    budget_mb = (_step_mb(8) + _step_mb(16)) / 2
    attempts: list[int] = []

    def objective(trial: optuna.Trial) -> float:
        run = _memory_hungry_run(trial, budget_mb, attempts)
        return bsopt.retry_oom(trial, run, batch_size=32, min_micro_batch_size=4)

    trial = _one_trial(tmp_path, objective)
    assert attempts == [32, 16, 8]
    assert trial.state == optuna.trial.TrialState.COMPLETE
    assert trial.user_attrs["oom_retries"] == 2
    assert trial.user_attrs["micro_batch_size"] == 8
    assert trial.user_attrs["accumulation_steps"] == 4
    assert trial.user_attrs["effective_batch_size"] == 32
    assert trial.intermediate_values == {32: 0.5, 64: 0.5}


def test_a_restarted_run_does_not_report_a_step_twice(tmp_path: Path) -> None:
    budget = bsopt.Budget(40, "samples", evals=2)

    def objective(trial: optuna.Trial) -> float:
        for value in (0.25, 0.75):  # the second run replays the first one's steps
            reporter = bsopt.FairReporter(trial, budget, 40, batch_size=20)
            while not reporter.done:
                if reporter.step(20):
                    reporter.report(value)
        return reporter.finish()

    study = _study(tmp_path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        study.optimize(objective, n_trials=1)
    assert study.trials[0].intermediate_values == {20: 0.25, 40: 0.25}
    assert study.trials[0].value == 0.75
    assert not [w for w in caught if "already reported" in str(w.message)]


def test_out_of_memory_at_the_floor_prunes_the_trial_as_infeasible(tmp_path: Path) -> None:
    budget_mb = (_step_mb(8) + _step_mb(16)) / 2
    attempts: list[int] = []

    def objective(trial: optuna.Trial) -> float:
        run = _memory_hungry_run(trial, budget_mb, attempts)
        return bsopt.retry_oom(trial, run, batch_size=32, min_micro_batch_size=16, seed=7)

    trial = _one_trial(tmp_path, objective)
    assert attempts == [32, 16]
    assert trial.state == optuna.trial.TrialState.PRUNED
    assert trial.user_attrs["stop_reason"] == "oom"
    assert trial.user_attrs["micro_batch_size"] == 16
    assert trial.user_attrs["oom_retries"] == 1
    assert trial.user_attrs["seed"] == 7
    assert "Simulated device out of memory" in trial.user_attrs["oom_error"]
    assert trial.system_attrs["constraints:oom"] == 1.0


def test_errors_that_are_not_out_of_memory_propagate(tmp_path: Path) -> None:
    def run(micro: int) -> float:
        raise ValueError("a bug in the loop")

    def objective(trial: optuna.Trial) -> float:
        return bsopt.retry_oom(trial, run, batch_size=32)

    study = _study(tmp_path)
    with pytest.raises(ValueError, match="a bug in the loop"):
        study.optimize(objective, n_trials=1)
    assert study.trials[0].state == optuna.trial.TrialState.FAIL
    assert study.trials[0].user_attrs["oom_retries"] == 0


# -- LoopObjective: a hand-written objective run by bsopt.runs.run ------------------------------


def test_loop_objective_describes_itself_and_refuses_a_bad_budget() -> None:
    objective = bsopt.LoopObjective(
        lambda trial: 0.0,
        budget=bsopt.Budget(2, "epochs", evals=2),
        n_train=100,
        what="an MLP",
    )
    assert objective.directions == ["maximize"]
    assert objective.data.n_train == 100
    assert objective.describe() == (
        "validation accuracy (maximize); an MLP; 2 epochs = 200 samples; "
        "evaluate every 100 samples (2 evaluations)"
    )
    with pytest.raises(ValueError, match="fewer than the 10 evaluations"):
        bsopt.LoopObjective(lambda t: 0.0, budget=bsopt.Budget(5, "samples"), n_train=100)
    with pytest.raises(ValueError, match="direction must be"):
        bsopt.LoopObjective(
            lambda t: 0.0,
            budget=bsopt.Budget(1),
            n_train=100,
            direction="up",  # type: ignore[arg-type]
        )


def _tiny_loop_objective(*, seed: int = 0) -> bsopt.LoopObjective:
    budget = bsopt.Budget(2, "epochs", evals=4)
    x = torch.randn(64, 4, generator=torch.Generator().manual_seed(seed))
    y = (x[:, 0] > 0).long()

    def objective(trial: optuna.Trial) -> float:
        batch = trial.suggest_categorical("batch_size", [8, 16, 32])
        lr = trial.suggest_float("lr", 1e-3, 1e-1, log=True)
        torch.manual_seed(seed + trial.number)
        model = nn.Linear(4, 2)
        opt = torch.optim.SGD(model.parameters(), lr=lr)
        reporter = bsopt.FairReporter(trial, budget, 64, batch_size=batch, lr=lr, seed=seed)
        loader = DataLoader(TensorDataset(x, y), batch_size=batch, shuffle=True)
        for xb, yb in reporter.batches(loader):
            if reporter.step((xb, yb), _train_step(model, opt, (xb, yb))):
                with torch.no_grad():
                    reporter.report((model(x).argmax(dim=1) == y).float().mean().item())
        return reporter.finish()

    return bsopt.LoopObjective(objective, budget=budget, n_train=64, what="a linear model")


@pytest.mark.slow
def test_bsopt_run_and_report_take_a_loop_objective(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'loop.db'}"
    study = bsopt.runs.run(
        _tiny_loop_objective,
        study_name="loop",
        trials=8,
        storage=url,
        show_progress_bar=False,
        echo=lambda line: None,
    )
    assert len(study.trials) == 8
    for trial in study.trials:
        assert sorted(trial.intermediate_values)[0] == 32  # the grid: 32, 64, 96, 128
        if trial.state == optuna.trial.TrialState.COMPLETE:
            assert trial.user_attrs["samples_seen"] == 128
    out = tmp_path / "report"
    assert bsopt.cli.main(["report", "--study", "loop", "--storage", url, "--out", str(out)]) == 0
    text = (out / "report.md").read_text()
    assert "samples/s" in text


def test_an_own_loop_study_records_its_metric_and_objective_name() -> None:
    def fn(trial: optuna.Trial) -> float:
        return 0.5

    objective = bsopt.LoopObjective(
        fn, budget=bsopt.Budget(50, "samples"), n_train=100, metric="accuracy"
    )
    study = optuna.create_study(direction="maximize")
    study.optimize(objective, n_trials=2)
    assert study.metric_names == ["validation accuracy"]
    assert study.user_attrs["metric"] == "accuracy"
    assert study.user_attrs["metric_unit"] == "fraction"
    # A FairReporter told its metric does the same for a loop without LoopObjective.
    other = optuna.create_study(direction="minimize")
    bsopt.FairReporter(other.ask(), bsopt.Budget(50, "samples"), 100, batch_size=10,
                       metric="val_loss")  # fmt: skip
    assert other.metric_names == ["validation val_loss"]
    assert other.user_attrs["metric_direction"] == "minimize"


def test_a_fraction_metric_outside_0_1_is_refused_not_stored() -> None:
    study = optuna.create_study(direction="maximize")
    reporter = bsopt.FairReporter(
        study.ask(), bsopt.Budget(50, "samples", evals=1), 100, batch_size=10, metric="accuracy"
    )
    with pytest.raises(ValueError, match=r"'accuracy' is a fraction, but came out as 3.2"):
        reporter.report(3.2, samples_seen=50)
    assert study.trials[0].intermediate_values == {}
