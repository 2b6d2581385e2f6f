"""The probe: exact limits against a fake allocator seam, restored state, the study cache."""

from __future__ import annotations

import math
from pathlib import Path

import optuna
import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

import bsopt
from bsopt import Params, TensorData
from bsopt.training import MemoryBudget, probe_batch_size
from bsopt.training._probe import PROBE_ATTR_PREFIX, ProbeResult, probe_key_for, search_limit


class OomAbove(nn.Module):
    """An MLP whose training forward fails like the CUDA allocator above ``limit`` samples.

    This is the fake allocator seam: nothing else in the code under test is faked.
    """

    def __init__(self, data: TensorData, limit: int) -> None:
        super().__init__()
        self.net = bsopt.training.mlp(data.n_features, data.n_classes or 1, hidden=(16,))
        self.limit = limit
        self.training_forwards = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled():
            self.training_forwards += 1
            if len(x) > self.limit:
                raise torch.OutOfMemoryError(
                    "CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 79.10 GiB total)"
                )
        return self.net(x)


def test_search_limit_doubles_then_bisects_to_the_exact_limit() -> None:
    tried: list[int] = []

    def fits(n: int) -> bool:
        tried.append(n)
        return n <= 300

    limit, calls = search_limit(fits, high=10_000)
    assert limit == 300
    # 1, 2, ..., 256 fit and 512 fails (10 calls); bisecting (256, 512) takes log2(256) = 8.
    assert tried[:10] == [2**i for i in range(10)]
    assert calls == len(tried) == 18


@pytest.mark.parametrize(
    ("limit", "high", "start", "expected"),
    [
        (300, 10_000, 1, (300, 18)),
        (300, 200, 1, (200, 9)),  # capped: 1..128 then 200 itself fit
        (1, 64, 1, (1, 2)),  # 1 fits, 2 fails
        (0, 64, 1, (0, 1)),  # nothing fits
        (1000, 4096, 64, (1000, 14)),  # 64..512 fit, 1024 fails, 9 bisections of (512, 1024)
        (10, 64, 32, (10, 6)),  # the start fails: bisect (0, 32) via 16, 8, 12, 10, 11
        (7, 7, 7, (7, 1)),
    ],
)
def test_search_limit_known_answers(
    limit: int, high: int, start: int, expected: tuple[int, int]
) -> None:
    assert search_limit(lambda n: n <= limit, high=high, start=start) == expected


def test_search_limit_arguments() -> None:
    with pytest.raises(ValueError, match=r"start must be in \[1, high=8\], but got 9"):
        search_limit(lambda n: True, high=8, start=9)
    with pytest.raises(ValueError, match="high must be at least 1, but got 0"):
        search_limit(lambda n: True, high=0)


def test_probe_finds_the_exact_limit_of_the_fake_allocator(tiny_data: TensorData) -> None:
    torch.manual_seed(0)
    model = OomAbove(tiny_data, limit=300)
    result = probe_batch_size(model, tiny_data, device="cpu", high=4096)
    assert result.limit == 300
    assert result.micro_batch_size == 270  # 90 % of 300, rounded down
    assert not result.capped
    assert result.steps == 17  # 9 doublings (2..512) + 8 bisections of (256, 512)
    assert model.training_forwards == 17
    assert result.device == "cpu" and result.high == 4096 and result.seconds > 0


def test_margin_is_configurable_and_not_applied_when_capped(tiny_data: TensorData) -> None:
    result = probe_batch_size(OomAbove(tiny_data, 300), tiny_data, device="cpu", margin=0.5)
    assert (result.limit, result.micro_batch_size) == (300, 150)
    # Every batch up to high fits: the limit is a lower bound and trials may use all of it.
    capped = probe_batch_size(OomAbove(tiny_data, 300), tiny_data, device="cpu", high=256)
    assert capped.capped and capped.limit == capped.micro_batch_size == 256
    assert capped.steps == 8  # 2, 4, ..., 256


