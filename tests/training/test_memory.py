"""OOM handling: the predicate, the memory budget seam, recovery in a trial, and no leaks.

No GPU here: out-of-memory errors come from a model whose training forward raises the CUDA
allocator's error above a batch size (the fake allocator seam), or from a MemoryBudget.
"""

from __future__ import annotations

from collections.abc import Callable
import gc
import warnings

import optuna
from optuna.trial import TrialState
import pytest
import torch
from torch import nn

import bsopt
from bsopt import Params, TensorData
from bsopt.training import MemoryBudget, is_oom_error
from bsopt.training._memory import SimulatedOutOfMemoryError, live_tensors

CUDA_OOM = "CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 79.10 GiB total capacity)"


@pytest.mark.parametrize(
    ("error", "oom"),
    [
        (torch.OutOfMemoryError("anything"), True),
        (RuntimeError(CUDA_OOM), True),
        (RuntimeError("CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling cublasCreate"), True),
        (RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried 8 GB"), True),
        (SimulatedOutOfMemoryError("budget"), True),
        (RuntimeError("mat1 and mat2 shapes cannot be multiplied (4x8 and 9x3)"), False),
        (RuntimeError(CUDA_OOM, "a second argument"), False),
        (ValueError(CUDA_OOM), False),
        (MemoryError(), False),  # the host is out of memory: a smaller batch will not help
    ],
)
def test_the_one_oom_predicate(error: BaseException, oom: bool) -> None:
    assert is_oom_error(error) is oom


def test_memory_budget_charges_training_steps_only() -> None:
    model = nn.Sequential(nn.Linear(10, 100), nn.ReLU(), nn.Linear(100, 2))
    budget = MemoryBudget(0.1, optimizer_states=2)
    # 1,302 parameters: weights, gradients and two AdamW moments, 4 bytes each.
    assert budget.static_bytes(model) == 1302 * 4 * 4
    with budget.attach(model):
        model(torch.zeros(4, 10))
        # Input 10 + Linear 100 + ReLU 100 + Linear 2 floats per sample.
        assert budget.last_mb == pytest.approx((1302 * 16 + 4 * 212 * 4) / 2**20)
        with pytest.raises(SimulatedOutOfMemoryError, match=r"memory_budget_mb=0\.1") as caught:
            model(torch.zeros(1000, 10))
        assert is_oom_error(caught.value)
        with torch.inference_mode():
            model(torch.zeros(100_000, 10))  # evaluation keeps no activations: not charged
    model(torch.zeros(1000, 10))  # detached: the hooks are gone
    assert budget.peak_mb > 0.1


def test_memory_budget_arguments() -> None:
    with pytest.raises(ValueError, match="memory_budget_mb must be a positive number of MiB"):
        MemoryBudget(-1)
    with pytest.raises(ValueError, match="optimizer_states must be 0 or more, but got -1"):
        MemoryBudget(1, optimizer_states=-1)


def test_live_tensors_sees_a_kept_reference() -> None:
    gc.collect()
    count, size = live_tensors()
    kept = [torch.zeros(1000)]
    assert live_tensors() == (count + 1, size + 4000)
    view = kept[0][:10]  # a view shares its storage: one more tensor, no more bytes
    assert live_tensors() == (count + 2, size + 4000)
    del kept, view
    assert live_tensors() == (count, size)


class OomAbove(nn.Module):
    """An MLP whose training forward fails like the CUDA allocator above ``limit`` samples.

    ``after`` training forwards (counted across every model of one builder) may pass before
    the limit applies: memory that fragments mid-trial, as a probe cannot foresee.
    """

    def __init__(self, data: TensorData, limit: int, counter: list[int], after: int) -> None:
        super().__init__()
        self.net = bsopt.training.mlp(data.n_features, data.n_classes or 1, hidden=(16,))
        self.limit, self.counter, self.after = limit, counter, after

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled():
            self.counter[0] += 1
            if self.counter[0] > self.after and len(x) > self.limit:
                raise RuntimeError(CUDA_OOM)
        return self.net(x)


def _builder(data: TensorData, limit: int, *, after: int = 0) -> Callable[[Params], nn.Module]:
    counter = [0]
    return lambda params: OomAbove(data, limit, counter, after)


def _objective(
    data: TensorData, build: Callable[[Params], nn.Module], **kwargs: object
) -> bsopt.Objective:
    options: dict[str, object] = {
        "space": bsopt.SearchSpace(batch_size=(16, 64), lr=(1e-2, 1e-2), dropout=(0.0, 0.0)),
        "budget": bsopt.Budget(2, evals=4),
        "metric": "loss",
        "device": "cpu",
    }
    options.update(kwargs)
    return bsopt.make_objective(build, data, **options)  # type: ignore[arg-type]


def _run(url: str, objective: bsopt.Objective, batch_sizes: list[int]) -> optuna.Study:
    study = bsopt.create_study(
        "m", storage=url, direction=objective.direction, pruner=optuna.pruners.NopPruner()
    )
    for b in batch_sizes:
        study.enqueue_trial({"log2_batch_size": b.bit_length() - 1})
    bsopt.optimize(study, objective, trials=len(batch_sizes), show_progress_bar=False)
    return study


def test_oom_mid_trial_is_recovered_with_the_same_effective_batch(
    sqlite_url: str, tiny_data: TensorData, tmp_path: object
) -> None:
    # Reference: the same trial with unlimited memory.
    reference = _run(
        f"sqlite:///{tmp_path}/ref.db", _objective(tiny_data, _builder(tiny_data, 10**9)), [64]
    ).trials[0]
    # The first 8 training steps fit; then micro-batches above 20 run out of memory, after
    # two evaluations were already reported.
    objective = _objective(tiny_data, _builder(tiny_data, 20, after=8))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "step already reported" warning on the replay
        trial = _run(sqlite_url, objective, [64]).trials[0]
    attrs = trial.user_attrs
    assert trial.state == TrialState.COMPLETE
    assert attrs["oom_retries"] == 2  # 64 -> 32 -> 16
    assert attrs["effective_batch_size"] == 2 ** trial.params["log2_batch_size"] == 64
    assert (attrs["micro_batch_size"], attrs["accumulation_steps"]) == (16, 4)
    assert attrs["stop_reason"] == "completed"
    assert attrs["optimizer_steps"] == reference.user_attrs["optimizer_steps"] == 12
    # Accumulating 4 x 16 equals one batch of 64 (no BatchNorm, same seed): the validation
    # loss after every evaluation agrees to float32 rounding of the summed gradients.
    assert sorted(trial.intermediate_values) == sorted(reference.intermediate_values)
    for step, value in reference.intermediate_values.items():
        assert trial.intermediate_values[step] == pytest.approx(value, rel=1e-5, abs=1e-6)
    assert trial.value == pytest.approx(reference.value, rel=1e-5, abs=1e-6)
    assert reference.user_attrs["micro_batch_size"] == 64


def test_unrecoverable_oom_is_pruned_infeasible_and_the_study_goes_on(
    sqlite_url: str, tiny_data: TensorData
) -> None:
    # Nothing above 20 samples fits and the floor is 32: batch 64 cannot be trained.
    objective = _objective(tiny_data, _builder(tiny_data, 20), min_micro_batch_size=32)
    study = _run(sqlite_url, objective, [64, 16, 64, 16])
    assert [t.state for t in study.trials] == [TrialState.PRUNED, TrialState.COMPLETE] * 2
    oom = study.trials[0]
    assert oom.user_attrs["stop_reason"] == "oom"
    assert oom.user_attrs["oom_retries"] == 1  # 64 -> 32, the floor
    assert oom.user_attrs["micro_batch_size"] == 32
    assert "CUDA out of memory" in oom.user_attrs["oom_error"]
    # Optuna 5 stores trial.set_constraint("oom", 1.0) as the system attribute below; a
    # positive value marks the trial infeasible for TPE.
    assert oom.system_attrs["constraints:oom"] == 1.0
    assert oom.constraints == {"oom": 1.0}
    fine = study.trials[1]
    assert fine.user_attrs["oom_retries"] == 0 and fine.constraints == {}
    assert fine.user_attrs["micro_batch_size"] == 16
    # The sampler keeps going with the infeasible trials in the history.
    bsopt.optimize(study, objective, trials=7, show_progress_bar=False)
    states = [t.state for t in study.trials]
    assert len(states) == 7 and TrialState.FAIL not in states


def test_an_error_that_is_not_oom_fails_the_trial(sqlite_url: str, tiny_data: TensorData) -> None:
    class Broken(nn.Linear):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if not self.training:  # passes make_objective's check, fails in training
                return super().forward(x)
            raise RuntimeError("mat1 and mat2 shapes cannot be multiplied (4x8 and 9x3)")

    objective = _objective(tiny_data, lambda params: Broken(8, 3))
    study = bsopt.create_study("m", storage=sqlite_url, direction=objective.direction)
    with pytest.raises(RuntimeError, match="shapes cannot be multiplied"):
        bsopt.optimize(study, objective, trials=1, show_progress_bar=False)
    (trial,) = study.trials
    assert trial.state == TrialState.FAIL
    assert trial.user_attrs.get("oom_retries", 0) == 0 and trial.constraints == {}


def test_a_memory_budget_recovers_without_a_probe(sqlite_url: str, tiny_data: TensorData) -> None:
    # The budget fits 66 samples per step (see test_probe); without a probe the trial
    # starts at its effective batch and halves on the simulated OOM.
    objective = _objective(
        tiny_data,
        bsopt.mlp_builder(tiny_data, hidden=(16,)),
        space=bsopt.SearchSpace(batch_size=(256, 256), dropout=(0.0, 0.0)),
        memory_budget_mb=0.02,
        probe=False,
    )
    trial = _run(sqlite_url, objective, [256]).trials[0]
    assert trial.state == TrialState.COMPLETE
    assert trial.user_attrs["oom_retries"] == 2  # 256 -> 128 -> 64
    assert trial.user_attrs["micro_batch_size"] == 64
    assert trial.user_attrs["effective_batch_size"] == 256


def test_objective_memory_arguments(tiny_data: TensorData) -> None:
    build = bsopt.mlp_builder(tiny_data)
    with pytest.raises(ValueError, match="min_micro_batch_size must be an integer >= 1, but"):
        bsopt.make_objective(build, tiny_data, min_micro_batch_size=0)
    with pytest.raises(ValueError, match="memory_budget_mb must be a positive number of MiB"):
        bsopt.make_objective(build, tiny_data, memory_budget_mb=0)
    with pytest.raises(ValueError, match=r"probe_margin must be a fraction in \(0, 1\], but"):
        bsopt.make_objective(build, tiny_data, probe_margin=0)
    with pytest.raises(ValueError, match="probe must be True, False or None"):
        bsopt.make_objective(build, tiny_data, probe="yes")  # type: ignore[arg-type]


def test_twenty_trials_leave_live_tensors_flat(sqlite_url: str, tiny_data: TensorData) -> None:
    # Half the trials run out of memory and recover, so the error path is measured too.
    objective = _objective(tiny_data, _builder(tiny_data, 20), budget=bsopt.Budget(1, evals=2))
    study = bsopt.create_study(
        "m", storage=sqlite_url, direction=objective.direction, pruner=optuna.pruners.NopPruner()
    )
    for i in range(21):
        study.enqueue_trial({"log2_batch_size": 4 if i % 2 else 6})
    gc.collect()
    before = live_tensors()
    bsopt.optimize(study, objective, trials=21, show_progress_bar=False)
    gc.collect()
    after = live_tensors()
    retried = [t.user_attrs["oom_retries"] for t in study.trials]
    assert retried.count(2) == 11 and retried.count(0) == 10  # 64 -> 32 -> 16 fits
    assert after == before, f"live tensors (count, bytes) before {before}, after {after}"
