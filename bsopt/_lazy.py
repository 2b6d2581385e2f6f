"""Public names loaded on first use, as ``optuna/__init__.py`` does for its heavy parts.

``import bsopt`` (or a stage such as ``bsopt.store``) imports neither torch nor Optuna;
``bsopt.X`` imports the private module that defines ``X`` and keeps the value, so the
command line starts at once and ``bsopt studies`` never pays for the trainer.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
import importlib
import sys


def attach(
    package: str, table: Mapping[str, str]
) -> tuple[Callable[[str], object], Callable[[], list[str]]]:
    """``__getattr__`` and ``__dir__`` for ``package``: ``table`` maps a name to its module."""

    def __getattr__(name: str) -> object:
        module = table.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        imported = importlib.import_module(module)
        # A subpackage is its own entry (``bsopt.training``); any other name is in its module.
        value = imported if module == f"{package}.{name}" else getattr(imported, name)
        setattr(sys.modules[package], name, value)  # the next lookup does not come here
        return value

    def __dir__() -> list[str]:
        return sorted(set(vars(sys.modules[package])) | set(table))

    return __getattr__, __dir__
