"""The one storage resolver: ``--storage`` flag > ``BSOPT_STORAGE`` > the SQLite default.

Every command and script opens storage through :func:`open_storage`, so they agree on where
a study lives, on heartbeats (a crashed worker's trial is failed and retried), on SQLite's
settings (WAL, ``synchronous=NORMAL``, the lock timeout), and on never showing a password.
"""

from __future__ import annotations

import atexit
from collections.abc import Callable, Container, Iterable, Iterator, Mapping, Sequence
import contextlib
import datetime
import functools
import hashlib
import importlib.util
import json
import os
from pathlib import Path
import random
import re
import sqlite3
import tempfile
import threading
import time
from typing import Any, cast
from urllib.parse import quote, unquote
import warnings
import weakref

import optuna
from optuna.distributions import BaseDistribution, json_to_distribution
from optuna.storages import BaseStorage, RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.trial import FrozenTrial, TrialState
from sqlalchemy import event
from sqlalchemy.engine import URL, make_url
import sqlalchemy.exc

DEFAULT_STORAGE = "sqlite:///storage/bsopt.db"
STORAGE_ENV = "BSOPT_STORAGE"
_URL_HELP = (
    "Use dialect+driver://user:password@host:port/database, for example "
    "sqlite:///storage/bsopt.db, postgresql+psycopg://user@127.0.0.1:5432/db, "
    "mysql+pymysql://root@127.0.0.1:3306/db, journal:///storage/bsopt.log or "
    "grpc://127.0.0.1:13000."
)
# SQLAlchemy's default drivers (psycopg2, mysqlclient) need C builds; bsopt installs the
# maintained pure-wheel ones. A plain URL uses the default driver when it is installed.
_DEFAULT_DRIVERS = {
    "postgresql": ("psycopg2", "postgresql+psycopg", "psycopg"),
    "mysql": ("MySQLdb", "mysql+pymysql", "pymysql"),
    "mariadb": ("MySQLdb", "mariadb+pymysql", "pymysql"),
}
# For URLs SQLAlchemy cannot parse: mask everything between "user:" and the last "@" of the
# authority, so a password holding "@" is hidden whole.
_PASSWORD_IN_URL = re.compile(r"(://[^:/@\s]*:)(\S*)(@[^@/\s]*)")
# Query-string parameters that hold credentials (libpq, PyMySQL and common drivers).
SECRET_QUERY_KEYS = frozenset(
    {"password", "passwd", "pwd", "pass", "secret", "token", "sslpassword", "api_key", "apikey"}
)
_MASK = "***"


class StorageError(RuntimeError):
    """The storage could not be opened or reached. The message never holds a password."""


def resolve_storage_url(url: str | None = None) -> str:
    """The storage URL to use: ``url`` if given, else ``$BSOPT_STORAGE``, else the default."""
    return url or os.environ.get(STORAGE_ENV) or DEFAULT_STORAGE


def _encode_at_in_password(url: str) -> str:
    """``url`` with any ``@`` inside its password percent-encoded.

    ``postgresql://bob:p@ss@db/x`` means the password ``p@ss`` at host ``db``; SQLAlchemy
    would read host ``ss@db`` (and show half the password in its rendering).
    """
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    head = rest.split("?", 1)[0]
    at = head.rfind("@")
    if at < 0:
        return url
    userinfo = rest[:at]
    if "@" not in userinfo or ":" not in userinfo:
        return url
    user, _, password = userinfo.partition(":")
    return f"{scheme}://{user}:{password.replace('@', '%40')}{rest[at:]}"


def _secrets(url: str) -> list[str]:
    """The credentials inside ``url`` (password, secret query values), as written and decoded."""
    found: list[str] = []
    try:
        parsed = make_url(_encode_at_in_password(url))
    except (sqlalchemy.exc.ArgumentError, ValueError):
        match = _PASSWORD_IN_URL.search(url)
        return [match.group(2)] if match and match.group(2) else []
    if parsed.password:
        found.append(str(parsed.password))
    for key, value in parsed.query.items():
        if key.lower() in SECRET_QUERY_KEYS:
            found.extend([value] if isinstance(value, str) else list(value))
    variants = {v for s in found if s for v in (s, quote(s, safe=""), unquote(s))}
    return sorted((v for v in variants if v), key=len, reverse=True)


def mask_url(url: str) -> str:
    """``url`` with its password and credential query parameters replaced by ``***``.

    Rendered by SQLAlchemy, so the password is found where the driver would find it (also
    one holding ``@``); URLs SQLAlchemy rejects are masked between ``user:`` and the last
    ``@``.
    """
    try:
        parsed = make_url(_encode_at_in_password(url))
    except (sqlalchemy.exc.ArgumentError, ValueError):
        return _PASSWORD_IN_URL.sub(rf"\1{_MASK}\3", url)
    query = {
        key: (_MASK if key.lower() in SECRET_QUERY_KEYS else value)
        for key, value in parsed.query.items()
    }
    rendered = parsed.set(query=query).render_as_string(hide_password=True)
    return rendered.replace(quote(_MASK, safe=""), _MASK)


