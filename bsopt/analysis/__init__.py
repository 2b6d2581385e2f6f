"""Reading a study back: batch sizes compared, lr scaling, critical batch size,
importance. Reads storage only; imports no torch."""

from __future__ import annotations

from typing import TYPE_CHECKING

from bsopt._lazy import attach

if TYPE_CHECKING:
    from bsopt.analysis._analysis import (
        BatchSizeAnalysis,
        BatchSizeStats,
        analyze_batch_sizes,
    )
    from bsopt.analysis._fits import (
        BestLr,
        CriticalBatchFit,
        LrFit,
        NoCriticalBatchFit,
        best_lr_per_batch,
        fit_critical_batch,
        fit_lr_scaling,
        try_fit_critical_batch,
    )
    from bsopt.analysis._forecast import Forecast, forecast
    from bsopt.analysis._importance import ImportanceRow, Importances, param_importances

# Public name -> the private module that defines it (or the subpackage itself).
_LAZY = {
    "BatchSizeAnalysis": "bsopt.analysis._analysis",
    "BatchSizeStats": "bsopt.analysis._analysis",
    "analyze_batch_sizes": "bsopt.analysis._analysis",
    "BestLr": "bsopt.analysis._fits",
    "Forecast": "bsopt.analysis._forecast",
    "forecast": "bsopt.analysis._forecast",
    "CriticalBatchFit": "bsopt.analysis._fits",
    "LrFit": "bsopt.analysis._fits",
    "NoCriticalBatchFit": "bsopt.analysis._fits",
    "best_lr_per_batch": "bsopt.analysis._fits",
    "fit_critical_batch": "bsopt.analysis._fits",
    "fit_lr_scaling": "bsopt.analysis._fits",
    "try_fit_critical_batch": "bsopt.analysis._fits",
    "ImportanceRow": "bsopt.analysis._importance",
    "Importances": "bsopt.analysis._importance",
    "param_importances": "bsopt.analysis._importance",
}
__getattr__, __dir__ = attach(__name__, _LAZY)

__all__ = [
    "BatchSizeAnalysis",
    "BatchSizeStats",
    "BestLr",
    "CriticalBatchFit",
    "Forecast",
    "ImportanceRow",
    "Importances",
    "LrFit",
    "NoCriticalBatchFit",
    "analyze_batch_sizes",
    "best_lr_per_batch",
    "fit_critical_batch",
    "fit_lr_scaling",
    "forecast",
    "param_importances",
    "try_fit_critical_batch",
]
