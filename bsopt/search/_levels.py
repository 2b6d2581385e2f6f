"""Trials at several budgets, so that one study measures how the answer moves with ``D``.

:class:`BudgetLevels` wraps an objective: each trial first draws its budget level, a fraction
of the objective's budget, as the parameter ``budget_level`` (so Optuna sees it as one more
dimension, a fidelity), then trains exactly that budget. The trial's ``samples_seen`` is the
samples it trained, as in any study, and :func:`bsopt.forecast` reads the study back.
"""

from __future__ import annotations

from collections.abc import Sequence
import dataclasses
import math
from typing import TYPE_CHECKING, Any

from bsopt.core._attrs import RUNS_WITHIN_ATTR

if TYPE_CHECKING:
    import optuna
    from optuna.trial import FrozenTrial
    from torch import nn

    from bsopt.search._objective import Objective
    from bsopt.training._trainer import TrainResult

#: The parameter a trial's budget level is stored as.
LEVEL_PARAM = "budget_level"


class BudgetLevels:
    """``objective`` with each trial's budget drawn from ``levels``, fractions of its budget.

    Args:
        objective: a :class:`~bsopt.Objective` (from :func:`~bsopt.make_objective`) with an
            epochs or samples budget: the full run's.
        levels: two or more distinct fractions in ``(0, 1]`` of that budget, e.g. the default
            ``(1/8, 1/4, 1/2)``; :func:`bsopt.forecast` needs three.

        branch: train every trial at the largest level only, and count its evaluations at
            the smaller levels' budgets as runs of those budgets (user attribute
            ``runs_within``, which :func:`bsopt.forecast` reads). This holds only where the
            first ``D`` samples of a longer run are a run of ``D``: a constant lr schedule
            without warm-up, a constant batch size, and the same evaluation points up to
            ``D`` (the levels must be whole multiples of the smallest, whose evaluation
            interval every level shares). The space is checked, and one trial gives every
            level, pruned ones too up to where they stopped.

    Everything else (``direction``, ``space``, ``budget``, ...) is ``objective``'s. Prune with
    care: trials of different levels share report steps, which compare like with like only
    under a constant lr schedule (an intermediate value under a decaying schedule is not a
    shorter run); ``pruner="none"`` is the safe choice.

    Example:
        >>> levels = bsopt.search.BudgetLevels(objective, (1 / 8, 1 / 4, 1 / 2))
        >>> bsopt.optimize(study, levels, trials=60)
        >>> bsopt.forecast(study, samples=objective.budget.grid(n_train).total)
    """

    def __init__(
        self,
        objective: Objective,
        levels: Sequence[float] = (0.125, 0.25, 0.5),
        *,
        branch: bool = False,
    ) -> None:
        fractions = _check_levels(levels)
        budget = objective.budget
        if budget.unit == "seconds":
            raise ValueError(
                f"BudgetLevels needs an epochs or samples budget, but got {budget!r}: a seconds "
                "budget trains a number of samples that depends on the batch size, so the "
                "levels would not be budgets in samples. Use e.g. Budget(10, 'epochs')."
            )
        self.objective = objective
        self.levels = fractions
        self.branch = bool(branch)
        if self.branch:
            _check_branch(objective, fractions)
        # One objective per level, built (and its budget checked) now, not in a trial.
        self._at = {level: self._objective_at(level) for level in fractions}

    def _objective_at(self, level: float) -> Objective:
        budget = self.objective.budget
        scaled = dataclasses.replace(budget, amount=budget.amount * level)
        if self.branch:
            # Every level evaluates at the smallest level's interval: a longer run's first
            # evaluations are then a shorter run's, batch for batch.
            evals = budget.evals * round(level / self.levels[0])
            scaled = dataclasses.replace(scaled, evals=evals)
        try:
            scaled.grid(self.objective.data.n_train)
        except ValueError as error:
            raise ValueError(
                f"Budget level {level:g} of {budget!r} is too small: {error}"
            ) from None
        return self.objective.with_options(budget=scaled)

    def samples_at(self, level: float) -> int:
        """The samples a trial of ``level`` trains."""
        return self._at[level].budget.grid(self.objective.data.n_train).total

    def enqueue(
        self, study: optuna.Study, trials: int, *, batch_sizes: Sequence[int] | None = None
    ) -> None:
        """Queue ``trials`` trials with their levels taken in turn, so that every level gets
        the same number of complete runs (a sampler left to choose favours some); the other
        parameters are still the sampler's.

        With ``batch_sizes`` (e.g. ``objective.space.batch_sizes``), every (level, batch size)
        pair is taken in turn and the sampler searches the rest, the lr above all: each
        level's profile of best value per batch size, which the forecast reads, then rests on
        as many lrs at every batch size instead of on the few a joint search leaves the
        batch sizes it favours less.
        """
        if isinstance(trials, bool) or not isinstance(trials, int) or trials < 1:
            raise ValueError(f"trials must be a whole number of at least 1, but got {trials!r}.")
        _enqueue_in_turn(study, self._cells(batch_sizes), start=0, count=trials)

    def queue(self, study: optuna.Study, trials: int) -> str | None:
        """Queue what ``study`` lacks of ``trials`` finished or queued trials, as ``bsopt run``
        does: every (level, batch size) pair in turn on a powers-of-two grid (see
        :meth:`enqueue`), the levels in turn on an integer one, the turn going on from the
        trials already there (a resumed or extended run stays balanced). Returns what was
        queued, in words (``None`` when nothing was)."""
        import optuna

        states = (
            optuna.trial.TrialState.COMPLETE,
            optuna.trial.TrialState.PRUNED,
            optuna.trial.TrialState.WAITING,
        )
        existing = study.get_trials(deepcopy=False)
        missing = trials - sum(t.state in states for t in existing)
        if missing <= 0:
            return None
        space = self.objective.space
        batches = space.batch_sizes if space.batch_grid == "pow2" else None
        if self.branch and batches is None:
            return None  # one level, any batch: nothing to balance
        _enqueue_in_turn(study, self._cells(batches), start=len(existing), count=missing)
        if batches is None:
            return f"Queued {missing} trials with the {len(self.levels)} budget levels in turn."
        if self.branch:
            return (
                f"Queued {missing} trials with the {len(batches)} batch sizes in turn, each at "
                f"the largest budget level; the sampler searches the rest."
            )
        return (
            f"Queued {missing} trials with every (budget level, batch size) pair in turn "
            f"({len(self.levels)} levels x {len(batches)} batch sizes); the sampler searches "
            "the rest."
        )

    def _cells(self, batch_sizes: Sequence[int] | None) -> list[dict[str, Any]]:
        """The fixed params of each queued trial, in the order they are taken."""
        if batch_sizes is None:
            return [{}] if self.branch else [{LEVEL_PARAM: level} for level in self.levels]
        params = [self._batch_param(b) for b in _check_batches(batch_sizes)]
        if self.branch:
            return params  # one level trained: the batch sizes in turn
        return [{**p, LEVEL_PARAM: level} for p in params for level in self.levels]

    def _batch_param(self, batch: int) -> dict[str, int]:
        """The stored parameter that trains ``batch``, refused if the space cannot."""
        from bsopt.core._space import BATCH_PARAM, EXPONENT_PARAM

        space = self.objective.space
        if batch not in space.batch_sizes:
            raise ValueError(
                f"batch_sizes holds {batch}, which the search space cannot train: batch_size "
                f"{space.batch_size!r} on the {space.batch_grid!r} grid. Pass sizes from "
                "objective.space.batch_sizes, or widen the space's batch_size range."
            )
        if space.batch_grid == "int":
            return {BATCH_PARAM: batch}
        return {EXPONENT_PARAM: int(math.log2(batch))}

    def describe(self) -> str:
        shown = ", ".join(f"{level:g}" for level in self.levels)
        samples = ", ".join(f"{self.samples_at(level):,}" for level in self.levels)
        if self.branch:
            return (
                f"{self.objective.describe()}; each trial trains a fraction "
                f"{self.levels[-1]:g} of it, and its evaluations at {samples} samples (the "
                f"fractions {shown}) count as runs of those budgets (constant schedule)"
            )
        return (
            f"{self.objective.describe()}; each trial trains a fraction {shown} of it "
            f"({samples} samples, parameter {LEVEL_PARAM!r})"
        )

    def __call__(self, trial: optuna.Trial) -> Any:
        if self.branch:
            # The smaller levels' runs are this one's first evaluations: say which, before
            # training, so that a pruned trial keeps them too.
            trial.set_user_attr(RUNS_WITHIN_ATTR, [self.samples_at(lv) for lv in self.levels[:-1]])
            return self._at[self.levels[-1]](trial)
        level = float(trial.suggest_categorical(LEVEL_PARAM, self.levels))
        return self._at[level](_WithoutLevel(trial))  # type: ignore[arg-type]

    def retrain(
        self, trial: optuna.Trial | FrozenTrial, *, seed: int | None = None
    ) -> tuple[nn.Module, TrainResult]:
        """Train a stored trial again at its own level's budget (the largest level's with
        ``branch=True``; the full budget for a trial without ``budget_level``)."""
        level = self.levels[-1] if self.branch else trial.params.get(LEVEL_PARAM)
        target = self._at.get(float(level)) if level is not None else None
        return (target or self.objective).retrain(trial, seed=seed)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name in ("objective", "levels", "_at"):
            raise AttributeError(name)
        return getattr(self.objective, name)