def scrub(text: str, url: str | None) -> str:
    """``text`` with the credentials of ``url`` masked wherever they appear.

    The URL itself is replaced by its masked form; a password elsewhere (an error message
    quoting it) is masked only where it stands as a word of its own, so a one-character
    password does not mask the letters of unrelated words.
    """
    if not url:
        return text
    text = text.replace(url, mask_url(url))
    for secret in _secrets(url):
        before = r"(?<![A-Za-z0-9])" if secret[0].isalnum() else ""
        after = r"(?![A-Za-z0-9])" if secret[-1].isalnum() else ""
        text = re.sub(before + re.escape(secret) + after, _MASK, text)
    return text


def _parse(url: str) -> URL:
    try:
        return make_url(_encode_at_in_password(url))
    except (sqlalchemy.exc.ArgumentError, ValueError):
        raise ValueError(
            f"The storage URL {mask_url(url)!r} cannot be parsed. {_URL_HELP}"
        ) from None


def writable_folder(folder: Path, *, what: str, fix: str) -> Path:
    """Create ``folder`` if needed; a ValueError naming ``what`` and ``fix`` if it can't be."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ValueError(
            f"The {what} folder {str(folder)!r} cannot be created ({e.strerror}). {fix}"
        ) from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ValueError(f"The {what} folder {str(folder)!r} is not writable. {fix}")
    return folder


def _writable(path: Path) -> bool:
    return os.access(path, os.W_OK)


def _prepare_sqlite(parsed: URL) -> bool:
    """Check a SQLite (or journal) file's folder; ``True`` when it can only be read.

    An existing file in a read-only folder, or a read-only file, opens read-only, so that
    reading commands (``bsopt studies``, ``bsopt report``) work on it; a write then fails
    with a clear error. A missing file needs a folder where it can be created.
    """
    database = parsed.database
    if not database or database == ":memory:":
        raise ValueError(
            "An in-memory SQLite storage cannot be shared or resumed. "
            "Give a file, e.g. sqlite:///storage/bsopt.db."
        )
    path = Path(database).expanduser().resolve()
    if path.is_file() and not (_writable(path) and _writable(path.parent)):
        return True
    writable_folder(
        path.parent,
        what="storage",
        fix="Choose a writable place with --storage or BSOPT_STORAGE.",
    )
    return False


def _read_only_sqlite_url(parsed: URL) -> str:
    """A URL opening the same SQLite file in SQLite's read-only mode.

    A file in WAL mode is read through its ``-shm`` index, which a read-only folder cannot
    hold: without the ``-wal`` file (no writer has it open, none can create it there) the
    file cannot change, and SQLite is told so (``immutable=1``).
    """
    path = Path(str(parsed.database)).expanduser().resolve()
    url = f"sqlite:///{path.as_uri()}?mode=ro&uri=true"
    wal = path.with_name(path.name + "-wal")
    if _is_wal_file(path) and not _writable(path.parent) and not wal.exists():
        url += "&immutable=1"
    return url


def _is_wal_file(path: Path) -> bool:
    """Whether a SQLite file is in WAL mode (its header's read and write versions are 2)."""
    try:
        with path.open("rb") as f:
            header = f.read(20)
    except OSError:
        return False
    return len(header) == 20 and header[18:20] == b"\x02\x02"


def with_default_driver(url: str) -> str:
    """``url`` with a driver named when it names none and SQLAlchemy's default is missing.

    ``postgresql://`` becomes ``postgresql+psycopg://`` (psycopg 3) unless psycopg2 is
    installed; ``mysql://`` and ``mariadb://`` use PyMySQL unless mysqlclient is installed.
    """
    parsed = _parse(url)
    if parsed.drivername not in _DEFAULT_DRIVERS:
        return url
    default_module, replacement, module = _DEFAULT_DRIVERS[parsed.drivername]
    if importlib.util.find_spec(default_module) or not importlib.util.find_spec(module):
        return url
    return parsed.set(drivername=replacement).render_as_string(hide_password=False)


def _open_journal(parsed: URL) -> BaseStorage:
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    path = parsed.database
    if not path:
        raise ValueError(
            "A journal storage URL needs a file: journal:///relative/path.log or "
            "journal:////absolute/path.log."
        )
    _prepare_sqlite(parsed)  # the same folder checks as a SQLite file
    return JournalStorage(JournalFileBackend(str(Path(path).expanduser())))


def _open_grpc(parsed: URL, *, timeout: float = 10.0) -> BaseStorage:
    where = f"{parsed.host or 'localhost'}:{parsed.port or 13000}"
    try:
        import grpc  # noqa: F401  (GrpcStorageProxy imports it lazily; fail here clearly)
    except ImportError:
        raise StorageError(
            "The grpc:// storage needs grpcio. Install it with pip install 'bsopt[grpc]'."
        ) from None
    from optuna.storages import GrpcStorageProxy

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        proxy = GrpcStorageProxy(host=parsed.host or "localhost", port=parsed.port or 13000)
    try:
        proxy.wait_server_ready(timeout=timeout)
    except ConnectionError:
        proxy.close()
        raise StorageError(
            f"Cannot reach the storage proxy at {where} within {timeout:g} s. Start it there "
            "with: bsopt proxy --storage URL --host HOST --port PORT"
        ) from None
    return proxy


def _engine_kwargs(parsed: URL) -> dict[str, object]:
    if parsed.get_backend_name() == "sqlite":
        # Several processes may write one file; wait for the lock instead of failing.
        return {"connect_args": {"timeout": 60}}
    # Servers and firewalls drop idle connections (MySQL after wait_timeout, 8 h by
    # default); a trial can keep its worker's pooled connection idle for hours. Reconnect
    # connections older than 5 minutes instead of pinging before every use, which cost
    # 20-30 % of trial throughput with many workers (benchmarks/bench_workers.py).
    return {"pool_recycle": 300}


# --- SQL storage: SQLite settings chosen for trials, a trial's attributes in one write ------


def _sqlite_settings(connection: Any, *, read_only: bool) -> None:
    """Settings of a new SQLite connection (run from SQLAlchemy's ``connect`` event).

    Write-ahead logging (WAL): a commit appends to the ``-wal`` file instead of copying
    pages to a rollback journal first, and readers never wait for the writer. The mode is
    stored in the database file; a read-only connection keeps the file's mode.
    ``synchronous=NORMAL`` (per connection) syncs the log to disk at checkpoints, not at
    every commit: a committed trial survives the crash of any process; a power cut or an
    operating-system crash can undo the last commits before it, never corrupt the file.
    """
    cursor = connection.cursor()
    try:
        if not read_only:
            cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
    finally:
        cursor.close()


# The inode of each SQLite file as opened: a file deleted mid-run may be re-created empty by
# another connection (another worker's), and is still not the file the trials are in.
_OPENED_FILES: dict[Path, int] = {}


def _watch_sqlite_file(engine: sqlalchemy.engine.Engine, database: Path) -> None:
    """Fail every commit once the database file is deleted, moved or replaced.

    In WAL mode SQLite goes on writing to a deleted file through its open connections (the
    ``-wal`` file is still there), so a run would "succeed" into a file nobody can open
    again. One ``stat`` per commit (microseconds) compares the file with the one opened.
    """
    path = database.expanduser().resolve()
    opened = path.stat().st_ino
    _OPENED_FILES[path] = opened

    def check(connection: Any) -> None:
        try:
            same = path.stat().st_ino == opened
        except OSError:
            same = False
        if not same:
            raise sqlalchemy.exc.OperationalError(
                "COMMIT",
                None,
                sqlite3.OperationalError(
                    "disk I/O error: the database file was deleted, moved or replaced while in use"
                ),
            )

    def refuse_a_new_file(dialect: Any, record: Any, cargs: Any, cparams: Any) -> None:
        # Opening a deleted path would create an empty database in its place, hiding where
        # the trials went from the user and from every later check.
        check(None)

    event.listen(engine, "commit", check)
    event.listen(engine, "do_connect", refuse_a_new_file)


# The Optuna releases whose private trial models the plain-SELECT reads were checked
# against (tests/store/test_storage.py compares them with Optuna's own read). Any other
# release reads through Optuna's RDBStorage, slower but always right.
FAST_READ_OPTUNA = ("5.0", "5.1")
# Set to 1 to read trials through Optuna's own RDBStorage code.
OPTUNA_READS_ENV = "BSOPT_OPTUNA_READS"


def fast_reads() -> bool:
    """Whether :class:`SQLStorage` reads trials with its plain SELECTs (else Optuna's read)."""
    if os.environ.get(OPTUNA_READS_ENV, "") not in ("", "0"):
        return False
    return ".".join(optuna.__version__.split(".")[:2]) in FAST_READ_OPTUNA


class SQLStorage(RDBStorage):
    """Optuna's ``RDBStorage`` as :func:`open_storage` opens it.

    Two additions, the tables and every Optuna method staying as they are:

    * SQLite connections use WAL with ``synchronous=NORMAL`` (see the module notes).
    * :meth:`user_attrs_batch` and :meth:`set_trial_user_attrs` write many user attributes
      of a trial in one transaction (one statement on SQLite, PostgreSQL and MySQL/MariaDB):
      a trial's ~25 standard attributes cost one commit instead of 25. Each attribute is
      still its own row, so the dashboard and ``trial.user_attrs`` show it on its own.
    * Trials are read with plain SELECTs (3.5-5.8x faster than Optuna's ORM read), only on
      the Optuna releases in ``FAST_READ_OPTUNA``; on any other, or with the environment
      variable ``BSOPT_OPTUNA_READS=1``, Optuna's own read runs. Failures raise Optuna's
      ``StorageInternalError`` either way.
    * A RUNNING trial that never had a heartbeat counts as stale after the grace period.
    """

    def __init__(self, url: str, **kwargs: Any) -> None:
        super().__init__(url, **kwargs)
        self._setup()

    def __getstate__(self) -> dict[Any, Any]:
        state = super().__getstate__()
        state.pop("_queue", None)  # per-thread queues are not sent to other processes
        return state

    def __setstate__(self, state: dict[Any, Any]) -> None:
        super().__setstate__(state)
        self._setup()

    def _setup(self) -> None:
        self._queue = threading.local()
        # Closing at exit checkpoints SQLite's WAL into the database file even when the
        # command line ends without the interpreter's teardown (see _cli.console_main).
        atexit.register(_dispose, weakref.ref(self.engine))
        if self.engine.name == "sqlite":
            read_only = "mode=ro" in self.url

            def on_connect(connection: Any, record: Any) -> None:
                _sqlite_settings(connection, read_only=read_only)

            event.listen(self.engine, "connect", on_connect)
            # The connections that created the tables were opened before the listener; the
            # first new one puts the file in WAL mode now rather than at the first trial.
            self.engine.dispose()
            with self.engine.connect():
                pass
            if not read_only and self.engine.url.database:
                _watch_sqlite_file(self.engine, Path(self.engine.url.database))

    @contextlib.contextmanager
    def user_attrs_batch(self) -> Iterator[None]:
        """Queue this thread's ``set_trial_user_attr`` calls; write them together at the end.

        What was queued is written also when the block raises. Nested blocks write once,
        at the end of the outermost.
        """
        if getattr(self._queue, "items", None) is not None:
            yield
            return
        self._queue.items = []
        try:
            yield
        finally:
            items, self._queue.items = self._queue.items, None
            if items:
                self._write_user_attrs(items)

    def set_trial_user_attr(self, trial_id: int, key: str, value: Any) -> None:
        items = getattr(self._queue, "items", None)
        if items is None:
            super().set_trial_user_attr(trial_id, key, value)
            return
        json.dumps(value)  # a value JSON cannot hold fails here, as a direct write would
        items.append((trial_id, key, value))

    def set_trial_user_attrs(self, trial_id: int, attrs: Mapping[str, Any]) -> None:
        """Write ``attrs`` as separate user attributes of the trial in one transaction."""
        self._write_user_attrs([(trial_id, key, value) for key, value in attrs.items()])

    def _write_user_attrs(self, items: list[tuple[int, str, Any]]) -> None:
        insert = _upsert_for(self.engine.name)
        if insert is None:  # another database: Optuna's own write, one per attribute
            for trial_id, key, value in items:
                super().set_trial_user_attr(trial_id, key, value)
            return
        from optuna.storages._rdb import models

        rows: dict[tuple[int, str], str] = {}
        for trial_id, key, value in items:
            rows[(trial_id, key)] = json.dumps(value)  # the last write of a key wins
        table = models.TrialUserAttributeModel
        session = self.scoped_session()
        try:
            for trial_id in sorted({trial_id for trial_id, _ in rows}):
                trial = models.TrialModel.find_or_raise_by_id(trial_id, session)
                self.check_trial_is_updatable(trial_id, trial.state)
            values = [
                {"trial_id": trial_id, "key": key, "value_json": value}
                for (trial_id, key), value in rows.items()
            ]
            session.execute(insert(table, values))
            session.commit()
        except sqlalchemy.exc.SQLAlchemyError as e:
            session.rollback()
            raise optuna.exceptions.StorageInternalError(
                f"Writing {len(rows)} user attributes failed: {type(e).__name__}."
            ) from e
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        """Optuna's stale trials, plus RUNNING trials that never had a heartbeat.

        Optuna fails only trials whose heartbeat row has gone quiet. A worker killed between
        creating its trial and its first beat leaves a RUNNING trial with no row at all,
        which then waits forever; it counts as stale once its start is older than the grace
        period, and Optuna's ``fail_stale_trials`` fails and retries it like any other.
        """
        stale = super()._get_stale_trial_ids(study_id)
        from optuna.storages._rdb import models

        grace = self.grace_period if self.grace_period is not None else 2 * (
            self.heartbeat_interval or 0
        )
        trials = cast(sqlalchemy.Table, models.TrialModel.__table__)
        beats = cast(sqlalchemy.Table, models.TrialHeartbeatModel.__table__)
        # Starts are stored as naive UTC by the worker's clock (Optuna's TrialModel).
        cutoff = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)
        cutoff -= datetime.timedelta(seconds=grace)
        with self.engine.connect() as connection:
            silent = connection.execute(
                sqlalchemy.select(trials.c.trial_id).where(
                    trials.c.study_id == study_id,
                    trials.c.state == TrialState.RUNNING,
                    trials.c.datetime_start < cutoff,
                    ~sqlalchemy.exists().where(beats.c.trial_id == trials.c.trial_id),
                )
            ).scalars().all()
            connection.commit()
        return stale + [int(i) for i in silent if i not in stale]

    def _get_trials(
        self,
        study_id: int,
        states: Container[TrialState] | None,
        included_trial_ids: set[int],
        trial_id_greater_than: int,
    ) -> list[FrozenTrial]:
        """Optuna's read of a study's trials, with plain SELECTs instead of ORM objects.

        Optuna's trial cache calls this before every read of the study (several times per
        trial: the sampler, the pruner, ``ask``) to fetch the unfinished and new trials.
        Building ORM objects for them costs about 3x the six queries themselves; the
        trials returned are equal to ``RDBStorage``'s (tests/store/test_storage.py compares).
        """
        if not fast_reads():
            return super()._get_trials(
                study_id, states, included_trial_ids, trial_id_greater_than
            )
        from optuna.storages._rdb import models

        trials = cast(sqlalchemy.Table, models.TrialModel.__table__)
        where = [trials.c.study_id == study_id]
        if states is not None:
            where.append(trials.c.state.in_(list(cast(Iterable[TrialState], states))))
        included = [i for i in included_trial_ids if i <= trial_id_greater_than]
        if trial_id_greater_than > -1:
            newer = trials.c.trial_id > trial_id_greater_than
            where.append(
                sqlalchemy.or_(trials.c.trial_id.in_(included), newer) if included else newer
            )
        try:
            with self.engine.connect() as connection:
                rows, children = self._read_trials(connection, where, study_id, models)
                # Ends the read as Optuna's session does, with a commit: the check that the
                # database file is still the one opened runs at every commit.
                connection.commit()
        except sqlalchemy.exc.SQLAlchemyError as e:
            # The error Optuna's own read raises, so callers handle both alike.
            raise optuna.exceptions.StorageInternalError(
                f"Reading the trials of study {study_id} failed: {type(e).__name__}."
            ) from e
        return _frozen_trials(rows, children, models) if rows else []

    def _read_trials(
        self, connection: Any, where: list[Any], study_id: int, models: Any
    ) -> tuple[Sequence[Any], dict[str, list[Any]]]:
        trials = cast(sqlalchemy.Table, models.TrialModel.__table__)
        columns = ["trial_id", "number", "state", "datetime_start", "datetime_complete"]
        rows = connection.execute(
            sqlalchemy.select(*(trials.c[name] for name in columns))
            .where(*where)
            .order_by(trials.c.trial_id)
        ).all()
        if not rows:
            studies = cast(sqlalchemy.Table, models.StudyModel.__table__)
            found = connection.execute(
                sqlalchemy.select(studies.c.study_id).where(studies.c.study_id == study_id)
            ).first()
            if found is None:
                raise KeyError(models.NOT_FOUND_MSG)
            return rows, {}
        # Children are read by the ids just read, not by re-running the filter: on SQLite
        # each SELECT sees its own snapshot, and a trial another worker creates between the
        # statements would otherwise bring children with no trial row.
        ids = [row.trial_id for row in rows]
        children: dict[str, list[Any]] = {}
        for name, selected, order in _child_queries(models):
            children[name] = []
            for start in range(0, len(ids), _IDS_PER_SELECT):
                chunk = ids[start : start + _IDS_PER_SELECT]
                children[name].extend(
                    connection.execute(
                        sqlalchemy.select(*selected).where(selected[0].in_(chunk)).order_by(order)
                    ).all()
                )
        return rows, children


