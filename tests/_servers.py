"""The database servers the storage tests run against: PostgreSQL and MariaDB.

Without a server such tests skip with the reason; with ``CI=true`` they fail instead.
"""

from __future__ import annotations

import os

import pytest

import bsopt

POSTGRES_URL = os.environ.get(
    "BSOPT_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
MYSQL_URL = os.environ.get("BSOPT_TEST_MYSQL_URL", "mysql+pymysql://root@127.0.0.1:3306/test")


def _reachable(url: str) -> str:
    try:
        bsopt.open_storage(url, heartbeat_interval=None)
    except bsopt.StorageError as e:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true needs this server: {e}")
        pytest.skip(f"server not reachable: {e}")
    return url
