from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
import multiprocessing
import os
from pathlib import Path
import shutil
import subprocess
import sys
from typing import Any
import uuid

import optuna
from optuna.trial import TrialState
import pytest

import bsopt
from bsopt import StorageError, open_storage
from bsopt.store import SQLStorage, mask_url, resolve_storage_url, scrub


def test_resolver_order_is_flag_then_env_then_default(monkeypatch: pytest.MonkeyPatch) -> None:
    assert resolve_storage_url(None) == "sqlite:///storage/bsopt.db" == bsopt.store.DEFAULT_STORAGE
    monkeypatch.setenv("BSOPT_STORAGE", "sqlite:///env.db")
    assert resolve_storage_url(None) == "sqlite:///env.db"
    assert resolve_storage_url("sqlite:///flag.db") == "sqlite:///flag.db"


def test_an_empty_storage_url_is_refused_and_an_empty_variable_is_unset(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    empty = r"The storage URL is empty \(--storage ''\)\. Give a URL"
    with pytest.raises(ValueError, match=empty):
        resolve_storage_url("")
    with pytest.raises(ValueError, match=r"storage URL is empty"):
        open_storage("  ")
    monkeypatch.setenv("BSOPT_STORAGE", "")
    assert resolve_storage_url(None) == "sqlite:///storage/bsopt.db"


def test_default_storage_is_created_under_storage(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    bsopt.create_study("default")
    assert (tmp_path / "storage" / "bsopt.db").is_file()


def test_mask_url_hides_passwords() -> None:
    assert mask_url("postgresql+psycopg://bob:s3cret@db:5432/x") == (
        "postgresql+psycopg://bob:***@db:5432/x"
    )
    assert mask_url("not a url://bob:s3cret@db") == "not a url://bob:***@db"
    assert mask_url("sqlite:///storage/bsopt.db") == "sqlite:///storage/bsopt.db"


def test_unparsable_url_is_refused() -> None:
    with pytest.raises(
        ValueError,
        match=r"storage URL 'nonsense' cannot be parsed\. "
        r"Use dialect\+driver://",
    ):
        open_storage("nonsense")


def test_in_memory_sqlite_is_refused() -> None:
    with pytest.raises(ValueError, match=r"in-memory SQLite storage cannot be shared"):
        open_storage("sqlite://")


def test_uncreatable_storage_folder_is_refused(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(ValueError, match=r"storage folder .*file/sub' cannot be created"):
        open_storage(f"sqlite:///{blocker}/sub/bsopt.db")


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write to read-only folders")
def test_read_only_storage_folder_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    with pytest.raises(ValueError, match=r"storage folder .*ro' is not writable"):
        open_storage(f"sqlite:///{folder}/bsopt.db")


def test_unreachable_server_names_host_and_port_but_not_the_password() -> None:
    url = "postgresql+psycopg://bob:hunter2@127.0.0.1:1/db"
    with pytest.raises(
        StorageError,
        match=r"Cannot open the storage "
        r"'postgresql\+psycopg://bob:\*\*\*@127.0.0.1:1/db' at 127.0.0.1:1",
    ) as err:
        open_storage(url)
    assert "hunter2" not in str(err.value)


def test_missing_driver_says_what_to_install() -> None:
    with pytest.raises(StorageError, match=r"No database driver for 'postgresql\+nodriver'"):
        open_storage("postgresql+nodriver://u@127.0.0.1:1/db")


# --- passwords ------------------------------------------------------------------------------


def test_mask_url_hides_query_string_credentials() -> None:
    masked = mask_url("postgresql+psycopg://bob@db:5432/x?password=QuerySecret&sslmode=require")
    assert "QuerySecret" not in masked
    assert masked == "postgresql+psycopg://bob@db:5432/x?password=***&sslmode=require"


def test_mask_url_hides_a_password_holding_at_signs_whole() -> None:
    masked = mask_url("postgresql+psycopg://postgres:p@ss@word@db:5432/x")
    assert masked == "postgresql+psycopg://postgres:***@db:5432/x"
    # ...and the URL opens at host db: the "@" inside the password is encoded, not a host.
    from bsopt.store._urls import _parse

    parsed = _parse("postgresql+psycopg://postgres:p@ss@word@db:5432/x")
    assert (parsed.host, parsed.password) == ("db", "p@ss@word")


def test_scrub_masks_a_short_password_only_where_it_stands_alone() -> None:
    url = "postgresql+psycopg://bob:p@db:5432/x"
    text = "OperationalError: password p rejected for bob at postgresql+psycopg://bob:p@db:5432/x"
    assert scrub(text, url) == (
        "OperationalError: password *** rejected for bob at postgresql+psycopg://bob:***@db:5432/x"
    )


def test_sqlite_errors_do_not_blame_a_server(tmp_path: Path) -> None:
    path = tmp_path / "not-a-db.db"
    path.write_bytes(b"this is not a database, " * 200)
    with pytest.raises(StorageError) as err:
        open_storage(f"sqlite:///{path}")
    message = str(err.value)
    assert "not a database" in message and "is damaged or is not an Optuna SQLite" in message
    assert "server" not in message


# --- read-only storage ----------------------------------------------------------------------


@contextmanager
def read_only(*paths: Path) -> Iterator[None]:
    """Make ``paths`` read-only for this process, root included (chattr +i), then restore."""
    if os.geteuid() != 0:
        modes = [p.stat().st_mode for p in paths]
        for p in paths:
            p.chmod(0o555 if p.is_dir() else 0o444)
        try:
            yield
        finally:
            for p, mode in zip(paths, modes, strict=True):
                p.chmod(mode)
        return
    if shutil.which("chattr") is None:
        pytest.skip("root ignores file modes and chattr is missing")
    done = subprocess.run(["chattr", "+i", *map(str, paths)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot make files immutable here: {done.stderr.strip()}")
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", *map(str, paths)], check=True)


def _study_with_trials(url: str, name: str = "ro", n: int = 2) -> None:
    study = bsopt.create_study(name, storage=url)
    for i in range(n):
        study.tell(study.ask({"x": optuna.distributions.FloatDistribution(0, 1)}), i / 10)


def test_a_read_only_folder_can_still_be_read(tmp_path: Path) -> None:
    folder = tmp_path / "shared"
    folder.mkdir()
    url = f"sqlite:///{folder / 'bsopt.db'}"
    _study_with_trials(url)
    with read_only(folder / "bsopt.db", folder):
        storage = open_storage(url, heartbeat_interval=None)
        (study,) = storage.get_all_studies()
        assert len(storage.get_all_trials(study._study_id)) == 2
        with pytest.raises(StorageError, match=r"attempt to write a readonly database.*read-only"):
            bsopt.create_study("new", storage=url).ask()
    assert [s.study_name for s in optuna.get_all_study_summaries(url)] == ["ro"]


def test_studies_command_reads_a_read_only_storage(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite:///{tmp_path / 'bsopt.db'}"
    _study_with_trials(url, n=3)
    with read_only(tmp_path / "bsopt.db", tmp_path):
        assert bsopt.cli.main(["studies", "--storage", url]) == 0
    row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("ro "))
    assert row.split()[2] == "3"


# --- many processes creating one new file -------------------------------------------------


def _create_at_once(url: str, barrier: Any, errors: Any) -> None:
    barrier.wait()
    try:
        bsopt.create_study("w", storage=url)
    except Exception as e:  # reported to the parent
        errors.put(f"{type(e).__name__}: {e}")


def test_processes_creating_a_new_sqlite_file_at_once_all_succeed(tmp_path: Path) -> None:
    context = multiprocessing.get_context("fork")  # no re-import: they start together
    for attempt in range(3):
        url = f"sqlite:///{tmp_path / f'fresh{attempt}.db'}"
        barrier = context.Barrier(6)
        errors = context.Queue()
        workers = [
            context.Process(target=_create_at_once, args=(url, barrier, errors)) for _ in range(6)
        ]
        for w in workers:
            w.start()
        for w in workers:
            w.join(timeout=120)
        found = []
        while not errors.empty():
            found.append(errors.get())
        assert found == [] and [w.exitcode for w in workers] == [0] * 6
        assert optuna.get_all_study_names(url) == ["w"]


def test_a_read_only_journal_can_still_be_read(tmp_path: Path) -> None:
    url = f"journal:///{tmp_path / 'j.log'}"
    _study_with_trials(url, n=2)
    with read_only(tmp_path / "j.log", tmp_path):
        storage = open_storage(url)
        (study,) = storage.get_all_studies()
        assert len(storage.get_all_trials(study._study_id)) == 2


# --- speed: SQLite settings, a trial's attributes in one transaction -------------------------


def _sql_url(kind: str, tmp_path: Path) -> str:
    if kind == "sqlite":
        return f"sqlite:///{tmp_path / 'speed.db'}"
    from _servers import MYSQL_URL, POSTGRES_URL, _reachable

    return _reachable(POSTGRES_URL if kind == "postgres" else MYSQL_URL)


@contextmanager
def _sql_study(kind: str, tmp_path: Path) -> Iterator[tuple[str, SQLStorage, optuna.Study]]:
    """A new study on ``kind``'s database (URL, storage, study), deleted afterwards."""
    url = _sql_url(kind, tmp_path)
    storage = open_storage(url, heartbeat_interval=None)
    assert isinstance(storage, SQLStorage)
    name = f"bsopt-test-{uuid.uuid4().hex[:10]}"
    study = optuna.create_study(study_name=name, storage=storage)
    try:
        yield url, storage, study
    finally:
        optuna.delete_study(study_name=name, storage=storage)


SQL_KINDS = [
    "sqlite",
    pytest.param("postgres", marks=pytest.mark.server),
    pytest.param("mariadb", marks=pytest.mark.server),
]
ATTRS: dict[str, Any] = {f"attr_{i:02d}": i * 1.5 for i in range(22)} | {
    "device": "cpu",
    "history": [[144, 0.5], [288, 0.75]],
    "nested": {"a": None, "b": True},
}


@pytest.mark.parametrize("kind", SQL_KINDS)
def test_a_trials_attributes_are_one_statement_and_separate_rows(
    kind: str, tmp_path: Path
) -> None:
    from sqlalchemy import event

    from bsopt.search._fair import store_user_attrs

    with _sql_study(kind, tmp_path) as (url, storage, study):
        trial = study.ask()
        trial.set_user_attr("attr_00", "written before")
        inserts: list[str] = []
        event.listen(
            storage.engine,
            "before_cursor_execute",
            lambda conn, cursor, statement, *rest: (
                inserts.append(statement)
                if "INSERT INTO trial_user_attributes" in statement
                else None
            ),
        )
        store_user_attrs(trial, ATTRS)
        assert len(inserts) == 1  # 25 attributes, one statement, one commit
        assert trial.user_attrs == ATTRS  # the trial object sees them at once
        study.tell(trial, 1.0)
        (stored,) = optuna.load_study(study_name=study.study_name, storage=url).trials
        assert stored.user_attrs == ATTRS  # each its own attribute; attr_00 replaced


def test_queued_attributes_are_written_when_a_later_one_fails(sqlite_url: str) -> None:
    from bsopt.search._fair import store_user_attrs

    study = optuna.create_study(storage=open_storage(sqlite_url, heartbeat_interval=None))
    trial = study.ask()
    with pytest.raises(TypeError, match="not JSON serializable"):
        store_user_attrs(trial, {"first": 1, "bad": object(), "never": 2})
    study.tell(trial, 0.0)
    assert study.trials[0].user_attrs == {"first": 1}  # as writing one by one would leave


def test_attributes_of_a_finished_trial_are_refused_in_a_batch(sqlite_url: str) -> None:
    storage = open_storage(sqlite_url, heartbeat_interval=None)
    assert isinstance(storage, SQLStorage)
    study = optuna.create_study(storage=storage)
    trial = study.ask()
    study.tell(trial, 0.0)
    with pytest.raises(optuna.exceptions.UpdateFinishedTrialError):
        storage.set_trial_user_attrs(study.trials[0]._trial_id, {"late": 1})
    assert study.trials[0].user_attrs == {}


def test_sqlite_files_use_wal_and_normal_sync_in_every_process(sqlite_url: str) -> None:
    import pickle
    import sqlite3

    storage = open_storage(sqlite_url)
    assert isinstance(storage, SQLStorage)
    path = sqlite_url.removeprefix("sqlite:///")
    with sqlite3.connect(path) as connection:
        assert connection.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    # A storage sent to a worker process (pickled) keeps the per-connection setting.
    for opened in (storage, pickle.loads(pickle.dumps(storage))):
        with opened.engine.connect() as connection:
            assert connection.exec_driver_sql("PRAGMA synchronous").fetchone() == (1,)  # NORMAL


def test_a_committed_trial_survives_a_killed_process(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'crash.db'}"
    code = (
        "import os, signal, optuna, bsopt\n"
        f"study = optuna.create_study(study_name='c', storage=bsopt.open_storage({url!r}))\n"
        "trial = study.ask()\n"
        "bsopt.search._fair.store_user_attrs(trial, {'samples_seen': 1437})\n"
        "study.tell(trial, 0.97)\n"
        "os.kill(os.getpid(), signal.SIGKILL)  # no clean close, no checkpoint\n"
    )
    probe = f"import bsopt.search._fair\n{code}"
    done = subprocess.run([sys.executable, "-c", probe], timeout=120)
    assert done.returncode == -9
    assert (tmp_path / "crash.db-wal").stat().st_size > 0  # the commit lives in the log
    (trial,) = optuna.load_study(study_name="c", storage=url).trials
    assert (trial.state, trial.value) == (optuna.trial.TrialState.COMPLETE, 0.97)
    assert trial.user_attrs == {"samples_seen": 1437}


def test_one_objective_trial_writes_its_attributes_in_at_most_two_statements(
    sqlite_url: str, tiny_objective: bsopt.Objective
) -> None:
    from sqlalchemy import event

    storage = open_storage(sqlite_url)
    assert isinstance(storage, SQLStorage)
    study = bsopt.create_study("attrs", storage=storage, direction=tiny_objective.direction)
    inserts: list[str] = []
    event.listen(
        storage.engine,
        "before_cursor_execute",
        lambda conn, cursor, statement, *rest: (
            inserts.append(statement) if "INSERT INTO trial_user_attributes" in statement else None
        ),
    )
    bsopt.optimize(study, tiny_objective, trials=1, show_progress_bar=False)
    (trial,) = study.trials
    assert len(trial.user_attrs) >= 20
    # The reporter's attributes in one statement; oom_retries (set by the retry loop) apart.
    assert len(inserts) <= 2


@pytest.mark.parametrize("kind", SQL_KINDS)
def test_trials_read_with_plain_selects_equal_optunas(kind: str, tmp_path: Path) -> None:
    url = _sql_url(kind, tmp_path)
    storage = open_storage(url, heartbeat_interval=None)
    assert isinstance(storage, SQLStorage)
    name = f"bsopt-test-{uuid.uuid4().hex[:10]}"
    study = optuna.create_study(study_name=name, storage=storage, directions=["maximize"] * 2)
    try:
        for number in range(5):
            trial = study.ask()
            trial.suggest_int("log2_batch_size", 4, 8)
            trial.suggest_float("lr", 1e-4, 1e-1, log=True)
            trial.suggest_categorical("act", ["relu", "gelu", None])
            trial.set_user_attr("samples_seen", number * 100)
            trial.set_user_attr("nested", {"a": [1, 2], "b": None})
            trial.storage.set_trial_system_attr(trial._trial_id, "retry", number)
            for step, value in enumerate([0.5, float("inf"), float("-inf"), float("nan")]):
                trial.storage.set_trial_intermediate_value(trial._trial_id, step * 7, value)
            if number == 0:
                study.tell(trial, [float("inf"), -1.0])
            elif number == 1:
                study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            elif number == 2:
                study.tell(trial, state=optuna.trial.TrialState.FAIL)
            # 3 and 4 stay RUNNING
        study.enqueue_trial({"lr": 0.01})  # WAITING, no params yet
        study_id = study._study_id

        def both(*args: Any) -> tuple[list[Any], list[Any]]:
            ours = storage._get_trials(study_id, *args)
            optunas = optuna.storages.RDBStorage._get_trials(storage, study_id, *args)
            return ours, optunas

        def same(a: list[Any], b: list[Any]) -> bool:
            def plain(t: optuna.trial.FrozenTrial) -> dict[str, Any]:
                steps = {k: repr(v) for k, v in t.intermediate_values.items()}  # NaN == NaN
                return t.__dict__ | {"intermediate_values": steps}

            return [plain(t) for t in a] == [plain(t) for t in b]

        for args in [
            (None, set(), -1),
            ((optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED), set(), -1),
            (None, set(), 10**9),
        ]:
            ours, optunas = both(*args)
            assert same(ours, optunas)
        all_ids = [t._trial_id for t in study.get_trials(deepcopy=False)]
        # As Optuna's trial cache asks: the unfinished it knows, and any newer than it saw.
        ours, optunas = both(None, {all_ids[3], all_ids[4]}, all_ids[2])
        assert [t.number for t in ours] == [3, 4, 5]
        assert same(ours, optunas)
        assert len(ours[0].intermediate_values) == 4
        assert ours[0].user_attrs["nested"]["a"] == [1, 2]
        with pytest.raises(KeyError):
            storage._get_trials(10**9, None, set(), -1)
    finally:
        optuna.delete_study(study_name=name, storage=storage)


def test_a_trial_created_between_the_reads_statements_is_not_half_read(tmp_path: Path) -> None:
    # Another worker creating a trial (with a parameter) right after the first SELECT: the
    # child rows must be read for the trials that SELECT returned, not for a newer set.
    from sqlalchemy import event

    url = f"sqlite:///{tmp_path / 'race.db'}"
    storage = open_storage(url, heartbeat_interval=None)
    assert isinstance(storage, SQLStorage)
    study = optuna.create_study(study_name="race", storage=storage)
    first = study.ask()
    first.suggest_float("lr", 1e-4, 1e-1, log=True)
    other = optuna.load_study(study_name="race", storage=optuna.storages.RDBStorage(url))
    planted: list[int] = []

    def plant(conn: Any, cursor: Any, statement: str, *rest: Any) -> None:
        if not planted and statement.lstrip().startswith("SELECT trials.trial_id, trials.number"):
            planted.append(1)
            trial = other.ask()
            trial.suggest_float("lr", 1e-4, 1e-1, log=True)

    event.listen(storage.engine, "after_cursor_execute", plant)
    trials = storage._get_trials(study._study_id, None, set(), -1)
    event.remove(storage.engine, "after_cursor_execute", plant)
    assert planted, "the hook never ran: the read's first statement changed"
    assert [t.number for t in trials] == [0]
    assert set(trials[0].params) == {"lr"}
    # The next read sees the planted trial whole.
    again = storage._get_trials(study._study_id, None, set(), -1)
    assert [(t.number, set(t.params)) for t in again] == [(0, {"lr"}), (1, {"lr"})]


def _take_queued_while_another_worker_does(
    taker: Any, other: Any, url: str, *, moment: str
) -> list[bool]:
    """Two workers take the one queued trial of a fresh study: ``other`` does so at
    ``moment`` (a SQLAlchemy cursor event) of ``taker``'s first statement; what each
    ``set_trial_state_values`` returned, ``taker``'s first."""
    from sqlalchemy import event

    study = optuna.create_study(study_name="queue", storage=taker)
    study.enqueue_trial({"lr": 0.01})
    (queued,) = study.get_trials(deepcopy=False)
    took: list[bool] = []

    def interleave(conn: Any, cursor: Any, statement: str, *rest: Any) -> None:
        if not took:
            took.append(other.set_trial_state_values(queued._trial_id, TrialState.RUNNING))

    event.listen(taker.engine, moment, interleave)
    try:
        took.insert(0, taker.set_trial_state_values(queued._trial_id, TrialState.RUNNING))
    finally:
        event.remove(taker.engine, moment, interleave)
    return took


@pytest.mark.parametrize("optunas_write", [True, False])
def test_a_queued_trial_is_taken_by_one_worker_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, optunas_write: bool
) -> None:
    # SQLite has no row locks: with Optuna's read-then-write both workers took the queued
    # trial (and the second to finish it failed with UpdateFinishedTrialError).
    if optunas_write:
        monkeypatch.setattr(
            SQLStorage, "set_trial_state_values", optuna.storages.RDBStorage.set_trial_state_values
        )
    path = str(tmp_path / "queue.db")
    taker = open_storage(f"sqlite:///{path}", heartbeat_interval=None)
    other = open_storage(f"sqlite:///{path}", heartbeat_interval=None)
    assert isinstance(taker, SQLStorage) and isinstance(other, SQLStorage)
    # Optuna's read leaves a window after it; our one UPDATE can only be raced before it
    # (after it, the other worker waits for the commit, as SQLite serialises writes).
    moment = "after_cursor_execute" if optunas_write else "before_cursor_execute"
    took = _take_queued_while_another_worker_does(taker, other, path, moment=moment)
    if optunas_write:
        assert took == [True, True]  # the race, as it was
        return
    assert sorted(took) == [False, True]
    (trial,) = optuna.load_study(study_name="queue", storage=f"sqlite:///{path}").trials
    assert trial.state == TrialState.RUNNING and trial.datetime_start is not None


def _count_optuna_reads(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []
    original = optuna.storages.RDBStorage._get_trials

    def counting(self: Any, *args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(optuna.storages.RDBStorage, "_get_trials", counting)
    return calls


@pytest.mark.parametrize(
    ("env", "version", "optunas_read"),
    [("", None, False), ("1", None, True), ("", "6.0.0", True), ("0", "5.1.3", False)],
)
def test_the_plain_select_reads_have_an_opt_out_and_a_version_guard(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, env: str, version: str | None,
    optunas_read: bool,
) -> None:  # fmt: skip
    storage = open_storage(f"sqlite:///{tmp_path / 'guard.db'}", heartbeat_interval=None)
    assert isinstance(storage, SQLStorage)
    study = optuna.create_study(study_name="guard", storage=storage)
    study.tell(study.ask({"x": optuna.distributions.FloatDistribution(0, 1)}), 0.5)
    monkeypatch.setenv("BSOPT_OPTUNA_READS", env)
    if version is not None:
        monkeypatch.setattr(optuna, "__version__", version)
    calls = _count_optuna_reads(monkeypatch)
    (trial,) = storage._get_trials(study._study_id, None, set(), -1)
    assert trial.value == 0.5 and "x" in trial.params
    assert bool(calls) is optunas_read


def test_a_failing_plain_select_read_is_optunas_storage_error(tmp_path: Path) -> None:
    from sqlalchemy import event
    import sqlalchemy.exc

    storage = open_storage(f"sqlite:///{tmp_path / 'broken.db'}", heartbeat_interval=None)
    assert isinstance(storage, SQLStorage)
    study = optuna.create_study(study_name="broken", storage=storage)
    study.ask()

    def fail(conn: Any, cursor: Any, statement: str, *rest: Any) -> None:
        if "trial_params" in statement:
            raise sqlalchemy.exc.OperationalError(statement, None, Exception("disk I/O error"))

    event.listen(storage.engine, "before_cursor_execute", fail)
    with pytest.raises(optuna.exceptions.StorageInternalError, match="Reading the trials"):
        storage._get_trials(study._study_id, None, set(), -1)


@pytest.mark.parametrize("kind", [k for k in SQL_KINDS if not isinstance(k, str)])
def test_a_connection_dropped_by_the_server_is_reconnected(kind: Any, tmp_path: Path) -> None:
    import sqlalchemy

    with _sql_study(kind, tmp_path) as (url, storage, study):
        study.tell(study.ask(), 1.0)
        postgres = storage.engine.name == "postgresql"
        own_id = "SELECT pg_backend_pid()" if postgres else "SELECT CONNECTION_ID()"
        storage.engine.dispose()  # one pooled connection from here: the one dropped below
        with storage.engine.connect() as connection:
            victim = connection.execute(sqlalchemy.text(own_id)).scalar()
        killer = sqlalchemy.create_engine(url, poolclass=sqlalchemy.pool.NullPool)
        with killer.connect() as connection:
            drop = f"SELECT pg_terminate_backend({victim})" if postgres else f"KILL {victim}"
            connection.execute(sqlalchemy.text(drop))
        killer.dispose()
        study.tell(study.ask(), 2.0)  # on the dropped connection without the ping
        assert [t.value for t in study.get_trials()] == [1.0, 2.0]
