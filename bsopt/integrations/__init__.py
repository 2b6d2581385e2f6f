"""Framework callbacks over bsopt's fair reporter: Lightning and transformers.
Each imports its framework (an optional extra) on first use."""

from __future__ import annotations

from typing import TYPE_CHECKING

from bsopt._lazy import attach

if TYPE_CHECKING:
    from bsopt.integrations._lightning import LightningReporter as LightningReporter
    from bsopt.integrations._lightning import lightning_objective as lightning_objective
    from bsopt.integrations._transformers import TransformersReporter as TransformersReporter
    from bsopt.integrations._transformers import (
        transformers_objective as transformers_objective,
    )

# Public name -> the private module that defines it (or the subpackage itself).
_LAZY = {
    "LightningReporter": "bsopt.integrations._lightning",
    "TransformersReporter": "bsopt.integrations._transformers",
    "lightning_objective": "bsopt.integrations._lightning",
    "transformers_objective": "bsopt.integrations._transformers",
}
__getattr__, __dir__ = attach(__name__, _LAZY)

__all__ = []
