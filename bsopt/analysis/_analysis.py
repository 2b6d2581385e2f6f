"""Which batch size, and why: the batch sizes of a stored study compared.

:func:`analyze_batch_sizes` answers the batch-size question: the best value per batch size
with its spread, how the best learning rate moves with the batch size (a log-log fit), what
each batch size costs (samples/s, samples and seconds to a target value), the gradient noise
scale when trials recorded one, and findings (:mod:`bsopt.analysis._findings`) that the
verdict states in plain words, saying when the data are too few to tell.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
import math
import statistics
from typing import TYPE_CHECKING, Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from bsopt.analysis._fits import (
    CriticalBatchFit,
    LrFit,
    NoCriticalBatchFit,
    best_lr_per_batch,
    fit_lr_scaling,
    try_fit_critical_batch,
)
from bsopt.analysis._load import (
    complete_trials,
    confirm_reruns,
    finite,
    first_step_at,
    is_confirm_run,
    load_study,
    metric_name,
    metric_unit,
    trial_batch_size,
    trial_lr,
    trial_noise_interval,
    trial_noise_scale,
    trial_value,
)
from bsopt.analysis._stats import (
    CONFIDENCE,
    Difference,
    Estimate,
    difference_of,
    estimate_interval,
    grouped_estimate,
    holm,
    t_interval,
    welch_interval,
)
from bsopt.analysis._text import Table, line, markdown, markdown_table
from bsopt.core._attrs import CONFIRM_ATTR

if TYPE_CHECKING:
    from bsopt.analysis._findings import Findings


@dataclass(frozen=True)
class BatchSizeStats:
    """What the stored trials say about one batch size.

    ``best``/``best_trial``/``best_lr``: the best completed search trial at this batch size.
    ``top_mean``/``top_std``: mean and standard deviation of its ``top_k`` best completed
    values (``top_std`` is ``None`` with fewer than two). ``mean``/``std``: over all its
    completed search trials. ``samples_per_second``: median training throughput over its
    trials that recorded one. ``samples_to_target``/``seconds_to_target``: the fewest samples
    (and the training seconds they took at that trial's throughput) any of its trials needed
    to reach the target value.

    The comparison with the leader (the batch size the search selected): ``compared`` are
    the values compared, ``interval`` the t-interval of their mean, ``difference`` the
    difference of means to the leader's (this minus the leader's) with its Welch
    ``difference_interval``.

    With :func:`~bsopt.confirm` reruns (``basis == "confirm"``) the values are the reruns,
    the mean is that of its rerun configurations (each the mean of its seeds), and
    ``status`` is a test, Holm-corrected across the batch sizes compared (``p_value``, the
    adjusted p): ``"leader"``, ``"worse"``, ``"better"`` (the reruns contradict the search's
    choice), ``"tie"`` (the data cannot separate it), ``"not rerun"`` or ``"too few"``.

    Without reruns the values are the ``top_k`` best search values: they chose the leader,
    so they cannot also test it, and ``status`` is ``"leader"`` or ``"untested"``.
    ``""``: no completed trial. ``confirm_values`` are its reruns' values, ``confirm_groups``
    the same by configuration (``confirm_of``: the search trials rerun).
    """

    batch_size: int
    n_complete: int
    n_pruned: int
    n_failed: int
    n_running: int
    best: float | None
    best_trial: int | None
    best_lr: float | None
    top_mean: float | None
    top_std: float | None
    mean: float | None
    std: float | None
    samples_per_second: float | None
    samples_to_target: int | None
    seconds_to_target: float | None
    target_censored: bool = False
    compared: tuple[float, ...] = ()
    interval: tuple[float, float] | None = None
    difference: float | None = None
    difference_interval: tuple[float, float] | None = None
    status: str = ""
    p_value: float | None = None
    confirm_values: tuple[float, ...] = ()
    confirm_of: tuple[int, ...] = ()
    confirm_groups: tuple[tuple[float, ...], ...] = ()

    @property
    def compared_mean(self) -> float | None:
        return statistics.fmean(self.compared) if self.compared else None


@dataclass(frozen=True)
class BatchSizeAnalysis:
    """The answer of :func:`analyze_batch_sizes`; ``findings`` holds what the verdict says,
    and ``verdict`` says it in words (Markdown).

    ``best_batch_size`` is the batch size with the best value (the best single search trial,
    or the best mean of the confirm reruns when ``basis == "confirm"``); ``tied`` lists every
    batch size the data cannot separate from it (itself included); ``recommended_batch_size``
    is the cheapest of those by measured cost (``cost_basis`` says which), else the best.
    ``unit`` is ``"fraction"`` (differences in percentage points) or ``"value"``.
    ``min_trials`` and ``top_k`` are the options the analysis ran with.
    """

    study_name: str
    direction: str
    metric: str
    fraction: bool
    counts: dict[str, int]
    per_batch: tuple[BatchSizeStats, ...]
    best_batch_size: int | None
    enough_data: bool
    lr_fit: LrFit | None
    target: float | None
    noise_scale: float | None
    noise_scale_trials: int
    tied: tuple[int, ...] = ()
    recommended_batch_size: int | None = None
    cost_basis: str | None = None
    basis: str = "search"
    critical_batch: CriticalBatchFit | None = None
    critical_batch_reason: str | None = None
    noise_scale_range: tuple[float, float] | None = None
    noise_scale_no_signal: int = 0
    n_confirm: int = 0
    confidence: float = CONFIDENCE
    min_trials: int = 3
    top_k: int = 3
    target_is_default: bool = False
    objectives: tuple[str, ...] = ()
    pareto: tuple[tuple[int, int], ...] = ()

    @property
    def unit(self) -> str:
        return "fraction" if self.fraction else "value"

    @property
    def findings(self) -> Findings:
        """What the verdict says, as data (:class:`~bsopt.analysis._findings.Findings`)."""
        from bsopt.analysis._findings import find

        return find(self)

    @property
    def verdict(self) -> str:
        """The verdict in plain words, as Markdown paragraphs."""
        from bsopt.analysis._findings import verdict_lines

        return "\n\n".join(markdown(p) for p in verdict_lines(self.findings))

    def stats(self, batch_size: int) -> BatchSizeStats:
        """The statistics of one batch size."""
        for s in self.per_batch:
            if s.batch_size == batch_size:
                return s
        tried = [s.batch_size for s in self.per_batch]
        raise ValueError(f"batch_size {batch_size} was not tried; the study tried {tried}.")

    def table(self) -> Table:
        """The per-batch-size table."""
        compared = "confirm runs" if self.basis == "confirm" else "top-k"
        pct = f"{100 * self.confidence:.0f}%"
        header = (
            "batch size", "complete", "pruned", "failed", "best", f"{compared} mean [{pct}]",
            "vs best", "best lr", "samples/s", "samples to target", "s to target",
        )  # fmt: skip
        align = tuple("left" if h == "vs best" else "right" for h in header)
        rows = tuple(tuple(line(c) for c in _row(s)) for s in self.per_batch)
        return Table(tuple(line(h) for h in header), rows, align)

    def to_markdown(self) -> str:
        """The per-batch-size table in Markdown."""
        return markdown_table(self.table())


def _row(s: BatchSizeStats) -> tuple[str, ...]:
    mean = s.compared_mean
    top = "–" if mean is None else _fmt(mean)
    if s.interval is not None:
        top += f" [{_fmt(s.interval[0])}, {_fmt(s.interval[1])}]"
    if s.compared:
        top += f" (n={len(s.compared)})"
    return (
        str(s.batch_size), str(s.n_complete), str(s.n_pruned), str(s.n_failed), _fmt(s.best),
        top, s.status or "–", _fmt(s.best_lr, 3), _fmt_count(s.samples_per_second),
        _fmt_count(s.samples_to_target), _fmt(s.seconds_to_target, 3),
    )  # fmt: skip


def _fmt(value: float | None, digits: int = 4) -> str:
    return "–" if value is None else f"{value:.{digits}g}"


def _fmt_count(value: float | None) -> str:
    return "–" if value is None else f"{value:,.0f}"


def cost(s: BatchSizeStats, group: Sequence[BatchSizeStats]) -> tuple[float, str | None]:
    """A batch size's measured cost, comparable within ``group``: seconds to the target when
    every member has it, else seconds per sample (1 / samples/s); ``inf`` and ``None``
    when the group has no common measure."""
    if all(g.seconds_to_target is not None for g in group):
        return (s.seconds_to_target or 0.0, "seconds to target")
    if all(g.samples_per_second for g in group):
        return (1.0 / (s.samples_per_second or 1.0), "samples/s")
    return (math.inf, None)


def _check_options(min_trials: int, top_k: int, confidence: float) -> None:
    for name, value, low in (("min_trials", min_trials, 1), ("top_k", top_k, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{name} must be an integer >= {low}, but got {value!r}.")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), e.g. 0.95, but got {confidence!r}.")


def analyze_batch_sizes(
    study: optuna.Study | str,
    *,
    storage: str | None = None,
    target: float | None = None,
    min_trials: int = 3,
    top_k: int = 3,
    confidence: float = CONFIDENCE,
) -> BatchSizeAnalysis:
    """Which batch size is best for this study's model, how sure that is, and what it costs.

    Args:
        study: a study, or the name of one in ``storage``.
        storage: the storage URL when ``study`` is a name (``None``: ``$BSOPT_STORAGE``, then
            ``sqlite:///storage/bsopt.db``).
        target: the value for "time to target"; default: the worst of the per-batch-size best
            values, a level every batch size reached at least once.
        min_trials: completed trials a batch size needs before the verdict trusts its best
            value; the verdict says "too few trials" when the leading batch size has fewer,
            or when fewer than two batch sizes completed a trial.
        top_k: how many of each batch size's best search values are compared (as repeated
            measurements of its best region) when there are no confirm reruns.
        confidence: the level of every interval (t-intervals with the right degrees of
            freedom; Welch's for differences).

    Every batch size is compared with the best one: a difference whose interval holds 0 is a
    tie, and a tie is broken by measured cost (seconds to the target, else samples/s), naming
    the cheaper batch size. When the study holds :func:`~bsopt.confirm` reruns (user
    attribute ``confirm_of``) for two batch sizes or more, they are compared instead of the
    search values, and the verdict gives their mean ± interval. Reruns never count in the
    search statistics.

    Reads storage only: COMPLETE trials give the values; PRUNED, FAIL and RUNNING trials are
    counted per batch size, and every trial's intermediate values (reported at samples seen)
    count for time to target. The learning rate is the ``lr`` user attribute (the rate used),
    the throughput ``samples_per_second``, the gradient noise scale ``noise_scale`` (with
    ``noise_scale_interval``) when trials recorded one (its absence is stated, not an error).
    """
    _check_options(min_trials, top_k, confidence)
    default_target = target is None
    study = load_study(study, storage=storage)
    maximize = study.directions[0] == optuna.study.StudyDirection.MAXIMIZE
    trials, reruns = _search_and_reruns(study)
    complete = complete_trials(study)
    unit = metric_unit(study, [v for t in complete if (v := trial_value(t)) is not None])
    searched, target = _all_stats(trials, reruns, complete, target, maximize, top_k)
    per_batch, leader, basis = _against_leader(searched, maximize, confidence)
    tied, recommended, cost_basis = _ties(per_batch, leader)
    crit = _critical(per_batch)
    return BatchSizeAnalysis(
        study_name=study.study_name,
        direction="maximize" if maximize else "minimize",
        metric=metric_name(study),
        fraction=unit == "fraction",
        counts=dict(Counter(t.state.name for t in trials)),
        per_batch=tuple(per_batch),
        best_batch_size=leader.batch_size if leader else None,
        enough_data=_enough(per_batch, leader, min_trials),
        lr_fit=fit_lr_scaling(
            best_lr_per_batch(_lr_rows(trials), maximize=maximize), confidence=confidence
        ),
        target=target,
        target_is_default=default_target,
        objectives=tuple(study.metric_names or ()) if len(study.directions) > 1 else (),
        pareto=_pareto(study),
        tied=tied,
        recommended_batch_size=recommended,
        cost_basis=cost_basis,
        basis=basis,
        critical_batch=crit if isinstance(crit, CriticalBatchFit) else None,
        critical_batch_reason=crit.reason if isinstance(crit, NoCriticalBatchFit) else None,
        n_confirm=len(reruns),
        confidence=confidence,
        min_trials=min_trials,
        top_k=top_k,
        **_noise(study, trials),
    )


def _all_stats(
    trials: list[FrozenTrial],
    reruns: list[FrozenTrial],
    complete: list[FrozenTrial],
    target: float | None,
    maximize: bool,
    top_k: int,
) -> tuple[list[BatchSizeStats], float | None]:
    """Each batch size's statistics, by batch size, and the target they were measured at
    (``target``, else the default: :func:`_default_target`)."""
    by_batch = _by_batch(trials, reruns)
    finite_numbers = {t.number for t in complete}
    if target is None:
        target = _default_target(by_batch, finite_numbers, maximize)
    stats = [
        _batch_stats(b, *by_batch[b], finite_numbers, target, maximize, top_k)
        for b in sorted(by_batch)
    ]
    return stats, target


def _against_leader(
    per_batch: list[BatchSizeStats], maximize: bool, confidence: float
) -> tuple[list[BatchSizeStats], BatchSizeStats | None, str]:
    """``(per_batch, leader, basis)``: the leader the search selects, and each batch size
    against it. The reruns test it (``basis == "confirm"``) when the leader and another
    batch size have reruns with a spread; the search values, which chose it, cannot."""
    leader = _leader(per_batch, maximize)
    estimates = {s.batch_size: grouped_estimate(s.confirm_groups) for s in per_batch}
    tested = leader is not None and estimates[leader.batch_size] is not None
    basis = "search"
    if tested and sum(e is not None for e in estimates.values()) >= 2:
        basis = "confirm"
    if basis == "confirm":
        per_batch = [
            replace(
                s,
                compared=s.confirm_values,
                interval=estimate_interval(estimates[s.batch_size], confidence=confidence),
            )
            for s in per_batch
        ]
        per_batch = _tested(per_batch, estimates, leader, maximize, confidence)
    else:
        per_batch = [
            replace(s, interval=t_interval(s.compared, confidence=confidence)) for s in per_batch
        ]
        per_batch = _described(per_batch, leader, confidence)
    leader = next((s for s in per_batch if leader and s.batch_size == leader.batch_size), None)
    return per_batch, leader, basis


def _enough(
    per_batch: list[BatchSizeStats], leader: BatchSizeStats | None, min_trials: int
) -> bool:
    """Enough data to name a batch size: the leader has ``min_trials`` completed trials (or
    two confirm reruns), and another batch size completed a trial to compare with."""
    with_complete = [s for s in per_batch if s.n_complete > 0 or s.confirm_values]
    return (
        leader is not None
        and (leader.n_complete >= min_trials or len(leader.confirm_values) >= 2)
        and len(with_complete) >= 2
    )


def _pareto(study: optuna.Study) -> tuple[tuple[int, int], ...]:
    """``(trial number, batch size)`` of a multi-objective study's Pareto-optimal search
    trials (Optuna's ``best_trials``); empty for one objective."""
    if len(study.directions) < 2:
        return ()
    front = [t for t in study.best_trials if not is_confirm_run(t)]
    return tuple(
        (t.number, b)
        for t in sorted(front, key=lambda t: t.number)
        if (b := trial_batch_size(t)) is not None
    )


def _search_and_reruns(study: optuna.Study) -> tuple[list[FrozenTrial], list[FrozenTrial]]:
    """Every search trial (any state), and the completed confirm reruns with a value (from
    the linked confirm study, and any older ones stored in the search study)."""
    reruns = [
        t
        for t in confirm_reruns(study, states=(TrialState.COMPLETE,))
        if trial_value(t) is not None
    ]
    return [t for t in study.get_trials(deepcopy=False) if not is_confirm_run(t)], reruns


def _by_batch(
    trials: list[FrozenTrial], reruns: list[FrozenTrial]
) -> dict[int, tuple[list[FrozenTrial], list[FrozenTrial]]]:
    """Batch size -> its search trials and its reruns; a batch size only rerun is listed too."""
    by_batch: dict[int, tuple[list[FrozenTrial], list[FrozenTrial]]] = {}
    for trial_list, index in ((trials, 0), (reruns, 1)):
        for t in trial_list:
            b = trial_batch_size(t)
            if b is not None:
                by_batch.setdefault(b, ([], []))[index].append(t)
    return by_batch


def _order(maximize: bool) -> Callable[[float], float]:
    """A sort key putting the best value first."""
    return (lambda v: -v) if maximize else (lambda v: v)


def _default_target(
    by_batch: dict[int, tuple[list[FrozenTrial], list[FrozenTrial]]],
    finite_numbers: set[int],
    maximize: bool,
) -> float | None:
    """The worst of the per-batch-size best values: a level every batch size reached."""
    best: list[float] = []
    for group, _ in by_batch.values():
        values = [
            v for t in group if t.number in finite_numbers and (v := trial_value(t)) is not None
        ]
        if values:
            best.append(max(values) if maximize else min(values))
    if not best:
        return None
    return min(best) if maximize else max(best)


def _to_target(
    group: list[FrozenTrial], target: float | None, maximize: bool
) -> tuple[int, float | None, bool] | None:
    """The fewest samples any of ``group`` needed to reach ``target``, the training seconds
    they took at that trial's throughput, and whether that was the trial's first evaluation
    (censored: the target was reached before anything was measured)."""
    if target is None:
        return None
    reached: list[tuple[int, float | None, bool]] = []
    for t in group:
        if t.state not in (TrialState.COMPLETE, TrialState.PRUNED):
            continue
        step = first_step_at(t, target, maximize)
        if step is not None:
            speed = finite(t.user_attrs.get("samples_per_second"))
            first = step == min(t.intermediate_values)
            reached.append((step, step / speed if speed else None, first))
    return min(reached, key=lambda p: (p[0], p[2])) if reached else None


def _lr_rows(trials: list[FrozenTrial]) -> list[tuple[float, float, float]]:
    """``(batch size, lr, value)`` of every completed search trial, and of every trial that
    diverged with NaN: it bounds the best lr from above (see ``best_lr_per_batch``)."""
    rows = []
    for t in trials:
        b, lr = trial_batch_size(t), trial_lr(t)
        if b is None or lr is None:
            continue
        value = trial_value(t) if t.state == TrialState.COMPLETE else None
        if value is not None:
            rows.append((float(b), lr, value))
        elif t.user_attrs.get("stop_reason") == "diverged":
            rows.append((float(b), lr, math.nan))
    return rows


def _critical(per_batch: list[BatchSizeStats]) -> CriticalBatchFit | NoCriticalBatchFit | None:
    """McCandlish's fit over the batch sizes that reached the target, leaving out those that
    reached it at their first evaluation; ``None`` with fewer than three to try."""
    points = [(s.batch_size, s.samples_to_target) for s in per_batch if s.samples_to_target]
    if len(points) < 3:
        return None
    censored = [s.batch_size for s in per_batch if s.samples_to_target and s.target_censored]
    return try_fit_critical_batch(points, censored=censored)


def _batch_stats(
    b: int,
    group: list[FrozenTrial],
    reruns: list[FrozenTrial],
    finite_numbers: set[int],
    target: float | None,
    maximize: bool,
    top_k: int,
) -> BatchSizeStats:
    """The statistics of batch size ``b`` from its search trials and its reruns."""
    order = _order(maximize)
    done = sorted(
        (t for t in group if t.number in finite_numbers),
        key=lambda t: order(trial_value(t) or 0.0),
    )
    values = [v for t in done if (v := trial_value(t)) is not None]
    top = values[:top_k]
    # Search trials only: reruns may run several to a core, at another speed.
    speeds = [
        v for t in group if (v := finite(t.user_attrs.get("samples_per_second"))) is not None
    ]
    by_config: dict[int, list[float]] = {}
    for t in reruns:
        if (v := trial_value(t)) is not None:
            by_config.setdefault(int(t.user_attrs[CONFIRM_ATTR]), []).append(v)
    fastest = _to_target(group, target, maximize)
    return BatchSizeStats(
        batch_size=b,
        n_complete=len(done),
        n_pruned=sum(t.state == TrialState.PRUNED for t in group),
        n_failed=sum(t.state == TrialState.FAIL for t in group),
        n_running=sum(t.state == TrialState.RUNNING for t in group),
        best=values[0] if values else None,
        best_trial=done[0].number if done else None,
        best_lr=trial_lr(done[0]) if done else None,
        top_mean=statistics.fmean(top) if top else None,
        top_std=statistics.stdev(top) if len(top) > 1 else None,
        mean=statistics.fmean(values) if values else None,
        std=statistics.stdev(values) if len(values) > 1 else None,
        samples_per_second=statistics.median(speeds) if speeds else None,
        samples_to_target=fastest[0] if fastest else None,
        seconds_to_target=fastest[1] if fastest else None,
        target_censored=fastest[2] if fastest else False,
        compared=tuple(top),
        confirm_values=tuple(v for t in reruns if (v := trial_value(t)) is not None),
        confirm_of=tuple(sorted(by_config)),
        confirm_groups=tuple(tuple(by_config[n]) for n in sorted(by_config)),
    )


def _leader(per_batch: list[BatchSizeStats], maximize: bool) -> BatchSizeStats | None:
    """The batch size of the best search value: the search selects, reruns test. An exact
    tie goes to the cheaper batch size (then the smaller one)."""
    order = _order(maximize)
    candidates = [s for s in per_batch if s.best is not None]
    if not candidates:
        return None
    top_score = min(order(s.best or 0.0) for s in candidates)
    level = [s for s in candidates if order(s.best or 0.0) == top_score]
    return min(level, key=lambda s: (cost(s, level)[0], s.batch_size))


def _described(
    per_batch: list[BatchSizeStats], leader: BatchSizeStats | None, confidence: float
) -> list[BatchSizeStats]:
    """Each batch size's top search values against the leader's, as description only: the
    same values chose the leader, so an interval here is no test (status ``"untested"``)."""
    out = []
    for s in per_batch:
        if leader is None or not s.compared:
            out.append(s)
        elif s.batch_size == leader.batch_size:
            out.append(replace(s, status="leader"))
        else:
            out.append(
                replace(
                    s,
                    difference=statistics.fmean(s.compared) - statistics.fmean(leader.compared),
                    difference_interval=welch_interval(
                        s.compared, leader.compared, confidence=confidence
                    ),
                    status="untested",
                )
            )
    return out


def _tested(
    per_batch: list[BatchSizeStats],
    estimates: dict[int, Estimate | None],
    leader: BatchSizeStats | None,
    maximize: bool,
    confidence: float,
) -> list[BatchSizeStats]:
    """Each rerun batch size against the leader's reruns: Welch's test of the difference of
    their means, Holm-corrected over the batch sizes compared."""
    base = estimates[leader.batch_size] if leader is not None else None
    if leader is None or base is None:
        return per_batch
    diffs: dict[int, Difference] = {
        b: difference_of(e, base, confidence=confidence)
        for b, e in estimates.items()
        if e is not None and b != leader.batch_size
    }
    adjusted = dict(zip(diffs, holm([d.p_value for d in diffs.values()]), strict=True))
    alpha = 1 - confidence
    out = []
    for s in per_batch:
        b = s.batch_size
        if b == leader.batch_size:
            out.append(replace(s, status="leader"))
            continue
        if b not in diffs:
            status = "not rerun" if len(s.confirm_values) < 2 else "too few"
            out.append(replace(s, status=status if s.best is not None else ""))
            continue
        d, p = diffs[b], adjusted[b]
        status = "tie"
        if p < alpha:
            status = "better" if (d.value > 0) == maximize else "worse"
        out.append(
            replace(
                s, difference=d.value, difference_interval=d.interval, status=status, p_value=p
            )
        )
    return out


def _ties(
    per_batch: list[BatchSizeStats], leader: BatchSizeStats | None
) -> tuple[tuple[int, ...], int | None, str | None]:
    """``(tied, recommended, cost_basis)``: the batch sizes the reruns cannot separate from
    the leader (itself included), the cheapest of them by measured cost, and which cost."""
    if leader is None:
        return (), None, None
    level = [s for s in per_batch if s.status in ("leader", "tie")]
    tied = tuple(s.batch_size for s in level)
    if len(level) <= 1:
        return tied, leader.batch_size, None
    costs = [(cost(s, level), s) for s in level]
    cost_basis = costs[0][0][1]
    if cost_basis is None:
        return tied, leader.batch_size, None
    recommended = min(costs, key=lambda c: (c[0][0], c[1].batch_size))[1].batch_size
    return tied, recommended, cost_basis


def _noise(study: optuna.Study, trials: list[FrozenTrial]) -> dict[str, Any]:
    """The noise-scale fields of :class:`BatchSizeAnalysis`: the median over trials (else the
    study's own), the trials it is the median of, its range (or the one trial's interval),
    and how many trials measured it without signal."""
    measured = [t for t in trials if {"noise_scale", "noise_scale_history"} & set(t.user_attrs)]
    scales = [n for t in trials if (n := trial_noise_scale(t)) is not None]
    noise_range = (min(scales), max(scales)) if len(scales) > 1 else None
    if len(scales) == 1:
        only = next(t for t in trials if trial_noise_scale(t) is not None)
        noise_range = trial_noise_interval(only)
    scale = statistics.median(scales) if scales else finite(study.user_attrs.get("noise_scale"))
    return {
        "noise_scale": scale,
        "noise_scale_trials": len(scales),
        "noise_scale_range": noise_range,
        "noise_scale_no_signal": len(measured) - len(scales),
    }