# Below SQLite's oldest limit of 999 bound variables, so long studies read in a few chunks.
_IDS_PER_SELECT = 900


def _child_queries(models: Any) -> list[tuple[str, list[Any], Any]]:
    def table(model: Any) -> sqlalchemy.Table:
        return cast(sqlalchemy.Table, model.__table__)

    params = table(models.TrialParamModel).c
    values = table(models.TrialValueModel).c
    user = table(models.TrialUserAttributeModel).c
    system = table(models.TrialSystemAttributeModel).c
    steps = table(models.TrialIntermediateValueModel).c
    return [
        (
            "params",
            [params.trial_id, params.param_name, params.param_value, params.distribution_json],
            params.param_id,
        ),
        (
            "values",
            [values.trial_id, values.objective, values.value, values.value_type],
            values.trial_value_id,
        ),
        ("user", [user.trial_id, user.key, user.value_json], user.trial_user_attribute_id),
        (
            "system",
            [system.trial_id, system.key, system.value_json],
            system.trial_system_attribute_id,
        ),
        (
            "steps",
            [steps.trial_id, steps.step, steps.intermediate_value, steps.intermediate_value_type],
            steps.trial_intermediate_value_id,
        ),
    ]


@functools.lru_cache(maxsize=256)
def _distribution(distribution_json: str) -> BaseDistribution:
    # Every trial of a study repeats the same few distributions; they are not mutated.
    return json_to_distribution(distribution_json)