def test_probe_restores_weights_buffers_mode_and_random_state(tiny_data: TensorData) -> None:
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(8, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 3))
    model.eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.random.get_rng_state()
    result = probe_batch_size(
        model,
        tiny_data,
        device="cpu",
        memory_budget_mb=0.05,
        params=Params(batch_size=8, lr=0.5, optimizer="sgd"),
    )
    assert result.steps > 5  # real optimizer steps ran (and moved the weights) ...
    after = model.state_dict()
    assert before.keys() == after.keys()
    for name, tensor in before.items():  # ... and were undone, BatchNorm statistics included
        assert torch.equal(tensor, after[name]), name
    assert not model.training
    assert torch.equal(torch.random.get_rng_state(), rng)
    assert not any(p.grad is not None for p in model.parameters())


def _brute_force_limit(model: nn.Module, budget: MemoryBudget, high: int) -> int:
    """The largest batch whose training forward stays in budget, trying every size."""
    x = torch.zeros(high, 8)
    best = 0
    with budget.attach(model):
        for n in range(1, high + 1):
            try:
                model(x[:n])
            except torch.OutOfMemoryError:
                break
            best = n
    return best


def test_probe_with_a_memory_budget_matches_brute_force_and_the_arithmetic(
    tiny_data: TensorData,
) -> None:
    model = bsopt.training.mlp(8, 3, hidden=(16,))
    budget_mb = 0.02
    result = probe_batch_size(model, tiny_data, device="cpu", memory_budget_mb=budget_mb)
    # Parameters 8*16+16+16*3+3 = 195 floats; AdamW: weights, gradients, two moments.
    static = 195 * 4 * 4
    # Per sample: input 8, Flatten 8, Linear 16, ReLU 16, Dropout 16, Linear 3 floats.
    per_sample = (8 + 8 + 16 + 16 + 16 + 3) * 4
    expected = math.floor((budget_mb * 2**20 - static) / per_sample)
    assert result.limit == expected == 66
    assert result.limit == _brute_force_limit(model, MemoryBudget(budget_mb), high=320)
    assert result.steps < 16  # against 67 steps for the brute force scan


def test_nothing_fits_is_a_clear_error(tiny_data: TensorData) -> None:
    with pytest.raises(ValueError, match="Not even a batch of 1 trains on cpu within memory_b"):
        probe_batch_size(OomAbove(tiny_data, 0), tiny_data, device="cpu", memory_budget_mb=100)


def test_probe_arguments(tiny_data: TensorData) -> None:
    model = bsopt.training.mlp(8, 3)
    with pytest.raises(ValueError, match=r"margin must be in \(0, 1\], but got 1.5"):
        probe_batch_size(model, tiny_data, margin=1.5)
    with pytest.raises(ValueError, match="memory_budget_mb must be a positive number"):
        probe_batch_size(model, tiny_data, device="cpu", memory_budget_mb=0)


def test_non_oom_errors_propagate_from_the_probe(tiny_data: TensorData) -> None:
    class Broken(nn.Linear):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            raise RuntimeError("mat1 and mat2 shapes cannot be multiplied")

    with pytest.raises(RuntimeError, match="shapes cannot be multiplied"):
        probe_batch_size(Broken(8, 3), tiny_data, device="cpu")


def test_probe_key_follows_shapes_not_weights(tiny_data: TensorData) -> None:
    def key(model: nn.Module, **kw: object) -> str:
        return probe_key_for(model, tiny_data, device="cpu", **kw)  # type: ignore[arg-type]

    torch.manual_seed(0)
    a = bsopt.training.mlp(8, 3, hidden=(16,))
    torch.manual_seed(1)
    b = bsopt.training.mlp(8, 3, hidden=(16,), dropout=0.3)
    assert key(a) == key(b)  # other weights and dropout: same memory
    assert key(a) != key(bsopt.training.mlp(8, 3, hidden=(32,)))
    assert key(a) != key(a, memory_budget_mb=1.0)
    assert key(a) != key(a, params=Params(batch_size=8, lr=0.1, optimizer="sgd"))
    assert key(a) != key(a, high=64)
    other_input = bsopt.make_synthetic(400, n_features=12, n_classes=3, seed=0)
    assert key(a) != probe_key_for(a, other_input, device="cpu")
    # The same samples behind a Dataset: the same input signature, so the same key.
    as_dataset = bsopt.DatasetData(
        TensorDataset(tiny_data.x_train, tiny_data.y_train),
        TensorDataset(tiny_data.x_val, tiny_data.y_val),
        n_classes=3,
        num_workers=0,
    )
    assert probe_key_for(a, as_dataset, device="cpu") == key(a)


