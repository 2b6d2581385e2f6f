"""SQLite files: writable folders, read-only opening, WAL settings, and the file watch."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
import sqlite3
import tempfile
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import URL
import sqlalchemy.exc


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


def _prepare_sqlite(parsed: URL, *, create: bool = True) -> bool:
    """Check a SQLite (or journal) file's folder; ``True`` when it can only be read.

    An existing file in a read-only folder, or a read-only file, opens read-only, so that
    reading commands (``bsopt studies``, ``bsopt report``) work on it; a write then fails
    with a clear error. A missing file needs a folder where it can be created, and is
    refused when ``create`` is false. A folder is never taken for the file.
    """
    database = parsed.database
    if not database or database == ":memory:":
        raise ValueError(
            "An in-memory SQLite storage cannot be shared or resumed. "
            "Give a file, e.g. sqlite:///storage/bsopt.db."
        )
    path = Path(database).expanduser().resolve()
    if path.is_dir():
        raise ValueError(
            f"The storage path {database!r} is a folder, not a database file. Name a file "
            f"in it, e.g. {_url_in(parsed, path / 'bsopt.db')}."
        )
    if not create and not path.exists():
        raise ValueError(
            f"There is no storage at {database!r}: the file does not exist, and this command "
            "only reads, so it creates none. Check the path (--storage or BSOPT_STORAGE), or "
            "start a study there with: bsopt run digits --storage URL."
        )
    if path.is_file() and not (_writable(path) and _writable(path.parent)):
        return True
    writable_folder(
        path.parent,
        what="storage",
        fix="Choose a writable place with --storage or BSOPT_STORAGE.",
    )
    return False


def _url_in(parsed: URL, path: Path) -> str:
    """``parsed``'s scheme with the database file ``path`` (absolute: four slashes)."""
    return f"{parsed.drivername.split('+')[0]}:///{path}"


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


def _replaced(path: Path) -> bool:
    """Whether the SQLite file at ``path`` is gone, or is not the file this process opened."""
    try:
        inode = path.expanduser().resolve().stat().st_ino
    except OSError:
        return True
    opened = _OPENED_FILES.get(path.expanduser().resolve())
    return opened is not None and inode != opened


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
