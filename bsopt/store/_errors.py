"""Storage faults as one line that names the storage (never its password) and the fix."""

from __future__ import annotations

import optuna
from sqlalchemy.engine import make_url
import sqlalchemy.exc

from bsopt.store._sqlite import _replaced
from bsopt.store._urls import (
    _display_url,
    _encode_at_in_password,
    _sqlite_file,
    _where,
    mask_url,
    resolve_storage_url,
    scrub,
)


class StorageError(RuntimeError):
    """The storage could not be opened or reached. The message never holds a password."""


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
