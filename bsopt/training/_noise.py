"""The gradient noise scale B_simple = tr(Σ) / |G|², estimated during training.

McCandlish et al. (2018, "An Empirical Model of Large-Batch Training") show that the batch
size beyond which larger batches stop saving optimizer steps is about the noise scale. With
the squared norms of a gradient measured at two batch sizes, b_small < b_big,

    E|G_b|² = |G|² + tr(Σ) / b,

so each pair of measurements gives unbiased estimates

    |G|²  ≈ (b_big |G_big|² - b_small |G_small|²) / (b_big - b_small)
    tr(Σ) ≈ (|G_small|² - |G_big|²) / (1 / b_small - 1 / b_big).

A batch split in two parts gives both parts' norms and the whole's, and both parts count
(:meth:`NoiseScale.update_split`: half the variance of the first part against the whole).
One measurement is very noisy (either estimate can be negative), so :class:`NoiseScale` keeps
the two estimates as separate averages and divides only at the end: the ratio of averages, not
the average of ratios. The average runs over all the estimates while the older half reads the
same noise scale as the recent half, else over the recent half only, so the smoothing follows
their number (early on every estimate counts; later the window follows the noise scale as it
grows during training) instead of a fixed decay. An interval comes from a
delete-one-block jackknife over that window (blocks of consecutive estimates, so that their
correlation along training does not make it too narrow); it is a 95% interval, the level of
every interval the analysis states. When the averages do not give a positive ratio, or there
are too few estimates, the value is NaN: "not enough signal", never a negative number.

Measuring costs a split of the batch in two passes (unless it is accumulated anyway) and three
gradient norms. The trainer measures at one step in 24 by default (about 4% of the training
time on the tiny digits MLP on a CPU, less on larger models), the same steps in every run. With
``noise_every=None``, :class:`MeasureBudget` keeps the cost to a share of the training time
(5%) by the trainer's own clock instead: often where the split is nearly free (a large model,
an accumulated batch), rarely where it is not.
"""

from __future__ import annotations

import itertools
import math
import statistics

#: The level of :attr:`NoiseScale.interval`: that of every interval the analysis states
#: (``bsopt.analysis._stats.CONFIDENCE``; training may not import the analysis).
CONFIDENCE = 0.95

#: The share of the training time that measuring may take by default.
NOISE_SHARE = 0.05


def noise_scale_terms(
    small_sq: float, b_small: int, big_sq: float, b_big: int
) -> tuple[float, float]:
    """Unbiased estimates ``(|G|², tr(Σ))`` from squared gradient norms at two batch sizes."""
    if not 0 < b_small < b_big:
        raise ValueError(
            f"Need 0 < b_small < b_big for a noise-scale estimate, got {b_small} and {b_big}."
        )
    grad_sq = (b_big * big_sq - b_small * small_sq) / (b_big - b_small)
    trace = (small_sq - big_sq) / (1 / b_small - 1 / b_big)
    return grad_sq, trace


def _t_quantile(confidence: float, df: int) -> float:
    from scipy import stats

    return float(stats.t.ppf(0.5 + confidence / 2, df))


def _log_ratio(g: list[float], s: list[float]) -> tuple[float, float] | None:
    """``log(mean(s) / mean(g))`` and its variance by the delta method, or ``None`` unless
    both means are positive."""
    k = len(g)
    mg, ms = statistics.fmean(g), statistics.fmean(s)
    if k < 2 or mg <= 0 or ms <= 0:
        return None
    vg, vs = statistics.variance(g), statistics.variance(s)
    cov = sum((a - mg) * (b - ms) for a, b in zip(g, s, strict=True)) / (k - 1)
    return math.log(ms / mg), (vs / ms**2 + vg / mg**2 - 2 * cov / (ms * mg)) / k


def _steady(old: tuple[list[float], list[float]], new: tuple[list[float], list[float]]) -> bool:
    """Whether the older estimates and the recent ones read the same noise scale: their
    log ratios differ by less than two standard errors."""
    a, b = _log_ratio(*old), _log_ratio(*new)
    if a is None or b is None:
        return False
    return abs(a[0] - b[0]) < 2 * math.sqrt(max(a[1] + b[1], 0.0))