def _local_time(utc: datetime.datetime | None) -> datetime.datetime | None:
    # Optuna stores naive UTC and hands out naive local time (see its TrialModel).
    if utc is None:
        return None
    return utc.replace(tzinfo=datetime.timezone.utc).astimezone().replace(tzinfo=None)


def _frozen_trials(
    rows: Sequence[Any], children: Mapping[str, Sequence[Any]], models: Any
) -> list[FrozenTrial]:
    by_trial: dict[int, dict[str, Any]] = {
        row.trial_id: {
            "params": {},
            "dists": {},
            "values": {},
            "user": {},
            "system": {},
            "steps": {},
        }
        for row in rows
    }
    for trial_id, name, value, distribution_json in children["params"]:
        distribution = _distribution(distribution_json)
        by_trial[trial_id]["params"][name] = distribution.to_external_repr(value)
        by_trial[trial_id]["dists"][name] = distribution
    for trial_id, objective, value, value_type in children["values"]:
        by_trial[trial_id]["values"][objective] = models.TrialValueModel.stored_repr_to_value(
            value, value_type
        )
    for key in ("user", "system"):
        for trial_id, name, value_json in children[key]:
            by_trial[trial_id][key][name] = json.loads(value_json)
    to_value = models.TrialIntermediateValueModel.stored_repr_to_intermediate_value
    for trial_id, step, value, value_type in children["steps"]:
        by_trial[trial_id]["steps"][step] = to_value(value, value_type)
    frozen = []
    for row in rows:
        parts = by_trial[row.trial_id]
        values = parts["values"]
        frozen.append(
            FrozenTrial(
                number=row.number,
                state=row.state,
                value=None,
                values=[values[i] for i in range(len(values))] if values else None,
                datetime_start=_local_time(row.datetime_start),
                datetime_complete=_local_time(row.datetime_complete),
                params=parts["params"],
                distributions=parts["dists"],
                user_attrs=parts["user"],
                system_attrs=parts["system"],
                intermediate_values=parts["steps"],
                trial_id=row.trial_id,
            )
        )
    return frozen


