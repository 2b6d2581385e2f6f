"""One session: the settings of a run, declared and checked once, and the study they open.

``bsopt run``, ``bsopt worker``, :func:`~bsopt.run`, :func:`~bsopt.attach_worker` and
:func:`~bsopt.run_workers` all take the same options; :class:`RunSettings` holds them, and
:func:`open_study` is the one way from a study definition and its settings to a study.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
import dataclasses
import os
from typing import TYPE_CHECKING, Any, NamedTuple

import optuna

from bsopt.runs._study import (
    check_definition,
    check_study_name,
    check_trials,
    create_study,
    raise_storage_fault,
)
from bsopt.search._pruners import PrunerName, check_pruner_name, make_pruner
from bsopt.store import StorageError, mask_url, open_storage, resolve_storage_url

if TYPE_CHECKING:  # torch and the trainer load when a study is built, not to parse --help
    from bsopt.search._objective import Objective


def launched_by_torchrun() -> bool:
    """Whether this process is one rank of a group that ``torchrun`` started."""
    # The test of bsopt.training._distributed.launched_by_torchrun, without importing torch.
    return all(k in os.environ for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR"))


def check_heartbeat(
    interval: int | None, grace: int | None, *, names: tuple[str, str], joined: str
) -> None:
    """Refuse a grace period a live trial could outlast between two heartbeats.

    ``names`` are the two settings as the user wrote them (``--heartbeat``/``--grace`` on
    the command line, ``heartbeat_interval``/``grace_period`` in Python) and ``joined`` the
    text between a name and its value in the suggested fix (``" "`` or ``"="``).
    """
    if grace is not None and interval is not None and grace <= interval:
        raise ValueError(
            f"{names[1]} ({grace} s) must be longer than {names[0]} ({interval} s), or a "
            f"live trial would be failed between two heartbeats. Try {names[1]}{joined}"
            f"{2 * interval}."
        )


def _check_int(name: str, value: object, low: int | None, fix: str, *, none: str = "") -> None:
    """A whole number, ``low`` at least (``None`` too, where ``none`` says what it means)."""
    if value is None and none:
        return
    if isinstance(value, bool) or not isinstance(value, int) or (low is not None and value < low):
        rule = "an integer" if low is None else f"an integer >= {low}"
        also = f" or None ({none})" if none else ""
        raise ValueError(f"{name} must be {rule}{also}, but got {value!r}. {fix}")


@dataclasses.dataclass(frozen=True)
class RunSettings:
    """What a run of a study needs besides its definition, checked when it is made.

    Args:
        study_name: the study in the storage (at most 512 characters).
        trials: the finished trials the study should hold in total; a rerun resumes to it.
        storage: a storage URL; ``None`` resolves ``$BSOPT_STORAGE``, then
            ``sqlite:///storage/bsopt.db``.
        seed: the seed of the study definition (``build_objective(seed=...)``): every
            worker must build the same objective, the same data split.
        sampler_seed: the sampler's seed: trial ``n`` draws from (``sampler_seed``, ``n``)
            (see :func:`~bsopt.create_study`); ``None`` draws one.
        pruner: the name given to :func:`~bsopt.make_pruner`.
        jobs: worker processes on this machine; ``None`` picks them
            (:func:`~bsopt.runs._workers.default_jobs`).
        devices: processes per trial, one device each.
        heartbeat_interval, grace_period: see :func:`~bsopt.open_storage`.
        poll_interval: seconds between a worker's reads while the last places of the study
            are held by running trials.
        allow_space_change: resume a study although its search space or budget changed.
        show_progress_bar: one bar of the study's finished trials.
    """

    study_name: str
    trials: int
    storage: str | None = None
    seed: int = 0
    sampler_seed: int | None = 0
    pruner: PrunerName = "median"
    jobs: int | None = 1
    devices: int = 1
    heartbeat_interval: int | None = 60
    grace_period: int | None = None
    poll_interval: float = 1.0
    allow_space_change: bool = False
    show_progress_bar: bool = True

    def __post_init__(self) -> None:
        check_study_name(self.study_name)
        check_trials(self.trials)
        check_pruner_name(self.pruner)
        _check_int("seed", self.seed, None, "Pass a whole number.")
        _check_int("sampler_seed", self.sampler_seed, None, "Pass a whole number.", none="draw")
        _check_int("jobs", self.jobs, 1, "Use 1 to run in this process.", none="pick")
        _check_int("devices", self.devices, 1, "Use 1 for one device per trial.")
        for name in ("heartbeat_interval", "grace_period"):
            _check_int(name, getattr(self, name), 1, "Use None to turn it off.", none="off")
        check_heartbeat(
            self.heartbeat_interval,
            self.grace_period,
            names=("heartbeat_interval", "grace_period"),
            joined="=",
        )
        if isinstance(self.poll_interval, bool) or not self.poll_interval > 0:
            raise ValueError(
                f"poll_interval must be > 0 seconds, got {self.poll_interval!r}. Use the "
                "default, 1.0."
            )

    @property
    def url(self) -> str:
        """The storage URL these settings name, resolved."""
        return resolve_storage_url(self.storage)

    def replace(self, **changes: Any) -> RunSettings:
        """These settings with ``changes``, checked again."""
        return dataclasses.replace(self, **changes)


def settings_of(arguments: Mapping[str, Any], **changes: Any) -> RunSettings:
    """The :class:`RunSettings` among a public function's arguments (its ``locals()``).

    :func:`~bsopt.run`, :func:`~bsopt.attach_worker` and :func:`~bsopt.run_workers` keep
    their keyword arguments, named as the fields here (a test holds them to it); the rest
    of their arguments are their own.
    """
    names = {f.name for f in dataclasses.fields(RunSettings)}
    return RunSettings(**{k: v for k, v in arguments.items() if k in names}, **changes)


class Session(NamedTuple):
    """What :func:`open_study` opened: the study, the objective it trains and its URL."""

    study: optuna.Study
    objective: Objective
    url: str


def open_study(
    build_objective: Callable[..., Objective],
    settings: RunSettings,
    *,
    create: bool = True,
    worker: int = 0,
    parallel: int = 1,
    spread: bool = True,
    echo: Callable[[str], None] | None = print,
) -> Session | None:
    """Build the objective, open the storage and create or load the study of ``settings``.

    The objective is ``build_objective(seed=settings.seed)``, spread over
    ``settings.devices`` processes per trial (or, under ``torchrun``, this rank's part;
    ``None`` is returned on the ranks other than 0) unless ``spread`` is false. The study
    gets the objective's directions, the pruner ``settings.pruner`` in the budget's units
    and a sampler seeded from ``settings.sampler_seed`` (an ordered one for ``parallel``
    workers, see :func:`~bsopt.create_study`); its definition
    (search space, budget, and the fingerprint of the study definition, data, model,
    metric and seed) is checked against the stored one, before any trial trains (see
    :func:`~bsopt.runs._study.check_definition`).

    Raises:
        ValueError: ``create`` is false and the study does not exist or optimises another
            direction; the study was created with another definition, or holds trials that
            bsopt did not make (unless ``settings.allow_space_change``).
    """
    objective = build_objective(seed=settings.seed)
    if spread and (settings.devices > 1 or launched_by_torchrun()):
        from bsopt.search._objective import spread_objective

        objective = spread_objective(
            objective, build_objective, seed=settings.seed, devices=settings.devices,
            jobs=settings.jobs,
        )  # fmt: skip
        if objective is None:
            return None  # another rank of a torchrun group: rank 0 runs the study
    url = settings.url
    storage = open_storage(
        url,
        heartbeat_interval=settings.heartbeat_interval,
        grace_period=settings.grace_period,
    )
    if getattr(storage, "read_only", False):
        raise StorageError(
            f"The storage {mask_url(url)!r} can only be read: its file or folder is "
            "read-only (or immutable), so no trial could be stored. Make both writable, or "
            "pass a writable --storage."
        )
    directions = list(objective.directions)
    if not create:
        _check_existing(storage, settings.study_name, directions, url)
    study = create_study(
        settings.study_name,
        storage=storage,
        directions=directions,
        pruner=make_pruner(
            settings.pruner, objective.budget, objective.data.n_train, direction=directions[0]
        ),
        seed=settings.sampler_seed,
        worker=worker,
        parallel=parallel,
    )
    # NOTE: imported here: the runner, which knows the built-in studies and the scripts,
    # builds on this module.
    from bsopt.runs._runner import definition_name

    try:
        check_definition(
            study,
            objective,
            name=definition_name(build_objective),
            allow_change=settings.allow_space_change,
            echo=echo,
        )
    except Exception as e:
        raise_storage_fault(e, study)
        raise
    return Session(study, objective, url)


def _check_existing(
    storage: optuna.storages.BaseStorage, name: str, directions: Sequence[str], url: str
) -> None:
    """A worker joins a study that exists and optimises what its objective does."""
    try:
        study_id = storage.get_study_id_from_name(name)
    except KeyError:
        raise ValueError(
            f"There is no study {name!r} in {mask_url(url)}. A worker joins an "
            "existing study: create it first with `bsopt run STUDY --storage URL "
            f"--study {name} --trials N` (it runs trials too), or pass --create."
        ) from None
    stored = [d.name.lower() for d in storage.get_study_directions(study_id)]
    if stored != directions:
        raise ValueError(
            f"The study {name!r} optimises {' and '.join(stored)}, but this "
            f"objective needs {' and '.join(directions)}. Use the same study "
            "definition as the worker that created it."
        )
