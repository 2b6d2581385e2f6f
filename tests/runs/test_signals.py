"""SIGINT, SIGTERM and SIGHUP stop every kind of run the same way, on real processes.

A finished result is kept (also when the signal lands while Optuna records it), the running
trial is marked ``interrupted``, failed and queued again, no worker outlives the parent,
the exit status is 128 + the signal and the message is one line on stderr.
"""

from __future__ import annotations

import os
from pathlib import Path
import signal
import subprocess
import sys
from typing import Any

import optuna
from optuna.trial import TrialState
import pytest
from test_workers import TINY_STUDY, _running, bsopt_process, states, wait_for

import bsopt

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="reads /proc, sends SIGHUP")

STATUS = {"SIGINT": 130, "SIGTERM": 143, "SIGHUP": 129}

# With TINY_SIGNAL_IN_TELL=SIGTERM, the process sends itself that signal as Optuna starts to
# record the first finished trial: the moment where an interrupt used to lose the result.
SIGNAL_IN_TELL = """
if os.environ.get("TINY_SIGNAL_IN_TELL"):
    import signal

    import optuna.study._optimize as _optimize

    _tell = _optimize._tell_with_warning

    def _tell_after_a_signal(**kwargs):
        if kwargs["state"] is None and not os.environ.get("TINY_SIGNALLED"):
            os.environ["TINY_SIGNALLED"] = "1"
            os.kill(os.getpid(), getattr(signal, os.environ["TINY_SIGNAL_IN_TELL"]))
        return _tell(**kwargs)

    _optimize._tell_with_warning = _tell_after_a_signal
"""


@pytest.fixture
def tiny_script(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.py"
    path.write_text(TINY_STUDY + SIGNAL_IN_TELL)
    return path


def _children(pid: int) -> list[int]:
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return [int(c) for c in children]


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has exited


def _start(command: str, script: Path, url: str, jobs: int, **env: str) -> subprocess.Popen[str]:
    args = ["--storage", url, "--study", "tiny", "--trials", "8", "--jobs", str(jobs)]
    create = ["--create"] if command == "worker" else []
    # Its own process group, as a terminal's job; stderr apart to count its lines.
    options: dict[str, Any] = {"split_stderr": True, "new_session": True, **env}
    return bsopt_process(
        command, str(script), *args, *create, "--no-progress", "--heartbeat", "60", **options
    )


def _started(url: str, *, running: int) -> bool:
    try:
        return states(url, "tiny")["COMPLETE"] >= 1 and len(_running(url, "tiny")) >= running
    except KeyError:  # the study is not created yet
        return False


def _check_stopped(proc: subprocess.Popen[str], name: str, url: str) -> None:
    """The run exited 128 + the signal with one line on stderr (besides Optuna's log);
    nothing is RUNNING; each interrupted trial is FAIL and queued again."""
    _, err = proc.communicate(timeout=60)
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith("[I ")]
    assert proc.returncode == STATUS[name], err
    assert len(lines) == 1 and lines[0].startswith(f"bsopt: interrupted ({name})."), err
    assert "Traceback" not in err and "Interrupted(" not in err
    study = optuna.load_study(study_name="tiny", storage=bsopt.open_storage(url))
    assert not study.get_trials(states=(TrialState.RUNNING,))
    interrupted = [t for t in study.trials if t.user_attrs.get("stop_reason") == "interrupted"]
    assert all(t.state == TrialState.FAIL for t in interrupted)
    queued = {t.system_attrs["failed_trial"]: t.params for t in study.trials
              if t.state == TrialState.WAITING}  # fmt: skip
    # A trial stopped before it drew its parameters has nothing to train again.
    assert queued == {t.number: t.params for t in interrupted if t.params}


MODES = [("run", 1), ("run", 2), ("worker", 1), ("worker", 2)]


@pytest.mark.parametrize("name", ["SIGINT", "SIGTERM", "SIGHUP"])
@pytest.mark.parametrize(("command", "jobs"), MODES, ids=[f"{c}-jobs{j}" for c, j in MODES])
def test_a_stop_signal_marks_the_running_trial_and_exits_with_its_status(
    command: str, jobs: int, name: str, tiny_script: Path, tmp_path: Path
) -> None:
    signum = getattr(signal, name)
    if signal.getsignal(signum) == signal.SIG_IGN:  # inherited by the run, which keeps it
        pytest.skip(f"{name} is ignored here (nohup?)")
    url = f"sqlite:///{tmp_path / 'signals.db'}"
    proc = _start(command, tiny_script, url, jobs, TINY_SLEEP="3")
    try:
        wait_for(lambda: _started(url, running=jobs), timeout=120, what="trials to run")
        workers = _children(proc.pid)
        if name == "SIGTERM":
            proc.send_signal(signum)  # kill, timeout, Slurm: the parent only
        else:
            os.killpg(proc.pid, signum)  # the terminal: its whole job
        _check_stopped(proc, name, url)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
    assert not [pid for pid in workers if _alive(pid)]  # no worker outlives the parent
    interrupted = [t for t in optuna.load_study(study_name="tiny", storage=url).trials
                   if t.user_attrs.get("stop_reason") == "interrupted"]  # fmt: skip
    # Each worker had a trial running, unless it was just between two trials: then the
    # signal waited until its finished trial was stored.
    assert 1 <= len(interrupted) <= jobs


def test_workers_stop_when_their_parent_is_killed(tiny_script: Path, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'orphans.db'}"
    proc = _start("run", tiny_script, url, 2, TINY_SLEEP="60")
    try:
        # Both trials with their params drawn: a trial cut short before that has nothing to
        # queue again.
        wait_for(
            lambda: sum("suggested" in t.user_attrs for t in _running(url, "tiny")) == 2,
            timeout=120,
            what="two trials",
        )
        workers = _children(proc.pid)
        assert len(workers) == 2
        proc.kill()  # SIGKILL: the parent cannot pass anything on
        wait_for(lambda: not any(_alive(pid) for pid in workers), timeout=30, what="the workers")
    finally:
        if proc.poll() is None or any(_alive(pid) for pid in _children_or_none(proc.pid)):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=30)
    study = optuna.load_study(study_name="tiny", storage=bsopt.open_storage(url))
    assert not study.get_trials(states=(TrialState.RUNNING,))
    interrupted = [t for t in study.trials if t.user_attrs.get("stop_reason") == "interrupted"]
    assert len(interrupted) == 2 and all(t.state == TrialState.FAIL for t in interrupted)
    assert len(study.get_trials(states=(TrialState.WAITING,))) == 2  # queued again


def _children_or_none(pid: int) -> list[int]:
    try:
        return _children(pid)
    except FileNotFoundError:
        return []


@pytest.mark.parametrize("command", ["run", "worker"])
def test_a_signal_while_a_finished_trial_is_recorded_keeps_its_value(
    command: str, tiny_script: Path, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'tell.db'}"
    proc = _start(command, tiny_script, url, 1, TINY_SLEEP="0", TINY_SIGNAL_IN_TELL="SIGTERM")
    try:
        _check_stopped(proc, "SIGTERM", url)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
    (trial,) = optuna.load_study(study_name="tiny", storage=url).trials
    assert trial.state == TrialState.COMPLETE and trial.value is not None  # recorded, not lost
    assert "stop_reason" not in trial.user_attrs
