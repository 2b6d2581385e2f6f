from __future__ import annotations

import os
from pathlib import Path

import pytest

import bsopt
from bsopt import StorageError, mask_url, open_storage, resolve_storage_url


def test_resolver_order_is_flag_then_env_then_default(monkeypatch: pytest.MonkeyPatch) -> None:
    assert resolve_storage_url(None) == "sqlite:///storage/bsopt.db" == bsopt.DEFAULT_STORAGE
    monkeypatch.setenv("BSOPT_STORAGE", "sqlite:///env.db")
    assert resolve_storage_url(None) == "sqlite:///env.db"
    assert resolve_storage_url("sqlite:///flag.db") == "sqlite:///flag.db"


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
