"""Your own training recipe through make_objective (issue 23): an optimizer function with
parameter groups, a loss that reads the trial's values, structured outputs picked for the
metric, the way the model is called, and rows counted as the model saw them. Real tiny
training on the CPU with models that are not the digits MLP (a 1-D CNN on windows of a
generated series, a model returning (logits, aux), a forward(self, batch) model)."""

from __future__ import annotations

from pathlib import Path
import runpy
from typing import Any
import warnings

import optuna
from optuna.trial import TrialState
import pytest
import torch
from torch import nn
import torch.nn.functional as F
from torch.utils.data import Dataset

import bsopt

STUDIES = Path(__file__).resolve().parents[2] / "studies"


def _study(url: str, objective: bsopt.Objective, name: str = "recipe") -> optuna.Study:
    return bsopt.create_study(
        name, storage=url, direction=objective.direction, pruner=optuna.pruners.NopPruner()
    )


def _series(n: int = 1200, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    t = torch.arange(n, dtype=torch.float32)
    return torch.sin(t / 7) + 0.5 * torch.sin(t / 3) + 0.1 * torch.randn(n, generator=gen)


class Windows(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """One row per item: the window starting at ``i`` and the value after it."""

    def __init__(self, series: torch.Tensor, width: int = 16) -> None:
        self.series, self.width = series, width

    def __len__(self) -> int:
        return len(self.series) - self.width

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.series[i : i + self.width].unsqueeze(0), self.series[i + self.width]


class Cnn(nn.Module):
    def __init__(self, width: int = 8) -> None:
        super().__init__()
        self.conv = nn.Conv1d(1, width, 3, padding=1)
        self.norm = nn.BatchNorm1d(width)
        self.head = nn.Linear(width, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(F.relu(self.norm(self.conv(x))).mean(-1)).squeeze(-1)


def _window_data() -> bsopt.DatasetData:
    series = _series()
    return bsopt.DatasetData(
        Windows(series[:900]), Windows(series[900:]), n_classes=None, num_workers=0
    )


def grouped_sgd(params: bsopt.Params, model: nn.Module) -> torch.optim.Optimizer:
    """SGD with no weight decay on norms and biases, momentum from the user's suggest."""
    decay = [p for n, p in model.named_parameters() if p.ndim > 1]
    rest = [p for n, p in model.named_parameters() if p.ndim <= 1]
    return torch.optim.SGD(
        [{"params": decay, "weight_decay": 1e-4}, {"params": rest, "weight_decay": 0.0}],
        lr=params.lr,
        momentum=params.extra["momentum_sgd"],
    )


def test_optimizer_fn_with_groups_and_a_huber_loss_of_the_trial(sqlite_url: str) -> None:
    deltas: list[float] = []

    def huber(out: torch.Tensor, y: torch.Tensor, params: bsopt.Params) -> torch.Tensor:
        deltas.append(params.extra["delta"])
        return F.huber_loss(out, y, delta=params.extra["delta"])

    def suggest(trial: optuna.Trial) -> dict[str, Any]:
        return {
            "delta": trial.suggest_float("delta", 0.1, 2.0, log=True),
            "momentum_sgd": trial.suggest_float("momentum_sgd", 0.5, 0.95),
        }

    rows: list[int] = []

    def build(params: bsopt.Params) -> nn.Module:
        model = Cnn()
        model.register_forward_hook(lambda m, args, out: rows.append(args[0].shape[0]))
        return model

    data = _window_data()
    objective = bsopt.make_objective(
        build,
        data,
        space=bsopt.SearchSpace(batch_size=(32, 64), lr=(1e-2, 3e-2), lr_schedule="cosine"),
        budget=bsopt.Budget(2, evals=2),
        metric="mae",
        loss=huber,
        optimizer=grouped_sgd,
        suggest=suggest,
        device="cpu",
    )
    study = _study(sqlite_url, objective)
    rows.clear()
    deltas.clear()  # the preflight's loss read a delta of its own sample
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # every suggested value is read: no warning
        bsopt.optimize(study, objective, trials=2, show_progress_bar=False)
    trials = study.get_trials(states=(TrialState.COMPLETE,))
    assert len(trials) == 2
    assert {round(d, 9) for d in deltas} == {round(t.params["delta"], 9) for t in trials}
    for trial in trials:
        assert trial.user_attrs["optimizer"] == "custom:grouped_sgd"
        assert trial.user_attrs["samples_seen"] == 2 * data.n_train
        assert trial.user_attrs["epochs"] == 2.0
    # The rows the model's forward saw in training and validation, against what was stored.
    evaluated = 2 * 2 * data.n_val  # two evaluations per trial, two trials
    assert sum(rows) == sum(t.user_attrs["samples_seen"] for t in trials) + evaluated


def test_the_lr_schedule_scales_each_group_from_its_own_rate(
    tiny_data: bsopt.TensorData,
) -> None:
    seen: list[list[float]] = []

    def two_rates(params: bsopt.Params, model: nn.Module) -> torch.optim.Optimizer:
        first, *others = list(model.children())
        rest = [p for m in others for p in m.parameters()]
        optimizer = torch.optim.SGD(
            [{"params": first.parameters(), "lr": params.lr / 10}, {"params": rest}],
            lr=params.lr,
        )
        original = optimizer.step

        def step(*args: Any, **kwargs: Any) -> Any:
            seen.append([g["lr"] for g in optimizer.param_groups])
            return original(*args, **kwargs)

        optimizer.step = step  # type: ignore[method-assign]
        return optimizer

    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))
    params = bsopt.Params(32, 0.1, warmup=0.5)
    bsopt.training.train(
        model, tiny_data, params, budget=bsopt.Budget(2), device="cpu", optimizer=two_rates
    )
    assert all(abs(low * 10 - high) < 1e-12 for low, high in seen)  # ratio kept throughout
    assert seen[0][1] < 0.1 / 2  # warm-up starts low
    assert max(high for _, high in seen) == pytest.approx(0.1)


def test_a_suggested_value_nothing_reads_is_warned_about(tiny_data: bsopt.TensorData) -> None:
    def suggest(trial: optuna.Trial) -> dict[str, Any]:
        trial.suggest_categorical("unreturned", ["a", "b"])
        return {"opt": trial.suggest_categorical("opt", ["sgd", "adamw"])}

    objective = bsopt.make_objective(
        bsopt.mlp_builder(tiny_data, hidden=(8,)),
        tiny_data,
        space=bsopt.SearchSpace(batch_size=(32, 32), lr=1e-2),
        budget=bsopt.Budget(1, evals=1),
        suggest=suggest,
        device="cpu",
    )
    study = optuna.create_study(direction=objective.direction)
    with pytest.warns(UserWarning, match=r"'opt' reached params.extra, but neither") as record:
        study.optimize(objective, n_trials=2)
    assert "'unreturned' was suggested but not returned" in str(record[0].message)
    assert len([r for r in record if "params.extra" in str(r.message)]) == 1  # first trial


def test_an_optimizer_choice_read_by_the_optimizer_fn_is_used(
    tiny_data: bsopt.TensorData,
) -> None:
    def suggest(trial: optuna.Trial) -> dict[str, Any]:
        opt = trial.suggest_categorical("opt", ["sgd", "adam"])
        if opt == "sgd":  # conditional: only SGD trials search a momentum
            return {"opt": opt, "sgd_momentum": trial.suggest_float("sgd_momentum", 0.0, 0.9)}
        return {"opt": opt, "beta2": trial.suggest_float("beta2", 0.9, 0.999)}

    used: list[str] = []

    def choose(params: bsopt.Params, model: nn.Module) -> torch.optim.Optimizer:
        extra = params.extra
        if extra["opt"] == "sgd":
            optimizer: torch.optim.Optimizer = torch.optim.SGD(
                model.parameters(), lr=params.lr, momentum=extra["sgd_momentum"]
            )
        else:
            optimizer = torch.optim.Adam(
                model.parameters(), lr=params.lr, betas=(0.9, extra["beta2"])
            )
        used.append(type(optimizer).__name__)
        return optimizer

    objective = bsopt.make_objective(
        bsopt.mlp_builder(tiny_data, hidden=(8,)),
        tiny_data,
        space=bsopt.SearchSpace(batch_size=(32, 32), lr=1e-2),
        budget=bsopt.Budget(1, evals=1),
        suggest=suggest,
        optimizer=choose,
        device="cpu",
    )
    assert len(used) == 1  # the preflight checked what the function returns
    used.clear()
    study = optuna.create_study(
        direction=objective.direction, sampler=optuna.samplers.RandomSampler(seed=3)
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        study.optimize(objective, n_trials=6)
    expected = ["SGD" if t.params["opt"] == "sgd" else "Adam" for t in study.trials]
    assert used == expected and len(set(used)) == 2
    for trial in study.trials:
        assert ("sgd_momentum" in trial.params) == (trial.params["opt"] == "sgd")


def test_the_builtin_optimizer_choice_samples_momentum_for_sgd_only() -> None:
    space = bsopt.SearchSpace(optimizer=("sgd", "adamw"), momentum=(0.5, 0.95))
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(12):
        trial = study.ask()
        params = space.suggest(trial)
        assert ("momentum" in trial.params) == (params.optimizer == "sgd")
        study.tell(trial, 0.0)
    assert {t.params["optimizer"] for t in study.trials} == {"sgd", "adamw"}


class WithAux(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Linear(8, 16)
        self.head = nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        hidden = torch.relu(self.body(x))
        return self.head(hidden), hidden.pow(2).mean(-1)


@pytest.mark.parametrize("metric", ["accuracy", "f1_macro"])
def test_a_tuple_output_is_picked_for_the_named_metric(
    tiny_data: bsopt.TensorData, metric: str
) -> None:
    objective = bsopt.make_objective(
        lambda params: WithAux(),
        tiny_data,
        space=bsopt.SearchSpace(batch_size=(32, 32), lr=1e-2, dropout=0.0),  # one seed
        budget=bsopt.Budget(2, evals=1),
        metric=metric,
        output=0,
        device="cpu",
    )
    study = optuna.create_study(direction="maximize")
    study.optimize(objective, n_trials=1)
    assert 0.5 < study.best_value <= 1.0


def test_a_tuple_output_without_output_is_refused_before_any_trial(
    tiny_data: bsopt.TensorData,
) -> None:
    with pytest.raises(ValueError, match=r"returns a tuple of 2 .* output=0"):
        bsopt.make_objective(lambda params: WithAux(), tiny_data, device="cpu")


def test_a_dict_output_is_picked_by_key_and_a_bad_key_is_named(
    tiny_data: bsopt.TensorData,
) -> None:
    class Named(WithAux):
        def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:  # type: ignore[override]
            logits, aux = super().forward(x)
            return {"logits": logits, "aux": aux}

    objective = bsopt.make_objective(
        lambda params: Named(), tiny_data, output="logits", device="cpu"
    )
    assert objective.metric.name == "accuracy"
    with pytest.raises(ValueError, match=r"output='score' picks .* keys \['logits', 'aux'\]"):
        bsopt.make_objective(lambda params: Named(), tiny_data, output="score", device="cpu")
    with pytest.raises(ValueError, match=r"output must be an index .* but got 1.5"):
        bsopt.make_objective(lambda params: Named(), tiny_data, output=1.5, device="cpu")


def test_structured_targets_with_a_named_metric_are_refused_with_the_fix() -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(400, 4, generator=gen)
    y = {"a": torch.randn(400, generator=gen), "b": torch.randn(400, generator=gen)}
    data = bsopt.TensorData(
        x[:300], {k: v[:300] for k, v in y.items()}, x[300:], {k: v[300:] for k, v in y.items()}
    )

    class Two(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = nn.Linear(4, 1), nn.Linear(4, 1)

        def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
            return {"a": self.a(x).squeeze(-1), "b": self.b(x).squeeze(-1)}

    def loss(out: dict[str, torch.Tensor], y: dict[str, torch.Tensor]) -> torch.Tensor:
        return F.mse_loss(out["a"], y["a"]) + F.mse_loss(out["b"], y["b"])

    with pytest.raises(ValueError, match=r"model returns a dict .* callable metric"):
        bsopt.make_objective(lambda p: Two(), data, metric="mae", loss=loss, device="cpu")


def test_a_metric_returning_none_is_refused_before_any_trial(
    tiny_data: bsopt.TensorData,
) -> None:
    def forgot_return(outputs: torch.Tensor, targets: torch.Tensor) -> None:
        (outputs.argmax(-1) == targets).float().mean()

    with pytest.raises(ValueError, match=r"metric 'forgot_return' must return a number .*None"):
        bsopt.make_objective(
            bsopt.mlp_builder(tiny_data, hidden=(8,)),
            tiny_data,
            metric=forgot_return,
            direction="maximize",
            device="cpu",
        )


def test_a_loss_of_four_arguments_is_refused(tiny_data: bsopt.TensorData) -> None:
    def four(out: Any, y: Any, params: Any, extra: Any) -> torch.Tensor:
        return F.cross_entropy(out, y)

    with pytest.raises(ValueError, match=r"loss must take \(output, target\) or .*four"):
        bsopt.make_objective(bsopt.mlp_builder(tiny_data), tiny_data, loss=four, device="cpu")


@pytest.mark.parametrize(
    ("value", "match"),
    [
        ("adam", r"optimizer must be None .* but got 'adam'"),
        (3, r"optimizer must be None .* but got 3"),
    ],
)
def test_a_bad_optimizer_is_refused(tiny_data: bsopt.TensorData, value: Any, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        bsopt.make_objective(bsopt.mlp_builder(tiny_data), tiny_data, optimizer=value)


def test_an_optimizer_name_and_a_searched_optimizer_conflict(
    tiny_data: bsopt.TensorData,
) -> None:
    with pytest.raises(ValueError, match=r"optimizer='sgd' decides .* also sets"):
        bsopt.make_objective(
            bsopt.mlp_builder(tiny_data),
            tiny_data,
            space=bsopt.SearchSpace(optimizer=("sgd", "adamw")),
            optimizer="sgd",
        )


def test_an_optimizer_name_trains_with_it(tiny_data: bsopt.TensorData) -> None:
    objective = bsopt.make_objective(
        bsopt.mlp_builder(tiny_data, hidden=(8,)),
        tiny_data,
        space=bsopt.SearchSpace(batch_size=(32, 32), lr=1e-2),
        budget=bsopt.Budget(1, evals=1),
        optimizer="sgd",
        device="cpu",
    )
    study = optuna.create_study(direction="maximize")
    study.optimize(objective, n_trials=1)
    assert study.trials[0].user_attrs["optimizer"] == "sgd"


def test_an_optimizer_fn_must_return_an_optimizer_of_the_model(
    tiny_data: bsopt.TensorData,
) -> None:
    model = nn.Linear(8, 3)
    params = bsopt.Params(32, 1e-2)
    with pytest.raises(ValueError, match=r"must return a torch.optim.Optimizer, .* list"):
        bsopt.training.train(
            model, tiny_data, params, device="cpu", optimizer=lambda p, m: [m.weight]
        )
    other = nn.Linear(2, 2)
    with pytest.raises(ValueError, match=r"updates none of the model's weights"):
        bsopt.training.train(
            model,
            tiny_data,
            params,
            device="cpu",
            optimizer=lambda p, m: torch.optim.SGD(other.parameters(), lr=p.lr),
        )


class WholeBatch(nn.Module):
    """A forward(self, batch) model that reads its inputs from one dict."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(4, 3), nn.Linear(4, 3)

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.a(batch["left"]) + self.b(batch["right"])


def _dict_data(tiny_data: bsopt.TensorData) -> bsopt.TensorData:
    def split(x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"left": x[:, :4], "right": x[:, 4:]}

    return bsopt.TensorData(
        split(tiny_data.x_train), tiny_data.y_train, split(tiny_data.x_val), tiny_data.y_val
    )


def test_call_whole_passes_the_dict_as_one_argument(tiny_data: bsopt.TensorData) -> None:
    data = _dict_data(tiny_data)
    with pytest.raises(ValueError, match=r"cannot be called as model\(\*\*inputs\).*call='whole'"):
        bsopt.make_objective(lambda p: WholeBatch(), data, device="cpu")
    objective = bsopt.make_objective(
        lambda p: WholeBatch(),
        data,
        space=bsopt.SearchSpace(batch_size=(32, 32), lr=1e-2, dropout=0.0),  # one seed
        budget=bsopt.Budget(6, evals=1),
        call="whole",
        device="cpu",
    )
    study = optuna.create_study(direction="maximize")
    study.optimize(objective, n_trials=1)
    assert study.best_value > 0.5  # chance is 1/3
    assert study.best_trial.user_attrs["samples_seen"] == 6 * data.n_train
    with pytest.raises(ValueError, match=r"call must be one of kwargs, positional, whole"):
        bsopt.make_objective(lambda p: WholeBatch(), data, call="dict")


class HfItems(Dataset[dict[str, torch.Tensor]]):
    """Hugging Face-style items: the label inside the dict."""

    def __init__(self, data: bsopt.TensorData, split: str) -> None:
        self.x = getattr(data, f"x_{split}")
        self.y = getattr(data, f"y_{split}")

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"left": self.x[i, :4], "right": self.x[i, 4:], "labels": self.y[i]}


def test_target_key_takes_the_label_out_of_dict_items(tiny_data: bsopt.TensorData) -> None:
    with pytest.raises(ValueError, match=r"dict with keys \['left', 'right', 'labels'\].*"):
        bsopt.DatasetData(HfItems(tiny_data, "train"), HfItems(tiny_data, "val"), n_classes=3)
    data = bsopt.DatasetData(
        HfItems(tiny_data, "train"),
        HfItems(tiny_data, "val"),
        n_classes=3,
        target_key="labels",
    )
    objective = bsopt.make_objective(
        lambda p: WholeBatch(),
        data,
        space=bsopt.SearchSpace(batch_size=(32, 32), lr=1e-2, dropout=0.0),  # one seed
        budget=bsopt.Budget(6, evals=1),
        call="whole",
        device="cpu",
    )
    study = optuna.create_study(direction="maximize")
    study.optimize(objective, n_trials=1)
    assert 0.5 < study.best_value <= 1.0  # chance is 1/3
    assert study.best_trial.user_attrs["samples_seen"] == 6 * data.n_train
    with pytest.raises(ValueError, match=r"target_key must be the key"):
        bsopt.DatasetData(
            HfItems(tiny_data, "train"),
            HfItems(tiny_data, "val"),
            n_classes=3,
            target_key=1,  # type: ignore[arg-type]
        )


class Stacked(Windows):
    """Three rows per item (windows at three offsets), stacked by the item itself."""

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        rows = [super(Stacked, self).__getitem__(min(i + k, len(self) - 1)) for k in range(3)]
        return torch.stack([r[0] for r in rows]), torch.stack([r[1] for r in rows])


def _flatten(items: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.cat([x for x, _ in items]), torch.cat([y for _, y in items])


def test_a_collate_with_several_rows_per_item_is_refused_with_the_fix() -> None:
    series = _series()
    with pytest.raises(ValueError, match=r"8 training items collate into 24 rows.*by row"):
        bsopt.DatasetData(
            Stacked(series[:900]), Stacked(series[900:]), n_classes=None, collate_fn=_flatten
        )


def test_a_fraction_metric_outside_0_1_is_an_error() -> None:
    metric = bsopt.training.METRICS["accuracy"]
    from bsopt.training._metrics import check_metric_value

    with pytest.raises(ValueError, match=r"'accuracy' is a fraction, but came out as 3.2"):
        check_metric_value(metric, 3.2)
    assert check_metric_value(metric, torch.tensor(0.5)) == 0.5


def test_an_optimizer_fn_returning_no_optimizer_is_refused_before_any_trial(
    tiny_data: bsopt.TensorData,
) -> None:
    with pytest.raises(ValueError, match=r"must return a torch.optim.Optimizer, .* generator"):
        bsopt.make_objective(
            bsopt.mlp_builder(tiny_data),
            tiny_data,
            optimizer=lambda params, model: model.parameters(),
            device="cpu",
        )


def test_the_own_recipe_study_script_runs(sqlite_url: str) -> None:
    namespace = runpy.run_path(str(STUDIES / "own_recipe.py"))
    study = bsopt.create_study("own_recipe", storage=sqlite_url, direction="minimize")
    objective = namespace["build_objective"](budget=bsopt.Budget(1, evals=1))
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        bsopt.optimize(study, objective, trials=2, show_progress_bar=False)
    assert all(t.state == TrialState.COMPLETE for t in study.trials)
    assert all(t.user_attrs["optimizer"] == "custom:grouped_adamw" for t in study.trials)
