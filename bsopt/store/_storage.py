"""The one storage resolver: ``--storage`` flag > ``BSOPT_STORAGE`` > the SQLite default.

Every command and script opens storage through :func:`open_storage`, so they agree on where
a study lives, on heartbeats (a crashed worker's trial is failed and retried), on SQLite's
settings (WAL, ``synchronous=NORMAL``, the lock timeout), and on never showing a password.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
import random
import time
import warnings

import optuna
from optuna.storages import BaseStorage, RDBStorage, RetryHeartbeatStaleTrialCallback
from sqlalchemy.engine import URL
import sqlalchemy.exc

from bsopt.store._errors import StorageError, storage_error
from bsopt.store._sql import SQLStorage
from bsopt.store._sqlite import _creation_lock, _prepare_sqlite, _read_only_sqlite_url
from bsopt.store._urls import _parse, resolve_storage_url, with_default_driver


def open_storage(
    url: str | None = None,
    *,
    heartbeat_interval: int | None = 60,
    grace_period: int | None = None,
    max_retry: int | None = 3,
    create: bool = True,
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
        create: ``False`` refuses a SQLite or journal file that does not exist yet,
            instead of creating an empty one (for commands that only read).

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
        return _open_journal(parsed, create=create)
    if parsed.get_backend_name() == "grpc":
        return _open_grpc(parsed)
    resolved = with_default_driver(resolved)
    parsed = _parse(resolved)
    connect_url = parsed.render_as_string(hide_password=False)
    lock_path: Path | None = None
    if parsed.get_backend_name() == "sqlite":
        if _prepare_sqlite(parsed, create=create):
            connect_url = _read_only_sqlite_url(parsed)
        else:
            lock_path = _creation_lock(Path(str(parsed.database)))
    try:
        return _open_sql(
            connect_url,
            parsed,
            lock_path,
            heartbeat_interval=heartbeat_interval,
            grace_period=grace_period,
            max_retry=max_retry,
        )
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


def _open_sql(
    connect_url: str,
    parsed: URL,
    lock_path: Path | None,
    *,
    heartbeat_interval: int | None,
    grace_period: int | None,
    max_retry: int | None,
) -> RDBStorage:
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

        if lock_path is None:
            return _retry_schema_race(create)
        # Several processes creating one new file would race to create its tables
        # ("table studies already exists"): they take turns.
        from filelock import FileLock

        with FileLock(str(lock_path), timeout=120):
            return _retry_schema_race(create)


def _open_journal(parsed: URL, *, create: bool = True) -> BaseStorage:
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    path = parsed.database
    if not path:
        raise ValueError(
            "A journal storage URL needs a file: journal:///relative/path.log or "
            "journal:////absolute/path.log."
        )
    _prepare_sqlite(parsed, create=create)  # the same folder checks as a SQLite file
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
    # default), and a restarted or failed-over server drops them all: a trial can keep its
    # worker's pooled connection idle for hours. The ping before each use (one round trip)
    # finds a dropped one and reconnects instead of failing the run; connections older
    # than 5 minutes are replaced anyway.
    return {"pool_recycle": 300, "pool_pre_ping": True}


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
