"""Which batch size, and why: the analysis of a stored study.

Everything here reads a study's trials from storage (parameters, values, intermediate values
and the user attributes :func:`~bsopt.make_objective` writes); nothing trains a model.

* :func:`param_importances` ranks the searched hyperparameters with three evaluators side by
  side (PED-ANOVA, Optuna 5's default; fANOVA; a scikit-learn random forest's mean decrease in
  impurity), each with the trials it used and its spread over evaluator seeds.
* :func:`analyze_batch_sizes` answers the batch-size question: the best value per batch size
  with its spread, how the best learning rate moves with the batch size (a log-log fit), what
  each batch size costs (samples/s, samples and seconds to a target value), the gradient noise
  scale when trials recorded one, and a plain-words verdict that says when the data are too
  few to tell.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace
import math
import statistics
from typing import Any
import warnings

import numpy as np
import optuna
from optuna.distributions import BaseDistribution
from optuna.trial import FrozenTrial, TrialState

from bsopt.core._attrs import CONFIRM_ATTR
from bsopt.store._storage import mask_url, open_storage, resolve_storage_url

#: Evaluators of :func:`param_importances`, by the name the report shows.
EVALUATORS = ("PED-ANOVA", "fANOVA", "MDI forest")
_SEARCHED_BATCH = "log2_batch_size"
#: User attribute marking a :func:`~bsopt.confirm` rerun: the number of the trial it repeats.
#: Confidence level of every interval the analysis states.
CONFIDENCE = 0.95


# ---------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------


def load_study(study: optuna.Study | str, *, storage: str | None = None) -> optuna.Study:
    """``study`` itself, or the study of that name in ``storage`` (resolved the bsopt way).

    Raises:
        ValueError: no study of that name is stored; the message lists those that are.
    """
    if isinstance(study, optuna.Study):
        return study
    if not isinstance(study, str) or not study.strip():
        raise ValueError(f"study must be an optuna.Study or a study name, but got {study!r}.")
    url = resolve_storage_url(storage)
    # Reading needs no heartbeat: the analysis never runs a trial.
    opened = open_storage(url, heartbeat_interval=None)
    try:
        return optuna.load_study(study_name=study, storage=opened)
    except KeyError:
        names = [s.study_name for s in opened.get_all_studies()]
        held = ", ".join(repr(n) for n in names) if names else "no study yet"
        raise ValueError(
            f"The storage {mask_url(url)!r} holds no study named {study!r} (it holds {held}). "
            "Pass one of those names with --study, or list them with: bsopt studies"
        ) from None


# ---------------------------------------------------------------------------------------------
# Reading one trial
# ---------------------------------------------------------------------------------------------


def trial_batch_size(trial: FrozenTrial) -> int | None:
    """The effective batch size a trial trained with, or ``None`` if it never drew one."""
    if "batch_size" in trial.params:
        return int(trial.params["batch_size"])
    if _SEARCHED_BATCH in trial.params:
        return int(2 ** trial.params[_SEARCHED_BATCH])
    for key in ("batch_size", "effective_batch_size"):
        value = trial.user_attrs.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return int(value)
    return None


def trial_lr(trial: FrozenTrial) -> float | None:
    """The learning rate actually used: the ``lr`` user attribute, else the ``lr`` parameter.

    The attribute comes first because a coupled space samples a base rate and derives the
    used one; the parameter is then not the rate the model trained with.
    """
    for value in (trial.user_attrs.get("lr"), trial.params.get("lr")):
        if isinstance(value, (int, float)) and value > 0 and math.isfinite(value):
            return float(value)
    return None


def _finite(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def trial_noise_scale(trial: FrozenTrial) -> float | None:
    """The trial's last recorded gradient noise scale (user attribute ``noise_scale``).

    Accepts a number, a list of numbers (one per evaluation; the last one is taken) or a list
    of ``[step, value]`` pairs. ``None`` when the trial has none.
    """
    value = trial.user_attrs.get("noise_scale")
    if isinstance(value, (list, tuple)):
        for item in reversed(value):
            item = item[-1] if isinstance(item, (list, tuple)) and item else item
            found = _finite(item)
            if found is not None and found > 0:
                return found
        return None
    found = _finite(value)
    return found if found is not None and found > 0 else None


def trial_value(trial: FrozenTrial) -> float | None:
    """The trial's (first) objective value if it is finite, else ``None``.

    In a multi-objective study (bsopt's ``goal="metric_and_time"``) the first objective is
    the metric; the analysis reads that one.
    """
    if not trial.values:
        return None
    return _finite(trial.values[0])


def is_confirm_run(trial: FrozenTrial) -> bool:
    """Whether ``trial`` is a :func:`~bsopt.confirm` rerun (user attribute ``confirm_of``).

    Reruns repeat a searched configuration with a fresh seed: they are kept out of the search
    statistics (importance, best per batch size, the lr fit) and used by the verdict instead.
    """
    return CONFIRM_ATTR in trial.user_attrs


def _complete(study: optuna.Study) -> list[FrozenTrial]:
    """Completed search trials with a finite value (confirm reruns excluded)."""
    return [
        t
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if trial_value(t) is not None and not is_confirm_run(t)
    ]


# ---------------------------------------------------------------------------------------------
# Importance
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ImportanceRow:
    """One parameter's importance by one evaluator.

    ``mean`` and ``std`` are taken over ``n_seeds`` evaluator seeds (PED-ANOVA is
    deterministic: one run, ``std`` 0). Importances are normalised to sum to 1 over the
    parameters evaluated together. ``conditional`` parameters exist in only some trials and
    were evaluated on the ``n_trials`` completed trials that have them.
    """

    evaluator: str
    param: str
    mean: float
    std: float
    n_trials: int
    n_seeds: int
    conditional: bool = False


@dataclass(frozen=True)
class Importances:
    """The result of :func:`param_importances`: rows by evaluator, plus notes on what was
    left out and why."""

    rows: tuple[ImportanceRow, ...]
    notes: tuple[str, ...] = ()

    def ranking(self, evaluator: str) -> list[str]:
        """Parameter names by decreasing mean importance under ``evaluator``."""
        rows = [r for r in self.rows if r.evaluator == evaluator]
        return [r.param for r in sorted(rows, key=lambda r: -r.mean)]

    def to_markdown(self) -> str:
        """A Markdown table (parameters × evaluators) followed by the notes."""
        if not self.rows:
            return "\n".join(f"- {n}" for n in self.notes) or "- No importance computed."
        evaluators = [e for e in EVALUATORS if any(r.evaluator == e for r in self.rows)]
        first = evaluators[0]
        params = self.ranking(first) + sorted(
            {r.param for r in self.rows} - set(self.ranking(first))
        )
        by_key = {(r.evaluator, r.param): r for r in self.rows}
        lines = [
            "| parameter | " + " | ".join(evaluators) + " |",
            "|---|" + "---:|" * len(evaluators),
        ]
        for p in params:
            cells = []
            for e in evaluators:
                row = by_key.get((e, p))
                if row is None:
                    cells.append("–")
                    continue
                spread = f" ± {row.std:.2f}" if row.n_seeds > 1 else ""
                cells.append(f"{row.mean:.2f}{spread} (n={row.n_trials})")
            mark = (
                " *(conditional)*" if any(r.conditional for r in self.rows if r.param == p) else ""
            )
            lines.append(f"| {p}{mark} | " + " | ".join(cells) + " |")
        seeds = {r.evaluator: r.n_seeds for r in self.rows}
        lines.append("")
        lines.append(
            "Mean ± std over evaluator seeds ("
            + ", ".join(f"{e}: {seeds[e]}" for e in evaluators)
            + "); n = completed trials used."
        )
        lines.extend(f"- {n}" for n in self.notes)
        return "\n".join(lines)


def _display_name(param: str) -> str:
    return "batch_size" if param == _SEARCHED_BATCH else param


def _searched(distributions: dict[str, BaseDistribution]) -> set[str]:
    """Parameters the sampler actually searched: single-point ones are records, not choices."""
    out = set()
    for name, dist in distributions.items():
        if dist.single():
            continue
        out.add(name)
    if _SEARCHED_BATCH in out:
        out.discard("batch_size")
    return out


def _make_evaluator(
    name: str, seed: int, n_trees: int
) -> optuna.importance.BaseImportanceEvaluator:
    if name == "PED-ANOVA":
        return optuna.importance.PedAnovaImportanceEvaluator()
    if name == "fANOVA":
        return optuna.importance.FanovaImportanceEvaluator(seed=seed, n_trees=n_trees)
    return optuna.importance.MeanDecreaseImpurityImportanceEvaluator(seed=seed, n_trees=n_trees)


def param_importances(
    study: optuna.Study | str,
    *,
    storage: str | None = None,
    evaluators: Sequence[str] = EVALUATORS,
    seeds: int = 3,
    n_trees: int = 16,
    min_trials: int = 5,
) -> Importances:
    """Hyperparameter importances by several evaluators side by side.

    Args:
        study: a study, or the name of one in ``storage``.
        storage: the storage URL when ``study`` is a name (``None``: ``$BSOPT_STORAGE``, then
            ``sqlite:///storage/bsopt.db``).
        evaluators: any of ``"PED-ANOVA"`` (Optuna 5's default: which values the best 10 %
            of trials concentrate on), ``"fANOVA"`` (variance of a random-forest surrogate
            explained by each parameter) and ``"MDI forest"`` (a scikit-learn random forest's
            mean decrease in impurity).
        seeds: evaluator seeds for the forest-based evaluators; the spread over them shows
            how much of a ranking is noise.
        n_trees: trees per forest (fANOVA, MDI). Optuna's default is 64; 16 keeps a
            100-trial report within seconds, and the spread over ``seeds`` shows the cost.
        min_trials: completed trials needed before any importance is computed.

    Only searched parameters count (single-point ones are fixed records). The searched
    ``log2_batch_size`` is reported as ``batch_size``. A parameter present in only some
    completed trials (a schedule-specific one, say) is *conditional*: it is evaluated, with
    the parameters every trial has, on the completed trials that have it, and marked so.
    A multi-objective study is judged on its first objective.
    """
    unknown = [e for e in evaluators if e not in EVALUATORS]
    if unknown:
        raise ValueError(
            f"evaluators must be chosen from {EVALUATORS}, but got {unknown!r}. "
            "Leave it out to use all three."
        )
    for name, value in (("seeds", seeds), ("n_trees", n_trees), ("min_trials", min_trials)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an integer >= 1, but got {value!r}.")
    study = load_study(study, storage=storage)
    complete = [t for t in _complete(study) if _searched(t.distributions)]
    if len(complete) < max(min_trials, 2):
        return Importances(
            (),
            (
                f"Too few completed trials for importance: {len(complete)} "
                f"(at least {max(min_trials, 2)} needed).",
            ),
        )
    searched = [_searched(t.distributions) for t in complete]
    common = set.intersection(*searched)
    conditional = sorted(set.union(*searched) - common)
    # Each group is evaluated on the completed trials that hold all of its parameters.
    groups: list[tuple[list[str], list[str]]] = []
    if common:
        groups.append((sorted(common), sorted(common)))
    for param in conditional:
        groups.append(([*sorted(common), param], [param]))

    # Evaluators re-read the trials several times per call; a copy in memory spares the
    # database those queries (seconds on a 100-trial SQLite study).
    # A multi-objective study is judged on its first objective (the metric).
    level = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # no "new study created" line
    try:
        local = optuna.create_study(direction=study.directions[0])
    finally:
        optuna.logging.set_verbosity(level)
    local.add_trials(
        [
            optuna.trial.create_trial(
                value=trial_value(t), params=t.params, distributions=t.distributions
            )
            for t in complete
        ]
    )
    rows: list[ImportanceRow] = []
    notes: list[str] = []
    for group, reported in groups:
        n_used = sum(1 for s in searched if set(group) <= s)
        if n_used < max(min_trials, 2):
            notes.append(
                f"{', '.join(_display_name(p) for p in reported)}: only {n_used} completed "
                f"trials have it (at least {max(min_trials, 2)} needed); not evaluated."
            )
            continue
        if len(group) == 1:
            # A lone parameter takes all the importance by construction; say so instead.
            notes.append(
                f"{_display_name(group[0])} is the only searched parameter in {n_used} "
                "trials; its importance is 1 by definition."
            )
        for name in evaluators:
            runs = 1 if name == "PED-ANOVA" else seeds
            values: dict[str, list[float]] = {p: [] for p in reported}
            try:
                for seed in range(runs):
                    with warnings.catch_warnings():
                        # PED-ANOVA warns on few trials per regime; the n column says it.
                        warnings.simplefilter("ignore")
                        # NOTE: sorted, because Optuna 5.0's MDI evaluator labels its forest's
                        # columns (sorted by name) with the names in the order given.
                        result = optuna.importance.get_param_importances(
                            local,
                            evaluator=_make_evaluator(name, seed, n_trees),
                            params=sorted(group),
                        )
                    for p in reported:
                        values[p].append(float(result.get(p, 0.0)))
            except (ValueError, RuntimeError) as e:
                notes.append(f"{name} on {', '.join(group)}: not computed ({e}).")
                continue
            for p in reported:
                vals = values[p]
                rows.append(
                    ImportanceRow(
                        evaluator=name,
                        param=_display_name(p),
                        mean=float(np.mean(vals)),
                        std=float(np.std(vals)),
                        n_trials=n_used,
                        n_seeds=runs,
                        conditional=p in conditional,
                    )
                )
    if conditional:
        notes.append(
            "Conditional parameters ("
            + ", ".join(_display_name(p) for p in conditional)
            + ") exist in only some trials; each was evaluated, together with the parameters "
            "every trial has, on the completed trials that have it."
        )
    return Importances(tuple(rows), tuple(notes))


# ---------------------------------------------------------------------------------------------
# Intervals
# ---------------------------------------------------------------------------------------------


def _t_quantile(confidence: float, df: float) -> float:
    from scipy import stats

    return float(stats.t.ppf(0.5 + confidence / 2, df))


def t_interval(
    values: Sequence[float], *, confidence: float = CONFIDENCE
) -> tuple[float, float] | None:
    """The two-sided t-interval of the mean of ``values`` (``n - 1`` degrees of freedom).

    ``None`` with fewer than two values: one value has no spread to judge from.
    """
    n = len(values)
    if n < 2:
        return None
    mean = statistics.fmean(values)
    half = _t_quantile(confidence, n - 1) * statistics.stdev(values) / math.sqrt(n)
    return (mean - half, mean + half)


def welch_interval(
    a: Sequence[float], b: Sequence[float], *, confidence: float = CONFIDENCE
) -> tuple[float, float] | None:
    """The t-interval of ``mean(a) - mean(b)`` without assuming equal variances (Welch, with
    Welch–Satterthwaite degrees of freedom). ``None`` unless both have two values or more."""
    if len(a) < 2 or len(b) < 2:
        return None
    va = statistics.variance(a) / len(a)
    vb = statistics.variance(b) / len(b)
    diff = statistics.fmean(a) - statistics.fmean(b)
    se = math.sqrt(va + vb)
    if se == 0:
        return (diff, diff)
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    half = _t_quantile(confidence, df) * se
    return (diff - half, diff + half)


# ---------------------------------------------------------------------------------------------
# The learning rate against the batch size
# ---------------------------------------------------------------------------------------------

#: The usual lr–batch scaling rules, by exponent.
RULES = (
    (1.0, "the linear rule (lr ∝ batch)"),
    (0.5, "the square-root rule (lr ∝ √batch)"),
    (0.0, "no coupling (the best lr does not move with the batch size)"),
)


@dataclass(frozen=True)
class LrFit:
    """How the best learning rate moves with the batch size, fitted in log-log space.

    One line, ``log lr* = intercept + slope · log B``, or — when the data support it — two
    regimes (a broken power law): that line up to ``critical_batch_size`` and flat beyond it,
    where a larger batch no longer allows a larger learning rate. ``slope``, ``stderr``,
    ``interval`` and ``intercept`` describe the sloped part (the whole range when there is no
    kink).

    Attributes:
        points: the ``(batch_size, best lr)`` pairs fitted.
        stderr: the slope's standard error (``None`` with two points: a line through two
            points has no residual).
        interval: the slope's ``confidence`` t-interval (``n - 2`` degrees of freedom for one
            line, ``n - 3`` for two regimes); ``None`` with ``stderr``.
        critical_batch_size: where the best lr stops growing; ``None`` when one line fits as
            well (or there are too few batch sizes to tell: four are needed).
        kink_p_value: the F-test p-value of two regimes against one line (``None`` when not
            tested). The kink's place is searched, which makes it somewhat optimistic.
        line_slope: the slope of the single line, also when two regimes were chosen.
    """

    slope: float
    stderr: float | None
    intercept: float
    points: tuple[tuple[int, float], ...]
    interval: tuple[float, float] | None = None
    critical_batch_size: float | None = None
    kink_p_value: float | None = None
    line_slope: float | None = None
    confidence: float = CONFIDENCE

    def lr_at(self, batch_size: float) -> float:
        """The fitted best learning rate at ``batch_size``."""
        x = math.log(batch_size)
        if self.critical_batch_size is not None:
            x = min(x, math.log(self.critical_batch_size))
        return float(math.exp(self.intercept + self.slope * x))

    def rule(self) -> str:
        """The scaling rule the slope's interval singles out, in words; a rule is named only
        when the interval holds its exponent and excludes the others."""
        if self.interval is None:
            return "too few batch sizes to judge the rule (a line through two points)"
        low, high = self.interval
        span = f"{100 * self.confidence:.0f}% interval [{low:.2f}, {high:.2f}]"
        inside = [text for alpha, text in RULES if low <= alpha <= high]
        if len(inside) == 1:
            return f"consistent with {inside[0]} ({span} excludes the other rules)"
        if inside:
            names = [text.split(" (")[0] for text in inside]
            return f"the data cannot tell apart {_names(names)} ({span})"
        return f"matches none of the usual rules 0, 0.5, 1 ({span})"


def _line(x: np.ndarray, y: np.ndarray) -> tuple[float, float, float, float]:
    """Least squares ``y = a + b x``: ``(b, a, stderr of b, residual sum of squares)``."""
    from scipy import stats

    fit = stats.linregress(x, y)
    residual = y - (fit.intercept + fit.slope * x)
    rss = float((residual**2).sum())
    stderr = float(fit.stderr)
    if not math.isfinite(stderr):
        # linregress leaves it NaN when y is constant (no correlation to speak of); the
        # slope's standard error is then that of a perfect fit.
        sxx = float(((x - x.mean()) ** 2).sum())
        stderr = math.sqrt(rss / max(len(x) - 2, 1) / sxx)
    return float(fit.slope), float(fit.intercept), stderr, rss


def fit_lr_scaling(
    points: Sequence[tuple[float, float]],
    *,
    confidence: float = CONFIDENCE,
    kink_alpha: float = 0.05,
) -> LrFit | None:
    """Fit ``lr* ∝ batch_size ** slope`` to ``(batch_size, lr)`` pairs in log-log space, and
    look for a critical batch size beyond which the best lr stays flat.

    The two-regime fit (slope up to a kink, flat beyond) is chosen over one line only when an
    F-test says it fits better at level ``kink_alpha``, with at least two batch sizes on each
    side of the kink and a rising slope below it. Returns ``None`` with fewer than two
    distinct batch sizes.
    """
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), but got {confidence!r}.")
    if not 0 <= kink_alpha < 1:
        raise ValueError(
            f"kink_alpha must be in [0, 1) (0 never fits two regimes), but got {kink_alpha!r}."
        )
    pts = sorted((float(b), float(lr)) for b, lr in points if b > 0 and lr > 0)
    distinct = sorted({b for b, _ in pts})
    if len(distinct) < 2:
        return None
    x = np.log([b for b, _ in pts])
    y = np.log([lr for _, lr in pts])
    n = len(pts)
    stored = tuple((int(b), lr) for b, lr in pts)
    if n == 2:
        slope = float((y[1] - y[0]) / (x[1] - x[0]))
        return LrFit(slope, None, float(y[0] - slope * x[0]), stored, line_slope=slope)
    slope, intercept, stderr, rss_line = _line(x, y)
    q = _t_quantile(confidence, n - 2)
    line = LrFit(
        slope,
        stderr,
        intercept,
        stored,
        interval=(slope - q * stderr, slope + q * stderr),
        line_slope=slope,
        confidence=confidence,
    )
    if len(distinct) < 4:
        return line
    # The kink at log B = c: the regressor becomes min(log B, c). Search c between the second
    # and the second-to-last batch size, so that each regime holds two of them at least.
    logs = np.log(distinct)
    grid = np.unique(np.concatenate([np.linspace(logs[1], logs[-2], 200), logs[1:-1]]))
    best: tuple[float, float, float, float, float] | None = None
    for c in grid:
        z = np.minimum(x, c)
        if np.ptp(z) == 0:
            continue
        b, a, se, rss = _line(z, y)
        if b > 0 and (best is None or rss < best[3]):
            best = (b, a, se, rss, float(c))
    if best is None:
        return line
    from scipy import stats

    b, a, se, rss, c = best
    dof = n - 3
    if rss <= 1e-12 * max(rss_line, 1e-300):
        p_value = 0.0 if rss_line > 0 else 1.0
    else:
        f_stat = (rss_line - rss) / (rss / dof)
        p_value = float(stats.f.sf(f_stat, 1, dof))
    if p_value >= kink_alpha:
        return replace(line, kink_p_value=p_value)
    se = se * math.sqrt((n - 2) / dof)  # one more parameter fitted: the kink
    q = _t_quantile(confidence, dof)
    return LrFit(
        b,
        se,
        a,
        stored,
        interval=(b - q * se, b + q * se),
        critical_batch_size=float(math.exp(c)),
        kink_p_value=p_value,
        line_slope=slope,
        confidence=confidence,
    )


# ---------------------------------------------------------------------------------------------
# Steps against samples: McCandlish's critical batch size
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CriticalBatchFit:
    """McCandlish et al. (2018)'s trade-off between optimizer steps and samples to a target,

        (S / S_min − 1) (E / E_min − 1) = 1,  i.e.  E(B) = E_min + S_min · B,

    fitted to the fewest samples ``E(B)`` each batch size ``B`` needed to reach the target.
    ``critical_batch_size`` = ``E_min / S_min``: below it a larger batch saves steps at
    little extra data; above it each doubling of the batch roughly doubles the samples.
    """

    s_min: float
    e_min: float
    critical_batch_size: float
    points: tuple[tuple[int, int], ...]


def fit_critical_batch(
    points: Sequence[tuple[float, float]], *, max_error: float = 0.25
) -> CriticalBatchFit | None:
    """Fit :class:`CriticalBatchFit` to ``(batch_size, samples to target)`` pairs.

    Least squares on relative errors. ``None`` with fewer than three distinct sample counts,
    when the fit gives no positive ``S_min`` and ``E_min`` (the samples do not grow with the
    batch size, or do not level off below it, inside the range tried), or when the curve
    misses the points by more than ``max_error`` (root mean square of relative errors).
    """
    pts = sorted((float(b), float(e)) for b, e in points if b > 0 and e > 0)
    if len({b for b, _ in pts}) < 3:
        return None
    b = np.array([p[0] for p in pts])
    e = np.array([p[1] for p in pts])
    # E = E_min + S_min B, each residual weighted by 1 / E (relative error).
    design = np.stack([np.ones_like(b), b], axis=1) / e[:, None]
    coef, *_ = np.linalg.lstsq(design, np.ones_like(e), rcond=None)
    e_min, s_min = float(coef[0]), float(coef[1])
    if not (e_min > 0 and s_min > 0) or len(set(e)) < 3:
        return None
    # Samples measured on a coarse evaluation grid often fit no curve at all: say nothing
    # rather than a number the points do not support.
    relative = (e_min + s_min * b) / e - 1
    if float(np.sqrt(np.mean(relative**2))) > max_error:
        return None
    return CriticalBatchFit(
        s_min, e_min, e_min / s_min, tuple((int(bb), int(ee)) for bb, ee in pts)
    )


# ---------------------------------------------------------------------------------------------
# Batch sizes
# ---------------------------------------------------------------------------------------------


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

    The comparison with the best batch size: ``compared`` are the values compared (the
    ``top_k`` best search values, or the :func:`~bsopt.confirm` reruns when the analysis
    uses them), ``interval`` the t-interval of their mean, ``difference`` the difference of
    means to the best batch size's (this minus best) with its Welch ``difference_interval``,
    and ``status`` one of ``"best"``, ``"worse"`` (the interval excludes 0 on the worse side),
    ``"tie"`` (it holds 0, or lies on the better side), ``"too few"`` (fewer than two values
    on a side) or ``""`` (no completed trial). ``confirm_values`` are its reruns' values.
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
    compared: tuple[float, ...] = ()
    interval: tuple[float, float] | None = None
    difference: float | None = None
    difference_interval: tuple[float, float] | None = None
    status: str = ""
    confirm_values: tuple[float, ...] = ()
    confirm_of: tuple[int, ...] = ()

    @property
    def compared_mean(self) -> float | None:
        return statistics.fmean(self.compared) if self.compared else None


@dataclass(frozen=True)
class BatchSizeAnalysis:
    """The answer of :func:`analyze_batch_sizes`; ``verdict`` says it in words (Markdown).

    ``best_batch_size`` is the batch size with the best value (the best single search trial,
    or the best mean of the confirm reruns when ``basis == "confirm"``); ``tied`` lists every
    batch size the data cannot separate from it (itself included); ``recommended_batch_size``
    is the cheapest of those by measured cost (``cost_basis`` says which), else the best.
    ``unit`` is ``"fraction"`` (differences in percentage points) or ``"value"``.
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
    verdict: str
    tied: tuple[int, ...] = ()
    recommended_batch_size: int | None = None
    cost_basis: str | None = None
    basis: str = "search"
    critical_batch: CriticalBatchFit | None = None
    noise_scale_range: tuple[float, float] | None = None
    noise_scale_no_signal: int = 0
    n_confirm: int = 0
    confidence: float = CONFIDENCE

    @property
    def unit(self) -> str:
        return "fraction" if self.fraction else "value"

    def stats(self, batch_size: int) -> BatchSizeStats:
        """The statistics of one batch size."""
        for s in self.per_batch:
            if s.batch_size == batch_size:
                return s
        tried = [s.batch_size for s in self.per_batch]
        raise ValueError(f"batch_size {batch_size} was not tried; the study tried {tried}.")

    def to_markdown(self) -> str:
        """The per-batch-size table in Markdown."""
        compared = "confirm runs" if self.basis == "confirm" else "top-k"
        pct = f"{100 * self.confidence:.0f}%"
        lines = [
            f"| batch size | complete | pruned | failed | best | {compared} mean [{pct}] "
            "| vs best | best lr | samples/s | samples to target | s to target |",
            "|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|",
        ]
        for s in self.per_batch:
            mean = s.compared_mean
            top = "–" if mean is None else _fmt(mean)
            if s.interval is not None:
                top += f" [{_fmt(s.interval[0])}, {_fmt(s.interval[1])}]"
            if s.compared:
                top += f" (n={len(s.compared)})"
            lines.append(
                f"| {s.batch_size} | {s.n_complete} | {s.n_pruned} | {s.n_failed} | "
                f"{_fmt(s.best)} | {top} | {s.status or '–'} | {_fmt(s.best_lr, 3)} | "
                f"{_fmt_count(s.samples_per_second)} | {_fmt_count(s.samples_to_target)} | "
                f"{_fmt(s.seconds_to_target, 3)} |"
            )
        return "\n".join(lines)


