"""Running a study end to end: the path shared by ``bsopt run`` and the study scripts."""

from __future__ import annotations

from collections.abc import Callable
import functools
import importlib.util
from pathlib import Path
import pickle
from typing import TYPE_CHECKING, Protocol

import optuna

from bsopt.runs._session import RunSettings, launched_by_torchrun, open_study, settings_of
from bsopt.runs._study import n_finished, optimize, raise_storage_fault, summary
from bsopt.runs._workers import close_objective, default_jobs, start_workers
from bsopt.search._levels import BudgetLevels
from bsopt.search._pruners import PrunerName
from bsopt.store import close_connections, mask_url

if TYPE_CHECKING:  # torch and the trainer load when a study is built, not to parse --help
    from bsopt.search._objective import Objective


class BuildObjective(Protocol):
    """What a study script provides: ``build_objective(*, seed) -> Objective``."""

    def __call__(self, *, seed: int) -> Objective: ...


def digits(*, seed: int = 0) -> Objective:
    """scikit-learn digits, a 64-128-10 MLP, ten epochs, validation accuracy."""
    from bsopt.core._budget import Budget
    from bsopt.search._objective import make_objective
    from bsopt.training._data import load_digits
    from bsopt.training._models import mlp_builder

    data = load_digits(seed=seed)
    return make_objective(mlp_builder(data, hidden=(128,)), data, budget=Budget(10), seed=seed)


def synthetic(*, seed: int = 0) -> Objective:
    """A seeded 4-class synthetic problem (2,000 samples), a 20-64-64-4 MLP, ten epochs,
    with the gradient noise scale measured (the digits quick start leaves it off: it costs
    13-33% more training time there, see benchmarks/RESULTS.md)."""
    from bsopt.core._budget import Budget
    from bsopt.search._objective import make_objective
    from bsopt.training._data import make_synthetic
    from bsopt.training._models import mlp_builder

    data = make_synthetic(2000, seed=seed)
    return make_objective(
        mlp_builder(data, hidden=(64, 64)),
        data,
        budget=Budget(10),
        seed=seed,
        measure_noise_scale=True,
    )


BUILTIN_STUDIES: dict[str, BuildObjective] = {"digits": digits, "synthetic": synthetic}


def load_study_definition(ref: str) -> tuple[str, BuildObjective]:
    """Resolve a built-in study name or a study script path to ``(name, build_objective)``."""
    if ref in BUILTIN_STUDIES:
        return ref, BUILTIN_STUDIES[ref]
    path = Path(ref)
    if path.suffix != ".py" or not path.is_file():
        raise ValueError(
            f"Unknown study {ref!r}. Use a built-in study ({', '.join(BUILTIN_STUDIES)}) or "
            "the path of a study script (a .py file defining build_objective(*, seed))."
        )
    spec = importlib.util.spec_from_file_location(f"bsopt_study_{path.stem}", path)
    if spec is None or spec.loader is None:
        raise ValueError(f"The study script {str(path)!r} cannot be imported.")
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except SyntaxError as e:
        raise ValueError(
            f"The study script {str(path)!r} has a syntax error at line {e.lineno}: {e.msg}. "
            "Fix it and run again."
        ) from e
    except Exception as e:
        raise ValueError(
            f"The study script {str(path)!r} raised {type(e).__name__} while being imported"
            f"{_line_in(e, path)}: {e}. Fix it and run again (--debug shows the traceback)."
        ) from e
    build = getattr(module, "build_objective", None)
    if not callable(build):
        raise ValueError(
            f"The study script {str(path)!r} defines no build_objective(*, seed) function."
        )
    return path.stem, _Checked(build, str(path))


def _line_in(e: BaseException, path: Path) -> str:
    """ " (line N)" of the deepest frame of ``e``'s traceback inside ``path``, if any."""
    line = None
    tb = e.__traceback__
    while tb is not None:
        if Path(tb.tb_frame.f_code.co_filename).resolve() == path.resolve():
            line = tb.tb_lineno
        tb = tb.tb_next
    return "" if line is None else f" (line {line})"


class _Checked:
    """A study script's ``build_objective``: its errors name the script, not a traceback."""

    def __init__(self, build: BuildObjective, path: str) -> None:
        self.build = build
        self.path = path

    def __call__(self, *, seed: int) -> Objective:
        try:
            return self.build(seed=seed)
        except Exception as e:
            raise ValueError(
                f"build_objective(seed={seed}) of the study script {self.path!r} raised "
                f"{type(e).__name__}{_line_in(e, Path(self.path))}: {e}"
            ) from e


def definition_name(build: object) -> str | None:
    """The name a study definition is kept under: a built-in study's name or a study
    script's file name (``None`` for another function, whose name is then not compared).

    It is the same for ``bsopt run``, ``bsopt worker``, ``bsopt confirm`` and the worker
    processes they start, which load the definition by its path.
    """
    if isinstance(build, functools.partial) and build.func is build_from_ref and build.args:
        return _ref_name(str(build.args[0]))
    if isinstance(build, _Checked):
        return _ref_name(build.path)
    return next((name for name, b in BUILTIN_STUDIES.items() if b is build), None)


