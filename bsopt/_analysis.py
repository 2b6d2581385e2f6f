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
from dataclasses import dataclass
import math
import statistics
from typing import Any
import warnings

import numpy as np
import optuna
from optuna.distributions import BaseDistribution
from optuna.trial import FrozenTrial, TrialState

from bsopt._storage import mask_url, open_storage, resolve_storage_url

#: Evaluators of :func:`param_importances`, by the name the report shows.
EVALUATORS = ("PED-ANOVA", "fANOVA", "MDI forest")
_SEARCHED_BATCH = "log2_batch_size"


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
    value = trial.user_attrs.get("effective_batch_size")
    return int(value) if isinstance(value, (int, float)) else None


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


def _complete(study: optuna.Study) -> list[FrozenTrial]:
    return [
        t
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if trial_value(t) is not None
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
# Batch sizes
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BatchSizeStats:
    """What the stored trials say about one batch size.

    ``best``/``best_trial``/``best_lr``: the best completed trial at this batch size.
    ``top_mean``/``top_std``: mean and standard deviation of its ``top_k`` best completed
    values (the spread the verdict compares differences with; ``top_std`` is ``None`` with
    fewer than two). ``mean``/``std``: over all its completed trials.
    ``samples_per_second``: median training throughput over its trials that recorded one.
    ``samples_to_target``/``seconds_to_target``: the fewest samples (and the training seconds
    they took at that trial's throughput) any of its trials needed to reach the target value.
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


@dataclass(frozen=True)
class LrFit:
    """Least-squares fit of ``log(lr*) = intercept + slope · log(batch_size)``.

    ``points`` are ``(batch_size, best lr)`` pairs. ``stderr`` is the slope's standard error
    (``None`` with only two points: a line through two points has no residual).
    """

    slope: float
    stderr: float | None
    intercept: float
    points: tuple[tuple[int, float], ...]

    def lr_at(self, batch_size: float) -> float:
        """The fitted best learning rate at ``batch_size``."""
        return float(math.exp(self.intercept + self.slope * math.log(batch_size)))

    def rule(self) -> str:
        """The scaling rule the slope is consistent with, in words."""
        if self.stderr is None:
            return "too few batch sizes to judge the rule (a line through two points)"
        tolerance = max(2 * self.stderr, 0.15)
        rules = [(1.0, "the linear rule (lr ∝ batch)"), (0.5, "the square-root rule")]
        rules.append((0.0, "no coupling (the best lr does not move with the batch size)"))
        matches = [text for alpha, text in rules if abs(self.slope - alpha) <= tolerance]
        if len(matches) == 1:
            return f"consistent with {matches[0]}"
        if matches:
            return "too uncertain to choose between " + "; ".join(matches)
        return "matches none of the usual rules (0, 0.5, 1)"


def fit_lr_scaling(points: Sequence[tuple[float, float]]) -> LrFit | None:
    """Fit ``lr* ∝ batch_size ** slope`` to ``(batch_size, lr)`` pairs in log-log space.

    Returns ``None`` with fewer than two distinct batch sizes.
    """
    pts = [(float(b), float(lr)) for b, lr in points if b > 0 and lr > 0]
    if len({b for b, _ in pts}) < 2:
        return None
    x = np.log([b for b, _ in pts])
    y = np.log([lr for _, lr in pts])
    xm, ym = x.mean(), y.mean()
    sxx = float(((x - xm) ** 2).sum())
    slope = float(((x - xm) * (y - ym)).sum() / sxx)
    intercept = float(ym - slope * xm)
    stderr = None
    if len(pts) > 2:
        residual = y - (intercept + slope * x)
        stderr = float(math.sqrt(float((residual**2).sum()) / (len(pts) - 2) / sxx))
    return LrFit(slope, stderr, intercept, tuple((int(b), lr) for b, lr in pts))


@dataclass(frozen=True)
class BatchSizeAnalysis:
    """The answer of :func:`analyze_batch_sizes`; ``verdict`` says it in words (Markdown)."""

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

    def stats(self, batch_size: int) -> BatchSizeStats:
        """The statistics of one batch size."""
        for s in self.per_batch:
            if s.batch_size == batch_size:
                return s
        tried = [s.batch_size for s in self.per_batch]
        raise ValueError(f"batch_size {batch_size} was not tried; the study tried {tried}.")

    def to_markdown(self) -> str:
        """The per-batch-size table in Markdown."""
        lines = [
            "| batch size | complete | pruned | failed | best | top-k mean ± std | best lr "
            "| samples/s | samples to target | s to target |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for s in self.per_batch:
            top = "–"
            if s.top_mean is not None:
                top = _fmt(s.top_mean) + (f" ± {_fmt(s.top_std)}" if s.top_std is not None else "")
            lines.append(
                f"| {s.batch_size} | {s.n_complete} | {s.n_pruned} | {s.n_failed} | "
                f"{_fmt(s.best)} | {top} | {_fmt(s.best_lr, 3)} | "
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


def _metric_name(study: optuna.Study, maximize: bool, fraction: bool) -> str:
    named = study.user_attrs.get("metric")
    if isinstance(named, str) and named:
        return f"validation {named}"
    return "value"


def analyze_batch_sizes(
    study: optuna.Study | str,
    *,
    storage: str | None = None,
    target: float | None = None,
    min_trials: int = 3,
    top_k: int = 3,
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
        top_k: the best values per batch size whose spread the verdict compares differences
            with (a difference inside that spread is called a tie).

    Reads storage only: COMPLETE trials give the values; PRUNED, FAIL and RUNNING trials are
    counted per batch size, and every trial's intermediate values (reported at samples seen)
    count for time to target. The learning rate is the ``lr`` user attribute (the rate used),
    the throughput ``samples_per_second``, the gradient noise scale ``noise_scale`` when
    trials recorded one (its absence is stated, not an error).
    """
    for name, value, low in (("min_trials", min_trials, 1), ("top_k", top_k, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{name} must be an integer >= {low}, but got {value!r}.")
    study = load_study(study, storage=storage)
    maximize = study.directions[0] == optuna.study.StudyDirection.MAXIMIZE
    trials = study.get_trials(deepcopy=False)
    counts = Counter(t.state.name for t in trials)
    complete = _complete(study)
    finite = {t.number for t in complete}
    fraction = bool(complete) and all(0.0 <= (trial_value(t) or 0.0) <= 1.0 for t in complete)

    by_batch: dict[int, list[FrozenTrial]] = {}
    for t in trials:
        b = trial_batch_size(t)
        if b is not None:
            by_batch.setdefault(b, []).append(t)

    def better(a: float, b: float) -> bool:
        return a > b if maximize else a < b

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
            (t for t in group if t.number in finite),
            key=lambda t: -(trial_value(t) or 0.0) if maximize else (trial_value(t) or 0.0),
        )
        values = [v for t in done if (v := trial_value(t)) is not None]
        top = values[:top_k]
        speeds = [
            v for t in group if (v := _finite(t.user_attrs.get("samples_per_second"))) is not None
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
            )
        )

    lr_points = [(s.batch_size, s.best_lr) for s in per_batch if s.best_lr is not None]
    lr_fit = fit_lr_scaling(lr_points)

    scales = [n for t in trials if (n := trial_noise_scale(t)) is not None]
    study_scale = _finite(study.user_attrs.get("noise_scale"))
    noise_scale = statistics.median(scales) if scales else study_scale

    leader: BatchSizeStats | None = None
    for s in per_batch:
        if s.best is not None and (leader is None or better(s.best, leader.best or 0.0)):
            leader = s
    with_complete = [s for s in per_batch if s.n_complete > 0]
    enough = leader is not None and leader.n_complete >= min_trials and len(with_complete) >= 2

    analysis = BatchSizeAnalysis(
        study_name=study.study_name,
        direction="maximize" if maximize else "minimize",
        metric=_metric_name(study, maximize, fraction),
        fraction=fraction,
        counts=dict(counts),
        per_batch=tuple(per_batch),
        best_batch_size=leader.batch_size if leader else None,
        enough_data=enough,
        lr_fit=lr_fit,
        target=target,
        noise_scale=noise_scale,
        noise_scale_trials=len(scales),
        verdict="",
    )
    return _with_verdict(analysis, min_trials=min_trials, top_k=top_k)


def _diff(a: float, b: float, fraction: bool) -> str:
    """``|a - b|`` in percentage points for fractions, else in the metric's units."""
    gap = abs(a - b)
    return f"{100 * gap:.2g} pp" if fraction else f"{gap:.3g}"


def _with_verdict(a: BatchSizeAnalysis, *, min_trials: int, top_k: int) -> BatchSizeAnalysis:
    from dataclasses import replace

    return replace(a, verdict=_verdict(a, min_trials=min_trials, top_k=top_k))


def _verdict(a: BatchSizeAnalysis, *, min_trials: int, top_k: int) -> str:
    c = a.counts
    total = sum(c.values())
    lines: list[str] = []
    states = ", ".join(
        f"{c.get(s, 0)} {w}"
        for s, w in (("COMPLETE", "complete"), ("PRUNED", "pruned"), ("FAIL", "failed"))
    )
    running = c.get("RUNNING", 0) + c.get("WAITING", 0)
    lines.append(
        f"Study **{a.study_name}** ({a.direction} {a.metric}): {total} trials — {states}"
        + (f", {running} running or waiting" if running else "")
        + "."
    )
    leader = a.stats(a.best_batch_size) if a.best_batch_size is not None else None
    if leader is None or leader.best is None:
        lines.insert(
            0,
            "**Too few trials to tell**: no completed trial yet, so no batch size can be "
            "named. Run more trials (bsopt run ... --trials N resumes to N).",
        )
        return "\n\n".join(lines)

    others = [s for s in a.per_batch if s.best is not None and s is not leader]
    best_text = f"{leader.best:.4g}"
    head = (
        f"best batch size for this model: **{leader.batch_size}** ({a.metric} {best_text}, "
        f"trial #{leader.best_trial}, best of {leader.n_complete} completed "
        f"trial{'s' if leader.n_complete != 1 else ''}"
    )
    head += f", lr {leader.best_lr:.3g})" if leader.best_lr is not None else ")"
    if not a.enough_data:
        missing = []
        if leader.n_complete < min_trials:
            missing.append(
                f"{leader.batch_size} has {leader.n_complete} completed trial"
                f"{'s' if leader.n_complete != 1 else ''} (at least {min_trials} needed)"
            )
        if not others:
            missing.append("no other batch size completed a trial to compare with")
        lines.insert(
            0,
            "**Too few trials to tell** which batch size is best: "
            + "; ".join(missing)
            + f". Leading so far — {head}. Run more trials before trusting this.",
        )
    else:
        lines.insert(0, head[0].upper() + head[1:] + ".")

    if others:
        ranked = sorted(others, key=lambda s: s.best or 0.0, reverse=a.direction == "maximize")
        parts = []
        for s in ranked:
            word = "lower" if a.direction == "maximize" else "higher"
            few = f", only {s.n_complete} trial{'s' if s.n_complete != 1 else ''}"
            parts.append(
                f"{s.batch_size} scored {_diff(leader.best, s.best or 0.0, a.fraction)} {word}"
                f" ({s.best:.4g}{few if s.n_complete < min_trials else ''})"
            )
        lines.append("Other batch sizes: " + "; ".join(parts) + ".")
        unfinished = [s for s in a.per_batch if s.best is None]
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
        runner = ranked[0]
        spread = max(x for x in (leader.top_std, runner.top_std, 0.0) if x is not None)
        gap = abs(leader.best - (runner.best or 0.0))
        if a.enough_data:
            if runner.n_complete < min_trials or leader.top_std is None:
                lines.append(
                    f"The runner-up {runner.batch_size} has too few trials "
                    f"({runner.n_complete}) to say whether the gap is real."
                )
            elif gap <= spread:
                lines.append(
                    f"**Within the spread**: {leader.batch_size} and {runner.batch_size} differ "
                    f"by {_diff(gap, 0.0, a.fraction)}, less than the spread of their top-{top_k}"
                    f" trials (± {_diff(spread, 0.0, a.fraction)}); the data cannot separate "
                    "them — pick the cheaper one."
                )
            else:
                lines.append(
                    f"The lead over {runner.batch_size} ({_diff(gap, 0.0, a.fraction)}) is larger "
                    f"than the spread of the top-{top_k} trials "
                    f"(± {_diff(spread, 0.0, a.fraction)})."
                )

    fit = a.lr_fit
    if fit is None:
        lines.append("Learning rate vs batch size: too few batch sizes with a completed trial.")
    else:
        err = f" ± {fit.stderr:.2f}" if fit.stderr is not None else ""
        lines.append(
            f"Best lr scales as batch^{fit.slope:.2f}{err} over {len(fit.points)} batch sizes "
            f"(log-log least squares): {fit.rule()}. Fitted best lr at "
            f"{leader.batch_size}: {fit.lr_at(leader.batch_size):.3g}."
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
        target_text = f"{a.target:.4g}"
        part = (
            f"Time to target ({a.metric} {target_text}): fewest samples at "
            f"{quickest.batch_size} ({quickest.samples_to_target:,}"
        )
        if quickest.seconds_to_target is not None:
            part += f", {quickest.seconds_to_target:.2g} s of training"
        part += ")"
        if leader.samples_to_target is not None and quickest is not leader:
            part += f"; {leader.batch_size} needed {leader.samples_to_target:,}"
        lines.append(part + ".")

    if a.noise_scale is None:
        lines.append(
            "Gradient noise scale: not recorded by these trials (no `noise_scale` user "
            "attribute), so the best batch size cannot be compared with it."
        )
    else:
        where = f"median of {a.noise_scale_trials} trials" if a.noise_scale_trials else "study"
        relation = "below" if leader.batch_size < a.noise_scale else "at or above"
        lines.append(
            f"Gradient noise scale B_noise ≈ {a.noise_scale:,.0f} ({where}); the best batch "
            f"size {leader.batch_size} is {relation} it (batches well above B_noise buy "
            "little per extra sample)."
        )
    return "\n\n".join(lines)