def _fmt(value: float | None, digits: int = 4) -> str:
    return "–" if value is None else f"{value:.{digits}g}"


def _fmt_count(value: float | None) -> str:
    return "–" if value is None else f"{value:,.0f}"


def _reached(value: float, target: float, maximize: bool) -> bool:
    return value >= target if maximize else value <= target


def _first_step_at(trial: FrozenTrial, target: float, maximize: bool) -> int | None:
    for step in sorted(trial.intermediate_values):
        value = trial.intermediate_values[step]
        if math.isfinite(value) and _reached(value, target, maximize):
            return int(step)
    return None


#: Metrics whose values are shares in [0, 1] (differences in percentage points), for studies
#: written before the objective stored ``metric_unit``.
_FRACTION_METRICS = ("accuracy", "f1", "roc_auc", "precision", "recall", "auc", "jaccard")
_VALUE_METRICS = ("loss", "mae", "mse", "rmse", "r2", "error", "perplexity", "log")


def _unit(study: optuna.Study, values: Sequence[float]) -> str:
    """``"fraction"`` or ``"value"``: the study's ``metric_unit`` attribute when stored, else
    judged from the metric's name, else from the values (all in [0, 1] and maximised)."""
    if study.user_attrs.get("goal") == "time_to_target":
        return "value"
    stored = study.user_attrs.get("metric_unit")
    if stored in ("fraction", "value"):
        return str(stored)
    name = study.user_attrs.get("metric")
    if isinstance(name, str) and name:
        lowered = name.lower()
        if any(word in lowered for word in _VALUE_METRICS):
            return "value"
        if any(word in lowered for word in _FRACTION_METRICS):
            return "fraction"
    maximize = study.directions[0] == optuna.study.StudyDirection.MAXIMIZE
    if values and maximize and all(0.0 <= v <= 1.0 for v in values):
        return "fraction"
    return "value"