class NoiseScale:
    """B_simple from repeated two-batch-size measurements, with an interval.

    Args:
        min_measurements: estimates needed before :attr:`value` is a number.
        window: the share of the most recent estimates averaged (default: the latest half);
            all of them while the older ones read the same noise scale (within two standard
            errors), as they do when it does not drift.
        blocks: the most blocks of the jackknife behind :attr:`interval`.
        confidence: the level of :attr:`interval`.
        population: the number of training samples when batches are drawn from them without
            replacement (an epoch at a time), ``None`` for draws with replacement. A batch
            from a finite set varies less, by ``tr(Σ) / N`` in ``E|G_b|²``: uncorrected, the
            estimate reads ``B_simple / (1 − B_simple / N)``, 6% high for 2,000 of 32,768.

    Feed it with :meth:`update`; read :attr:`value` (NaN while there is not enough signal),
    :attr:`interval` (``None`` likewise) and :attr:`measurements`.
    """

    def __init__(
        self,
        *,
        min_measurements: int = 4,
        window: float = 0.5,
        blocks: int = 10,
        confidence: float = CONFIDENCE,
        population: int | None = None,
    ) -> None:
        if isinstance(min_measurements, bool) or not isinstance(min_measurements, int):
            raise ValueError(f"min_measurements must be an integer, but got {min_measurements!r}.")
        if min_measurements < 1:
            raise ValueError(f"min_measurements must be at least 1, but got {min_measurements}.")
        if not 0.0 < window <= 1.0:
            raise ValueError(f"window must be in (0, 1] (a share of the estimates), got {window}.")
        if isinstance(blocks, bool) or not isinstance(blocks, int) or blocks < 3:
            raise ValueError(f"blocks must be an integer >= 3, but got {blocks!r}.")
        if not 0.0 < confidence < 1.0:
            raise ValueError(f"confidence must be in (0, 1), e.g. 0.95, but got {confidence}.")
        if population is not None and not (
            isinstance(population, int) and not isinstance(population, bool) and population >= 2
        ):
            raise ValueError(
                f"population must be an integer >= 2 (the training samples) or None, "
                f"but got {population!r}."
            )
        self.population = population
        self.min_measurements = min_measurements
        self.window = window
        self.blocks = blocks
        self.confidence = confidence
        self._grad_sq: list[float] = []
        self._trace: list[float] = []
        self._cache: tuple[int, tuple[list[float], list[float]]] = (0, ([], []))

    @property
    def measurements(self) -> int:
        """The number of (finite) measurements taken so far."""
        return len(self._grad_sq)

    def update(self, small_sq: float, b_small: int, big_sq: float, b_big: int) -> None:
        """Add one measurement: the squared gradient norms ``small_sq`` of a batch of
        ``b_small`` samples and ``big_sq`` of a batch of ``b_big`` (the first usually part
        of the second). Non-finite norms are skipped."""
        grad_sq, trace = noise_scale_terms(small_sq, b_small, big_sq, b_big)
        self._add(grad_sq, trace)

    def _add(self, grad_sq: float, trace: float) -> None:
        if not (math.isfinite(grad_sq) and math.isfinite(trace)):
            return
        if self.population is not None:
            # Without replacement E|G_b|² = |G|² + σ² (1/b − 1/N): the differences between
            # batch sizes read σ² all the same, and |G|² is short by σ² / N.
            grad_sq += trace / self.population
        self._grad_sq.append(grad_sq)
        self._trace.append(trace)

    def update_split(
        self, first_sq: float, b_first: int, rest_sq: float, b_rest: int, whole_sq: float
    ) -> None:
        """Add one measurement from a batch split in two: the squared norms of the mean
        gradients of its first ``b_first`` samples, of the other ``b_rest`` and of all.

        Both parts count, not only the first against the whole: the estimates' noise has
        about half the variance (for two halves, ``|G|² + G·(a + c) + a·c`` instead of
        ``|G|² + 2 G·c + a·c + (|c|² − |a|²) / 2``, ``a`` and ``c`` the parts' noise)."""
        if not (b_first > 0 and b_rest > 0):
            raise ValueError(f"Need two non-empty parts, got {b_first} and {b_rest} samples.")
        n = b_first + b_rest
        # The parts' dot product from the whole: n² |g|² = b1² |g1|² + b2² |g2|² + 2 b1 b2 g1·g2.
        dot = (n * n * whole_sq - b_first**2 * first_sq - b_rest**2 * rest_sq) / (
            2 * b_first * b_rest
        )
        # E|g1 − g2|² = tr(Σ) (1/b1 + 1/b2), and E|g|² = |G|² + tr(Σ) / n.
        trace = (first_sq + rest_sq - 2 * dot) / (1 / b_first + 1 / b_rest)
        self._add(whole_sq - trace / n, trace)

    def _recent(self) -> tuple[list[float], list[float]]:
        n = len(self._grad_sq)
        if self._cache[0] != n:  # value, interval and the two averages each ask
            self._cache = (n, self._window_of(n))
        return self._cache[1]

    def _window_of(self, n: int) -> tuple[list[float], list[float]]:
        size = min(n, max(self.min_measurements, math.ceil(self.window * n)))
        if n - size >= self.min_measurements and _steady(
            (self._grad_sq[: n - size], self._trace[: n - size]),
            (self._grad_sq[n - size :], self._trace[n - size :]),
        ):
            # The older estimates read the same noise scale: keeping them halves the variance.
            return self._grad_sq, self._trace
        return self._grad_sq[n - size :], self._trace[n - size :]

    @property
    def grad_sq(self) -> float:
        """The averaged estimate of |G|² (NaN before any measurement)."""
        g, _ = self._recent()
        return statistics.fmean(g) if g else math.nan

    @property
    def trace(self) -> float:
        """The averaged estimate of tr(Σ) (NaN before any measurement)."""
        _, s = self._recent()
        return statistics.fmean(s) if s else math.nan

    @property
    def enough_signal(self) -> bool:
        """Whether :attr:`value` is a number: enough measurements, and both averaged
        estimates positive."""
        return self.measurements >= self.min_measurements and self.grad_sq > 0 and self.trace > 0

    @property
    def value(self) -> float:
        """B_simple = tr(Σ) / |G|² over the recent estimates; NaN when there is not enough
        signal (too few measurements, or an average that is not positive)."""
        if not self.enough_signal:
            return math.nan
        return self.trace / self.grad_sq

    @property
    def interval(self) -> tuple[float, float] | None:
        """A ``confidence`` interval of :attr:`value` from a delete-one-block jackknife of the
        log ratio over the recent estimates; ``None`` without enough signal, with fewer than
        three blocks of two estimates, or when a block left out leaves no positive ratio."""
        if not self.enough_signal:
            return None
        g, s = self._recent()
        m = min(self.blocks, len(g) // 2)
        if m < 3:
            return None
        edges = [round(i * len(g) / m) for i in range(m + 1)]
        sums_g = [sum(g[a:b]) for a, b in itertools.pairwise(edges)]
        sums_s = [sum(s[a:b]) for a, b in itertools.pairwise(edges)]
        total_g, total_s = sum(sums_g), sum(sums_s)
        logs = []
        for bg, bs in zip(sums_g, sums_s, strict=True):
            rest_g, rest_s = total_g - bg, total_s - bs
            if rest_g <= 0 or rest_s <= 0:
                return None
            logs.append(math.log(rest_s / rest_g))
        centre = math.log(total_s / total_g)
        mean = statistics.fmean(logs)
        se = math.sqrt((m - 1) / m * sum((x - mean) ** 2 for x in logs))
        half = _t_quantile(self.confidence, m - 1) * se
        return (math.exp(centre - half), math.exp(centre + half))

    def as_dict(self) -> dict[str, float | int | list[float] | None]:
        """What a trial should store: ``noise_scale`` (``None`` without enough signal),
        ``noise_scale_interval`` (``[low, high]`` or ``None``) and
        ``noise_scale_measurements``."""
        interval = self.interval
        return {
            "noise_scale": self.value if self.enough_signal else None,
            "noise_scale_interval": list(interval) if interval is not None else None,
            "noise_scale_measurements": self.measurements,
        }


class MeasureBudget:
    """Which optimizer steps measure the noise scale, so that measuring takes at most
    ``share`` of the training time.

    The caller times every step with :meth:`record` (its seconds, samples and whether it
    measured) and asks :meth:`due` before the next one. A measured step's cost is its time
    beyond what a plain step of as many samples takes (the average of the plain steps so
    far); a step is due while the cost so far and one more measurement's stay within
    ``share`` of all the steps' time.
    The first two steps are never measured, and the first does not count as a plain step:
    it holds one-off costs. On a GPU a plain step's time is only its launch, while a measured
    one waits for the norms: the cost is overestimated and the budget errs on the cheap side.
    """

    def __init__(self, share: float = NOISE_SHARE) -> None:
        if not (isinstance(share, (int, float)) and 0 < share <= 1):
            raise ValueError(
                f"share must be in (0, 1] (a share of the training time), but got {share!r}."
            )
        self.share = float(share)
        self.plain_seconds = 0.0
        self.plain_samples = 0
        self.cost = 0.0
        self.last_cost = 0.0
        self.total = 0.0
        self.steps = 0

    def record(self, seconds: float, samples: int, measured: bool) -> None:
        """Count one step of ``samples`` samples that took ``seconds``."""
        self.total += seconds
        self.steps += 1
        if self.steps == 1:
            # The first step pays one-off costs (the optimizer's state, the allocator): as a
            # plain step it would make every later measurement look cheaper than it is.
            return
        if not measured:
            self.plain_seconds += seconds
            self.plain_samples += samples
            return
        per_sample = self.plain_seconds / self.plain_samples if self.plain_samples else 0.0
        self.last_cost = max(seconds - per_sample * samples, 0.0)
        self.cost += self.last_cost

    def due(self) -> bool:
        """Whether the next step may measure: whether the cost so far and that of one more
        measurement (as much as the last) stay within the share."""
        return self.plain_samples > 0 and self.cost + self.last_cost <= self.share * self.total
