"""Running studies: the run settings and the study they open, create and resume, the run
loop with exact totals, workers, the built-in studies, the gRPC proxy and confirm reruns."""

from __future__ import annotations

from typing import TYPE_CHECKING

from bsopt._lazy import attach

if TYPE_CHECKING:
    from bsopt.runs._confirm import ConfirmResult, ConfirmRun, confirm
    from bsopt.runs._runner import run
    from bsopt.runs._session import RunSettings, open_study
    from bsopt.runs._study import create_study, optimize, summary
    from bsopt.runs._workers import WorkerError, attach_worker, run_workers, serve_proxy, work

# Public name -> the private module that defines it (or the subpackage itself).
_LAZY = {
    "ConfirmResult": "bsopt.runs._confirm",
    "ConfirmRun": "bsopt.runs._confirm",
    "confirm": "bsopt.runs._confirm",
    "run": "bsopt.runs._runner",
    "RunSettings": "bsopt.runs._session",
    "open_study": "bsopt.runs._session",
    "create_study": "bsopt.runs._study",
    "optimize": "bsopt.runs._study",
    "summary": "bsopt.runs._study",
    "WorkerError": "bsopt.runs._workers",
    "attach_worker": "bsopt.runs._workers",
    "run_workers": "bsopt.runs._workers",
    "serve_proxy": "bsopt.runs._workers",
    "work": "bsopt.runs._workers",
}
__getattr__, __dir__ = attach(__name__, _LAZY)

__all__ = [
    "ConfirmResult",
    "ConfirmRun",
    "RunSettings",
    "WorkerError",
    "attach_worker",
    "confirm",
    "create_study",
    "open_study",
    "optimize",
    "run",
    "run_workers",
    "serve_proxy",
    "summary",
    "work",
]