def _metric_name(study: optuna.Study) -> str:
    if study.user_attrs.get("goal") == "time_to_target":
        return "samples to target"
    named = study.user_attrs.get("metric")
    if isinstance(named, str) and named:
        return f"validation {named}"
    return "value"


def _trial_noise_interval(trial: FrozenTrial) -> tuple[float, float] | None:
    value = trial.user_attrs.get("noise_scale_interval")
    if isinstance(value, (list, tuple)) and len(value) == 2:
        low, high = _finite(value[0]), _finite(value[1])
        if low is not None and high is not None and 0 < low <= high:
            return (low, high)
    return None


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
    for name, value, low in (("min_trials", min_trials, 1), ("top_k", top_k, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{name} must be an integer >= {low}, but got {value!r}.")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), e.g. 0.95, but got {confidence!r}.")
    study = load_study(study, storage=storage)
    maximize = study.directions[0] == optuna.study.StudyDirection.MAXIMIZE
    all_trials = study.get_trials(deepcopy=False)
    reruns = [
        t
        for t in all_trials
        if is_confirm_run(t) and t.state == TrialState.COMPLETE and trial_value(t) is not None
    ]
    trials = [t for t in all_trials if not is_confirm_run(t)]
    counts = Counter(t.state.name for t in trials)
    complete = _complete(study)
    finite = {t.number for t in complete}
    fraction = _unit(study, [v for t in complete if (v := trial_value(t)) is not None])
    fraction_flag = fraction == "fraction"

    def order(v: float) -> float:
        return -v if maximize else v

    by_batch: dict[int, list[FrozenTrial]] = {}
    for t in trials:
        b = trial_batch_size(t)
        if b is not None:
            by_batch.setdefault(b, []).append(t)
    rerun_by_batch: dict[int, list[FrozenTrial]] = {}
    for t in reruns:
        b = trial_batch_size(t)
        if b is not None:
            rerun_by_batch.setdefault(b, []).append(t)
            by_batch.setdefault(b, [])

    best_per_batch: dict[int, float] = {}
    for b, group in by_batch.items():
        values = [v for t in group if t.number in finite and (v := trial_value(t)) is not None]
        if values:
            best_per_batch[b] = max(values) if maximize else min(values)
    if target is None and best_per_batch:
        target = min(best_per_batch.values()) if maximize else max(best_per_batch.values())

    per_batch = []
    for b in sorted(by_batch):
        group = by_batch[b]
        done = sorted(
            (t for t in group if t.number in finite), key=lambda t: order(trial_value(t) or 0.0)
        )
        values = [v for t in done if (v := trial_value(t)) is not None]
        top = values[:top_k]
        speeds = [
            v
            for t in group + rerun_by_batch.get(b, [])
            if (v := _finite(t.user_attrs.get("samples_per_second"))) is not None
        ]
        to_target: list[tuple[int, float | None]] = []
        if target is not None:
            for t in group:
                if t.state not in (TrialState.COMPLETE, TrialState.PRUNED):
                    continue
                step = _first_step_at(t, target, maximize)
                if step is not None:
                    speed = _finite(t.user_attrs.get("samples_per_second"))
                    to_target.append((step, step / speed if speed else None))
        fastest = min(to_target, key=lambda p: p[0]) if to_target else None
        rerun_values = tuple(
            v for t in rerun_by_batch.get(b, []) if (v := trial_value(t)) is not None
        )
        per_batch.append(
            BatchSizeStats(
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
                compared=tuple(top),
                confirm_values=rerun_values,
                confirm_of=tuple(
                    sorted({int(t.user_attrs[CONFIRM_ATTR]) for t in rerun_by_batch.get(b, [])})
                ),
            )
        )

    basis = "confirm" if sum(1 for s in per_batch if len(s.confirm_values) >= 2) >= 2 else "search"
    if basis == "confirm":
        per_batch = [replace(s, compared=s.confirm_values) for s in per_batch]
    per_batch = [
        replace(s, interval=t_interval(s.compared, confidence=confidence)) for s in per_batch
    ]

    # The leader: the best single search value, or the best mean of confirm reruns. An exact
    # tie goes to the cheaper batch size (then the smaller one).
    def score(s: BatchSizeStats) -> float | None:
        return s.compared_mean if basis == "confirm" else s.best

    candidates = [s for s in per_batch if score(s) is not None]
    leader: BatchSizeStats | None = None
    if candidates:
        top_score = min(order(score(s) or 0.0) for s in candidates)
        level = [s for s in candidates if order(score(s) or 0.0) == top_score]
        leader = min(level, key=lambda s: (_cost(s, level)[0], s.batch_size))

    compared = []
    for s in per_batch:
        if leader is None or not s.compared:
            compared.append(s)
            continue
        if s is leader:
            compared.append(replace(s, status="best"))
            continue
        diff = statistics.fmean(s.compared) - statistics.fmean(leader.compared)
        interval = welch_interval(s.compared, leader.compared, confidence=confidence)
        if interval is None:
            status = "tie" if diff == 0 else "too few"
        else:
            worse_side = interval[1] < 0 if maximize else interval[0] > 0
            status = "worse" if worse_side else "tie"
        compared.append(replace(s, difference=diff, difference_interval=interval, status=status))
    per_batch = compared
    if leader is not None:
        leader = next(s for s in per_batch if s.batch_size == leader.batch_size)

    tied: tuple[int, ...] = ()
    recommended = leader.batch_size if leader else None
    cost_basis = None
    if leader is not None:
        level = [s for s in per_batch if s.status in ("best", "tie")]
        tied = tuple(s.batch_size for s in level)
        if len(level) > 1:
            costs = [(_cost(s, level), s) for s in level]
            cost_basis = costs[0][0][1]
            if cost_basis is not None:
                recommended = min(costs, key=lambda c: (c[0][0], c[1].batch_size))[1].batch_size

    lr_points = [(s.batch_size, s.best_lr) for s in per_batch if s.best_lr is not None]
    lr_fit = fit_lr_scaling(lr_points, confidence=confidence)
    critical = fit_critical_batch(
        [(s.batch_size, s.samples_to_target) for s in per_batch if s.samples_to_target]
    )

    measured = [t for t in trials if {"noise_scale", "noise_scale_history"} & set(t.user_attrs)]
    scales = [n for t in trials if (n := trial_noise_scale(t)) is not None]
    study_scale = _finite(study.user_attrs.get("noise_scale"))
    noise_scale = statistics.median(scales) if scales else study_scale
    noise_range = (min(scales), max(scales)) if len(scales) > 1 else None
    if len(scales) == 1:
        only = next(t for t in trials if trial_noise_scale(t) is not None)
        noise_range = _trial_noise_interval(only)

    with_complete = [s for s in per_batch if s.n_complete > 0 or s.confirm_values]
    enough = (
        leader is not None
        and (leader.n_complete >= min_trials or len(leader.confirm_values) >= 2)
        and len(with_complete) >= 2
    )

    analysis = BatchSizeAnalysis(
        study_name=study.study_name,
        direction="maximize" if maximize else "minimize",
        metric=_metric_name(study),
        fraction=fraction_flag,
        counts=dict(counts),
        per_batch=tuple(per_batch),
        best_batch_size=leader.batch_size if leader else None,
        enough_data=enough,
        lr_fit=lr_fit,
        target=target,
        noise_scale=noise_scale,
        noise_scale_trials=len(scales),
        verdict="",
        tied=tied,
        recommended_batch_size=recommended,
        cost_basis=cost_basis,
        basis=basis,
        critical_batch=critical,
        noise_scale_range=noise_range,
        noise_scale_no_signal=len(measured) - len(scales),
        n_confirm=len(reruns),
        confidence=confidence,
    )
    return replace(analysis, verdict=_verdict(analysis, min_trials=min_trials, top_k=top_k))


def _cost(s: BatchSizeStats, group: Sequence[BatchSizeStats]) -> tuple[float, str | None]:
    """A batch size's measured cost, comparable within ``group``: seconds to the target when
    every member has it, else seconds per sample (1 / samples/s); ``inf`` and ``None``
    when the group has no common measure."""
    if all(g.seconds_to_target is not None for g in group):
        return (s.seconds_to_target or 0.0, "seconds to target")
    if all(g.samples_per_second for g in group):
        return (1.0 / (s.samples_per_second or 1.0), "samples/s")
    return (math.inf, None)


def _diff(gap: float, fraction: bool, *, signed: bool = False, unit: bool = True) -> str:
    """A difference in percentage points for fractions, else in the metric's units."""
    value = 100 * gap if fraction else gap
    unit = unit and fraction
    unit_text = " pp" if unit else ""
    text = f"{value:+.2g}" if signed and value != 0 else f"{abs(value):.2g}"
    return text.replace("-", "−") + unit_text


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _names(items: Sequence[object]) -> str:
    words = [str(i) for i in items]
    if len(words) <= 1:
        return "".join(words)
    return ", ".join(words[:-1]) + " and " + words[-1]


def _cost_text(s: BatchSizeStats, basis: str) -> str:
    if basis == "seconds to target":
        return f"{s.batch_size}: {s.seconds_to_target:.2g} s to the target"
    return f"{s.batch_size}: {s.samples_per_second:,.0f} samples/s"


def _verdict(a: BatchSizeAnalysis, *, min_trials: int, top_k: int) -> str:
    c = a.counts
    total = sum(c.values())
    pct = f"{100 * a.confidence:.0f}%"
    lines: list[str] = []
    states = ", ".join(
        f"{c.get(s, 0)} {w}"
        for s, w in (("COMPLETE", "complete"), ("PRUNED", "pruned"), ("FAIL", "failed"))
    )
    running = c.get("RUNNING", 0) + c.get("WAITING", 0)
    lines.append(
        f"Study **{a.study_name}** ({a.direction} {a.metric}): {total} trials — {states}"
        + (f", {running} running or waiting" if running else "")
        + (f"; {_plural(a.n_confirm, 'confirm rerun')} beside them" if a.n_confirm else "")
        + "."
    )
    leader = a.stats(a.best_batch_size) if a.best_batch_size is not None else None
    if leader is None or (leader.best is None and not leader.confirm_values):
        lines.insert(
            0,
            "**Too few trials to tell**: no completed trial yet, so no batch size can be "
            "named. Run more trials (bsopt run ... --trials N resumes to N).",
        )
        return "\n\n".join(lines)

    others = [s for s in a.per_batch if s.compared and s is not leader]
    if a.basis == "confirm":
        mean = leader.compared_mean or 0.0
        half = (leader.interval[1] - mean) if leader.interval else None
        spread = f" ± {_diff(half, a.fraction)}" if half is not None else ""
        head = (
            f"best batch size for this model: **{leader.batch_size}** ({a.metric} "
            f"{mean:.4g}{spread}, mean of {_plural(len(leader.compared), 'confirm run')} "
            f"with fresh seeds, ± the {pct} t-interval"
        )
    else:
        head = (
            f"best batch size for this model: **{leader.batch_size}** ({a.metric} "
            f"{leader.best:.4g}, trial #{leader.best_trial}, best of "
            f"{_plural(leader.n_complete, 'completed trial')}"
        )
    head += f", lr {leader.best_lr:.3g})" if leader.best_lr is not None else ")"
    tie = len(a.tied) > 1
    if not a.enough_data:
        missing = []
        if leader.n_complete < min_trials and len(leader.confirm_values) < 2:
            missing.append(
                f"{leader.batch_size} has {_plural(leader.n_complete, 'completed trial')} "
                f"(at least {min_trials} needed)"
            )
        if not others:
            missing.append("no other batch size completed a trial to compare with")
        lines.insert(
            0,
            "**Too few trials to tell** which batch size is best: "
            + "; ".join(missing)
            + f". Leading so far — {head}. Run more trials before trusting this.",
        )
    elif tie:
        rest = [b for b in a.tied if b != leader.batch_size]
        text = (
            f"**Tie**: the data cannot separate {leader.batch_size} from {_names(rest)} (the "
            f"{pct} intervals of their differences hold 0). "
        )
        group = [a.stats(b) for b in a.tied]
        if a.cost_basis is not None and a.recommended_batch_size is not None:
            cheaper = a.stats(a.recommended_batch_size)
            listed = sorted(group, key=lambda s: _cost(s, group)[0])
            text += (
                f"The cheaper choice is **{cheaper.batch_size}** by measured cost ("
                + "; ".join(_cost_text(s, a.cost_basis) for s in listed)
                + "). "
            )
        else:
            text += (
                "No cost was measured for all of them (samples_per_second, time to target), "
                "so the tie cannot be broken here: pick the one that is cheaper for you. "
            )
        text += "Leading value: " + head[len("best batch size for this model: ") :] + "."
        lines.insert(0, text)
    else:
        lines.insert(0, head[0].upper() + head[1:] + ".")

    if others:
        what = (
            "the confirm reruns' means"
            if a.basis == "confirm"
            else f"the mean of each batch size's top-{top_k} search values"
        )
        parts = []
        ranked = sorted(
            others,
            key=lambda s: (s.difference or 0.0) * (-1 if a.direction == "maximize" else 1),
        )
        for s in ranked:
            few = (
                ""
                if s.n_complete >= min_trials or a.basis == "confirm"
                else (f", only {_plural(s.n_complete, 'trial')}")
            )
            if s.status == "too few" or s.difference is None:
                parts.append(f"{s.batch_size}: too few values to compare{few}")
                continue
            iv = s.difference_interval
            span = ""
            if iv is not None:
                lo_text, hi_text = (_diff(v, a.fraction, signed=True, unit=False) for v in iv)
                span = f" [{lo_text}, {hi_text}]"
            word = {"worse": "worse", "tie": "cannot be separated"}.get(s.status, s.status)
            gap = _diff(s.difference, a.fraction, signed=True)
            parts.append(f"{s.batch_size} {gap}{span} — {word}{few}")
        lines.append(
            f"Each batch size against {leader.batch_size} ({what}, {pct} Welch intervals): "
            + "; ".join(parts)
            + "."
        )
        unfinished = [s for s in a.per_batch if s.best is None and not s.confirm_values]
        if unfinished:
            lines.append(
                "No completed trial at "
                + "; ".join(
                    f"{s.batch_size} ({s.n_pruned} pruned, {s.n_failed} failed, "
                    f"{s.n_running} running)"
                    for s in unfinished
                )
                + "."
            )
        not_rerun = [s.batch_size for s in a.per_batch if s.best is not None and not s.compared]
        if a.basis == "confirm" and not_rerun:
            lines.append(
                f"Not compared (no confirm reruns, or fewer than two): {_names(not_rerun)}; "
                "`bsopt confirm` with them included compares them too."
            )
        if a.basis == "search":
            lines.append(
                "These are the best of many trials, which flatters the winner; "
                "`bsopt confirm` reruns the top configurations with fresh seeds and gives "
                "mean ± interval per batch size."
            )

    fit = a.lr_fit
    if fit is None:
        lines.append("Learning rate vs batch size: too few batch sizes with a completed trial.")
    else:
        n = len(fit.points)
        if fit.critical_batch_size is not None:
            p = fit.kink_p_value if fit.kink_p_value is not None else 0.0
            flat = fit.lr_at(fit.critical_batch_size)
            lines.append(
                f"**Critical batch size ≈ {fit.critical_batch_size:,.0f}**: up to it the best "
                f"lr scales as batch^{fit.slope:.2f} — {fit.rule()}; beyond it the best lr "
                f"stays flat at ≈ {flat:.3g}, so larger batches buy no larger step (two "
                f"regimes fit {n} batch sizes better than one line: F-test p = {p:.2g})."
            )
        else:
            lines.append(
                f"Best lr scales as batch^{fit.slope:.2f} over {n} batch sizes (log-log fit): "
                f"{fit.rule()}."
            )
            if fit.kink_p_value is not None:
                lines.append(
                    f"No critical batch size within {fit.points[0][0]}–{fit.points[-1][0]}: "
                    f"two regimes do not fit better than one line (F-test p = "
                    f"{fit.kink_p_value:.2g})."
                )
            else:
                lines.append(
                    f"Too few batch sizes ({len({b for b, _ in fit.points})}) to look for a "
                    "critical batch size (4 needed)."
                )

    speeds = [s for s in a.per_batch if s.samples_per_second]
    if leader.samples_per_second and len(speeds) > 1:
        fastest = max(speeds, key=lambda s: s.samples_per_second or 0.0)
        slowest = min(speeds, key=lambda s: s.samples_per_second or 0.0)
        lines.append(
            f"Throughput: {leader.batch_size} trains at {leader.samples_per_second:,.0f} "
            f"samples/s; fastest {fastest.batch_size} at {fastest.samples_per_second:,.0f}, "
            f"slowest {slowest.batch_size} at {slowest.samples_per_second:,.0f}."
        )
    reached = [s for s in a.per_batch if s.samples_to_target is not None]
    if a.target is not None and reached:
        quickest = min(reached, key=lambda s: s.samples_to_target or 0)
        part = (
            f"Time to target ({a.metric} {a.target:.4g}): fewest samples at "
            f"{quickest.batch_size} ({quickest.samples_to_target:,}"
        )
        if quickest.seconds_to_target is not None:
            part += f", {quickest.seconds_to_target:.2g} s of training"
        part += ")"
        if leader.samples_to_target is not None and quickest is not leader:
            part += f"; {leader.batch_size} needed {leader.samples_to_target:,}"
        lines.append(part + ".")
    crit = a.critical_batch
    if crit is not None:
        lines.append(
            f"Steps vs samples to the target (McCandlish et al. 2018, fitted over "
            f"{len(crit.points)} batch sizes): S_min ≈ {crit.s_min:,.0f} steps, E_min ≈ "
            f"{crit.e_min:,.0f} samples, so B_crit = E_min / S_min ≈ "
            f"{crit.critical_batch_size:,.0f} (samples to target are measured on the "
            "evaluation grid, so this is coarse)."
        )

    if a.noise_scale is None:
        if a.noise_scale_no_signal:
            lines.append(
                f"Gradient noise scale: measured by {_plural(a.noise_scale_no_signal, 'trial')} "
                "but not enough signal for an estimate (too few measurements, or the batch far "
                "below the noise scale)."
            )
        else:
            lines.append(
                "Gradient noise scale: not recorded by these trials (no `noise_scale` user "
                "attribute; `make_objective(measure_noise_scale=True)` records it), so the "
                "best batch size cannot be compared with it."
            )
    else:
        where = f"median of {a.noise_scale_trials} trials" if a.noise_scale_trials else "study"
        if a.noise_scale_range is not None:
            low, high = a.noise_scale_range
            kind = "range over trials" if a.noise_scale_trials > 1 else "interval"
            where += f"; {kind} {low:,.0f}–{high:,.0f}"
        relation = "below" if leader.batch_size < a.noise_scale else "at or above"
        lines.append(
            f"Gradient noise scale B_noise ≈ {a.noise_scale:,.0f} ({where}); the best batch "
            f"size {leader.batch_size} is {relation} it (batches well above B_noise buy "
            "little per extra sample)."
        )
    return "\n\n".join(lines)