def test_result_round_trips_through_a_study_attribute(tiny_data: TensorData) -> None:
    result = probe_batch_size(OomAbove(tiny_data, 40), tiny_data, device="cpu", high=256)
    stored = ProbeResult.from_dict(result.as_dict())
    assert stored == result and stored.cached and not result.cached
    assert "cached in the study" in stored.describe()
    assert "largest batch that fits on cpu: 40; micro-batch 36 (90% of it)" in result.describe()


def _budget_objective(data: TensorData, **kwargs: object) -> bsopt.Objective:
    return bsopt.make_objective(
        bsopt.mlp_builder(data, hidden=(16,)),
        data,
        space=bsopt.SearchSpace(batch_size=(16, 256), dropout=(0.0, 0.0)),
        budget=bsopt.Budget(1, evals=2),
        device="cpu",
        **kwargs,  # type: ignore[arg-type]
    )


def test_objective_probes_once_per_study_and_trials_accumulate_beyond_it(
    sqlite_url: str,
) -> None:
    data = bsopt.make_synthetic(600, n_features=8, n_classes=3, seed=0)  # 480 train
    objective = _budget_objective(data, memory_budget_mb=0.02)
    assert objective.probing  # a memory budget turns probing on by default
    study = bsopt.create_study("p", storage=sqlite_url, direction=objective.direction)
    for log2 in (8, 4, 7):
        study.enqueue_trial({"log2_batch_size": log2, "lr": 1e-2})
    bsopt.optimize(study, objective, trials=3, show_progress_bar=False)

    probes = {k: v for k, v in study.user_attrs.items() if k.startswith(PROBE_ATTR_PREFIX)}
    assert len(probes) == 1  # one model signature, one probe for all trials
    (stored,) = probes.values()
    assert (stored["limit"], stored["micro_batch_size"]) == (66, 59)
    for trial in study.trials:
        attrs = trial.user_attrs
        assert trial.state == optuna.trial.TrialState.COMPLETE
        assert attrs["probed_micro_batch_size"] == 59 and attrs["oom_retries"] == 0
        effective = 2 ** trial.params["log2_batch_size"]
        assert attrs["effective_batch_size"] == effective
        assert attrs["micro_batch_size"] == min(59, effective)
        assert attrs["accumulation_steps"] == math.ceil(effective / 59)
    assert objective.probe(study).cached  # read back, not measured again


def test_an_objective_without_a_device_limit_does_not_probe(tiny_data: TensorData) -> None:
    objective = _budget_objective(tiny_data)
    assert not objective.probing
    assert _budget_objective(tiny_data, probe=True).probing


def test_cli_probe_prints_and_caches(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"sqlite:///{tmp_path / 'p.db'}"
    args = ["probe", "synthetic", "--storage", url, "--memory-budget-mb", "0.5"]
    assert bsopt.cli.main(args) == 0
    first = capsys.readouterr().out
    assert "limit=252 micro_batch_size=226 capped=False steps=15" in first
    assert "cached=False" in first and "0.5 MiB memory budget" in first
    assert bsopt.cli.main(args) == 0
    assert "cached=True" in capsys.readouterr().out
    attrs = optuna.load_study(study_name="synthetic", storage=url).user_attrs
    assert [k for k in attrs if k.startswith(PROBE_ATTR_PREFIX)] != []


def test_cli_probe_refuses_a_bad_budget(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        bsopt.cli.main(["probe", "synthetic", "--memory-budget-mb", "-3"])
    assert "must be a positive number, got -3" in capsys.readouterr().err
