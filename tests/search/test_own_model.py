"""Models that are not the digits MLP, end to end through make_objective (issue: your own
model). Real tiny training on the CPU: a CNN with BatchNorm, a regression scored by MAE, a
class-weighted ROC-AUC search over the model's own width and depth, and a two-input model fed
by dict batches, with samples counted as the model really saw them."""

from __future__ import annotations

from pathlib import Path
import runpy
from typing import Any

import numpy as np
import optuna
from optuna.trial import TrialState
import pytest
from sklearn.metrics import mean_absolute_error, roc_auc_score
import torch
from torch import nn
import torch.nn.functional as F
from torch.utils.data import Dataset

import bsopt

STUDIES = Path(__file__).resolve().parents[2] / "studies"


def _study(url: str, objective: bsopt.Objective, name: str = "own") -> optuna.Study:
    return bsopt.create_study(
        name, storage=url, direction=objective.direction, pruner=optuna.pruners.NopPruner()
    )


def test_cnn_with_batchnorm_on_digits_images(sqlite_url: str) -> None:
    flat = bsopt.load_digits()
    images = bsopt.TensorData(
        flat.x_train.view(-1, 1, 8, 8), flat.y_train, flat.x_val.view(-1, 1, 8, 8), flat.y_val
    )

    def build(params: bsopt.Params) -> nn.Module:
        return nn.Sequential(
            nn.Conv2d(1, 8, 3, padding=1),
            nn.BatchNorm2d(8),
            nn.ReLU(),
            nn.Flatten(),
            nn.Dropout(params.dropout),
            nn.Linear(8 * 64, 10),
        )

    objective = bsopt.make_objective(
        build,
        images,
        space=bsopt.SearchSpace(batch_size=(32, 64), lr=3e-3, dropout=0.1),
        budget=bsopt.Budget(2, evals=2),
        micro_batch_size=16,  # accumulation with BatchNorm runs too
        device="cpu",
    )
    study = _study(sqlite_url, objective)
    bsopt.optimize(study, objective, trials=2, show_progress_bar=False)
    for trial in study.trials:
        assert trial.state == TrialState.COMPLETE
        assert trial.value is not None and trial.value > 0.85  # two epochs of a small CNN
        assert trial.user_attrs["samples_seen"] == 2 * images.n_train
        assert trial.user_attrs["accumulation_steps"] == 2 ** trial.params["log2_batch_size"] // 16


def _regression(n: int = 600, noise: float = 0.1) -> bsopt.TensorData:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(n, 5, generator=gen)
    y = x @ torch.tensor([1.0, -2.0, 0.5, 0.0, 3.0]) + noise * torch.randn(n, generator=gen)
    return bsopt.TensorData(x[:480], y[:480], x[480:], y[480:])


def test_regression_scored_by_mae_matches_sklearn_on_the_retrained_model(
    sqlite_url: str,
) -> None:
    data = _regression()
    objective = bsopt.make_objective(
        lambda params: nn.Linear(5, 1),
        data,
        space=bsopt.SearchSpace(batch_size=(16, 32), lr=(3e-2, 3e-2), dropout=0.0),
        budget=bsopt.Budget(15, evals=3),
        metric="mae",
        device="cpu",
    )
    assert objective.direction == "minimize"
    study = _study(sqlite_url, objective)
    bsopt.optimize(study, objective, trials=2, show_progress_bar=False)
    assert study.metric_names == ["validation mae"]  # the dashboard's name for the value
    assert study.user_attrs["metric"] == "mae"
    assert study.user_attrs["metric_unit"] == "value"
    assert study.user_attrs["metric_direction"] == "minimize"
    best = study.best_trial
    # Gaussian noise of 0.1 has a mean absolute value of 0.1 * sqrt(2 / pi) = 0.080.
    assert best.value == pytest.approx(0.080, abs=0.02)
    model, result = objective.retrain(best)
    assert result.value == best.value  # same seed, same data order: bit-identical on the CPU
    with torch.no_grad():
        predictions = model(data.x_val).squeeze(1).numpy()
    assert mean_absolute_error(data.y_val.numpy(), predictions) == pytest.approx(
        best.value, rel=1e-5
    )
    # The validation loss (MSE by default for float targets) is recorded beside the metric.
    mse = float(((predictions - data.y_val.numpy()) ** 2).mean())
    assert best.user_attrs["val_loss"] == pytest.approx(mse, rel=1e-4)


