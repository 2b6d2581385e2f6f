"""Storage: URLs and their secrets, SQLite settings, the SQL storage, storage errors.
Imports no torch."""

from __future__ import annotations

from typing import TYPE_CHECKING

from bsopt._lazy import attach

if TYPE_CHECKING:
    from bsopt.store._storage import (
        DEFAULT_STORAGE,
        StorageError,
        mask_url,
        open_storage,
        resolve_storage_url,
    )

# Public name -> the private module that defines it (or the subpackage itself).
_LAZY = {
    "DEFAULT_STORAGE": "bsopt.store._storage",
    "StorageError": "bsopt.store._storage",
    "mask_url": "bsopt.store._storage",
    "open_storage": "bsopt.store._storage",
    "resolve_storage_url": "bsopt.store._storage",
}
__getattr__, __dir__ = attach(__name__, _LAZY)

__all__ = [
    "DEFAULT_STORAGE",
    "StorageError",
    "mask_url",
    "open_storage",
    "resolve_storage_url",
]
