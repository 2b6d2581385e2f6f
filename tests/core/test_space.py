from __future__ import annotations

import math

import optuna
import pytest

from bsopt import Params, SearchSpace
from bsopt.core._space import batch_size_from_params, shown_params


def _ask(space: SearchSpace, url: str, n: int) -> optuna.Study:
    study = optuna.create_study(storage=url, sampler=optuna.samplers.RandomSampler(seed=1))
    for _ in range(n):
        trial = study.ask()
        params = space.suggest(trial)
        study.tell(trial, float(params.batch_size))
    return study


def test_pow2_batch_size_is_stored_as_the_value_used(sqlite_url: str) -> None:
    study = _ask(SearchSpace(batch_size=(16, 256)), sqlite_url, 40)
    reloaded = optuna.load_study(study_name=study.study_name, storage=sqlite_url)
    seen = set()
    for trial in reloaded.trials:
        bs = 2 ** trial.params["log2_batch_size"]
        assert "batch_size" not in trial.params  # the exponent is the one batch-size param
        assert batch_size_from_params(trial.params) == bs
        assert trial.value == bs  # what suggest() returned is what was stored
        seen.add(bs)
    assert seen == {16, 32, 64, 128, 256}


def test_only_the_exponent_is_searched_on_the_pow2_grid(sqlite_url: str) -> None:
    study = _ask(SearchSpace(), sqlite_url, 5)
    space = optuna.search_space.intersection_search_space(study.trials)
    assert set(space) == {"log2_batch_size", "lr", "dropout"}
    assert space["log2_batch_size"] == optuna.distributions.IntDistribution(4, 8)


def test_int_grid_searches_batch_size_on_a_log_scale(sqlite_url: str) -> None:
    study = _ask(SearchSpace(batch_size=(10, 300), batch_grid="int"), sqlite_url, 30)
    values = [t.params["batch_size"] for t in study.trials]
    assert all(10 <= v <= 300 for v in values)
    assert any(not math.log2(v).is_integer() for v in values)
    dist = study.trials[0].distributions["batch_size"]
    assert isinstance(dist, optuna.distributions.IntDistribution) and dist.log


def test_lr_and_dropout_stay_in_range(sqlite_url: str) -> None:
    space = SearchSpace(lr=(1e-3, 1e-2), dropout=(0.1, 0.2))
    for trial in _ask(space, sqlite_url, 20).trials:
        assert 1e-3 <= trial.params["lr"] <= 1e-2
        assert 0.1 <= trial.params["dropout"] <= 0.2


def test_fixed_dimensions_are_recorded(sqlite_url: str) -> None:
    trial = _ask(SearchSpace(batch_size=(32, 32), dropout=(0.0, 0.0)), sqlite_url, 1).trials[0]
    assert trial.params["log2_batch_size"] == 5 and "batch_size" not in trial.params
    assert batch_size_from_params(trial.params) == 32
    assert trial.params["dropout"] == 0.0


def test_batch_size_from_params_reads_every_stored_form() -> None:
    assert batch_size_from_params({"log2_batch_size": 6, "lr": 0.1}) == 64
    assert batch_size_from_params({"batch_size": 48}) == 48  # the "int" grid
    # Studies written before kept a single-point batch_size beside the exponent.
    assert batch_size_from_params({"log2_batch_size": 6, "batch_size": 64}) == 64
    assert batch_size_from_params({"lr": 0.1}) is None


def test_shown_params_name_the_batch_size_once_in_place_of_the_exponent() -> None:
    new = {"log2_batch_size": 5, "lr": 0.01}
    old = {"batch_size": 32, "dropout": 0.1, "log2_batch_size": 5}
    assert list(shown_params(new).items()) == [("batch_size", 32), ("lr", 0.01)]
    assert list(shown_params(old).items()) == [("batch_size", 32), ("dropout", 0.1)]
    assert shown_params({"batch_size": 48, "lr": 0.01}) == {"batch_size": 48, "lr": 0.01}


