from __future__ import annotations

import math

import optuna
import pytest

from bsopt import Params, SearchSpace


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
        bs = trial.params["batch_size"]
        assert bs == 2 ** trial.params["log2_batch_size"]
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
    assert study.trials[0].distributions["batch_size"].log


def test_lr_and_dropout_stay_in_range(sqlite_url: str) -> None:
    space = SearchSpace(lr=(1e-3, 1e-2), dropout=(0.1, 0.2))
    for trial in _ask(space, sqlite_url, 20).trials:
        assert 1e-3 <= trial.params["lr"] <= 1e-2
        assert 0.1 <= trial.params["dropout"] <= 0.2


def test_fixed_dimensions_are_recorded(sqlite_url: str) -> None:
    trial = _ask(SearchSpace(batch_size=(32, 32), dropout=(0.0, 0.0)), sqlite_url, 1).trials[0]
    assert trial.params["batch_size"] == 32
    assert trial.params["dropout"] == 0.0


def test_batch_sizes_lists_the_grid() -> None:
    assert SearchSpace(batch_size=(8, 64)).batch_sizes == [8, 16, 32, 64]
    assert SearchSpace(batch_size=(3, 6), batch_grid="int").batch_sizes == [3, 4, 5, 6]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"batch_size": (256, 16)}, r"batch_size must be given as \(low, high\) with low <= high"),
        ({"batch_size": (0, 16)}, r"batch_size bounds must be positive .* got low=0"),
        ({"batch_size": (16.0, 64)}, r"batch_size bounds must be integers"),
        ({"batch_size": (24, 64)}, r"powers of two, but got \(24, 64\).*batch_grid='int'"),
        ({"lr": (0.1, 0.001)}, r"lr must be given as \(low, high\) with low <= high"),
        ({"lr": (0.0, 0.1)}, r"lr bounds must be positive"),
        ({"dropout": (0.0, 1.0)}, r"dropout must lie in \[0, 1\), but got \(0.0, 1.0\)"),
        ({"dropout": (-0.1, 0.5)}, r"dropout must lie in \[0, 1\)"),
        ({"batch_grid": "exp"}, r"batch_grid must be 'pow2' or 'int', but got 'exp'"),
        ({"optimizer": "adam"}, r"optimizer must be 'adamw' or 'sgd', but got 'adam'"),
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