def _ref_name(ref: str) -> str:
    return ref if ref in BUILTIN_STUDIES else Path(ref).name


def build_from_ref(ref: str, *, seed: int) -> Objective:
    """Build the objective of a built-in study or study script; picklable for workers."""
    _, build = load_study_definition(ref)
    return build(seed=seed)


def _picklable(value: object) -> bool:
    try:
        pickle.dumps(value)
    except Exception:
        return False
    return True


def run(
    build_objective: BuildObjective | Callable[..., Objective],
    *,
    study_name: str,
    trials: int,
    storage: str | None = None,
    seed: int = 0,
    pruner: PrunerName = "median",
    show_progress_bar: bool = True,
    echo: Callable[[str], None] = print,
    jobs: int | None = 1,
    devices: int = 1,
    heartbeat_interval: int | None = 60,
    grace_period: int | None = None,
    allow_space_change: bool = False,
) -> optuna.Study | None:
    """Create or resume ``study_name`` and run it to ``trials`` finished trials in total.

    With ``devices`` > 1 every trial trains on that many processes, one device each (see
    the option ``devices`` of :func:`~bsopt.make_objective`); ``build_objective`` must then
    be picklable, as for ``jobs``, and ``jobs=None`` divides its default by ``devices``.
    Under ``torchrun`` this process is one rank of a group ``torchrun`` started: rank 0
    runs the study, the other ranks follow its trials and return ``None``.

    With ``jobs`` > 1 the trials run in that many worker processes (see
    :func:`~bsopt.run_workers`); ``None`` (the command line's default) picks them with
    :func:`~bsopt.runs._workers.default_jobs`: one per core for CPU trials, up to 4, each with at
    least 5 of the trials left, and one process when ``build_objective`` cannot be sent to
    another process; ``heartbeat_interval`` and ``grace_period`` go to
    :func:`~bsopt.open_storage`. A resumed study must have the same definition (search
    space, budget, study definition, data, model, metric and seed), and a study of plain
    Optuna's trials is not adopted, unless ``allow_space_change`` (see
    :func:`~bsopt.runs._study.check_definition`).
    The sampler is seeded with ``seed``; the settings are those of
    :class:`~bsopt.runs._session.RunSettings`.
    """
    # The sampler is seeded with the study's seed.
    return run_session(build_objective, settings_of(locals(), sampler_seed=seed), echo=echo)


def run_session(
    build_objective: BuildObjective | Callable[..., Objective],
    settings: RunSettings,
    *,
    echo: Callable[[str], None] = print,
) -> optuna.Study | None:
    """:func:`run` with its settings in one :class:`RunSettings`."""
    session = open_study(build_objective, settings, echo=echo)
    if session is None:
        return None  # another rank of a torchrun group: rank 0 ran the study
    study, objective, url = session
    if launched_by_torchrun():
        settings = settings.replace(jobs=1)  # every process is one rank of one trial
    trials = settings.trials
    try:
        done = n_finished(study)
    except Exception as e:
        raise_storage_fault(e, study)
        raise
    echo(f"Study {settings.study_name!r} in {mask_url(url)}: {done} of {trials} trials finished.")
    echo(f"Each trial: {objective.describe()}")
    if done < trials and isinstance(objective, BudgetLevels):
        queued = objective.queue(study, trials)  # balanced budgets for the forecast
        if queued is not None:
            echo(queued)
    jobs = _jobs(build_objective, objective, settings, remaining=trials - done)
    if done < trials and jobs > 1:
        echo(
            f"Running {trials - done} more in {jobs} worker processes (pruner: {settings.pruner})."
        )
        close_connections(study._storage)  # workers may be forked from this process
        start_workers(build_objective, settings.replace(jobs=jobs), objective=objective)
    elif done < trials:
        echo(f"Running {trials - done} more (pruner: {settings.pruner}).")
    if jobs == 1 or done >= trials:
        # Also on a finished study: fails trials a dead worker left RUNNING.
        try:
            optimize(
                study,
                objective,
                trials=trials,
                show_progress_bar=settings.show_progress_bar,
                allow_space_change=settings.allow_space_change,
            )
        finally:
            close_objective(objective)
    try:
        echo(summary(study, storage_url=url))
    except Exception as e:
        raise_storage_fault(e, study)
        raise
    return study


def _jobs(
    build_objective: object, objective: Objective, settings: RunSettings, *, remaining: int
) -> int:
    """The worker processes of a run: ``settings.jobs``, or picked for ``None``."""
    if settings.jobs is not None:
        return settings.jobs
    jobs = default_jobs(objective, remaining) if _picklable(build_objective) else 1
    return max(1, jobs // settings.devices)