def test_breast_cancer_study_searches_its_own_width_and_depth_with_a_weighted_loss(
    sqlite_url: str,
) -> None:
    module: dict[str, Any] = runpy.run_path(str(STUDIES / "breast_cancer.py"))
    objective: bsopt.Objective = module["build_objective"](seed=0).with_options(
        budget=bsopt.Budget(2, evals=2)
    )
    study = _study(sqlite_url, objective)
    study.enqueue_trial({"depth": 1, "width": 16, "log2_batch_size": 5})
    study.enqueue_trial({"depth": 2, "width": 32, "taper": 0.5, "log2_batch_size": 4})
    bsopt.optimize(study, objective, trials=3, show_progress_bar=False)
    one, two, _ = study.trials
    assert "taper" not in one.params and two.params["taper"] == 0.5  # conditional
    assert {"depth", "width", "weight_decay", "lr", "dropout"} <= set(two.params)
    assert 1e-5 <= two.params["weight_decay"] <= 1e-1
    assert study.user_attrs["metric"] == "roc_auc"
    assert study.user_attrs["metric_unit"] == "fraction"
    params = bsopt.params_from_trial(two, objective.space, module["suggest"])
    assert params.extra == {"depth": 2, "width": 32, "taper": 0.5}
    assert params.batch_size == 16 and params.weight_decay == two.params["weight_decay"]

    model, result = objective.retrain(two)
    assert result.value == two.value
    assert [m.out_features for m in model if isinstance(m, nn.Linear)] == [32, 16, 2]
    data = objective.data
    model.eval()
    with torch.no_grad():
        logits = model(data.x_val)
    auc = roc_auc_score(data.y_val.numpy(), torch.softmax(logits, 1)[:, 1].numpy())
    assert auc == pytest.approx(two.value, rel=1e-6)
    # The stored validation loss is the weighted loss the study trains with, not plain CE.
    weighted = float(objective.loss(logits, data.y_val))
    assert two.user_attrs["val_loss"] == pytest.approx(weighted, rel=1e-5)
    assert weighted != pytest.approx(float(F.cross_entropy(logits, data.y_val)), rel=1e-3)


class TwoInputs(nn.Module):
    """A model with two named inputs that counts the samples it trains on."""

    def __init__(self, dropout: float) -> None:
        super().__init__()
        self.a = nn.Linear(4, 16)
        self.b = nn.Linear(3, 16)
        self.head = nn.Sequential(nn.ReLU(), nn.Dropout(dropout), nn.Linear(16, 3))
        self.trained_on = 0

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        if self.training:
            self.trained_on += len(a)
        return self.head(self.a(a) + self.b(b))


def _two_input_arrays(n: int = 400) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    a, b = torch.randn(n, 4, generator=gen), torch.randn(n, 3, generator=gen)
    y = ((a[:, 0] + b[:, 0] > 0).long() + (a[:, 1] > 1).long()).clamp(max=2)
    return {"a": a, "b": b}, y


class _Items(Dataset[Any]):
    def __init__(self, x: dict[str, torch.Tensor], y: torch.Tensor) -> None:
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> tuple[dict[str, torch.Tensor], int]:
        return {"a": self.x["a"][i], "b": self.x["b"][i]}, int(self.y[i])


def _collate(items: list[tuple[dict[str, torch.Tensor], int]]) -> Any:
    return (
        {key: torch.stack([x[key] for x, _ in items]) for key in ("a", "b")},
        torch.tensor([y for _, y in items]),
    )