class _WithoutLevel:
    """``trial`` as the level's objective sees it: its ``params`` without ``budget_level``.

    The level is this wrapper's, not the user's ``suggest``'s (which must return what it
    searches) nor the search space's; the trial's seed then depends on the configuration
    alone, so a configuration starts from the same weights at every level."""

    def __init__(self, trial: optuna.Trial) -> None:
        self._trial = trial

    @property
    def params(self) -> dict[str, Any]:
        return {k: v for k, v in self._trial.params.items() if k != LEVEL_PARAM}

    def __getattr__(self, name: str) -> Any:
        return getattr(self._trial, name)


def _enqueue_in_turn(
    study: optuna.Study, cells: list[dict[str, Any]], *, start: int, count: int
) -> None:
    """Queue ``count`` trials with ``cells`` taken in turn, the turn at ``start``."""
    for i in range(start, start + count):
        study.enqueue_trial(cells[i % len(cells)])


def _check_branch(objective: Objective, levels: tuple[float, ...]) -> None:
    """Refuse ``branch=True`` where a longer run's start is not a shorter run."""
    space = objective.space
    fix = "Use branch=False: each trial then trains its own level."
    for name, value, fine in (
        ("lr_schedule", space.lr_schedule, "constant"),
        ("batch_schedule", space.batch_schedule, "constant"),
        ("warmup", space.warmup, 0.0),
    ):
        if value != fine:
            raise ValueError(
                f"branch=True needs {name}={fine!r} in the search space, but it is {value!r}: "
                f"under it the first samples of a longer run are not a shorter run. {fix}"
            )
    ratios = [level / levels[0] for level in levels]
    if any(abs(r - round(r)) > 1e-9 for r in ratios):
        raise ValueError(
            f"branch=True needs every level to be a whole multiple of the smallest, but got "
            f"{levels!r}: a shorter run's evaluation points must be a longer run's too. Use "
            f"e.g. (1/8, 1/4, 1/2). {fix}"
        )


def _check_batches(batch_sizes: object) -> list[int]:
    if (
        not isinstance(batch_sizes, (tuple, list))
        or not batch_sizes
        or not all(isinstance(b, int) and not isinstance(b, bool) for b in batch_sizes)
    ):
        raise ValueError(
            f"batch_sizes must be a non-empty sequence of whole numbers, but got "
            f"{batch_sizes!r}. Pass e.g. objective.space.batch_sizes."
        )
    return sorted(set(batch_sizes))


def _check_levels(levels: object) -> tuple[float, ...]:
    fix = "Pass fractions of the full budget, e.g. levels=(1/8, 1/4, 1/2)."
    if not isinstance(levels, (tuple, list)) or not all(
        isinstance(v, (int, float)) and not isinstance(v, bool) for v in levels
    ):
        raise ValueError(f"levels must be a sequence of numbers, but got {levels!r}. {fix}")
    fractions = tuple(sorted({float(v) for v in levels}))
    if len(fractions) < 2 or not all(math.isfinite(v) and 0 < v <= 1 for v in fractions):
        raise ValueError(
            f"levels must hold two or more distinct fractions in (0, 1], but got {levels!r}. "
            + fix
        )
    return fractions
