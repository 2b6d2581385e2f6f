"""Many workers on one study: the exact-total gate, processes, crashes, Ctrl-C, URLs, proxy."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
import os
from pathlib import Path
import signal
import socket
import subprocess
import sys
import threading
import time

import optuna
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState, create_trial
import pytest

import bsopt
from bsopt.runs._runner import load_study_definition
from bsopt.runs._workers import assign_gpus, can_fork, decide, default_jobs, threads_per_worker

# A study script whose trials suggest the usual params, sleep $TINY_SLEEP s and train
# nothing (with TINY_SLEEP unset they train a 1-epoch MLP on 200 samples).
TINY_STUDY = """
import os
import time

import bsopt


class Sleepy(bsopt.Objective):
    def __call__(self, trial):
        params = self.space.suggest(trial)
        if os.environ.get("TINY_FAIL"):
            raise RuntimeError("objective broke on purpose")
        trial.set_user_attr("suggested", True)  # its parameters are all drawn
        time.sleep(float(os.environ["TINY_SLEEP"]))
        trial.set_user_attr("pid", os.getpid())
        return params.lr


def build_objective(*, seed):
    if os.environ.get("TINY_BUILDS"):
        with open(os.environ["TINY_BUILDS"], "a") as log:
            log.write(f"{os.getpid()} ")
    data = bsopt.make_synthetic(200, seed=seed)
    objective = bsopt.make_objective(
        bsopt.mlp_builder(data, hidden=(8,)),
        data,
        space=bsopt.SearchSpace(batch_size=(8, 64)),
        budget=bsopt.Budget(1, evals=2),
        seed=seed,
        device="cpu",
    )
    if os.environ.get("TINY_SLEEP"):
        object.__setattr__(objective, "__class__", Sleepy)  # a frozen dataclass
    return objective


if __name__ == "__main__":
    raise SystemExit(bsopt.cli.run_script(build_objective, name="tiny"))
