"""Helpers shared by the benchmark scripts: machine facts, statistics, RESULTS.md sections.

Not part of bsopt. Every benchmark process calls :func:`pin_threads` first: on a small,
shared machine torch's default of one intra-op thread per core collapses (OpenMP barriers
spin while another process holds a core), so every timed process uses one thread.
"""

from __future__ import annotations

from collections.abc import Sequence
import datetime as _dt
import fcntl
import os
from pathlib import Path
import platform
import shlex
import statistics
import subprocess
import sys

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "RESULTS.md"

_HEADER = """# bsopt speed benchmarks

<!-- summary:start -->
(summary not written yet)
<!-- summary:end -->

How to run: `python benchmarks/NAME.py` (full), `--quick` (under about a minute), `--write`
replaces that script's own section below and leaves the others as they are.
Every benchmark process calls `torch.set_num_threads(1)`; see each section for the machine.
"""


def pin_threads() -> None:
    import torch

    torch.set_num_threads(1)
    os.environ.setdefault("OMP_NUM_THREADS", "1")


def load_average() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def uptime_line() -> str:
    try:
        done = subprocess.run(["uptime"], capture_output=True, text=True, check=True)
        return done.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return f"load average: {load_average()}"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def machine_facts() -> dict[str, str]:
    import optuna
    import torch

    return {
        "date": _dt.datetime.now().strftime("%Y-%m-%d %H:%M"),
        "nproc": str(os.cpu_count()),
        "cpu": cpu_model(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "optuna": optuna.__version__,
        "torch threads": str(torch.get_num_threads()),
    }


def command_line() -> str:
    rel = Path(sys.argv[0]).resolve()
    try:
        rel = rel.relative_to(ROOT)
    except ValueError:
        pass
    return "python " + " ".join(shlex.quote(a) for a in [str(rel), *sys.argv[1:]])


def machine_block(facts: dict[str, str], load_start: str, load_end: str, seconds: float) -> str:
    return "\n".join(
        [
            f"- Command: `{command_line()}` (from the repository root, in `.venv`), "
            f"{seconds:.0f} s in all, {facts['date']}",
            f"- Machine: {facts['nproc']} cores, {facts['cpu']}; Python {facts['python']}, "
            f"torch {facts['torch']}, optuna {facts['optuna']}; "
            f"`torch.set_num_threads(1)` in every benchmark process "
            f"(`torch.get_num_threads()` = {facts['torch threads']})",
            f"- `uptime` at start: `{load_start}`",
            f"- `uptime` at end: `{load_end}`",
        ]
    )


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def spread(values: Sequence[float]) -> str:
    """``min..max`` of a sample, for the reader to see the noise."""
    if not values:
        return "-"
    return f"{min(values):.3g}..{max(values):.3g}"


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A Markdown table (also readable on a terminal)."""
    widths = [max(len(str(h)), *(len(str(r[i])) for r in rows)) for i, h in enumerate(header)]
    line = "| " + " | ".join(str(h).ljust(w) for h, w in zip(header, widths, strict=True)) + " |"
    rule = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    body = [
        "| " + " | ".join(str(c).rjust(w) for c, w in zip(r, widths, strict=True)) + " |"
        for r in rows
    ]
    return "\n".join([line, rule, *body])


def write_section(name: str, text: str) -> None:
    """Replace ``<!-- name:start -->`` .. ``<!-- name:end -->`` in RESULTS.md (or append).

    The file is locked while it is read and rewritten, so scripts finishing together do not
    drop each other's sections.
    """
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    block = f"{start}\n{text.strip()}\n{end}"
    RESULTS.touch()
    with RESULTS.open("r+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        current = f.read() or _HEADER
        if start in current and end in current:
            head, rest = current.split(start, 1)
            _, tail = rest.split(end, 1)
            current = head + block + tail
        else:
            current = current.rstrip() + "\n\n" + block + "\n"
        f.seek(0)
        f.write(current)
        f.truncate()
    print(f"wrote the {name} section of {RESULTS.relative_to(ROOT)}")