def _dispose(engine: weakref.ref[sqlalchemy.engine.Engine]) -> None:
    alive = engine()
    if alive is not None:
        alive.dispose()


def close_connections(storage: BaseStorage) -> None:
    """Close the pooled database connections of ``storage`` (an SQL one); later calls
    open new ones. Before a fork, so that no child holds a connection of the parent."""
    engine = getattr(getattr(storage, "_backend", storage), "engine", None)
    if isinstance(engine, sqlalchemy.engine.Engine):
        engine.dispose()


def _upsert_for(dialect: str) -> Callable[[Any, list[dict[str, Any]]], Any] | None:
    """A multi-row insert-or-update statement builder for ``dialect``, if it has one."""
    if dialect == "postgresql" or (
        dialect == "sqlite" and sqlite3.sqlite_version_info >= (3, 24, 0)  # upsert: 3.24+
    ):
        insert = importlib.import_module(f"sqlalchemy.dialects.{dialect}").insert

        def upsert(table: Any, values: list[dict[str, Any]]) -> Any:
            statement = insert(table).values(values)
            return statement.on_conflict_do_update(
                index_elements=[table.trial_id, table.key],
                set_={"value_json": statement.excluded.value_json},
            )

        return upsert
    if dialect in ("mysql", "mariadb"):
        from sqlalchemy.dialects.mysql import insert as mysql_insert

        def mysql_upsert(table: Any, values: list[dict[str, Any]]) -> Any:
            statement = mysql_insert(table).values(values)
            return statement.on_duplicate_key_update(value_json=statement.inserted.value_json)

        return mysql_upsert
    return None


