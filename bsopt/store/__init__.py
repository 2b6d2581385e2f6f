"""Storage: URLs and their secrets, SQLite files and settings, the SQL storage, storage
errors. Imports no torch. Other stages import storage through this package."""

from __future__ import annotations

from typing import TYPE_CHECKING

from bsopt._lazy import attach

if TYPE_CHECKING:
    from bsopt.store._errors import StorageError, storage_error
    from bsopt.store._sql import SQLStorage, close_connections
    from bsopt.store._sqlite import writable_folder
    from bsopt.store._storage import open_storage
    from bsopt.store._urls import (
        DEFAULT_STORAGE,
        STORAGE_ENV,
        mask_url,
        resolve_storage_url,
        scrub,
        with_default_driver,
    )

# Public name -> the private module that defines it (or the subpackage itself).
_LAZY = {
    "StorageError": "bsopt.store._errors",
    "storage_error": "bsopt.store._errors",
    "SQLStorage": "bsopt.store._sql",
    "close_connections": "bsopt.store._sql",
    "writable_folder": "bsopt.store._sqlite",
    "open_storage": "bsopt.store._storage",
    "DEFAULT_STORAGE": "bsopt.store._urls",
    "STORAGE_ENV": "bsopt.store._urls",
    "mask_url": "bsopt.store._urls",
    "resolve_storage_url": "bsopt.store._urls",
    "scrub": "bsopt.store._urls",
    "with_default_driver": "bsopt.store._urls",
}
__getattr__, __dir__ = attach(__name__, _LAZY)

__all__ = [
    "DEFAULT_STORAGE",
    "STORAGE_ENV",
    "SQLStorage",
    "StorageError",
    "close_connections",
    "mask_url",
    "open_storage",
    "resolve_storage_url",
    "scrub",
    "storage_error",
    "with_default_driver",
    "writable_folder",
]
