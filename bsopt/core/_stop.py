"""Why a training run stopped, and the divergence check that stops it early.

Both are plain Python with no Optuna and no torch, shared by bsopt's own training loop and
by a user's loop that reports through :class:`~bsopt.FairReporter`.
"""

from __future__ import annotations

import enum
import math


class StopReason(str, enum.Enum):
    """Why a run ended; stored as the trial's user attribute ``stop_reason`` (its value).

    The details (which loss, which error) go to ``stop_detail``.
    """

    COMPLETED = "completed"
    PRUNED = "pruned"
    DIVERGED = "diverged"
    REACHED_TARGET = "reached target"
    OOM = "oom"
    INTERRUPTED = "interrupted"

    def __str__(self) -> str:
        return self.value


class DivergenceCheck:
    """Flags a run whose training loss blew up, so it can stop at once.

    A run diverges when a loss is NaN or infinite, or when the mean training loss of an
    evaluation interval exceeds ``factor`` times the first interval's mean.

    Args:
        factor: the allowed growth over the first interval's mean loss; above 1.
    """

    def __init__(self, factor: float = 10.0) -> None:
        if isinstance(factor, bool) or not isinstance(factor, (int, float)) or not factor > 1:
            raise ValueError(
                f"divergence_factor must be a number above 1, but got {factor!r}. It is the "
                "growth of the interval's mean training loss over the first interval's that "
                "counts as diverged; the default is 10."
            )
        self.factor = float(factor)
        self.first: float | None = None

    @staticmethod
    def non_finite(loss: float) -> str | None:
        """The reason if ``loss`` is NaN or infinite, else ``None``."""
        return None if math.isfinite(loss) else f"non-finite training loss ({loss})"

    def interval(self, mean_loss: float) -> str | None:
        """Check one evaluation interval's mean training loss; the reason if it diverged."""
        reason = self.non_finite(mean_loss)
        if reason is not None:
            return reason
        if self.first is None:
            self.first = mean_loss
            return None
        if mean_loss > self.factor * self.first:
            return (
                f"training loss {mean_loss:.3g} > {self.factor:g} x the first interval's "
                f"{self.first:.3g}"
            )
        return None
