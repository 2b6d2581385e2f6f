"""How fast the command line answers, and the quick start from a fresh clone.

    python benchmarks/bench_cli.py [--quick] [--write] [--repeats N] [--quickstart]

Each command runs as a user runs it: a fresh process of the console script in ``.venv``,
timed from launch to exit, output discarded. The commands take turns within each repeat
(so load changes hit them alike); the table gives medians and min..max, and each median
as a multiple of ``optuna --version``'s. A second run of each command under
``python -X importtime`` lists the modules it imported: whether it imports torch, and
bsopt's trainer (``bsopt.training._trainer``).

``--quickstart`` also runs the README's first command (the first ``bash`` block under
"Quick start") in a fresh ``git clone`` of this repository's HEAD, timing each ``&&`` step.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
import re
import shlex
import subprocess
import sys
import tempfile
import time

import _common

BIN = Path(sys.executable).parent


def _commands(folder: Path) -> dict[str, list[str]]:
    url = f"sqlite:///{folder / 'cli.db'}"
    return {
        "optuna --version": [str(BIN / "optuna"), "--version"],
        "bsopt --help": [str(BIN / "bsopt"), "--help"],
        "bsopt studies": [str(BIN / "bsopt"), "studies", "--storage", url],
        "bsopt report": [
            str(BIN / "bsopt"),
            "report",
            "--study",
            "cli",
            "--storage",
            url,
            "--out",
            str(folder / "report"),
        ],
        'python -c "import torch"': [sys.executable, "-c", "import torch"],
    }


def _make_study(folder: Path) -> None:
    """A small finished study to list and report on, written with Optuna alone."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        study_name="cli", storage=f"sqlite:///{folder / 'cli.db'}", direction="maximize"
    )
    study.set_user_attr("metric", "accuracy")
    dists = {
        "log2_batch_size": optuna.distributions.IntDistribution(4, 8),
        "lr": optuna.distributions.FloatDistribution(1e-4, 1e-1, log=True),
        "dropout": optuna.distributions.FloatDistribution(0.0, 0.5),
    }
    for k in range(12):
        log2 = 4 + k % 5
        study.add_trial(
            optuna.trial.create_trial(
                params={"log2_batch_size": log2, "lr": 10 ** (-3 + (k % 4) / 2), "dropout": 0.1},
                distributions=dists,
                value=0.9 + 0.005 * (k % 5),
                intermediate_values={144 * (i + 1): 0.5 + 0.04 * i for i in range(10)},
                user_attrs={
                    "effective_batch_size": 2**log2,
                    "samples_seen": 1437,
                    "samples_per_second": 5000.0 + k,
                    "train_seconds": 0.3,
                    "stop_reason": "completed",
                },
            )
        )