def open_storage(
    url: str | None = None,
    *,
    heartbeat_interval: int | None = 60,
    grace_period: int | None = None,
    max_retry: int | None = 3,
) -> BaseStorage:
    """Open (and create if needed) the storage named by ``url``.

    Args:
        url: a SQLAlchemy URL; ``None`` resolves ``$BSOPT_STORAGE`` then the default
            ``sqlite:///storage/bsopt.db`` (relative to the working directory).
        heartbeat_interval: seconds between a running trial's heartbeats; a trial whose
            heartbeat is older than ``grace_period`` (default ``2 * heartbeat_interval``) is
            failed and re-queued up to ``max_retry`` times. ``None`` turns heartbeats off.
            Only SQL databases have heartbeats: ``journal:///file.log`` (Optuna's
            journal file, many processes on one host) and ``grpc://host:port`` (a
            ``bsopt proxy``) ignore these three settings.

    An existing SQLite file that cannot be written (a read-only file or folder) opens
    read-only: reading works, and a write fails with a :class:`StorageError`. Processes
    creating the same new SQLite file at once take turns (a lock file next to it); on
    database servers a race to create the schema is retried.

    Raises:
        ValueError: the URL cannot be parsed, or a SQLite folder is not writable.
        StorageError: the database cannot be opened: server unreachable, file damaged, ...
    """
    resolved = resolve_storage_url(url)
    parsed = _parse(resolved)
    if parsed.get_backend_name() == "journal":
        return _open_journal(parsed)
    if parsed.get_backend_name() == "grpc":
        return _open_grpc(parsed)
    resolved = with_default_driver(resolved)
    parsed = _parse(resolved)
    connect_url = parsed.render_as_string(hide_password=False)
    lock_path: Path | None = None
    if parsed.get_backend_name() == "sqlite":
        if _prepare_sqlite(parsed):
            connect_url = _read_only_sqlite_url(parsed)
        else:
            lock_path = _creation_lock(Path(str(parsed.database)))
    try:
        with warnings.catch_warnings():
            # Heartbeats are flagged experimental by Optuna; we rely on them deliberately.
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            callback = (
                RetryHeartbeatStaleTrialCallback(max_retry=max_retry)
                if heartbeat_interval is not None
                else None
            )

            def create() -> RDBStorage:
                return SQLStorage(
                    connect_url,
                    engine_kwargs=_engine_kwargs(parsed),
                    heartbeat_interval=heartbeat_interval,
                    grace_period=grace_period,
                    heartbeat_stale_trial_callback=callback,
                )

            if lock_path is not None:
                # Several processes creating one new file would race to create its tables
                # ("table studies already exists"): they take turns.
                from filelock import FileLock

                with FileLock(str(lock_path), timeout=120):
                    return _retry_schema_race(create)
            return _retry_schema_race(create)
    except (ImportError, sqlalchemy.exc.NoSuchModuleError):
        raise StorageError(
            f"No database driver for {parsed.drivername!r} is installed. Install one "
            "(psycopg for PostgreSQL, PyMySQL for MySQL/MariaDB) and name it in the URL, "
            "e.g. postgresql+psycopg://..."
        ) from None
    except Exception as e:
        error = storage_error(e, resolved, opening=True)
        if error is None:
            raise
        raise error from None


