"""Reading a stored study back: the study itself, and what one trial holds.

Everything the analysis knows comes from here: parameters, values, intermediate values and
the user attributes :func:`~bsopt.make_objective` writes. Nothing trains a model.
"""

from __future__ import annotations

from collections.abc import Sequence
import math
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from bsopt.core._attrs import (
    CONFIRM_ATTR,
    CONFIRM_STUDY_ATTR,
    CONFIRM_STUDY_SUFFIX,
    confirm_study_name,
)
from bsopt.core._space import EXPONENT_PARAM, batch_size_from_params
from bsopt.store import mask_url, open_storage, resolve_storage_url

#: The searched batch-size exponent, which the analysis reports as ``batch_size``.
SEARCHED_BATCH = EXPONENT_PARAM


def load_study(study: optuna.Study | str, *, storage: str | None = None) -> optuna.Study:
    """``study`` itself, or the study of that name in ``storage`` (resolved the bsopt way).

    Raises:
        ValueError: no study of that name is stored; the message lists those that are.
    """
    if isinstance(study, optuna.Study):
        return study
    if not isinstance(study, str) or not study.strip():
        raise ValueError(f"study must be an optuna.Study or a study name, but got {study!r}.")
    url = resolve_storage_url(storage)
    # Reading needs no heartbeat: the analysis never runs a trial.
    opened = open_storage(url, heartbeat_interval=None)
    try:
        return optuna.load_study(study_name=study, storage=opened)
    except KeyError:
        names = [s.study_name for s in opened.get_all_studies()]
        held = ", ".join(repr(n) for n in names) if names else "no study yet"
        raise ValueError(
            f"The storage {mask_url(url)!r} holds no study named {study!r} (it holds {held}). "
            "Pass one of those names with --study, or list them with: bsopt studies"
        ) from None


def trial_batch_size(trial: FrozenTrial) -> int | None:
    """The effective batch size a trial trained with, or ``None`` if it never drew one.

    From its parameters (``2 ** log2_batch_size``, or ``batch_size`` on the ``"int"`` grid and
    in studies that stored both), else from its user attributes (a plain Optuna trial that
    reported through bsopt's fair reporter, say).
    """
    from_params = batch_size_from_params(trial.params)
    if from_params is not None:
        return from_params
    for key in ("batch_size", "effective_batch_size"):
        value = trial.user_attrs.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return int(value)
    return None


def trial_lr(trial: FrozenTrial) -> float | None:
    """The learning rate actually used: the ``lr`` user attribute, else the ``lr`` parameter.

    The attribute comes first because a coupled space samples a base rate and derives the
    used one; the parameter is then not the rate the model trained with.
    """
    for value in (trial.user_attrs.get("lr"), trial.params.get("lr")):
        if isinstance(value, (int, float)) and value > 0 and math.isfinite(value):
            return float(value)
    return None


def finite(value: Any) -> float | None:
    """``value`` as a float if it is a finite number (not a bool), else ``None``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def trial_noise_scale(trial: FrozenTrial) -> float | None:
    """The trial's last recorded gradient noise scale (user attribute ``noise_scale``).

    Accepts a number, a list of numbers (one per evaluation; the last one is taken) or a list
    of ``[step, value]`` pairs. ``None`` when the trial has none.
    """
    value = trial.user_attrs.get("noise_scale")
    if isinstance(value, (list, tuple)):
        for item in reversed(value):
            item = item[-1] if isinstance(item, (list, tuple)) and item else item
            found = finite(item)
            if found is not None and found > 0:
                return found
        return None
    found = finite(value)
    return found if found is not None and found > 0 else None


def trial_noise_interval(trial: FrozenTrial) -> tuple[float, float] | None:
    """The trial's stored interval of its noise scale (``noise_scale_interval``), if valid."""
    value = trial.user_attrs.get("noise_scale_interval")
    if isinstance(value, (list, tuple)) and len(value) == 2:
        low, high = finite(value[0]), finite(value[1])
        if low is not None and high is not None and 0 < low <= high:
            return (low, high)
    return None


