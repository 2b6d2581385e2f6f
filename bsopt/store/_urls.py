"""Storage URLs: the resolver's order, default drivers, and never showing a secret."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
import re
from urllib.parse import quote, unquote

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


def resolve_storage_url(url: str | None = None) -> str:
    """The storage URL to use: ``url`` if given, else ``$BSOPT_STORAGE``, else the default.

    An empty ``url`` is refused rather than taken for "not given": ``--storage "$VAR"`` with
    an unset variable would otherwise write to the default database. An empty
    ``$BSOPT_STORAGE`` counts as unset.
    """
    if url is not None and not url.strip():
        raise ValueError(
            "The storage URL is empty (--storage ''). Give a URL such as "
            f"{DEFAULT_STORAGE}, or leave the option out to use ${STORAGE_ENV} or the default."
        )
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


def _display_url(url: str) -> str:
    """``url`` as the user wrote it: a read-only SQLite URI shown as its plain file URL."""
    try:
        parsed = make_url(_encode_at_in_password(url))
    except (sqlalchemy.exc.ArgumentError, ValueError):
        return url
    if parsed.get_backend_name() == "sqlite" and str(parsed.database or "").startswith("file:"):
        return f"sqlite:///{_sqlite_file(parsed)}"
    return url


def _where(url: str) -> str:
    try:
        parsed = make_url(_encode_at_in_password(url))
    except (sqlalchemy.exc.ArgumentError, ValueError):
        return ""
    if parsed.get_backend_name() == "sqlite":
        return ""
    return f" at {parsed.host or 'localhost'}:{parsed.port or 'default port'}"


def _sqlite_file(parsed: URL) -> Path:
    database = str(parsed.database or "")
    if database.startswith("file:"):  # the read-only URI form
        from urllib.parse import urlparse

        database = unquote(urlparse(database).path)
    return Path(database).expanduser().resolve()