def _time(cmd: list[str], env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    done = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    seconds = time.perf_counter() - t0
    if done.returncode:
        raise RuntimeError(f"{shlex.join(cmd)} failed: {done.stderr.decode()[-2000:]}")
    return seconds


def _imports(cmd: list[str], env: dict[str, str]) -> set[str]:
    """The modules ``cmd`` (a console script or ``python -c``) imports."""
    if cmd[0] == sys.executable:
        full = [sys.executable, "-X", "importtime", *cmd[1:]]
    else:
        full = [sys.executable, "-X", "importtime", cmd[0], *cmd[1:]]
    done = subprocess.run(full, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    names = set()
    for line in done.stderr.decode().splitlines():
        if line.startswith("import time:") and "|" in line:
            names.add(line.rsplit("|", 1)[1].strip())
    return names


def quick_start_command() -> str:
    """The README's first command: the first ``bash`` block under "## Quick start"."""
    readme = (_common.ROOT / "README.md").read_text()
    section = readme.split("## Quick start", 1)[1]
    match = re.search(r"```bash\n(.*?)\n```", section, re.S)
    if match is None:
        raise RuntimeError("README.md has no bash block under '## Quick start'")
    return match.group(1).strip()


def run_quickstart(folder: Path) -> tuple[str, list[tuple[str, float]], str]:
    """Clone HEAD, run the README's command step by step; (commit, step timings, tail)."""
    clone = folder / "clone"
    subprocess.run(
        ["git", "clone", "--quiet", str(_common.ROOT), str(clone)], check=True, timeout=300
    )
    commit = subprocess.run(
        ["git", "-C", str(clone), "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    command = quick_start_command()
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "BSOPT_STORAGE")}
    env["PATH"] = os.pathsep.join(
        p for p in env.get("PATH", "").split(os.pathsep) if not p.startswith(str(BIN))
    )
    steps: list[tuple[str, float]] = []
    tail = ""
    for step in command.split(" && "):
        t0 = time.perf_counter()
        done = subprocess.run(
            ["bash", "-c", step], cwd=clone, env=env, capture_output=True, text=True, timeout=1800
        )
        steps.append((step, time.perf_counter() - t0))
        if done.returncode:
            raise RuntimeError(f"quick start step {step!r} failed:\n{done.stderr[-3000:]}")
        tail = done.stdout
    return commit, steps, "\n".join(tail.strip().splitlines()[-12:])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="3 repeats, no quick start")
    parser.add_argument("--repeats", type=int, default=None, help="default 9")
    parser.add_argument(
        "--quickstart", action="store_true", help="also time the README's first command"
    )
    parser.add_argument("--write", action="store_true", help="replace this script's section")
    args = parser.parse_args()
    repeats = args.repeats or (3 if args.quick else 9)
    facts = _common.machine_facts()
    load_start = _common.uptime_line()
    print(f"bench_cli: {repeats} repeats; {load_start}", flush=True)
    t_start = time.perf_counter()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("BSOPT_STORAGE", None)
    with tempfile.TemporaryDirectory(prefix="bsopt-cli-") as tmp:
        folder = Path(tmp)
        _make_study(folder)
        commands = _commands(folder)
        names = list(commands)
        for cmd in commands.values():  # warm the file cache once
            _time(cmd, env)
        times: dict[str, list[float]] = {n: [] for n in names}
        for rep in range(repeats):
            for name in names[rep % len(names) :] + names[: rep % len(names)]:
                times[name].append(_time(commands[name], env))
            print(
                f"  repeat {rep + 1}: "
                + ", ".join(f"{n} {times[n][-1]:.2f}" for n in names)
                + f" (load {_common.load_average()})",
                flush=True,
            )
        imported = {n: _imports(commands[n], env) for n in names}
        quick = run_quickstart(folder) if args.quickstart and not args.quick else None
    seconds = time.perf_counter() - t_start
    load_end = _common.uptime_line()

    med = _common.median
    base = med(times["optuna --version"])
    rows = []
    for name in names:
        mods = imported[name]
        rows.append(
            [
                f"`{name}`",
                f"{med(times[name]):.2f}",
                _common.spread(times[name]),
                f"{med(times[name]) / base:.2f}x",
                "yes" if "torch" in mods else "no",
                "yes" if "bsopt.training._trainer" in mods else "no",
                str(len(mods)),
            ]
        )
    text = _common.table(
        [
            "command",
            "wall s (median)",
            "min..max",
            "/ optuna --version",
            "imports torch",
            "imports bsopt.training._trainer",
            "modules imported",
        ],
        rows,
    )
    print(text)
    quick_text = ""
    if quick is not None:
        commit, steps, tail = quick
        total = sum(s for _, s in steps)
        quick_text = "\n\n".join(
            [
                f"Quick start from a fresh `git clone` of commit {commit}: the README's first "
                f"command took **{total:.0f} s** ({total / 60:.1f} min) in all.",
                _common.table(
                    ["step", "wall s"], [[f"`{step}`", f"{s:.1f}"] for step, s in steps]
                ),
                "pip reads this machine's configured package sources "
                f"(`pip config list`: find-links {os.environ.get('PIP_FIND_LINKS', '-')}, "
                "where the pinned CPU torch wheel lies), so no wheel is downloaded over the "
                "internet here; a machine downloading torch's CPU wheel (about 200 MB) adds "
                "that download. The end of the output:",
                f"```\n{tail}\n```",
            ]
        )
        print(quick_text)
    print(load_end)
    if args.write:
        section = "\n\n".join(
            [
                "## bench_cli: command-line start-up and the quick start",
                "Each command is a fresh process of the console script in `.venv`, timed from "
                f"launch to exit; {repeats} repeats, the commands in a rotating order in each, "
                "after one warm-up run of each. `bsopt studies` lists a SQLite file holding one "
                "12-trial study; `bsopt report` writes that study's report (HTML, Markdown, "
                "PNG plots). 'imports torch' and 'imports bsopt.training._trainer' come from a "
                "separate "
                "run of the same command under `python -X importtime`.",
                _common.machine_block(facts, load_start, load_end, seconds),
                text,
                quick_text,
            ]
        )
        _common.write_section("bench_cli", section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