"""


@pytest.fixture
def tiny_script(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.py"
    path.write_text(TINY_STUDY)
    return path


def bsopt_process(
    *args: str,
    sleep: float | None = None,
    split_stderr: bool = False,
    new_session: bool = False,
    **env: str,
) -> subprocess.Popen[str]:
    """``bsopt ARGS`` in a new process, one torch thread, output captured (stderr apart with
    ``split_stderr``; ``new_session``: its own process group, as a terminal's job)."""
    environment = {**os.environ, "OMP_NUM_THREADS": "1", **env}
    environment.pop("BSOPT_STORAGE", None)
    if sleep is not None:
        environment["TINY_SLEEP"] = str(sleep)
    return subprocess.Popen(
        [sys.executable, "-m", "bsopt", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE if split_stderr else subprocess.STDOUT,
        text=True,
        env=environment,
        start_new_session=new_session,
    )


def states(url: str, name: str) -> Counter[str]:
    study = optuna.load_study(study_name=name, storage=bsopt.open_storage(url))
    return Counter(t.state.name for t in study.get_trials(deepcopy=False))


def wait_for(predicate: object, *, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def sleepy(seconds: float) -> object:
    def objective(trial: optuna.Trial) -> float:
        x = trial.suggest_float("x", 0.0, 1.0)
        time.sleep(seconds)
        return x

    return objective


# --- the exact-total gate, known answers -------------------------------------------------

X = {"x": FloatDistribution(0.0, 1.0)}


def trial(number: int, state: TrialState, **system_attrs: object) -> optuna.trial.FrozenTrial:
    t = create_trial(
        state=state,
        params={"x": 0.5} if state != TrialState.WAITING else None,
        distributions=X if state != TrialState.WAITING else None,
        value=0.5 if state == TrialState.COMPLETE else None,
        system_attrs=dict(system_attrs),
    )
    t.number = number
    return t


C, P, R, W, F = (
    TrialState.COMPLETE,
    TrialState.PRUNED,
    TrialState.RUNNING,
    TrialState.WAITING,
    TrialState.FAIL,
)


def test_decide_known_answers() -> None:
    done_three = [trial(0, C), trial(1, P), trial(2, C)]
    assert decide(done_three, 3, me=None) == "stop"
    assert decide(done_three, 4, me=None) == "run"
    # Two places left, both held by running trials: a new trial must wait for them.
    held = [trial(0, C), trial(1, R), trial(2, R)]
    assert decide(held, 3, me=None) == "wait"
    assert decide([*held, trial(3, R)], 3, me=3) == "wait"
    assert decide([*held, trial(3, R)], 4, me=3) == "run"
    # A failed trial frees its place.
    assert decide([trial(0, C), trial(1, F), trial(2, R), trial(3, R)], 3, me=3) == "run"
    # A queued retry holds its place: a new trial yields to it...
    retry = trial(4, W, failed_trial=1, retry_history=[1])
    assert decide([trial(0, C), trial(1, F), trial(2, R), trial(3, R), retry], 3, me=3) == (
        "yield"
    )
    # ...and the retry, once running, ranks where its original was, ahead of #2 and #3.
    running_retry = trial(4, R, failed_trial=1, retry_history=[1])
    assert decide(
        [trial(0, C), trial(1, F), trial(2, R), trial(3, R), running_retry], 3, me=4
    ) == ("run")
    assert decide(
        [trial(0, C), trial(1, F), trial(2, R), trial(3, R), running_retry], 3, me=3
    ) == ("wait")


@pytest.mark.filterwarnings("ignore:Heartbeat of storage is supposed")
def test_work_waits_for_the_last_running_trial_then_stops(sqlite_url: str) -> None:
    study = bsopt.create_study("gate", storage=sqlite_url)
    study.tell(study.ask({"x": X["x"]}), 0.1)
    held = study.ask({"x": X["x"]})  # another worker's trial, still running

    def finish_it() -> None:
        time.sleep(0.6)
        study.tell(held, 0.2)

    other = threading.Thread(target=finish_it)
    other.start()
    ran = bsopt.work(study, sleepy(0.0), trials=2, poll_interval=0.1)  # type: ignore[arg-type]
    other.join()
    assert ran == 0
    assert states(sqlite_url, "gate") == {"COMPLETE": 2}


def test_waiting_for_the_last_trial_polls_soon_then_every_poll_interval(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from bsopt.runs import _workers

    class Study:  # the last place is held by a running trial for six polls
        polls = 0

        def get_trials(self, deepcopy: bool = False) -> list[optuna.trial.FrozenTrial]:
            self.polls += 1
            return [trial(0, R if self.polls <= 6 else C)]

    slept: list[float] = []
    monkeypatch.setattr(_workers, "_has_heartbeat", lambda study: True)
    monkeypatch.setattr(_workers, "_fail_stale", lambda study: None)
    monkeypatch.setattr(_workers.time, "sleep", slept.append)
    gate = _workers._ExactTotal(1, poll_interval=0.5)
    assert gate.settle(Study(), None) == "stop"  # type: ignore[arg-type]
    assert slept == [0.05, 0.1, 0.2, 0.4, 0.5, 0.5]


def test_work_without_heartbeat_leaves_the_places_to_running_trials(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"journal:///{tmp_path / 'journal.log'}"
    study = bsopt.create_study("journal-gate", storage=url)
    study.ask({"x": X["x"]})  # a trial whose worker may have died: no heartbeat tells
    ran = bsopt.work(study, sleepy(0.0), trials=1)  # type: ignore[arg-type]
    assert ran == 0
    assert "running trials #0" in capsys.readouterr().err


def test_four_threads_stop_at_exactly_the_target(sqlite_url: str) -> None:
    bsopt.create_study("threads", storage=sqlite_url)
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            study = optuna.load_study(study_name="threads", storage=bsopt.open_storage(sqlite_url))
            bsopt.work(study, sleepy(0.05), trials=10, poll_interval=0.05)  # type: ignore[arg-type]
        except BaseException as e:  # reported below, not lost in the thread
            errors.append(e)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    counts = states(sqlite_url, "threads")
    assert counts["COMPLETE"] == 10
    assert set(counts) <= {"COMPLETE", "FAIL"}  # FAIL only for a same-instant surplus


def test_work_refuses_a_bad_total(sqlite_url: str) -> None:
    study = bsopt.create_study("bad", storage=sqlite_url)
    with pytest.raises(ValueError, match=r"trials \(the total to reach\) must be an integer >= 1"):
        bsopt.work(study, sleepy(0.0), trials=0)  # type: ignore[arg-type]


# --- processes, GPUs, threads ------------------------------------------------------------


def test_gpus_one_per_worker_then_in_turns() -> None:
    assert assign_gpus(2, ["0", "1", "2", "3"]) == ["0", "1"]
    assert assign_gpus(3, ["4", "7"]) == ["4", "7", "4"]
    assert assign_gpus(2, []) == [None, None]
    with pytest.raises(ValueError, match=r"jobs must be at least 1, got 0"):
        assign_gpus(0, ["0"])


def test_threads_are_shared_between_workers() -> None:
    assert threads_per_worker(4, cpu_count=16) == 4
    assert threads_per_worker(3, cpu_count=16) == 5
    assert threads_per_worker(8, cpu_count=2) == 1


def test_run_jobs_4_on_sqlite_finishes_exactly_n(tiny_script: Path, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'jobs.db'}"
    proc = bsopt_process(
        "run", str(tiny_script), "--jobs", "4", "--trials", "10", "--storage", url,
        "--no-progress", sleep=0.3,
    )  # fmt: skip
    out, _ = proc.communicate(timeout=240)
    assert proc.returncode == 0, out
    assert "4 worker processes" in out
    assert "database is locked" not in out
    counts = states(url, "tiny")
    assert counts["COMPLETE"] == 10
    assert set(counts) <= {"COMPLETE", "FAIL"}


def test_cpu_workers_are_forked_with_the_parents_objective(
    tiny_script: Path, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'fork.db'}"
    builds = tmp_path / "builds.txt"
    proc = bsopt_process(
        "run", str(tiny_script), "--jobs", "2", "--trials", "6", "--storage", url,
        "--no-progress", sleep=0.2, TINY_BUILDS=str(builds),
    )  # fmt: skip
    out, _ = proc.communicate(timeout=240)
    assert proc.returncode == 0, out
    (parent,) = builds.read_text().split()  # built once, in the parent, not per worker
    trials = optuna.load_study(study_name="tiny", storage=url).trials
    pids = {t.user_attrs["pid"] for t in trials if t.state == TrialState.COMPLETE}
    assert len(pids) == 2 and int(parent) not in pids  # two forked workers trained


def test_fork_only_where_it_is_safe() -> None:
    class Cpu:
        device = "cpu"

    class Cuda:
        device = "cuda"

    linux = sys.platform == "linux"
    assert can_fork(Cpu(), [None, None], threads=1, devices=1) is linux
    assert not can_fork(Cpu(), [None, None], threads=2, devices=1)  # OpenMP after a fork
    assert not can_fork(Cuda(), ["0", "1"], threads=1, devices=1)  # CUDA after a fork
    assert not can_fork(Cpu(), [None], threads=1, devices=2)
    assert not can_fork(None, [None], threads=1, devices=1)  # nothing to inherit


def check_sigint_resume(
    script: Path, url: str, name: str, monkeypatch: pytest.MonkeyPatch, *, jobs: int = 2
) -> None:
    """Ctrl-C to ``bsopt run --jobs JOBS`` mid-study; the rerun resumes to the same total."""
    proc = bsopt_process(
        "run", str(script), "--jobs", str(jobs), "--trials", "8", "--storage", url,
        "--study", name, "--no-progress", sleep=2,
    )  # fmt: skip

    def some_finished() -> bool:
        try:
            return states(url, name)["COMPLETE"] >= 1
        except KeyError:  # the study is not created yet
            return False

    wait_for(some_finished, timeout=120, what="a first finished trial")
    wait_for(lambda: _running(url, name), timeout=60, what="a running trial")
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130, out
    assert "interrupted" in out
    assert "Traceback" not in out and "KeyboardInterrupt" not in out  # no Optuna stack
    after = states(url, name)
    assert after["RUNNING"] == 0, after  # every interrupted trial was closed as FAIL
    assert after["COMPLETE"] < 8
    study = optuna.load_study(study_name=name, storage=bsopt.open_storage(url))
    interrupted = [t for t in study.trials if t.user_attrs.get("stop_reason") == "interrupted"]
    assert interrupted and all(t.state == TrialState.FAIL for t in interrupted)
    queued = {t.system_attrs["failed_trial"]: t.params for t in study.trials
              if t.state == TrialState.WAITING}  # fmt: skip
    assert queued == {t.number: t.params for t in interrupted}  # each runs again first
    monkeypatch.setenv("TINY_SLEEP", "0.05")  # the rerun runs here, in this process
    assert bsopt.cli.main(["run", str(script), "--trials", "8", "--storage", url, "--study", name,
                       "--no-progress"]) == 0  # fmt: skip
    resumed = optuna.load_study(study_name=name, storage=bsopt.open_storage(url))
    finished = resumed.get_trials(states=(TrialState.COMPLETE,))
    assert len(finished) == 8 and states(url, name)["RUNNING"] == 0
    # The resumed run continued the seeded search: 8 different configurations.
    assert len({tuple(sorted(t.params.items())) for t in finished}) == 8


def _kill_a_worker_mid_trial(
    script: Path, url: str, name: str, *, trials: int, grace: int
) -> optuna.trial.FrozenTrial:
    """Start ``bsopt worker`` on a study of ``trials``, SIGKILL it mid-trial: its one trial."""
    victim = bsopt_process(
        "worker", str(script), "--storage", url, "--study", name, "--create",
        "--trials", str(trials), "--heartbeat", "1", "--grace", str(grace), sleep=120,
    )  # fmt: skip
    try:
        # Killed once its parameters are drawn: killed while drawing, its retry would draw
        # the missing ones afresh.
        wait_for(
            lambda: any(t.user_attrs.get("suggested") for t in _running(url, name)),
            timeout=120,
            what="the victim's trial to start",
        )
    finally:
        victim.kill()  # SIGKILL: no clean-up, the trial stays RUNNING
        victim.communicate()
    (killed,) = _running(url, name)
    return killed


def check_sigkill_retry(
    script: Path, url: str, name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    killed = _kill_a_worker_mid_trial(script, url, name, trials=4, grace=2)
    monkeypatch.setenv("TINY_SLEEP", "0.1")
    _, build = load_study_definition(str(script))
    study = bsopt.attach_worker(
        build, study_name=name, trials=4, storage=url, heartbeat_interval=1, grace_period=2,
        poll_interval=0.2, echo=None,
    )  # fmt: skip
    trials = study.get_trials(deepcopy=False)
    by_number = {t.number: t for t in trials}
    assert by_number[killed.number].state == TrialState.FAIL
    retries = [t for t in trials if t.system_attrs.get("failed_trial") == killed.number]
    assert len(retries) == 1
    assert retries[0].state == TrialState.COMPLETE
    assert retries[0].params == killed.params  # the same trial again, not a new one
    assert Counter(t.state.name for t in trials) == {"COMPLETE": 4, "FAIL": 1}


@pytest.mark.parametrize(
    "check",
    [check_sigint_resume, check_sigkill_retry],
    ids=[
        "sigint_leaves_storage_consistent_and_a_rerun_resumes",
        "sigkill_mid_trial_is_failed_and_retried_in_its_place",
    ],
)
def test_a_stopped_worker_loses_no_trial(
    check: Callable[[Path, str, str, pytest.MonkeyPatch], None],
    tiny_script: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    check(tiny_script, f"sqlite:///{tmp_path / 'stopped.db'}", "tiny", monkeypatch)


# A process that creates its trial the way a worker does and is killed before the trial's
# first heartbeat (Optuna beats only once the objective starts).
BEFORE_FIRST_BEAT = """
import sys
import time

import optuna

import bsopt

storage = bsopt.open_storage(sys.argv[1], heartbeat_interval=1, grace_period=2)
study = optuna.load_study(study_name=sys.argv[2], storage=storage)
trial = study.ask()
trial.suggest_float("lr", 1e-4, 1e-1, log=True)
print("created", flush=True)
time.sleep(600)
"""


def test_a_worker_killed_before_its_first_heartbeat_is_failed_and_retried(
    tiny_script: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"sqlite:///{tmp_path / 'nobeat.db'}"
    study = bsopt.create_study("nobeat", storage=url)
    victim = subprocess.Popen(
        [sys.executable, "-c", BEFORE_FIRST_BEAT, url, "nobeat"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert victim.stdout is not None and victim.stdout.readline() == "created\n"
    finally:
        victim.kill()
        victim.communicate()
    (killed,) = study.get_trials(states=(TrialState.RUNNING,))
    rdb = bsopt.open_storage(url, heartbeat_interval=1, grace_period=3)
    assert isinstance(rdb, optuna.storages.RDBStorage)
    assert rdb._get_stale_trial_ids(study._study_id) == []  # still within its grace period
    time.sleep(3.2)
    assert rdb._get_stale_trial_ids(study._study_id) == [killed._trial_id]
    monkeypatch.setenv("TINY_SLEEP", "0.05")
    _, build = load_study_definition(str(tiny_script))
    done = bsopt.attach_worker(
        build, study_name="nobeat", trials=2, storage=url, heartbeat_interval=1,
        grace_period=2, poll_interval=0.2, echo=None, allow_space_change=True,
    )  # fmt: skip
    trials = done.get_trials(deepcopy=False)
    assert trials[killed.number].state == TrialState.FAIL
    retries = [t for t in trials if t.system_attrs.get("failed_trial") == killed.number]
    assert [t.state for t in retries] == [TrialState.COMPLETE]
    assert Counter(t.state.name for t in trials) == {"COMPLETE": 2, "FAIL": 1}


@pytest.mark.slow
def test_a_killed_worker_leaves_nothing_running_once_the_study_is_finished(
    tiny_script: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    url = f"sqlite:///{tmp_path / 'lost.db'}"
    check_lost_trial(tiny_script, url, "tiny", monkeypatch, capsys)


def check_lost_trial(
    script: Path, url: str, name: str, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    """SIGKILL a worker mid-trial, finish the study well before the grace period."""
    killed = _kill_a_worker_mid_trial(script, url, name, trials=3, grace=600)
    monkeypatch.setenv("TINY_SLEEP", "0.05")
    args = ["run", str(script), "--storage", url, "--study", name, "--no-progress",
            "--heartbeat", "1", "--grace", "600"]  # fmt: skip
    assert bsopt.cli.main([*args, "--trials", "3"]) == 0
    assert f"trial(s) #{killed.number} were still RUNNING without heartbeat" in (
        capsys.readouterr().err
    )
    study = optuna.load_study(study_name=name, storage=bsopt.open_storage(url))
    assert Counter(t.state.name for t in study.trials) == {"COMPLETE": 3, "FAIL": 1}
    lost = study.trials[killed.number]
    assert lost.state == TrialState.FAIL and lost.user_attrs["stop_reason"].startswith("lost")
    # A rerun of the finished study changes nothing.
    assert bsopt.cli.main([*args, "--trials", "3"]) == 0
    assert optuna.load_study(study_name=name, storage=url).trials == study.trials


def _running(url: str, name: str) -> list[optuna.trial.FrozenTrial]:
    try:
        study = optuna.load_study(study_name=name, storage=bsopt.open_storage(url))
    except KeyError:
        return []
    return study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))


# --- the worker command -------------------------------------------------------------------


def test_worker_on_a_missing_study_says_how_to_create_it(
    sqlite_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code = bsopt.cli.main(["worker", "synthetic", "--storage", sqlite_url, "--study", "nope"])
    assert code == 2
    err = capsys.readouterr().err
    assert "There is no study 'nope' in sqlite:///" in err
    assert "create it first with `bsopt run STUDY --storage URL --study nope" in err
    assert "--create" in err


def test_worker_joins_a_study_and_stops_at_its_total(
    tiny_script: Path, sqlite_url: str, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    monkeypatch.setenv("TINY_SLEEP", "0")
    args = ["--storage", sqlite_url, "--trials", "3", "--no-progress"]
    assert bsopt.cli.main(["run", str(tiny_script), *args]) == 0
    assert bsopt.cli.main(["worker", str(tiny_script), *args[:2], "--trials", "5"]) == 0
    out = capsys.readouterr().out
    assert "Worker on study 'tiny' in sqlite:///" in out and "3 of 5 trials finished" in out
    assert "Worker trained 2 trials; the study holds 5 of 5." in out
    assert states(sqlite_url, "tiny") == {"COMPLETE": 5}


def test_grace_must_exceed_the_heartbeat(
    sqlite_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["run", "synthetic", "--storage", sqlite_url, "--heartbeat", "5", "--grace", "5"]
    assert bsopt.cli.main(args) == 2
    assert "--grace (5 s) must be longer than --heartbeat (5 s)" in capsys.readouterr().err


# --- storage URLs ----------------------------------------------------------------------


def test_plain_server_urls_get_an_installed_driver() -> None:
    from bsopt.store import with_default_driver

    # psycopg2 and mysqlclient are not installed here; psycopg 3 and PyMySQL are.
    assert (
        with_default_driver("postgresql://u:p@h:5432/db") == "postgresql+psycopg://u:p@h:5432/db"
    )
    assert with_default_driver("mysql://root@h/db") == "mysql+pymysql://root@h/db"
    assert with_default_driver("postgresql+psycopg://u@h/db") == "postgresql+psycopg://u@h/db"
    assert with_default_driver("sqlite:///x.db") == "sqlite:///x.db"


def test_journal_storage_is_shared_and_resumed(tmp_path: Path) -> None:
    url = f"journal:///{tmp_path / 'sub' / 'bsopt.log'}"
    storage = bsopt.open_storage(url)
    assert isinstance(storage, optuna.storages.JournalStorage)
    study = bsopt.create_study("j", storage=url)
    bsopt.work(study, sleepy(0.0), trials=3)  # type: ignore[arg-type]
    again = bsopt.create_study("j", storage=url)
    assert len(again.get_trials(states=(TrialState.COMPLETE,))) == 3
    assert (tmp_path / "sub" / "bsopt.log").is_file()


def test_unreachable_proxy_names_host_and_port() -> None:
    with pytest.raises(
        bsopt.StorageError, match=r"Cannot reach the storage proxy at 127.0.0.1:1 "
    ):
        storage = bsopt.store._storage
        storage._open_grpc(storage._parse("grpc://127.0.0.1:1"), timeout=0.5)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_proxy_serves_workers_over_grpc(tmp_path: Path) -> None:
    pytest.importorskip("grpc")
    url = f"sqlite:///{tmp_path / 'behind-proxy.db'}"
    port = _free_port()
    proxy = bsopt_process("proxy", "--storage", url, "--port", str(port))
    try:
        grpc_url = f"grpc://127.0.0.1:{port}"
        wait_for(lambda: _port_open(port), timeout=120, what="the proxy to listen")
        study = bsopt.create_study("proxied", storage=grpc_url)
        assert bsopt.work(study, sleepy(0.0), trials=4) == 4  # type: ignore[arg-type]
    finally:
        proxy.send_signal(signal.SIGINT)
        out, _ = proxy.communicate(timeout=30)
    assert f"on grpc://127.0.0.1:{port}" in out
    # The trials went through the proxy into the SQL database.
    assert states(url, "proxied") == {"COMPLETE": 4}


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_proxy_on_every_address_warns_and_names_this_host(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("grpc")
    served: list[tuple[str, int]] = []

    def serve(storage: object, *, host: str, port: int) -> None:
        served.append((host, port))

    monkeypatch.setattr(optuna.storages, "run_grpc_proxy_server", serve)
    url = f"sqlite:///{tmp_path / 'open.db'}"
    assert bsopt.cli.main(["proxy", "--storage", url, "--host", "0.0.0.0", "--port", "13001"]) == 0
    out = capsys.readouterr().out
    assert served == [("0.0.0.0", 13001)]
    warnings = [line for line in out.splitlines() if line.startswith("Warning")]
    assert warnings == [
        "Warning: bound to 0.0.0.0; anyone who can reach it can edit this storage."
    ]
    assert "grpc://0.0.0.0" not in out  # no host can connect to that address
    assert f"bsopt worker STUDY --storage grpc://{socket.gethostname()}:13001 " in out
    assert bsopt.cli.main(["proxy", "--storage", url, "--port", "13001"]) == 0
    assert "Warning" not in capsys.readouterr().out  # the loopback default: no warning


def test_proxy_refuses_a_journal_storage(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert bsopt.cli.main(["proxy", "--storage", f"journal:///{tmp_path}/j.log"]) == 2
    assert "gRPC proxy does not support journal storages" in capsys.readouterr().err


def test_default_jobs_uses_the_cores_for_cpu_trials_only() -> None:
    import types

    import torch

    cpu = types.SimpleNamespace(device=torch.device("cpu"))
    assert default_jobs(cpu, 30, cpus=2) == 2  # the README's 30-trial study on 2 cores
    assert default_jobs(cpu, 9, cpus=2) == 1  # under 5 trials per worker: one process
    assert default_jobs(cpu, 10, cpus=2) == 2
    assert default_jobs(cpu, 1000, cpus=64) == 4  # capped: TPE learns from finished trials
    assert default_jobs(cpu, 30, cpus=1) == 1
    assert default_jobs(types.SimpleNamespace(device=torch.device("cuda", 0)), 30, cpus=8) == 1
    assert default_jobs(object(), 30, cpus=8) == 1  # a loop that names no device


def test_the_progress_bar_counts_this_runs_trials_and_redraws_only_on_a_change(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from bsopt.runs._workers import _Progress

    earlier, running = trial(0, C), trial(1, R)
    with _Progress(3, show=True) as progress:
        progress.update([earlier, running])  # one finished before this run
        capsys.readouterr()
        for _ in range(5):
            progress.update([earlier, running])  # a poll that finds nothing new
        assert capsys.readouterr().err == ""
        progress.update([earlier, trial(1, C), trial(2, R)])
        assert progress.bar.n == 1 and progress.bar.total == 2
        assert "running=1" in capsys.readouterr().err