def _creation_lock(database: Path) -> Path | None:
    """The lock file serialising the creation of a new SQLite file (``None``: it exists).

    It lives in the temporary folder, named after the database's absolute path, so that
    nothing is left next to the database.
    """
    path = database.expanduser().resolve()
    if path.is_file() and path.stat().st_size > 0:
        return None
    digest = hashlib.sha256(str(path).encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"bsopt-create-{digest}.lock"


def _retry_schema_race(create: Callable[[], RDBStorage], attempts: int = 5) -> RDBStorage:
    """``create()``, again after a short pause when another process created the schema."""
    for attempt in range(attempts):
        try:
            return create()
        except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError,
                sqlalchemy.exc.OperationalError) as e:  # fmt: skip
            text = str(e).lower()
            racing = any(m in text for m in ("already exists", "duplicate", "unique constraint"))
            if not racing or attempt == attempts - 1:
                raise
            time.sleep(0.2 + random.random() * 0.5)
    raise AssertionError("unreachable")  # the loop returns or raises


# --- storage faults: one clear line instead of a traceback ---------------------------------

_SQLITE_HINTS = (
    (
        ("readonly database", "read-only file system", "permission denied"),
        "The database file or its folder is read-only: make both writable, or pass a "
        "writable --storage.",
    ),
    (
        ("database or disk is full", "no space left"),
        "The disk (or the database's size limit) is full: free space and run the same "
        "command again.",
    ),
    (
        ("malformed", "file is not a database", "not a database"),
        "The database file is damaged or is not an Optuna SQLite database: restore a copy "
        "(sqlite3 FILE .recover), or pass another --storage.",
    ),
    (
        ("disk i/o error", "no such table", "unable to open database", "readonly database moved"),
        "SQLite could not read or write the file: it was deleted, moved, replaced or made "
        "read-only while in use, or its disk failed. Check the file; restore it if it was "
        "removed.",
    ),
    (
        ("database is locked",),
        "Another process held the write lock for over 60 s; SQLite suits a few workers on "
        "one host: use journal:/// or a database server for more.",
    ),
)
_SERVER_HINT = (
    "Check that the server runs and accepts connections, that the database exists, and "
    "that this user may use it."
)