def test_batch_sizes_lists_the_grid() -> None:
    assert SearchSpace(batch_size=(8, 64)).batch_sizes == [8, 16, 32, 64]
    assert SearchSpace(batch_size=(3, 6), batch_grid="int").batch_sizes == [3, 4, 5, 6]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"batch_size": (256, 16)}, r"batch_size must be given as \(low, high\) with low <= high"),
        ({"batch_size": (0, 16)}, r"batch_size bounds must be positive .* got low=0"),
        (
            {"batch_size": (16.0, 64)},
            r"batch_size must be an integer or a \(low, high\) pair of integers, but got "
            r"\(16.0, 64\)",
        ),
        ({"batch_size": (24, 64)}, r"powers of two, but got \(24, 64\).*batch_grid='int'"),
        ({"lr": (0.1, 0.001)}, r"lr must be given as \(low, high\) with low <= high"),
        ({"lr": (0.0, 0.1)}, r"lr bounds must be positive"),
        ({"dropout": (0.0, 1.0)}, r"dropout must lie in \[0, 1\), but got \(0.0, 1.0\)"),
        ({"dropout": (-0.1, 0.5)}, r"dropout must lie in \[0, 1\)"),
        ({"batch_grid": "exp"}, r"batch_grid must be 'pow2' or 'int', but got 'exp'"),
        ({"optimizer": "adam"}, r"optimizer must be one of adamw, sgd, lars .* but got 'adam'"),
        ({"weight_decay": -1.0}, r"weight_decay must be 0 or more"),
    ],
)
def test_bad_space_is_refused_with_the_rule(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SearchSpace(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"batch_size": 0, "lr": 0.1}, r"batch_size must be at least 1, but got 0"),
        ({"batch_size": 8, "lr": -1.0}, r"lr must be a positive finite number"),
        ({"batch_size": 8, "lr": 0.1, "dropout": 1.0}, r"dropout must be in \[0, 1\)"),
    ],
)
def test_bad_params_are_refused(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Params(**kwargs)  # type: ignore[arg-type]


def test_params_as_dict_merges_extra() -> None:
    params = Params(batch_size=8, lr=0.1, extra={"width": 32})
    assert params.as_dict()["width"] == 32
    assert params.as_dict()["batch_size"] == 8


def test_coupled_lr_arithmetic() -> None:
    from bsopt.core._space import coupled_lr

    assert coupled_lr(1e-3, 256, 64, 1.0) == pytest.approx(4e-3)
    assert coupled_lr(1e-3, 256, 64, 0.5) == pytest.approx(2e-3)
    assert coupled_lr(1e-3, 16, 64, 0.5) == pytest.approx(5e-4)
    assert coupled_lr(1e-3, 256, 64, 0.0) == pytest.approx(1e-3)


def test_reference_defaults_to_the_geometric_middle() -> None:
    assert SearchSpace(batch_size=(16, 256)).reference == 64
    assert SearchSpace(batch_size=(8, 512)).reference == 64
    assert SearchSpace(reference_batch_size=100).reference == 100


def test_coupled_space_stores_base_lr_and_the_rule(sqlite_url: str) -> None:
    space = SearchSpace(batch_size=(16, 256), lr_scaling=("none", "sqrt", "linear"))
    study = optuna.create_study(storage=sqlite_url, sampler=optuna.samplers.RandomSampler(0))
    for _ in range(30):
        trial = study.ask()
        params = space.suggest(trial)
        alpha = {"none": 0.0, "sqrt": 0.5, "linear": 1.0}[trial.params["lr_scaling"]]
        expected = trial.params["base_lr"] * (2 ** trial.params["log2_batch_size"] / 64) ** alpha
        assert params.lr == pytest.approx(expected)
        assert "lr" not in trial.params
        study.tell(trial, 0.0)
    assert {t.params["lr_scaling"] for t in study.trials} == {"none", "sqrt", "linear"}


def test_searched_schedules_and_fixed_ones(sqlite_url: str) -> None:
    space = SearchSpace(
        lr_schedule=("constant", "cosine"),
        warmup=(0.0, 0.2),
        batch_schedule="grow",
        optimizer=("adamw", "sgd"),
    )
    study = optuna.create_study(storage=sqlite_url, sampler=optuna.samplers.RandomSampler(0))
    trial = study.ask()
    params = space.suggest(trial)
    assert params.lr_schedule == trial.params["lr_schedule"]
    assert params.optimizer == trial.params["optimizer"]
    assert 0.0 <= trial.params["warmup"] <= 0.2 and params.warmup == trial.params["warmup"]
    assert params.batch_schedule == "grow" and "batch_schedule" not in trial.params
    assert params.batch_min == 16


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"lr_scaling": "cubic"}, r"lr_scaling must be one of none, sqrt, linear"),
        (
            {"lr_schedule": ("cosine", "exp")},
            r"lr_schedule must be one of .* got \('cosine', 'exp'\)",
        ),
        ({"batch_schedule": "shrink"}, r"batch_schedule must be one of constant, grow"),
        ({"warmup": 1.0}, r"warmup must be a fraction in \[0, 1\), but got 1.0"),
        ({"warmup": (0.3, 0.1)}, r"warmup must be given as \(low, high\) with low <= high"),
        ({"reference_batch_size": 0}, r"reference_batch_size must be an integer >= 1, got 0"),
    ],
)
def test_bad_coupling_and_schedule_settings(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SearchSpace(**kwargs)  # type: ignore[arg-type]
