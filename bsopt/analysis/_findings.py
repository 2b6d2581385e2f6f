"""What the verdict says, as data, and the same in words.

:func:`find` turns a :class:`~bsopt.analysis._analysis.BatchSizeAnalysis` into
:class:`Findings`: which batch size leads and how sure that is, each other batch size against
it, the lr fit, throughput, time to target, the critical batch size and the noise scale.
:func:`verdict_lines` says them as :data:`~bsopt.analysis._text.Line` paragraphs, which the
verdict writes as Markdown and ``bsopt.report`` as HTML.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from bsopt.analysis._fits import CriticalBatchFit, LrFit
from bsopt.analysis._text import Line, Span, code, difference, line, names, plural, strong

if TYPE_CHECKING:
    from bsopt.analysis._analysis import BatchSizeAnalysis, BatchSizeStats


@dataclass(frozen=True)
class StudyCounts:
    """The study and its trials by state (confirm reruns counted apart)."""

    study_name: str
    direction: str
    metric: str
    complete: int
    pruned: int
    failed: int
    running: int  # running or waiting
    total: int
    n_confirm: int
    objectives: tuple[str, ...] = ()  # a multi-objective study's, in order
    pareto: tuple[tuple[int, int], ...] = ()  # (trial, batch size) on its Pareto front


@dataclass(frozen=True)
class Headline:
    """The verdict's first sentence.

    The search selects the ``leader`` (its best value); only confirm reruns test it.

    ``kind``: ``"no trial"`` (nothing completed, no leader), ``"too few"`` (a leader, but too
    few trials to trust it: ``short_of`` is the ``min_trials`` its completed trials fall
    short of, ``alone`` says no other batch size completed one), ``"leading"`` (selected by
    the search, not yet tested), ``"tie"`` (the reruns cannot separate ``leader`` from
    ``tied_with``; ``by_cost`` lists the tied batch sizes cheapest first when ``cost_basis``
    names a cost they all have), ``"contradicted"`` (the reruns put ``better`` above the
    leader) or ``"best"`` (every other batch size rerun is worse). ``value`` is the
    leader's best search value, or the mean of its confirm runs with ``half_width`` the
    half width of that mean's t-interval; ``untested`` lists batch sizes with search
    values but no reruns to compare (``"best"`` is then best among those rerun).
    """

    kind: str
    leader: BatchSizeStats | None = None
    basis: str = "search"
    value: float | None = None
    half_width: float | None = None
    short_of: int | None = None
    alone: bool = False
    tied_with: tuple[int, ...] = ()
    by_cost: tuple[BatchSizeStats, ...] = ()
    cost_basis: str | None = None
    better: tuple[int, ...] = ()
    untested: tuple[int, ...] = ()


@dataclass(frozen=True)
class Comparison:
    """One batch size against the leader: the difference of means (this minus the leader's),
    its Welch interval, the status (``"worse"``, ``"better"``, ``"tie"``, ``"untested"``,
    ``"too few"``, ``"not rerun"``), the Holm-adjusted p-value of a tested difference, and
    its completed trials when they are fewer than ``min_trials`` (``few``)."""

    batch_size: int
    status: str
    difference: float | None
    interval: tuple[float, float] | None
    few: int | None
    p_value: float | None = None
    n_trials: int = 0


@dataclass(frozen=True)
class Comparisons:
    """Every other batch size against ``against``, closest first; the batch sizes with no
    completed trial; those left out of a confirm comparison for want of reruns."""

    against: int
    against_trials: int
    basis: str
    top_k: int
    items: tuple[Comparison, ...]
    unfinished: tuple[BatchSizeStats, ...]
    not_rerun: tuple[int, ...]


@dataclass(frozen=True)
class Findings:
    """Everything the verdict states. Past the headline and the counts, each part is
    ``None`` when there is nothing to state (``lr_fit`` then says too few batch sizes)."""

    headline: Headline
    study: StudyCounts
    fraction: bool
    confidence: float
    comparisons: Comparisons | None = None
    lr_fit: LrFit | None = None
    throughput: tuple[BatchSizeStats, BatchSizeStats] | None = None  # fastest, slowest
    target: float | None = None
    quickest: tuple[BatchSizeStats, ...] = ()  # fewest samples to the target (ties: all)
    target_is_default: bool = False
    critical_batch: CriticalBatchFit | None = None
    critical_batch_reason: str | None = None
    noise_scale: float | None = None
    noise_scale_trials: int = 0
    noise_scale_range: tuple[float, float] | None = None
    noise_scale_no_signal: int = 0

    @property
    def level(self) -> str:
        return f"{100 * self.confidence:.0f}%"


# ---------------------------------------------------------------------------------------------
# The analysis as findings
# ---------------------------------------------------------------------------------------------


def find(a: BatchSizeAnalysis) -> Findings:
    """The findings of ``a``."""
    c = a.counts
    study = StudyCounts(
        study_name=a.study_name,
        direction=a.direction,
        metric=a.metric,
        complete=c.get("COMPLETE", 0),
        pruned=c.get("PRUNED", 0),
        failed=c.get("FAIL", 0),
        running=c.get("RUNNING", 0) + c.get("WAITING", 0),
        total=sum(c.values()),
        n_confirm=a.n_confirm,
        objectives=a.objectives,
        pareto=a.pareto,
    )
    leader = a.stats(a.best_batch_size) if a.best_batch_size is not None else None
    if leader is None or (leader.best is None and not leader.confirm_values):
        return Findings(Headline("no trial"), study, a.fraction, a.confidence)
    speeds = [s for s in a.per_batch if s.samples_per_second]
    reached = [s for s in a.per_batch if s.samples_to_target is not None]
    return Findings(
        _headline(a, leader),
        study,
        a.fraction,
        a.confidence,
        comparisons=_comparisons(a, leader),
        lr_fit=a.lr_fit,
        throughput=(
            (
                max(speeds, key=lambda s: s.samples_per_second or 0.0),
                min(speeds, key=lambda s: s.samples_per_second or 0.0),
            )
            if leader.samples_per_second and len(speeds) > 1
            else None
        ),
        target=a.target,
        quickest=tuple(
            s
            for s in reached
            if a.target is not None
            and s.samples_to_target == min(r.samples_to_target or 0 for r in reached)
        ),
        target_is_default=a.target_is_default,
        critical_batch=a.critical_batch,
        critical_batch_reason=a.critical_batch_reason,
        noise_scale=a.noise_scale,
        noise_scale_trials=a.noise_scale_trials,
        noise_scale_range=a.noise_scale_range,
        noise_scale_no_signal=a.noise_scale_no_signal,
    )


def _others(a: BatchSizeAnalysis, leader: BatchSizeStats) -> list[BatchSizeStats]:
    return [s for s in a.per_batch if s.compared and s is not leader]


def _headline(a: BatchSizeAnalysis, leader: BatchSizeStats) -> Headline:
    from bsopt.analysis._analysis import cost

    value = leader.best
    half = None
    if a.basis == "confirm" and leader.interval is not None:
        low, high = leader.interval
        value, half = (low + high) / 2, (high - low) / 2
    others = _others(a, leader)
    better = tuple(s.batch_size for s in others if s.status == "better")
    kind = "leading"
    short_of = None
    if not a.enough_data:
        kind = "too few"
        if leader.n_complete < a.min_trials and len(leader.confirm_values) < 2:
            short_of = a.min_trials
    elif a.basis == "confirm":
        kind = "contradicted" if better else "tie" if len(a.tied) > 1 else "best"
    by_cost: tuple[BatchSizeStats, ...] = ()
    if kind == "tie" and a.cost_basis is not None and a.recommended_batch_size is not None:
        group = [a.stats(b) for b in a.tied]
        by_cost = tuple(sorted(group, key=lambda s: cost(s, group)[0]))
    return Headline(
        kind,
        leader,
        a.basis,
        value,
        half,
        short_of=short_of,
        alone=not others,
        tied_with=tuple(b for b in a.tied if b != leader.batch_size),
        by_cost=by_cost,
        cost_basis=a.cost_basis,
        better=better,
        untested=tuple(
            s.batch_size for s in others if a.basis == "confirm" and s.status == "not rerun"
        ),
    )


def _comparisons(a: BatchSizeAnalysis, leader: BatchSizeStats) -> Comparisons | None:
    others = _others(a, leader)
    if not others:
        return None
    # Closest to the leader first: for a maximised metric the differences are negative.
    sign = -1 if a.direction == "maximize" else 1
    ranked = sorted(others, key=lambda s: (s.difference or 0.0) * sign)
    items = tuple(
        Comparison(
            s.batch_size,
            s.status,
            s.difference,
            s.difference_interval,
            None if s.n_complete >= a.min_trials or a.basis == "confirm" else s.n_complete,
            s.p_value,
            s.n_complete,
        )
        for s in ranked
    )
    return Comparisons(
        leader.batch_size,
        leader.n_complete,
        a.basis,
        a.top_k,
        items,
        unfinished=tuple(s for s in a.per_batch if s.best is None and not s.confirm_values),
        not_rerun=tuple(
            s.batch_size for s in a.per_batch if s.best is not None and not s.compared
        ),
    )


# ---------------------------------------------------------------------------------------------
# The findings in words
# ---------------------------------------------------------------------------------------------


def verdict_lines(f: Findings) -> list[Line]:
    """The verdict as paragraphs: the headline, the counts, then each finding in turn."""
    lines = [_headline_line(f), _study_line(f.study)]
    if f.study.pareto:
        lines.append(_pareto_line(f.study))
    leader = f.headline.leader
    if leader is None:
        return lines
    if f.comparisons is not None:
        lines.extend(_comparison_lines(f.comparisons, f))
    lines.extend(_lr_lines(f.lr_fit))
    lines.append(_critical_statement(f))
    if f.throughput is not None:
        fastest, slowest = f.throughput
        lines.append(
            line(
                f"Throughput: {leader.batch_size} trains at {leader.samples_per_second:,.0f} "
                f"samples/s; fastest {fastest.batch_size} at {fastest.samples_per_second:,.0f}, "
                f"slowest {slowest.batch_size} at {slowest.samples_per_second:,.0f}."
            )
        )
    if f.quickest and f.target is not None:
        lines.append(_target_line(f.quickest, leader, f.target, f))
    lines.append(_noise_line(f, leader.batch_size))
    return lines


def _study_line(c: StudyCounts) -> Line:
    states = f"{c.complete} complete, {c.pruned} pruned, {c.failed} failed"
    return line(
        "Study ",
        strong(c.study_name),
        f" ({c.direction} {c.metric}): {c.total} trials — {states}",
        f", {c.running} running or waiting" if c.running else "",
        f"; {plural(c.n_confirm, 'confirm rerun')} kept apart from them" if c.n_confirm else "",
        ".",
    )


def _pareto_line(c: StudyCounts) -> Line:
    objectives = names(c.objectives) if c.objectives else "several objectives"
    batches = sorted({b for _, b in c.pareto})
    return line(
        f"This study has several objectives ({objectives}); the batch sizes are compared on "
        f"the first alone. Its Pareto front, the trials no other beats on every objective, "
        f"holds {plural(len(c.pareto), 'trial')} at batch sizes {names(batches)}: "
        "there, more of one objective costs some of another, and which one to take is yours."
    )


def _leading(f: Findings, s: BatchSizeStats) -> tuple[Span, ...]:
    """The leader ``s`` and its value: ``**64** (validation accuracy 0.95, ..., lr 0.01)``."""
    h = f.headline
    if h.basis == "confirm":
        about = (
            f"{h.value:.4g}{_spread(h.value, h.half_width, f.fraction)}, mean of "
            f"{plural(len(s.confirm_of), 'configuration')} rerun with fresh seeds "
            f"({plural(len(s.compared), 'run')}), {f.level} t-interval"
        )
    else:
        about = (
            f"{h.value:.4g}, trial #{s.best_trial}, best of "
            f"{plural(s.n_complete, 'completed trial')}"
        )
    lr = f", lr {s.best_lr:.3g})" if s.best_lr is not None else ")"
    return line(strong(str(s.batch_size)), f" ({f.study.metric} {about}{lr}")


def _spread(value: float | None, half: float | None, fraction: bool) -> str:
    """`` ± 0.7 pp``, or the interval clipped to [0, 1] when a fraction's would leave it."""
    if value is None or half is None:
        return ""
    if fraction and (value - half < 0 or value + half > 1):
        low, high = max(0.0, value - half), min(1.0, value + half)
        return f" [{low:.4g}, {high:.4g}]"
    return f" ± {difference(half, fraction)}"


def _headline_line(f: Findings) -> Line:
    h = f.headline
    if h.kind == "no trial":
        return line(
            strong("Too few trials to tell"),
            ": no completed trial yet, so no batch size can be named. Run more trials "
            "(bsopt run ... --trials N resumes to N).",
        )
    s = h.leader
    if s is None:  # every other kind has a leader; None here is a bug in find()
        raise ValueError(f"A {h.kind!r} headline needs a leading batch size.")
    if h.kind == "too few":
        missing = []
        if h.short_of is not None:
            missing.append(
                f"{s.batch_size} has {plural(s.n_complete, 'completed trial')} "
                f"(at least {h.short_of} needed)"
            )
        if h.alone:
            missing.append("no other batch size completed a trial to compare with")
        return line(
            strong("Too few trials to tell"),
            " which batch size is best: " + "; ".join(missing) + ". Leading so far — best "
            "batch size for this model: ",
            *_leading(f, s),
            ". Run more trials, then test the leader with ",
            code("bsopt confirm"),
            ".",
        )
    if h.kind == "tie":
        return _tie_line(f, s)
    if h.kind == "leading":
        return line(
            "Leading in the search: ",
            *_leading(f, s),
            ". Not yet tested: the values that selected it cannot also test it; ",
            code("bsopt confirm"),
            " retrains the best configurations of each batch size with fresh seeds and "
            "tests the leader against the others.",
        )
    if h.kind == "contradicted":
        return line(
            strong("Not settled"),
            f": the search selected {s.batch_size}, but in the confirm reruns "
            f"{names(h.better)} did better (Holm-adjusted p < {1 - f.confidence:.2g}), so no "
            "batch size is named best. Rerun with more trials at those batch sizes, then "
            "confirm again. The search's leader: ",
            *_leading(f, s),
            ".",
        )
    among = f" among those rerun ({names(h.untested)} not rerun)" if h.untested else ""
    return line(
        f"Best batch size for this model{among}: ",
        *_leading(f, s),
        f"; every other batch size rerun is worse (Holm-adjusted p < {1 - f.confidence:.2g}).",
    )


def _tie_line(f: Findings, leader: BatchSizeStats) -> Line:
    h = f.headline
    head = line(
        strong("Tie"),
        f": the confirm reruns cannot separate {leader.batch_size} from {names(h.tied_with)} "
        f"(Holm-adjusted p ≥ {1 - f.confidence:.2g}). ",
    )
    if h.by_cost and h.cost_basis is not None:
        basis = h.cost_basis
        costs = "; ".join(
            f"{s.batch_size}: {s.seconds_to_target:.2g} s to the target"
            if basis == "seconds to target"
            else f"{s.batch_size}: {s.samples_per_second:,.0f} samples/s"
            for s in h.by_cost
        )
        cheaper = line(
            "The cheaper choice is ",
            strong(str(h.by_cost[0].batch_size)),
            f" by measured cost ({costs}). ",
        )
    else:
        cheaper = line(
            "No cost was measured for all of them (samples_per_second, time to target), "
            "so the tie cannot be broken here: pick the one that is cheaper for you. "
        )
    return (*head, *cheaper, Span("Leading value: "), *_leading(f, leader), Span("."))


def _comparison_lines(c: Comparisons, f: Findings) -> list[Line]:
    tested = c.basis == "confirm"
    what = (
        "the mean of each batch size's rerun configurations, Welch tests Holm-corrected "
        f"over {plural(sum(i.p_value is not None for i in c.items), 'comparison')}"
        if tested
        else f"the mean of each batch size's top-{c.top_k} search values, a description "
        "only: these values chose the leader"
    )
    parts = [_comparison_part(item, f) for item in c.items]
    # Reruns test the configurations the search found; a batch size it sampled far less
    # may have worse ones because it was tuned less, not because it is worse.
    tuned_less = [
        (i.batch_size, i.n_trials)
        for i in c.items
        if i.status in ("worse", "better")
        and 2 * min(i.n_trials, c.against_trials) < max(i.n_trials, c.against_trials)
    ]
    lines = [
        line(
            f"Each batch size against {c.against} ({what}; {f.level} intervals): "
            + "; ".join(parts)
            + "."
        )
    ]
    if c.unfinished:
        lines.append(
            line(
                "No completed trial at "
                + "; ".join(
                    f"{s.batch_size} ({s.n_pruned} pruned, {s.n_failed} failed, "
                    f"{s.n_running} running)"
                    for s in c.unfinished
                )
                + "."
            )
        )
    if tested and c.not_rerun:
        lines.append(
            line(
                f"Not compared (no confirm reruns, or fewer than two): {names(c.not_rerun)}; ",
                code("bsopt confirm"),
                " with them included compares them too.",
            )
        )
    if tested and tuned_less:
        lines.append(
            line(
                "Tuned unevenly: "
                + "; ".join(f"{b} had {plural(n, 'completed trial')}" for b, n in tuned_less)
                + f", {c.against} had {c.against_trials}. The reruns compare the "
                "configurations the search found, so the batch size it tuned less may look "
                "worse than it is; more trials there would tell.",
            )
        )
    return lines


def _comparison_part(item: Comparison, f: Findings) -> str:
    few = f", only {plural(item.few, 'trial')}" if item.few is not None else ""
    if item.status in ("too few", "not rerun") or item.difference is None:
        return f"{item.batch_size}: too few values to compare{few}"
    span = ""
    if item.interval is not None:
        low, high = (difference(v, f.fraction, signed=True, unit=False) for v in item.interval)
        span = f" [{low}, {high}]"
    gap = difference(item.difference, f.fraction, signed=True)
    if item.p_value is None:
        return f"{item.batch_size} {gap}{span}{few}"
    word = {"tie": "cannot be separated"}.get(item.status, item.status)
    return f"{item.batch_size} {gap}{span} — {word} (adjusted p = {item.p_value:.2g}){few}"


def _lr_lines(fit: LrFit | None) -> list[Line]:
    if fit is None:
        return [line("Learning rate vs batch size: too few batch sizes with a completed trial.")]
    n = len(fit.points)
    text = (
        f"Best lr scales as batch^{fit.slope:.2f} over {n} batch sizes (log-log fit"
        + (", up to the critical batch size" if fit.critical_batch_size is not None else "")
        + f"): {fit.rule()}."
    )
    if fit.censored:
        text += (
            f" At {names(fit.censored)} the best trial sat at the end of the lrs tried, so "
            "its lr is only a bound; the fit places them on the line within it. Try lrs "
            "beyond that end there to pin them down."
        )
    return [line(text)]


def _critical_statement(f: Findings) -> Line:
    """The critical batch size, once: where the best lr stops growing (the lr fit's kink),
    and where steps stop shrinking (McCandlish's fit), whichever the data support."""
    fit, crit = f.lr_fit, f.critical_batch
    parts: list[str] = []
    head: Span | None = None
    if fit is not None and fit.critical_batch_size is not None:
        low, high = fit.critical_interval or (fit.critical_batch_size, fit.critical_batch_size)
        p = fit.kink_p_value if fit.kink_p_value is not None else 0.0
        head = strong(f"Critical batch size ≈ {fit.critical_batch_size:,.0f}")
        parts.append(
            f" ({f.level} interval {low:,.0f}–{high:,.0f}): beyond it the best lr stays flat at ≈ "
            f"{fit.lr_at(fit.critical_batch_size):.3g}, so larger batches buy no larger step "
            f"(two regimes fit {len(fit.points)} batch sizes better than one line: F-test p = "
            f"{p:.2g})"
        )
    elif fit is not None and fit.kink_p_value is not None:
        parts.append(
            f"Critical batch size: the best lr shows none within "
            f"{fit.points[0][0]}–{fit.points[-1][0]} (two regimes do not fit better than one "
            f"line: F-test p = {fit.kink_p_value:.2g})"
        )
    else:
        count = len(fit.points) if fit is not None else 0
        parts.append(
            f"Critical batch size: too few batch sizes ({count}) to look for one in the best "
            "lr (4 needed)"
        )
    if crit is not None:
        left_out = (
            f"; {names(crit.censored)} left out: they reached the target at their first "
            "evaluation, so their samples to target are only upper bounds"
            if crit.censored
            else ""
        )
        parts.append(
            f"steps against samples to the target (McCandlish et al. 2018, {len(crit.points)} "
            f"batch sizes{left_out}) put it at ≈ {crit.critical_batch_size:,.0f} (S_min ≈ "
            f"{crit.s_min:,.0f} steps, E_min ≈ {crit.e_min:,.0f} samples; coarse, the samples "
            "are counted on the evaluation grid)"
        )
    elif f.critical_batch_reason is not None:
        parts.append(
            f"steps against samples to the target were not fitted: {f.critical_batch_reason}; "
            "evaluate more often (Budget(evals=...)) or set a harder --target"
        )
    text = "; ".join(parts) + "."
    return line(head, text) if head is not None else line(text)


def _target_line(
    quickest: tuple[BatchSizeStats, ...], leader: BatchSizeStats, target: float, f: Findings
) -> Line:
    why = (
        ", the worst of the batch sizes' best values: a level each of them reached at least "
        "once; --target sets another"
        if f.target_is_default
        else ""
    )
    first = quickest[0]
    where = names([s.batch_size for s in quickest])
    each = " each" if len(quickest) > 1 else ""
    text = (
        f"Time to target ({f.study.metric} {target:.4g}{why}): fewest samples at {where} "
        f"({first.samples_to_target:,}{each}"
    )
    if len(quickest) == 1 and first.seconds_to_target is not None:
        text += f", {first.seconds_to_target:.2g} s of training"
    text += ")"
    if leader.samples_to_target is not None and leader not in quickest:
        text += f"; {leader.batch_size} needed {leader.samples_to_target:,}"
    return line(text + ".")


def _noise_line(f: Findings, best: int) -> Line:
    if f.noise_scale is None and f.noise_scale_no_signal:
        return line(
            f"Gradient noise scale: measured by {plural(f.noise_scale_no_signal, 'trial')} "
            "but not enough signal for an estimate (too few measurements, or the batch far "
            "below the noise scale)."
        )
    if f.noise_scale is None:
        return line(
            "Gradient noise scale: not recorded by these trials (no ",
            code("noise_scale"),
            " user attribute: made with ",
            code("measure_noise_scale=False"),
            ", by an own loop, or by an older bsopt), so the leading batch size cannot be "
            "compared with it.",
        )
    where = f"median of {f.noise_scale_trials} trials" if f.noise_scale_trials else "study"
    if f.noise_scale_range is not None:
        low, high = f.noise_scale_range
        kind = "range over trials" if f.noise_scale_trials > 1 else "interval"
        where += f"; {kind} {low:,.0f}–{high:,.0f}"
    low, high = f.noise_scale_range or (f.noise_scale, f.noise_scale)
    if low <= best <= high and low < high:
        relation = (
            f"{best} lies within that range, so the data do not place it above or below B_noise"
        )
    else:
        side = "below" if best < low else "above"
        relation = f"{best} is {side} it"
    return line(
        f"Gradient noise scale B_noise ≈ {f.noise_scale:,.0f} ({where}); the leading batch "
        f"size {relation} (batches well above B_noise buy little per extra sample)."
    )
