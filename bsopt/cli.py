"""bsopt: search batch size, learning rate and dropout with Optuna.

Storage: --storage URL, else $BSOPT_STORAGE, else sqlite:///storage/bsopt.db.
"""

from __future__ import annotations

import argparse
import atexit
from collections.abc import Callable, Sequence
import contextlib
import functools
import math
import os
import signal
import sys
from typing import TYPE_CHECKING, NamedTuple

import optuna

from bsopt.runs._runner import (
    BUILTIN_STUDIES,
    build_from_ref,
    definition_name,
    load_study_definition,
    run_session,
)
from bsopt.runs._session import RunSettings, check_heartbeat
from bsopt.runs._study import check_study_name, create_study, signal_of, stop_signals, summary
from bsopt.runs._workers import WorkerError, attach, serve_proxy, start_workers
from bsopt.search._pruners import PRUNERS
from bsopt.store import (
    StorageError,
    mask_url,
    open_storage,
    resolve_storage_url,
    storage_error,
)

if TYPE_CHECKING:  # --help, studies and report never load torch or the trainer
    from bsopt.search._objective import Objective

_USER_ERRORS = (ValueError, TypeError, StorageError, FileNotFoundError, WorkerError)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _study_name(text: str) -> str:
    try:
        return check_study_name(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _heartbeat(args: argparse.Namespace) -> tuple[int | None, int | None]:
    """``--heartbeat`` and ``--grace`` as ``heartbeat_interval`` and ``grace_period``."""
    if args.heartbeat < 0:
        raise ValueError(
            f"--heartbeat must be >= 0 seconds (0 turns it off), got {args.heartbeat}."
        )
    interval = args.heartbeat or None
    # Checked here too, so the message names the flags the user typed.
    check_heartbeat(interval, args.grace, names=("--heartbeat", "--grace"), joined=" ")
    return interval, args.grace


def _settings(args: argparse.Namespace, *, name: str) -> RunSettings:
    """The run settings the flags of ``bsopt run``, ``bsopt worker`` or a script give."""
    interval, grace = _heartbeat(args)
    return RunSettings(
        study_name=args.study if args.study is not None else name,
        trials=args.trials,
        storage=args.storage,
        seed=args.seed,
        sampler_seed=args.seed,
        pruner=args.pruner,
        jobs=args.jobs,
        devices=args.devices,
        heartbeat_interval=interval,
        grace_period=grace,
        allow_space_change=args.allow_definition_change,
        show_progress_bar=not args.no_progress,
    )


def _cmd_worker(args: argparse.Namespace) -> int:
    name, build = load_study_definition(args.study_ref)
    # Workers on other hosts draw their own sampler seeds, so that they do not propose the
    # same first trials.
    settings = _settings(args, name=name).replace(sampler_seed=None)
    if settings.jobs in (None, 1):
        attach(build, settings, create=args.create)
        return 0
    # Check (or create) the study once here rather than in every process.
    study = attach(build, settings, create=args.create, dry_run=True)
    start_workers(functools.partial(build_from_ref, args.study_ref), settings)
    if study is not None:  # a dry run always returns the study
        print(summary(study, storage_url=args.storage))
    return 0


def _cmd_proxy(args: argparse.Namespace) -> int:
    serve_proxy(args.storage, host=args.host, port=args.port)
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    name, build = load_study_definition(args.study_ref)
    if args.jobs != 1 or args.devices > 1:
        # A script's module cannot be pickled by reference; workers and the other ranks of
        # a trial load it by its path.
        build = functools.partial(build_from_ref, args.study_ref)
    run_session(build, _settings(args, name=name))
    return 0


def _best_values(
    trials: Sequence[optuna.trial.FrozenTrial], directions: Sequence[optuna.study.StudyDirection]
) -> str:
    """Each objective's best complete value (``n/a`` where none), joined by `` / ``; ``-``
    when no trial is complete."""
    done = [t.values for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    if not done:
        return "-"
    best = []
    for i, direction in enumerate(directions):
        column = [v[i] for v in done if v is not None and len(v) > i and math.isfinite(v[i])]
        pick = max if direction == optuna.study.StudyDirection.MAXIMIZE else min
        best.append(f"{pick(column):.4f}" if column else "n/a")
    return " / ".join(best)


def _cmd_studies(args: argparse.Namespace) -> int:
    url = resolve_storage_url(args.storage)
    # Listing reads only: a mistyped path is said, not created as an empty database.
    storage = open_storage(url, heartbeat_interval=None, create=False)
    studies = storage.get_all_studies()
    print(f"Storage: {mask_url(url)}")
    if not studies:
        print("No studies yet. Start one with: bsopt run digits")
        return 0
    header = f"{'study':<28} {'direction':<10} {'complete':>8} {'pruned':>7} {'fail':>5} "
    print(header + f"{'running':>8}  best")
    for frozen in studies:
        trials = storage.get_all_trials(frozen._study_id, deepcopy=False)
        counts = {s: sum(t.state == s for t in trials) for s in optuna.trial.TrialState}
        direction = " ".join(d.name.lower() for d in frozen.directions)
        best = _best_values(trials, frozen.directions)
        st = optuna.trial.TrialState
        print(
            f"{frozen.study_name:<28} {direction:<10} {counts[st.COMPLETE]:>8} "
            f"{counts[st.PRUNED]:>7} {counts[st.FAIL]:>5} {counts[st.RUNNING]:>8}  {best}"
        )
    return 0


_MAX_SEED = 2**32 - 1  # numpy's and scikit-learn's seeds are 32-bit


def _seed(text: str) -> int:
    with contextlib.suppress(ValueError):
        if 0 <= (value := int(text)) <= _MAX_SEED:
            return value
    raise argparse.ArgumentTypeError(
        f"the seed must be an integer in [0, 2**32 - 1], got {text!r}. Pass e.g. --seed 0."
    )


def _finite_float(text: str) -> float:
    with contextlib.suppress(ValueError):
        if math.isfinite(value := float(text)):
            return value
    raise argparse.ArgumentTypeError(
        f"must be a finite number, got {text!r}. Pass the metric value to reach, e.g. 0.95."
    )


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def _cmd_probe(args: argparse.Namespace) -> int:
    name, build = load_study_definition(args.study_ref)
    objective = build(seed=args.seed)
    if args.memory_budget_mb is not None:
        objective = objective.with_options(memory_budget_mb=args.memory_budget_mb)
    url = resolve_storage_url(args.storage)
    study_name = args.study if args.study is not None else name
    study = create_study(
        study_name,
        storage=open_storage(url, heartbeat_interval=None),
        directions=objective.directions,
        seed=args.seed,
    )
    print(f"Study {study_name!r} in {mask_url(url)}; device {objective.device}.")
    result = objective.probe(study)
    print(f"Probe: {result.describe()}.")
    print(
        f"limit={result.limit} micro_batch_size={result.micro_batch_size} "
        f"capped={result.capped} steps={result.steps} seconds={result.seconds:.3f} "
        f"cached={result.cached}"
    )
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from bsopt.analysis._load import load_study
    from bsopt.report._report import write_report

    study = load_study(args.study, storage=args.storage)
    report = write_report(
        study, args.out, target=args.target, min_trials=args.min_trials, storage=args.storage
    )
    print(report.analysis.verdict.replace("**", ""))
    print(f"\nReport: {report.html}\nSummary: {report.markdown}")
    print("Plots: " + ", ".join(str(p) for p in report.plots.values()))
    if args.attach:
        from bsopt.report._dashboard import attach_report, resolve_artifacts_dir

        attach_report(study, report, artifacts=args.artifacts)
        print(
            f"Attached the verdict as the study note and {len(report.plots)} plots as "
            f"artifacts in {resolve_artifacts_dir(args.artifacts)}; see them with: "
            "bsopt dashboard"
        )
    return 0


def _cmd_confirm(args: argparse.Namespace) -> int:
    from bsopt.analysis._load import load_study
    from bsopt.runs._confirm import check_confirm_definition, confirm, definition_seed

    name, build = load_study_definition(args.study_ref)
    study = load_study(args.study if args.study is not None else name, storage=args.storage)
    # The study's own seed: the reruns train on the data split the search did.
    objective = build(seed=definition_seed(study, args.seed, echo=print))
    allow = args.allow_definition_change
    check_confirm_definition(study, objective, name=definition_name(build), allow_change=allow)
    if args.samples is not None:  # the check at the target: forecast, then train it
        from bsopt.runs._forecast_check import check_forecast

        checked = check_forecast(
            study,
            objective,
            samples=args.samples,
            tolerance=args.tolerance,
            seeds=args.seeds,
            echo=print,
        )
        print("\n" + checked.text)
        return 0
    result = confirm(
        study, objective, top=args.top, seeds=args.seeds, echo=print, jobs=args.jobs,
        allow_definition_change=allow, show_progress_bar=True,
    )  # fmt: skip
    print("\n" + result.verdict.replace("**", ""))
    return 0


def _cmd_forecast(args: argparse.Namespace) -> int:
    from bsopt.analysis._forecast import forecast

    found = forecast(
        args.study, samples=args.samples, tolerance=args.tolerance, storage=args.storage
    )
    print(found.text)
    return 0


def _cmd_dashboard(args: argparse.Namespace) -> int:
    from bsopt.report._dashboard import serve_dashboard

    try:
        serve_dashboard(args.storage, host=args.host, port=args.port, artifacts=args.artifacts)
    except KeyboardInterrupt:
        print("\nbsopt: dashboard stopped.", file=sys.stderr)
    return 0


# --- options: each declared once, shared between commands as argparse parents ---------------


def _add_definition(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "study_ref",
        metavar="STUDY",
        help=f"a built-in study ({', '.join(BUILTIN_STUDIES)}) or a study script path",
    )


def _add_storage(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--storage",
        default=None,
        help="storage URL (default: $BSOPT_STORAGE, else sqlite:///storage/bsopt.db)",
    )


def _add_study(p: argparse.ArgumentParser, *, required: bool = False) -> None:
    p.add_argument(
        "--study",
        default=None,
        required=required,
        type=_study_name,
        help="the study name in the storage"
        + ("" if required else " (default: the study's own name)"),
    )


def _add_session(p: argparse.ArgumentParser) -> None:
    """The ``--storage/--study/--seed`` block of the commands that build a study."""
    _add_storage(p)
    _add_study(p)
    p.add_argument(
        "--seed",
        type=_seed,
        default=0,
        help="the study definition's seed (data, training, sampler), in [0, 2**32 - 1]",
    )


def _add_run(p: argparse.ArgumentParser) -> None:
    """The settings of a run (see bsopt.runs.RunSettings)."""
    p.add_argument(
        "--trials",
        type=_positive_int,
        default=20,
        help="finished trials the study should hold in total; a rerun resumes to it",
    )
    p.add_argument(
        "--pruner", choices=PRUNERS, default="median", help="how to stop poor trials early"
    )
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.add_argument(
        "--jobs",
        type=_positive_int,
        default=None,
        help="worker processes on this machine (CPU threads shared, one GPU each); default: "
        "bsopt run uses one per CPU core for CPU trials (up to 4, at least 5 trials each), "
        "bsopt worker one",
    )
    p.add_argument(
        "--devices",
        type=_positive_int,
        default=1,
        help="processes per trial, one device each (torch.distributed); the searched batch "
        "size is the global batch over all of them",
    )
    p.add_argument(
        "--heartbeat",
        type=int,
        default=60,
        metavar="SECONDS",
        help="seconds between a running trial's heartbeats (SQL storages; 0 turns them off)",
    )
    p.add_argument(
        "--grace",
        type=_positive_int,
        default=None,
        metavar="SECONDS",
        help="a trial without heartbeat this long is failed and retried (default: 2 x heartbeat)",
    )
    p.add_argument(
        "--allow-definition-change",
        "--allow-space-change",  # its older name
        dest="allow_definition_change",
        action="store_true",
        help="resume a study although its definition changed (search space, budget, data, "
        "model, metric, seed), or adopt trials that bsopt did not make (else refused)",
    )


def _add_debug(p: argparse.ArgumentParser) -> None:
    p.add_argument("--debug", action="store_true", help="show tracebacks on errors")


def _add_listen(port: int) -> Callable[[argparse.ArgumentParser], None]:
    def add(p: argparse.ArgumentParser) -> None:
        p.add_argument("--host", default="127.0.0.1", help="address to listen on")
        p.add_argument("--port", type=_positive_int, default=port, help="port to listen on")

    return add


def _add_artifacts(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--artifacts",
        default=None,
        help="artifact folder (default: $BSOPT_ARTIFACTS, else storage/artifacts)",
    )


def _add_worker(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--create",
        action="store_true",
        help="create the study if it does not exist yet (else that is an error)",
    )


def _add_probe(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--memory-budget-mb",
        type=_positive_float,
        default=None,
        metavar="MIB",
        help="pretend the device has this much memory (how a CPU stands in for a GPU)",
    )


def _add_report(p: argparse.ArgumentParser) -> None:
    _add_study(p, required=True)
    p.add_argument(
        "--out", default=None, help="folder to write into (default: bsopt-report/STUDY)"
    )
    p.add_argument(
        "--target",
        type=_finite_float,
        default=None,
        help="value for time to target (default: the worst per-batch-size best value)",
    )
    p.add_argument(
        "--min-trials",
        type=_positive_int,
        default=3,
        help="completed trials a batch size needs before the verdict trusts it",
    )
    p.add_argument(
        "--attach",
        action="store_true",
        help="also save the verdict as the study's dashboard note and the plots as artifacts",
    )
    _add_artifacts(p)


def _add_confirm(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--top", type=_positive_int, default=3, help="best configurations per batch size"
    )
    p.add_argument(
        "--seeds",
        type=int,
        default=3,
        help="fresh-seed reruns per configuration (with --samples: runs per batch checked)",
    )
    p.add_argument(
        "--jobs",
        type=_positive_int,
        default=None,
        help="processes training reruns at once, one torch thread each; default: one per "
        "CPU core for CPU trials, one on a GPU",
    )
    p.add_argument(
        "--allow-definition-change",
        action="store_true",
        help="confirm with a study definition other than the study's (else refused); the "
        "seed is the study's own either way",
    )
    _add_forecast_target(p, required=False)


def _tolerance(text: str) -> float:
    with contextlib.suppress(ValueError):
        if 0 <= (value := float(text)) < 1:
            return value
    raise argparse.ArgumentTypeError(
        f"must be a fraction in [0, 1), got {text!r}. Pass e.g. --tolerance 0.01 for 1%%."
    )


def _add_forecast_target(p: argparse.ArgumentParser, *, required: bool) -> None:
    p.add_argument(
        "--samples",
        type=_positive_int,
        default=None,
        required=required,
        help="the budget of the full run, in samples, to forecast the batch size and lr for"
        if required
        else "instead of rerunning each batch size's best, forecast for a run of this many "
        "samples and train the forecast, half and double its batch there",
    )
    p.add_argument(
        "--tolerance",
        type=_tolerance,
        default=0.01,
        help="a batch is free when its value is within this fraction of the best",
    )


def _add_forecast(p: argparse.ArgumentParser) -> None:
    _add_study(p, required=True)
    _add_forecast_target(p, required=True)


AddOptions = Callable[[argparse.ArgumentParser], None]


def _parent(*adders: AddOptions) -> argparse.ArgumentParser:
    """A parser holding options for others to take as ``parents``."""
    parent = argparse.ArgumentParser(add_help=False)
    for add in adders:
        add(parent)
    return parent


class _Command(NamedTuple):
    handler: Callable[[argparse.Namespace], int]
    usage: str  # what the command list shows
    help: str  # its one-line help
    options: tuple[AddOptions, ...]  # besides --debug


# Each command once: its function, what its usage line shows, its help and its options.
_COMMANDS: dict[str, _Command] = {
    "run": _Command(
        _cmd_run,
        "run STUDY",
        "create or resume a study and run it to --trials finished trials",
        (_add_definition, _add_session, _add_run),
    ),
    "worker": _Command(
        _cmd_worker,
        "worker STUDY",
        "join an existing study from any host (same --storage, --study, --trials)",
        (_add_definition, _add_session, _add_run, _add_worker),
    ),
    "proxy": _Command(
        _cmd_proxy,
        "proxy",
        "serve an SQL storage to many workers as grpc://HOST:PORT",
        (_add_storage, _add_listen(13000)),
    ),
    "studies": _Command(
        _cmd_studies,
        "studies",
        "list the studies in a storage with their trial counts and best values",
        (_add_storage,),
    ),
    "probe": _Command(
        _cmd_probe,
        "probe STUDY",
        "find the largest micro-batch that fits the device; cache it in the study",
        (_add_definition, _add_session, _add_probe),
    ),
    "report": _Command(
        _cmd_report,
        "report",
        "write a study's report: verdict, tables, plots (HTML, Markdown, PNG)",
        (_add_storage, _add_report),
    ),
    "confirm": _Command(
        _cmd_confirm,
        "confirm STUDY",
        "retrain each batch size's best configurations with fresh seeds; test the leader",
        (_add_definition, _add_session, _add_confirm),
    ),
    "forecast": _Command(
        _cmd_forecast,
        "forecast",
        "forecast the batch size and lr for a longer run from a study at several budgets",
        (_add_storage, _add_forecast),
    ),
    "dashboard": _Command(
        _cmd_dashboard,
        "dashboard",
        "serve optuna-dashboard on the storage, bound to 127.0.0.1",
        (_add_storage, _add_listen(8080), _add_artifacts),
    ),
}


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows a default once: not when the help already says it, nor when there is none."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if "default" in text or action.default in (None, False, argparse.SUPPRESS):
            return text
        return super()._get_help_string(action)


def _description() -> str:
    first, rest = (__doc__ or "").split("\n", 1)
    rows = "".join(f"  {c.usage:<14} {c.help}\n" for c in _COMMANDS.values())
    return f"{first}\n\nCommands:\n{rows}{rest}"


def _version() -> str:
    from bsopt import __version__

    return __version__


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bsopt",
        description=_description(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--version", action="version", version=f"%(prog)s {_version()}", help="show the version"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    parents: dict[AddOptions, argparse.ArgumentParser] = {}
    for name, command in _COMMANDS.items():
        for add in (*command.options, _add_debug):
            parents.setdefault(add, _parent(add))
        # No help= here: the description lists the commands, argparse would list them again.
        sub.add_parser(
            name,
            description=command.help,
            formatter_class=_HelpFormatter,
            parents=[parents[add] for add in (*command.options, _add_debug)],
        )
    return parser


def _guarded(
    action: Callable[[], int], *, debug: bool, trials_hint: str, storage: str | None = None
) -> int:
    try:
        # SIGTERM (kill, timeout, Slurm, ...) and SIGHUP (a closed terminal) stop a run as
        # Ctrl-C does: the same clean-up, the same one line, exit status 128 + the signal.
        with stop_signals():
            return action()
    except _USER_ERRORS as e:
        if debug:
            raise
        print(f"bsopt: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:
        _say_interrupted(signal_of(e), trials_hint)
        return 128 + signal_of(e)
    except Exception as e:
        # A storage fault outside the trial loop (creating the study, the summary, ...).
        fault = storage_error(e, storage)
        if fault is None or debug:
            raise
        print(f"bsopt: error: {fault}", file=sys.stderr)
        return 2


def _say_interrupted(signum: int, trials_hint: str) -> None:
    """The one line after a stop signal (none where the terminal is gone, after SIGHUP)."""
    name = signal.Signals(signum).name
    start = "\n" if signum == signal.SIGINT else ""  # after the terminal's ^C
    with contextlib.suppress(OSError):
        print(
            f"{start}bsopt: interrupted ({name}). Finished trials are kept; the running one is "
            f"marked failed (stop reason 'interrupted') and runs again first. {trials_hint}",
            file=sys.stderr,
            flush=True,
        )


def main(argv: Sequence[str] | None = None) -> int:
    """The ``bsopt`` command. Returns the exit status."""
    args = _parser().parse_args(argv)
    handler = _COMMANDS[args.command].handler
    return _guarded(
        lambda: handler(args),
        debug=args.debug,
        trials_hint="Run the same command again to resume to the same total.",
        storage=getattr(args, "storage", None),
    )


def console_main() -> None:
    """The ``bsopt`` console script: :func:`main`, then exit without the teardown.

    Tearing down torch and the rest of what a command imported takes about 0.6 s on a
    2-core machine, after the work is done. The exit handlers still run (they close the
    storages, which folds SQLite's WAL back into the database file) and the output is
    flushed; only the freeing of memory the OS reclaims anyway is skipped.
    """
    code = main()
    run_exit_handlers = getattr(atexit, "_run_exitfuncs", None)
    if run_exit_handlers is None:  # not CPython: the ordinary exit
        raise SystemExit(code)
    run_exit_handlers()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def run_script(
    build_objective: Callable[..., Objective],
    argv: Sequence[str] | None = None,
    *,
    name: str,
) -> int:
    """Command-line entry for a study script: the same flags as ``bsopt run``.

    Use it as ``raise SystemExit(bsopt.cli.run_script(build_objective, name="mine"))``.
    """
    parser = argparse.ArgumentParser(
        description=f"Run the {name!r} study (bsopt).",
        formatter_class=_HelpFormatter,
        parents=[_parent(_add_session, _add_run, _add_debug)],
    )
    args = parser.parse_args(argv)

    def action() -> int:
        run_session(build_objective, _settings(args, name=name))
        return 0

    return _guarded(
        action,
        debug=args.debug,
        trials_hint="Run the same command again to resume to the same total.",
        storage=args.storage,
    )
