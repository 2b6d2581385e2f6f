"""bsopt: search batch size, learning rate and dropout with Optuna.

Storage: --storage URL, else $BSOPT_STORAGE, else sqlite:///storage/bsopt.db.
"""
from __future__ import annotations

import argparse
import atexit
from collections.abc import Callable, Sequence
import functools
import os
import sys
from typing import TYPE_CHECKING, TypedDict

import optuna

from bsopt.runs._runner import BUILTIN_STUDIES, build_from_ref, load_study_definition, run
from bsopt.runs._study import check_study_name, create_study, summary
from bsopt.runs._workers import WorkerError, attach_worker, run_workers, serve_proxy
from bsopt.search._pruners import PRUNERS
from bsopt.store._storage import (
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


def _add_common(parser: argparse.ArgumentParser, *, study_default: str | None) -> None:
    """The flags every subcommand and study script shares."""
    parser.add_argument(
        "--trials",
        type=_positive_int,
        default=20,
        help="finished trials the study should hold in total; a rerun resumes to it",
    )
    parser.add_argument(
        "--storage",
        default=None,
        help="storage URL (default: $BSOPT_STORAGE, else sqlite:///storage/bsopt.db)",
    )
    parser.add_argument(
        "--study",
        default=study_default,
        type=_study_name,
        help="study name in the storage (default: the study's own name)",
    )
    parser.add_argument("--seed", type=int, default=0, help="sampler and training seed")
    parser.add_argument(
        "--pruner", choices=PRUNERS, default="median", help="how to stop poor trials early"
    )
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    parser.add_argument(
        "--jobs",
        type=_positive_int,
        default=None,
        help="worker processes on this machine (CPU threads shared, one GPU each); default: "
        "bsopt run uses one per CPU core for CPU trials (up to 4, at least 5 trials each), "
        "bsopt worker one",
    )
    parser.add_argument(
        "--devices",
        type=_positive_int,
        default=1,
        help="processes per trial, one device each (torch.distributed); the searched batch "
        "size is the global batch over all of them",
    )
    parser.add_argument(
        "--heartbeat",
        type=int,
        default=60,
        metavar="SECONDS",
        help="seconds between a running trial's heartbeats (SQL storages; 0 turns them off)",
    )
    parser.add_argument(
        "--grace",
        type=_positive_int,
        default=None,
        metavar="SECONDS",
        help="a trial without heartbeat this long is failed and retried (default: 2 x heartbeat)",
    )
    parser.add_argument(
        "--allow-space-change",
        action="store_true",
        help="resume a study although its search space or budget changed (else refused)",
    )


class _Heartbeat(TypedDict):
    heartbeat_interval: int | None
    grace_period: int | None


def _heartbeat(args: argparse.Namespace) -> _Heartbeat:
    if args.heartbeat < 0:
        raise ValueError(
            f"--heartbeat must be >= 0 seconds (0 turns it off), got {args.heartbeat}."
        )
    interval = args.heartbeat or None
    if args.grace is not None and interval is not None and args.grace <= interval:
        raise ValueError(
            f"--grace ({args.grace} s) must be longer than --heartbeat ({interval} s), or a "
            "live trial would be failed between two heartbeats. Try --grace "
            f"{2 * interval}."
        )
    return {"heartbeat_interval": interval, "grace_period": args.grace}


def _cmd_worker(args: argparse.Namespace) -> int:
    name, build = load_study_definition(args.study_ref)
    study_name = args.study if args.study is not None else name
    if args.jobs is None or args.jobs == 1:
        attach_worker(
            build,
            study_name=study_name,
            trials=args.trials,
            storage=args.storage,
            seed=args.seed,
            pruner=args.pruner,
            create=args.create,
            allow_space_change=args.allow_space_change,
            devices=args.devices,
            **_heartbeat(args),
        )
        return 0
    # Check (or create) the study once here rather than in every process.
    study = attach_worker(
        build,
        study_name=study_name,
        trials=1,
        storage=args.storage,
        seed=args.seed,
        pruner=args.pruner,
        create=args.create,
        dry_run=True,
        allow_space_change=args.allow_space_change,
        **_heartbeat(args),
    )
    run_workers(
        functools.partial(build_from_ref, args.study_ref),
        study_name=study_name,
        trials=args.trials,
        jobs=args.jobs,
        storage=args.storage,
        seed=args.seed,
        sampler_seed=None,
        pruner=args.pruner,
        show_progress_bar=not args.no_progress,
        allow_space_change=args.allow_space_change,
        devices=args.devices,
        **_heartbeat(args),
    )
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
    _run(build, args, default_name=name)
    return 0


def _run(build: Callable[..., Objective], args: argparse.Namespace, *, default_name: str) -> None:
    run(
        build,
        study_name=args.study if args.study is not None else default_name,
        trials=args.trials,
        storage=args.storage,
        seed=args.seed,
        pruner=args.pruner,
        show_progress_bar=not args.no_progress,
        jobs=args.jobs,
        devices=args.devices,
        allow_space_change=args.allow_space_change,
        **_heartbeat(args),
    )


def _cmd_studies(args: argparse.Namespace) -> int:
    url = resolve_storage_url(args.storage)
    storage = open_storage(url, heartbeat_interval=None)
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
        values = [t.value for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
        best = "-"
        if values and len(frozen.directions) == 1:
            pick = max if direction == "maximize" else min
            best = f"{pick(v for v in values if v is not None):.4f}"
        st = optuna.trial.TrialState
        print(
            f"{frozen.study_name:<28} {direction:<10} {counts[st.COMPLETE]:>8} "
            f"{counts[st.PRUNED]:>7} {counts[st.FAIL]:>5} {counts[st.RUNNING]:>8}  {best}"
        )
    return 0


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
    from bsopt.analysis._analysis import load_study
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
    from bsopt.analysis._analysis import load_study
    from bsopt.runs._confirm import confirm

    name, build = load_study_definition(args.study_ref)
    study = load_study(args.study if args.study is not None else name, storage=args.storage)
    result = confirm(study, build(seed=args.seed), top=args.top, seeds=args.seeds, echo=print)
    print("\n" + result.verdict.replace("**", ""))
    return 0


def _add_confirm_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("study_ref", metavar="STUDY", help="the built-in study or script searched")
    p.add_argument("--storage", default=None, help="storage URL (default: as for run)")
    p.add_argument("--study", default=None, help="study name (default: the study's own)")
    p.add_argument("--seed", type=int, default=0, help="the study definition's seed")
    p.add_argument("--top", type=_positive_int, default=1, help="configurations per batch size")
    p.add_argument("--seeds", type=int, default=5, help="fresh-seed reruns per configuration")
    p.add_argument("--debug", action="store_true", help="show tracebacks on errors")


def _cmd_dashboard(args: argparse.Namespace) -> int:
    from bsopt.report._dashboard import serve_dashboard

    try:
        serve_dashboard(args.storage, host=args.host, port=args.port, artifacts=args.artifacts)
    except KeyboardInterrupt:
        print("\nbsopt: dashboard stopped.", file=sys.stderr)
    return 0


def _add_report_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--storage",
        default=None,
        help="storage URL (default: $BSOPT_STORAGE, else sqlite:///storage/bsopt.db)",
    )
    p.add_argument(
        "--study", required=True, type=_study_name, help="the study name in the storage"
    )
    p.add_argument(
        "--out", default=None, help="folder to write into (default: bsopt-report/STUDY)"
    )
    p.add_argument(
        "--target",
        type=float,
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
    p.add_argument(
        "--artifacts",
        default=None,
        help="artifact folder for --attach (default: $BSOPT_ARTIFACTS, else storage/artifacts)",
    )
    p.add_argument("--debug", action="store_true", help="show tracebacks on errors")


def _add_dashboard_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--storage",
        default=None,
        help="storage URL (default: $BSOPT_STORAGE, else sqlite:///storage/bsopt.db)",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on")
    p.add_argument("--port", type=int, default=8080, help="port to listen on")
    p.add_argument(
        "--artifacts",
        default=None,
        help="artifact folder (default: $BSOPT_ARTIFACTS, else storage/artifacts)",
    )
    p.add_argument("--debug", action="store_true", help="show tracebacks on errors")


# Each command once: its function, what its usage line shows, and its one-line help.
_COMMANDS: dict[str, tuple[Callable[[argparse.Namespace], int], str, str]] = {
    "run": (
        _cmd_run,
        "run STUDY",
        "create or resume a study and run it to --trials finished trials",
    ),
    "worker": (
        _cmd_worker,
        "worker STUDY",
        "join an existing study from any host (same --storage, --study, --trials)",
    ),
    "proxy": (_cmd_proxy, "proxy", "serve an SQL storage to many workers as grpc://HOST:PORT"),
    "studies": (
        _cmd_studies,
        "studies",
        "list the studies in a storage with their trial counts and best values",
    ),
    "probe": (
        _cmd_probe,
        "probe STUDY",
        "find the largest micro-batch that fits the device; cache it in the study",
    ),
    "report": (
        _cmd_report,
        "report",
        "write a study's report: verdict, tables, plots (HTML, Markdown, PNG)",
    ),
    "confirm": (
        _cmd_confirm,
        "confirm STUDY",
        "retrain each batch size's best with fresh seeds; verdict as mean ± interval",
    ),
    "dashboard": (
        _cmd_dashboard,
        "dashboard",
        "serve optuna-dashboard on the storage, bound to 127.0.0.1",
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
    rows = "".join(f"  {usage:<14} {text}\n" for _, usage, text in _COMMANDS.values())
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
    for name, (_, _, help_text) in _COMMANDS.items():
        # No help= here: the description lists the commands, argparse would list them again.
        p = sub.add_parser(name, description=help_text, formatter_class=_HelpFormatter)
        if name in ("run", "worker"):
            p.add_argument(
                "study_ref",
                metavar="STUDY",
                help=f"a built-in study ({', '.join(BUILTIN_STUDIES)}) or a study script path",
            )
            _add_common(p, study_default=None)
            if name == "worker":
                p.add_argument(
                    "--create",
                    action="store_true",
                    help="create the study if it does not exist yet (else that is an error)",
                )
        elif name == "probe":
            p.add_argument(
                "study_ref",
                metavar="STUDY",
                help=f"a built-in study ({', '.join(BUILTIN_STUDIES)}) or a study script path",
            )
            p.add_argument(
                "--storage",
                default=None,
                help="storage URL (default: $BSOPT_STORAGE, else sqlite:///storage/bsopt.db)",
            )
            p.add_argument(
                "--study",
                default=None,
                type=_study_name,
                help="study name (default: the study's own)",
            )
            p.add_argument("--seed", type=int, default=0, help="the study definition's seed")
            p.add_argument(
                "--memory-budget-mb",
                type=_positive_float,
                default=None,
                metavar="MIB",
                help="pretend the device has this much memory (how a CPU stands in for a GPU)",
            )
            p.add_argument("--debug", action="store_true", help="show tracebacks on errors")
        elif name == "proxy":
            p.add_argument("--storage", default=None, help="the SQL storage URL to serve")
            p.add_argument("--host", default="127.0.0.1", help="address to listen on")
            p.add_argument("--port", type=_positive_int, default=13000, help="port to listen on")
            p.add_argument("--debug", action="store_true", help="show tracebacks on errors")
        elif name == "report":
            _add_report_args(p)
        elif name == "confirm":
            _add_confirm_args(p)
        elif name == "dashboard":
            _add_dashboard_args(p)
        else:
            p.add_argument("--storage", default=None, help="storage URL")
            p.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    return parser


def _guarded(
    action: Callable[[], int], *, debug: bool, trials_hint: str, storage: str | None = None
) -> int:
    try:
        return action()
    except _USER_ERRORS as e:
        if debug:
            raise
        print(f"bsopt: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            "\nbsopt: interrupted. Finished trials are kept; the running one is marked "
            f"failed (stop reason 'interrupted') and runs again first. {trials_hint}",
            file=sys.stderr,
        )
        return 130
    except Exception as e:
        # A storage fault outside the trial loop (creating the study, the summary, ...).
        fault = storage_error(e, storage)
        if fault is None or debug:
            raise
        print(f"bsopt: error: {fault}", file=sys.stderr)
        return 2


def main(argv: Sequence[str] | None = None) -> int:
    """The ``bsopt`` command. Returns the exit status."""
    args = _parser().parse_args(argv)
    handler, _, _ = _COMMANDS[args.command]
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
    )
    _add_common(parser, study_default=name)
    args = parser.parse_args(argv)

    def action() -> int:
        _run(build_objective, args, default_name=name)
        return 0

    return _guarded(
        action,
        debug=args.debug,
        trials_hint="Run the same command again to resume to the same total.",
        storage=args.storage,
    )