def _two_input_data(kind: str) -> bsopt.training.TrainingData:
    x, y = _two_input_arrays()
    split = lambda t, s: {k: v[s] for k, v in t.items()} if isinstance(t, dict) else t[s]  # noqa: E731
    train, val = slice(0, 320), slice(320, 400)
    if kind == "tensors":
        return bsopt.TensorData(split(x, train), split(y, train), split(x, val), split(y, val))
    return bsopt.DatasetData(
        _Items(split(x, train), split(y, train)),
        _Items(split(x, val), split(y, val)),
        n_classes=3,
        num_workers=0,
        collate_fn=_collate,
    )


@pytest.mark.parametrize("kind", ["tensors", "dataset"])
def test_dict_batches_count_the_samples_the_model_really_saw(kind: str, sqlite_url: str) -> None:
    data = _two_input_data(kind)
    models: list[TwoInputs] = []

    def build(params: bsopt.Params) -> nn.Module:
        models.append(TwoInputs(params.dropout))
        return models[-1]

    objective = bsopt.make_objective(
        build,
        data,
        space=bsopt.SearchSpace(batch_size=(16, 128), lr=1e-2),
        # 2.5 epochs in 3 evaluations: batches cross epoch ends and evaluation points.
        budget=bsopt.Budget(2.5, evals=3),
        micro_batch_size=24,  # and are split into micro-batches of every leaf
        metric="f1_macro",
        device="cpu",
    )
    models.clear()
    study = _study(sqlite_url, objective)
    for log2 in (4, 7, 5):
        study.enqueue_trial({"log2_batch_size": log2})
    bsopt.optimize(study, objective, trials=3, show_progress_bar=False)
    assert len(models) == 3
    for trial, model in zip(study.trials, models, strict=True):
        assert trial.state == TrialState.COMPLETE
        assert trial.user_attrs["samples_seen"] == model.trained_on == 800
        assert sorted(trial.intermediate_values) == [267, 533, 800]
        assert 0.0 <= trial.value <= 1.0  # type: ignore[operator]


def test_same_params_and_seed_give_the_same_value_with_two_threads(
    tiny_objective: bsopt.Objective,
) -> None:
    def values(n_jobs: int) -> dict[int, float]:
        study = optuna.create_study(direction="maximize", pruner=optuna.pruners.NopPruner())
        for log2, lr, dropout in [(3, 1e-2, 0.3), (5, 3e-3, 0.1), (4, 1e-3, 0.4), (6, 3e-2, 0.2)]:
            study.enqueue_trial({"log2_batch_size": log2, "lr": lr, "dropout": dropout})
        study.optimize(tiny_objective, n_trials=4, n_jobs=n_jobs)
        return {t.number: t.value for t in study.trials}  # type: ignore[misc]

    assert values(2) == values(1)


def test_a_model_probe_per_signature_when_the_model_depends_on_own_params(
    sqlite_url: str, tiny_data: bsopt.TensorData
) -> None:
    def build(params: bsopt.Params) -> nn.Module:
        return bsopt.training.mlp(8, 3, hidden=(params.extra["width"],))

    objective = bsopt.make_objective(
        build,
        tiny_data,
        space=bsopt.SearchSpace(batch_size=(16, 64), lr=1e-2, dropout=0.0),
        suggest=lambda trial: {"width": trial.suggest_categorical("width", [16, 256])},
        budget=bsopt.Budget(1, evals=1),
        memory_budget_mb=0.15,
        device="cpu",
    )
    study = _study(sqlite_url, objective)
    for width in (16, 256, 16):
        study.enqueue_trial({"width": width, "log2_batch_size": 6})
    bsopt.optimize(study, objective, trials=3, show_progress_bar=False)
    probes = {k: v for k, v in study.user_attrs.items() if k.startswith("probe:")}
    assert len(probes) == 2  # one per model signature, measured once each
    micro = [t.user_attrs["probed_micro_batch_size"] for t in study.trials]
    assert micro[0] == micro[2] and micro[1] < micro[0]  # the wide model fits fewer samples


def _build(params: bsopt.Params) -> nn.Module:
    return bsopt.training.mlp(8, 3, hidden=(8,), dropout=params.dropout)