def _chain(e: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    current: BaseException | None = e
    while current is not None and current not in seen:
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen


def storage_error(
    e: BaseException, url: str | None, *, opening: bool = False
) -> StorageError | None:
    """The :class:`StorageError` explaining ``e`` when a storage fault caused it, else ``None``.

    Looks through the exception's causes for a database error (SQLAlchemy's, Optuna's
    ``StorageInternalError``), so that Optuna's own follow-up errors (an assertion after a
    failed write) are explained by their first cause. The message is one line, names the
    storage with its password masked, and says what to do.
    """
    causes = _chain(e)
    database_error = next(
        (c for c in causes if isinstance(c, sqlalchemy.exc.SQLAlchemyError)), None
    )
    optuna_error = next(
        (c for c in causes if isinstance(c, optuna.exceptions.StorageInternalError)), None
    )
    if database_error is None and optuna_error is None:
        return None
    resolved = _display_url(resolve_storage_url(url))
    cause: BaseException = (
        getattr(database_error, "orig", None) or database_error or optuna_error  # type: ignore[assignment]
    )
    first_line = (str(cause).strip().splitlines() or [""])[0]
    reason = scrub(f"{type(cause).__name__}: {first_line}", resolved)
    try:
        parsed = make_url(_encode_at_in_password(resolved))
    except (sqlalchemy.exc.ArgumentError, ValueError):
        parsed = None
    sqlite = parsed is not None and parsed.get_backend_name() == "sqlite"
    hint = _SERVER_HINT
    gone = sqlite and _replaced(_sqlite_file(parsed))  # type: ignore[arg-type]
    if gone and not opening:
        hint = (
            "The database file was deleted or moved while in use: restore it (the trials "
            "finished before are in it) and run the same command again."
        )
    elif sqlite:
        lowered = first_line.lower()
        hint = next(
            (text for keys, text in _SQLITE_HINTS if any(k in lowered for k in keys)),
            "Check that the file is an Optuna SQLite database that this user can read and write.",
        )
    elif isinstance(database_error, sqlalchemy.exc.DataError) or "too long" in first_line:
        hint = "A value is too long for the database (study names hold at most 512 characters)."
    where = _where(resolved)
    if opening:
        return StorageError(
            f"Cannot open the storage {mask_url(resolved)!r}{where} ({reason}). {hint}"
        )
    return StorageError(
        f"The storage {mask_url(resolved)!r}{where} failed ({reason}). {hint} Finished "
        "trials are kept; the running one is marked failed where the storage still allows it."
    )


def _replaced(path: Path) -> bool:
    """Whether the SQLite file at ``path`` is gone, or is not the file this process opened."""
    try:
        inode = path.expanduser().resolve().stat().st_ino
    except OSError:
        return True
    opened = _OPENED_FILES.get(path.expanduser().resolve())
    return opened is not None and inode != opened


def _display_url(url: str) -> str:
    """``url`` as the user wrote it: a read-only SQLite URI shown as its plain file URL."""
    try:
        parsed = make_url(_encode_at_in_password(url))
    except (sqlalchemy.exc.ArgumentError, ValueError):
        return url
    if parsed.get_backend_name() == "sqlite" and str(parsed.database or "").startswith("file:"):
        return f"sqlite:///{_sqlite_file(parsed)}"
    return url


def _sqlite_file(parsed: URL) -> Path:
    database = str(parsed.database or "")
    if database.startswith("file:"):  # the read-only URI form
        from urllib.parse import urlparse

        database = unquote(urlparse(database).path)
    return Path(database).expanduser().resolve()


def _where(url: str) -> str:
    try:
        parsed = make_url(_encode_at_in_password(url))
    except (sqlalchemy.exc.ArgumentError, ValueError):
        return ""
    if parsed.get_backend_name() == "sqlite":
        return ""
    return f" at {parsed.host or 'localhost'}:{parsed.port or 'default port'}"
