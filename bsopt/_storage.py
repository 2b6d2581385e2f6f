"""The one storage resolver: ``--storage`` flag > ``BSOPT_STORAGE`` > the SQLite default.

Every command and script opens storage through :func:`open_storage`, so they agree on where
a study lives, on heartbeats (a crashed worker's trial is failed and retried), on SQLite's
lock timeout, and on never showing a password.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
import re
import warnings

import optuna
from optuna.storages import BaseStorage, RDBStorage, RetryHeartbeatStaleTrialCallback
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
_PASSWORD_IN_URL = re.compile(r"(://[^:/@\s]*:)([^@\s]*)(@)")


class StorageError(RuntimeError):
    """The storage could not be opened or reached. The message never holds a password."""


def resolve_storage_url(url: str | None = None) -> str:
    """The storage URL to use: ``url`` if given, else ``$BSOPT_STORAGE``, else the default."""
    return url or os.environ.get(STORAGE_ENV) or DEFAULT_STORAGE


def mask_url(url: str) -> str:
    """``url`` with any password replaced by ``***`` (also for URLs SQLAlchemy rejects)."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except (sqlalchemy.exc.ArgumentError, ValueError):
        return _PASSWORD_IN_URL.sub(r"\1***\3", url)


def _parse(url: str) -> URL:
    try:
        return make_url(url)
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


def _prepare_sqlite(parsed: URL) -> None:
    database = parsed.database
    if not database or database == ":memory:":
        raise ValueError(
            "An in-memory SQLite storage cannot be shared or resumed. "
            "Give a file, e.g. sqlite:///storage/bsopt.db."
        )
    writable_folder(
        Path(database).expanduser().resolve().parent,
        what="storage",
        fix="Choose a writable place with --storage or BSOPT_STORAGE.",
    )


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

    Raises:
        ValueError: the URL cannot be parsed, or a SQLite folder is not writable.
        StorageError: the database server cannot be reached or refused the connection.
    """
    resolved = resolve_storage_url(url)
    parsed = _parse(resolved)
    if parsed.get_backend_name() == "journal":
        return _open_journal(parsed)
    if parsed.get_backend_name() == "grpc":
        return _open_grpc(parsed)
    resolved = with_default_driver(resolved)
    parsed = _parse(resolved)
    if parsed.get_backend_name() == "sqlite":
        _prepare_sqlite(parsed)
    try:
        with warnings.catch_warnings():
            # Heartbeats are flagged experimental by Optuna; we rely on them deliberately.
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            callback = (
                RetryHeartbeatStaleTrialCallback(max_retry=max_retry)
                if heartbeat_interval is not None
                else None
            )
            return RDBStorage(
                resolved,
                engine_kwargs=_engine_kwargs(parsed),
                heartbeat_interval=heartbeat_interval,
                grace_period=grace_period,
                heartbeat_stale_trial_callback=callback,
            )
    except (ImportError, sqlalchemy.exc.NoSuchModuleError):
        raise StorageError(
            f"No database driver for {parsed.drivername!r} is installed. Install one "
            "(psycopg for PostgreSQL, PyMySQL for MySQL/MariaDB) and name it in the URL, "
            "e.g. postgresql+psycopg://..."
        ) from None
    except (sqlalchemy.exc.SQLAlchemyError, OSError) as e:
        where = (
            f"{parsed.host or 'localhost'}:{parsed.port or 'default port'}"
            if parsed.get_backend_name() != "sqlite"
            else str(parsed.database)
        )
        cause = getattr(e, "orig", None) or e
        first_line = (str(cause).strip().splitlines() or [""])[0]
        reason = f"{type(cause).__name__}: {first_line}"
        if parsed.password:
            reason = reason.replace(str(parsed.password), "***")
        raise StorageError(
            f"Cannot open the storage {mask_url(resolved)!r} at {where} ({reason}). "
            "Check that the server runs and accepts connections, and that the database exists."
        ) from None
