"""A sampler whose proposals do not depend on which worker finished first.

With several workers on one study, what a sampler proposes for trial n depends on which
trials had finished when n was asked for, which is a matter of timing; and each worker's
random stream depends on how many trials it took. :class:`OrderedSampler` removes both:
trial n is sampled by a fresh sampler seeded from (seed, n), shown only the trials numbered
at most n − ``lag``, and it waits until those have finished. With ``lag`` equal to the
number of workers, a seeded run proposes the same parameters for every trial number in every
rerun; with one worker (``lag`` 1) it is an ordinary sequential search.
"""

from __future__ import annotations

from collections.abc import Callable, Container, Sequence
import copy
import time
from typing import Any, cast

import numpy as np
import optuna
from optuna.distributions import BaseDistribution
from optuna.trial import FrozenTrial, TrialState

#: Trials that may still change what an earlier-numbered trial's sampler would see.
_UNFINISHED = (TrialState.RUNNING,)


def per_trial_seed(seed: int, number: int) -> int:
    """The seed of trial ``number``'s sampler in a study seeded with ``seed``."""
    return int(np.random.SeedSequence([seed & 0xFFFFFFFF, number]).generate_state(1)[0])


class _TrialsUpTo:
    """A study that shows only the trials numbered at most ``limit`` (and ``current``)."""

    def __init__(self, study: optuna.Study, limit: int, current: int) -> None:
        self._study = study
        self._limit = limit
        self._current = current

    def _keep(self, trials: Sequence[FrozenTrial]) -> list[FrozenTrial]:
        return [t for t in trials if t.number <= self._limit or t.number == self._current]

    def get_trials(
        self, deepcopy: bool = True, states: Container[TrialState] | None = None
    ) -> list[FrozenTrial]:
        kept = self._keep(self._study.get_trials(deepcopy=False, states=states))
        return copy.deepcopy(kept) if deepcopy else kept

    def _get_trials(
        self,
        deepcopy: bool = True,
        states: Container[TrialState] | None = None,
        use_cache: bool = False,
    ) -> list[FrozenTrial]:
        return self.get_trials(deepcopy=deepcopy, states=states)

    @property
    def trials(self) -> list[FrozenTrial]:
        return self.get_trials()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._study, name)


class OrderedSampler(optuna.samplers.BaseSampler):
    """Samples trial ``n`` with ``make(seed_n)``, where ``seed_n`` depends on ``seed`` and
    ``n`` only, showing it the trials numbered at most ``n - lag`` once they have finished.

    Args:
        make: builds the inner sampler from a seed, e.g. ``lambda s: TPESampler(seed=s)``.
            It must keep no state between trials other than its seed (TPE, random and
            quasi-random samplers do; CMA-ES does not).
        seed: the study's seed.
        lag: how many trials may run at once (the number of workers). Trial ``n`` waits
            for trials up to ``n - lag`` to finish, so no timing decides what it sees.
        max_wait: seconds to wait for those trials; a trial whose worker died stays
            RUNNING until it is failed, so past this the sampler goes on with what has
            finished (that trial's proposal then depends on timing).
    """

    def __init__(
        self,
        make: Callable[[int], optuna.samplers.BaseSampler],
        seed: int,
        *,
        lag: int = 1,
        max_wait: float = 600.0,
        poll_interval: float = 0.05,
    ) -> None:
        if isinstance(lag, bool) or not isinstance(lag, int) or lag < 1:
            raise ValueError(f"lag must be an integer >= 1 (the workers), but got {lag!r}.")
        self._make = make
        self._seed = seed
        self.lag = lag
        self._max_wait = max_wait
        self._poll = poll_interval
        self._inner: tuple[int, optuna.samplers.BaseSampler] | None = None

    def _for(self, number: int) -> optuna.samplers.BaseSampler:
        if self._inner is None or self._inner[0] != number:
            self._inner = (number, self._make(per_trial_seed(self._seed, number)))
        return self._inner[1]

    def _view(self, study: optuna.Study, trial: FrozenTrial) -> optuna.Study:
        # The sampler takes a Study; this stands in for it (see _TrialsUpTo).
        return cast(optuna.Study, _TrialsUpTo(study, trial.number - self.lag, trial.number))

    def _wait(self, study: optuna.Study, number: int) -> None:
        deadline = time.monotonic() + self._max_wait
        delay = self._poll
        while time.monotonic() < deadline:
            earlier = study.get_trials(deepcopy=False, states=_UNFINISHED)
            if not any(t.number <= number - self.lag for t in earlier):
                return
            time.sleep(delay)
            delay = min(2 * delay, 1.0)

    def reseed_rng(self) -> None:
        # Every trial's stream already comes from (seed, number); nothing to reseed.
        pass

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        if self.lag > 1:
            self._wait(study, trial.number)
        self._for(trial.number).before_trial(self._view(study, trial), trial)

    def infer_relative_search_space(
        self, study: optuna.Study, trial: FrozenTrial
    ) -> dict[str, BaseDistribution]:
        inner = self._for(trial.number)
        return inner.infer_relative_search_space(self._view(study, trial), trial)

    def sample_relative(
        self,
        study: optuna.Study,
        trial: FrozenTrial,
        search_space: dict[str, BaseDistribution],
    ) -> dict[str, Any]:
        inner = self._for(trial.number)
        return inner.sample_relative(self._view(study, trial), trial, search_space)

    def sample_independent(
        self,
        study: optuna.Study,
        trial: FrozenTrial,
        param_name: str,
        param_distribution: BaseDistribution,
    ) -> Any:
        inner = self._for(trial.number)
        return inner.sample_independent(
            self._view(study, trial), trial, param_name, param_distribution
        )

    def after_trial(
        self,
        study: optuna.Study,
        trial: FrozenTrial,
        state: TrialState,
        values: Sequence[float] | None,
    ) -> None:
        self._for(trial.number).after_trial(study, trial, state, values)