class _ThreeOutputs(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, :3]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"suggest": lambda trial: [1, 2]}, r"suggest\(trial\) must return a dict .* list"),
        (
            {"suggest": lambda trial: {"lr": trial.suggest_float("lr", 1e-4, 1e-1, log=True)}},
            r"suggested or returned 'lr', which bsopt searches itself",
        ),
        (
            {"suggest": lambda trial: {"x": trial.suggest_float("dropout", 0.0, 0.9)}},
            r"suggested or returned 'dropout', which bsopt searches itself",
        ),
        (
            {"loss": lambda out, y: F.cross_entropy(out, y, reduction="none")},
            r"loss\(output, target\) must return a scalar tensor .* returned \(8,\)",
        ),
        ({"metric": lambda out, y: 0.0}, r"A callable metric needs direction='maximize' or"),
        ({"metric": "auc"}, r"metric='auc' is not a known metric. Use one of accuracy, loss"),
        ({"metric": "roc_auc"}, r"metric='roc_auc' is for two classes, but the model outputs 3"),
        ({"metric": "mae", "direction": "maximize"}, r"metric='mae' is always minimized"),
        ({"clip_grad_norm": 0}, r"clip_grad_norm must be a positive finite number .* got 0"),
        ({"amp": "fp8"}, r"amp must be one of auto, bf16, fp16, off .* but got 'fp8'"),
        ({"micro_batch_size": 0}, r"micro_batch_size must be an integer >= 1 .* got 0"),
        ({"divergence_factor": 0.5}, r"divergence_factor must be a number above 1, but got 0.5"),
        ({"seed": "a"}, r"seed must be an integer, but got 'a'"),
        ({"device": "tpu"}, r"device='tpu' is not a device torch knows"),
        ({"space": (16, 64)}, r"space must be a bsopt.SearchSpace"),
        ({"batch": 32}, r"make_objective got unknown option\(s\) batch\. The options are"),
    ],
)
def test_bad_options_fail_before_any_trial(
    tiny_data: bsopt.TensorData, options: dict[str, object], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        bsopt.make_objective(_build, tiny_data, **options)


def test_bad_data_and_model_fail_before_any_trial(tiny_data: bsopt.TensorData) -> None:
    with pytest.raises(ValueError, match=r"data is None. Pass the training data"):
        bsopt.make_objective(_build, None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"build_model\(params\) must return a torch.nn.Module"):
        bsopt.make_objective(lambda params: "model", tiny_data)
    with pytest.raises(ValueError, match=r"\['a'\] has 10 samples and \['b'\] has 9"):
        bsopt.TensorData(
            {"a": torch.zeros(10, 4), "b": torch.zeros(9, 3)},
            torch.zeros(10),
            {"a": torch.zeros(2, 4), "b": torch.zeros(2, 3)},
            torch.zeros(2),
        )


def test_nan_in_the_data_is_refused_at_load_time_naming_where() -> None:
    x = np.random.default_rng(0).normal(size=(50, 3))
    x[7, 2] = np.nan
    y = np.arange(50) % 2
    data_x = torch.as_tensor(x, dtype=torch.float32)
    with pytest.raises(ValueError, match=r"training inputs hold 1 NaN or infinite value\(s\)"):
        bsopt.TensorData(
            data_x[:40], torch.as_tensor(y[:40]), data_x[40:], torch.as_tensor(y[40:])
        )


def test_single_class_labels_are_refused() -> None:
    with pytest.raises(ValueError, match=r"training labels hold a single class \(1\)"):
        bsopt.TensorData(
            torch.zeros(10, 2),
            torch.ones(10, dtype=torch.long),
            torch.zeros(2, 2),
            torch.ones(2, dtype=torch.long),
        )


def test_one_dimensional_x_is_refused_with_the_fix() -> None:
    with pytest.raises(ValueError, match=r"shape \(20,\). For one feature per sample use"):
        bsopt.from_arrays(np.zeros(20), np.arange(20) % 2)


def test_tensor_data_repr_shows_shapes_not_values(tiny_data: bsopt.TensorData) -> None:
    text = repr(tiny_data)
    assert text.startswith("TensorData(name='synthetic', n_train=320, n_val=80")
    assert "(80, 8) float32" in text and "tensor(" not in text