def trial_value(trial: FrozenTrial) -> float | None:
    """The trial's (first) objective value if it is finite, else ``None``.

    In a multi-objective study (bsopt's ``goal="metric_and_time"``) the first objective is
    the metric; the analysis reads that one.
    """
    if not trial.values:
        return None
    return finite(trial.values[0])


def is_confirm_run(trial: FrozenTrial) -> bool:
    """Whether ``trial`` is a :func:`~bsopt.confirm` rerun (user attribute ``confirm_of``).

    Reruns repeat a searched configuration with a fresh seed: they are kept out of the search
    statistics (importance, best per batch size, the lr fit) and used by the verdict instead.
    """
    return CONFIRM_ATTR in trial.user_attrs


def linked_confirm_study(study: optuna.Study) -> optuna.Study | None:
    """The study holding ``study``'s confirm reruns (named ``<study>:confirm`` in the same
    storage, with the study attribute ``confirm_of_study`` naming ``study``), if any.

    Reruns live apart from the search so that ``best_trial``, Optuna's plots and
    importance, the dashboard and a resumed sampler never take a rerun for a search trial.
    """
    if study.study_name.endswith(CONFIRM_STUDY_SUFFIX):
        return None
    storage = study._storage  # the storage the study was loaded from: no second connection
    try:
        linked = optuna.load_study(
            study_name=confirm_study_name(study.study_name), storage=storage
        )
    except KeyError:
        return None
    return linked if linked.user_attrs.get(CONFIRM_STUDY_ATTR) == study.study_name else None


def confirm_reruns(
    study: optuna.Study, *, states: Sequence[TrialState] | None = None
) -> list[FrozenTrial]:
    """``study``'s confirm reruns: those of its linked confirm study, and those that older
    versions of bsopt stored in the search study itself."""
    inside = [t for t in study.get_trials(deepcopy=False, states=states) if is_confirm_run(t)]
    linked = linked_confirm_study(study)
    apart = linked.get_trials(deepcopy=False, states=states) if linked is not None else []
    return inside + [t for t in apart if is_confirm_run(t)]


def complete_trials(study: optuna.Study) -> list[FrozenTrial]:
    """Completed search trials with a finite value (confirm reruns excluded)."""
    return [
        t
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if trial_value(t) is not None and not is_confirm_run(t)
    ]


def first_step_at(trial: FrozenTrial, target: float, maximize: bool) -> int | None:
    """The first reported step (samples seen) at which ``trial`` reached ``target``."""
    for step in sorted(trial.intermediate_values):
        value = trial.intermediate_values[step]
        if math.isfinite(value) and (value >= target if maximize else value <= target):
            return int(step)
    return None


#: Metrics whose values are shares in [0, 1] (differences in percentage points), for studies
#: written before the objective stored ``metric_unit``.
_FRACTION_METRICS = ("accuracy", "f1", "roc_auc", "precision", "recall", "auc", "jaccard")
_VALUE_METRICS = ("loss", "mae", "mse", "rmse", "r2", "error", "perplexity", "log")


def metric_unit(study: optuna.Study, values: Sequence[float]) -> str:
    """``"fraction"`` or ``"value"``: the study's ``metric_unit`` attribute when stored, else
    judged from the metric's name, else from the values (all in [0, 1] and maximised)."""
    if study.user_attrs.get("goal") == "time_to_target":
        return "value"
    stored = study.user_attrs.get("metric_unit")
    if stored in ("fraction", "value"):
        return str(stored)
    name = study.user_attrs.get("metric")
    if isinstance(name, str) and name:
        lowered = name.lower()
        if any(word in lowered for word in _VALUE_METRICS):
            return "value"
        if any(word in lowered for word in _FRACTION_METRICS):
            return "fraction"
    maximize = study.directions[0] == optuna.study.StudyDirection.MAXIMIZE
    if values and maximize and all(0.0 <= v <= 1.0 for v in values):
        return "fraction"
    return "value"


def metric_name(study: optuna.Study) -> str:
    """The metric as the verdict names it (``"validation accuracy"``, ``"value"``, ...)."""
    if study.user_attrs.get("goal") == "time_to_target":
        return "samples to target"
    named = study.user_attrs.get("metric")
    if isinstance(named, str) and named:
        return f"validation {named}"
    return "value"
