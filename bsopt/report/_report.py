"""The report of a stored study: one self-contained HTML file, a Markdown summary, PNG plots.

:func:`write_report` reads the study from storage (nothing is trained), runs
:func:`~bsopt.analyze_batch_sizes` and :func:`~bsopt.param_importances`, draws the plots with
matplotlib (no browser needed), and writes into ``out``:

* ``report.html``: the verdict, the per-batch-size table, the importance table and every plot
  embedded as a PNG data URI, so the file can be mailed or attached on its own;
* ``report.md``: the same text, linking the PNG files;
* ``history.png``, ``importance.png``, ``lr_batch.png``, ``curves.png``,
  ``batch_sizes.png``, ``forecast.png``: the plots as files. The forecast plot shows, for a
  study whose complete trials ran at several budgets, the batch within 1% of the best and its
  lr at each budget against the samples trained (log-log), the fitted power laws and their
  band out to 8x the largest budget (:func:`~bsopt.forecast`).

Pruned, failed and running trials are drawn where they carry information (pruned curves,
running curves so far) and counted in the verdict; only completed trials give values.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
import contextlib
from dataclasses import dataclass
import datetime as dt
import html
import io
import math
import os
from pathlib import Path
import re
import secrets
from typing import TYPE_CHECKING, Any

import numpy as np
import optuna
from optuna.trial import FrozenTrial, TrialState

from bsopt.analysis._analysis import BatchSizeAnalysis, analyze_batch_sizes
from bsopt.analysis._findings import verdict_lines
from bsopt.analysis._fits import LrFit
from bsopt.analysis._importance import EVALUATORS, Importances, param_importances
from bsopt.analysis._load import (
    is_confirm_run,
    load_study,
    trial_batch_size,
    trial_lr,
    trial_value,
)
from bsopt.report._html import html_list, html_paragraphs, html_table

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

DEFAULT_REPORT_DIR = "bsopt-report"
#: The plots of a report, by file stem, with the title the report gives them.
PLOTS = {
    "history": "Optimization history",
    "importance": "Hyperparameter importance",
    "lr_batch": "Learning rate × batch size",
    "curves": "Validation curves by batch size (value vs samples seen)",
    "batch_sizes": "Best value and throughput by batch size",
    "forecast": "Batch size and lr against samples trained, extrapolated 8x (forecast)",
}


@dataclass(frozen=True)
class Report:
    """What :func:`write_report` wrote: the files, and the analysis they show."""

    html: Path
    markdown: Path
    plots: dict[str, Path]
    analysis: BatchSizeAnalysis
    importances: Importances

    def note(self) -> str:
        """The verdict and tables as Markdown, for a dashboard note."""
        return _note(self.analysis, self.importances)


# ---------------------------------------------------------------------------------------------
# Plots
# ---------------------------------------------------------------------------------------------


def _figure(width: float, height: float) -> Figure:
    # matplotlib is imported on first use: it costs a second at ``import bsopt``. A bare
    # Figure (no pyplot) draws with Agg and never needs a display.
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def _colors(batch_sizes: list[int]) -> dict[int, Any]:
    import matplotlib

    cmap = matplotlib.colormaps["viridis"]
    n = max(len(batch_sizes) - 1, 1)
    return {b: cmap(0.9 * i / n) for i, b in enumerate(sorted(batch_sizes))}


def _integer_ticks(ax: Axes) -> None:
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def _follow_good(
    ax: Axes,
    values: list[float],
    maximize: bool,
    *,
    share: float = 1.0,
    extra: list[float] | None = None,
) -> None:
    """Limit the value axis to the best ``share`` of ``values`` (plus ``extra`` lines such as
    a target), so that a few diverged or poor trials do not flatten what matters. Points
    outside fall off the edge."""
    finite = sorted((v for v in values if math.isfinite(v)), reverse=maximize)
    if len(finite) < 2:
        return
    kept = finite[: max(2, math.ceil(share * len(finite)))]
    ends = [kept[0], kept[-1], *(extra or [])]
    low, high = min(ends), max(ends)
    if high <= low:
        return
    pad = 0.08 * (high - low)
    ax.set_ylim(low - pad, high + pad)


def _legend_outside(ax: Axes) -> None:
    """The legend to the right of the axes, where it hides no point; batch sizes in order."""
    handles, labels = ax.get_legend_handles_labels()

    def key(label: str) -> tuple[int, int]:
        match = re.match(r"batch (\d+)", label)
        return (0, int(match.group(1))) if match else (1, 0)

    pairs = sorted(zip(handles, labels, strict=True), key=lambda p: key(p[1]))
    ax.legend(
        [h for h, _ in pairs],
        [label for _, label in pairs],
        fontsize=8,
        loc="upper left",
        bbox_to_anchor=(1.01, 1.0),
        borderaxespad=0.0,
    )


def _thousands() -> Any:
    from matplotlib.ticker import FuncFormatter

    return FuncFormatter(lambda x, _: f"{x:,.0f}")


def _scatter(ax: Axes, points: Sequence[tuple[float, float]], **style: Any) -> None:
    """``points`` as (x, y) pairs, drawn with matplotlib's scatter ``style``."""
    ax.scatter([p[0] for p in points], [p[1] for p in points], **style)


def _empty(ax: Axes, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="0.4")
    ax.set_xticks([])
    ax.set_yticks([])


def plot_history(trials: list[FrozenTrial], analysis: BatchSizeAnalysis) -> Figure:
    """Value per trial, coloured by batch size, with the best so far; pruned trials at their
    last reported value."""
    fig = _figure(8, 4.2)
    ax = fig.add_subplot()
    colors = _colors([s.batch_size for s in analysis.per_batch])
    maximize = analysis.direction == "maximize"
    trials = [t for t in trials if not is_confirm_run(t)]
    done = [t for t in trials if t.state == TrialState.COMPLETE and trial_value(t) is not None]
    if not done:
        _empty(ax, "No completed trial yet")
        return fig
    for b, color in colors.items():
        pts = [(t.number, trial_value(t) or 0.0) for t in done if trial_batch_size(t) == b]
        if pts:
            _scatter(ax, pts, color=color, s=28, label=f"batch {b}")
    pruned = [
        (t.number, t.intermediate_values[max(t.intermediate_values)])
        for t in trials
        if t.state == TrialState.PRUNED and t.intermediate_values
    ]
    if pruned:
        _scatter(ax, pruned, marker="x", color="0.6", s=22, label="pruned (last value)")
    best: list[tuple[int, float]] = []
    current: float | None = None
    for t in sorted(done, key=lambda t: t.number):
        v = trial_value(t) or 0.0
        if current is None or (v > current if maximize else v < current):
            current = v
        best.append((t.number, current))
    ax.step(
        [p[0] for p in best],
        [p[1] for p in best],
        where="post",
        color="crimson",
        lw=1.5,
        label="best so far",
    )
    ax.set_xlabel("trial number")
    _integer_ticks(ax)
    ax.set_ylabel(analysis.metric)
    # All but the worst tenth of the trials: one diverged trial must not squash the rest.
    _follow_good(ax, [trial_value(t) or 0.0 for t in done], maximize, share=0.9)
    _legend_outside(ax)
    ax.grid(alpha=0.3)
    return fig


def plot_importance(importances: Importances) -> Figure:
    """Importance per parameter, one bar per evaluator, error bars = std over seeds."""
    fig = _figure(8, 3.8)
    ax = fig.add_subplot()
    if not importances.rows:
        _empty(ax, "\n".join(importances.notes) or "No importance computed")
        return fig
    evaluators = [e for e in EVALUATORS if any(r.evaluator == e for r in importances.rows)]
    params = importances.ranking(evaluators[0])
    params += sorted({r.param for r in importances.rows} - set(params))
    by_key = {(r.evaluator, r.param): r for r in importances.rows}
    height = 0.8 / len(evaluators)
    y = np.arange(len(params))
    palette = ["#4C72B0", "#DD8452", "#55A868"]
    for i, e in enumerate(evaluators):
        rows = [by_key.get((e, p)) for p in params]
        ax.barh(
            y + (i - (len(evaluators) - 1) / 2) * height,
            [r.mean if r else 0.0 for r in rows],
            height,
            xerr=[r.std if r else 0.0 for r in rows],
            color=palette[i % len(palette)],
            label=f"{e} (n={max((r.n_trials for r in rows if r), default=0)})",
        )
    labels = [
        p + (" (cond.)" if any(r.conditional for r in importances.rows if r.param == p) else "")
        for p in params
    ]
    ax.set_yticks(y, labels)
    ax.invert_yaxis()
    ax.set_xlabel("importance (normalised; error bar: std over evaluator seeds)")
    _legend_outside(ax)
    ax.grid(alpha=0.3, axis="x")
    return fig


def plot_lr_batch(trials: list[FrozenTrial], analysis: BatchSizeAnalysis) -> Figure:
    """Every trial's (batch size, lr) on log axes, coloured by value; the best lr per batch
    size and the log-log fit on top."""
    fig = _figure(8, 4.8)
    ax = fig.add_subplot()
    rng = np.random.default_rng(0)
    pts = []
    for t in trials:
        b, lr = trial_batch_size(t), trial_lr(t)
        if b is None or lr is None:
            continue
        # Jitter within a batch size keeps overlapping trials visible.
        pts.append((b * 2 ** rng.uniform(-0.12, 0.12), lr, t))
    if not pts:
        _empty(ax, "No trial with a batch size and a learning rate")
        return fig
    _draw_lr_trials(fig, ax, pts, analysis)
    best = [(s.batch_size, s.best_lr) for s in analysis.per_batch if s.best_lr is not None]
    if best:
        _scatter(ax, best, marker="*", s=200, color="crimson", zorder=4, label="best lr")
    if analysis.lr_fit is not None:
        _draw_lr_fit(ax, analysis.lr_fit)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    sizes = sorted({s.batch_size for s in analysis.per_batch})
    ax.set_xticks(sizes, [str(b) for b in sizes], rotation=45 if len(sizes) > 7 else 0)
    from matplotlib.ticker import NullLocator

    ax.xaxis.set_minor_locator(NullLocator())  # the batch sizes are the only ticks wanted
    ax.set_xlabel("batch size")
    ax.set_ylabel("learning rate")
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.18), ncol=2)
    ax.grid(alpha=0.3, which="both")
    return fig


def _draw_lr_trials(
    fig: Figure,
    ax: Axes,
    pts: list[tuple[float, float, FrozenTrial]],
    analysis: BatchSizeAnalysis,
) -> None:
    """The trials at (jittered batch size, lr): completed ones coloured by value with a
    colour bar, the others as hollow circles."""
    done = [
        (x, lr, v)
        for x, lr, t in pts
        if t.state == TrialState.COMPLETE and (v := trial_value(t)) is not None
    ]
    other = [(x, lr) for x, lr, t in pts if t.state != TrialState.COMPLETE]
    if other:
        _scatter(ax, other, facecolors="none", edgecolors="0.55", s=26, label="not completed")
    if not done:
        return
    # Colours span the best 90% of the values: a diverged trial must not take the scale.
    values = sorted((p[2] for p in done), reverse=analysis.direction == "maximize")
    kept = values[: max(1, math.ceil(0.9 * len(values)))]
    sc = ax.scatter(
        [p[0] for p in done],
        [p[1] for p in done],
        c=[p[2] for p in done],
        cmap="viridis" if analysis.direction == "maximize" else "viridis_r",
        vmin=min(kept),
        vmax=max(kept),
        s=30,
        zorder=3,
    )
    fig.colorbar(sc, ax=ax, label=analysis.metric, extend="both")


def _draw_lr_fit(ax: Axes, fit: LrFit) -> None:
    """The fitted lr* over the batch sizes fitted, and the critical batch size if any."""
    bs = np.array([p[0] for p in fit.points], dtype=float)
    grid = np.geomspace(bs.min(), bs.max(), 200)
    span = ""
    if fit.interval is not None:
        span = f" [{fit.interval[0]:.2f}, {fit.interval[1]:.2f}]"
    label = f"fit: lr* ∝ batch^{fit.slope:.2f}{span}"
    if fit.critical_batch_size is not None:
        label += f" up to {fit.critical_batch_size:,.0f}, flat beyond"
        ax.axvline(
            fit.critical_batch_size,
            color="crimson",
            lw=1,
            alpha=0.6,
            label=f"critical batch size ≈ {fit.critical_batch_size:,.0f}",
        )
    ax.plot(grid, [fit.lr_at(g) for g in grid], color="crimson", ls="--", label=label)


def plot_curves(trials: list[FrozenTrial], analysis: BatchSizeAnalysis) -> Figure:
    """Intermediate values against samples seen, one colour per batch size; the best trial
    of each batch size drawn thick, the others (pruned and running included) thin."""
    fig = _figure(8, 4.8)
    ax = fig.add_subplot()
    colors = _colors([s.batch_size for s in analysis.per_batch])
    best_trials = {s.best_trial for s in analysis.per_batch if s.best_trial is not None}
    drawn = False
    maximize = analysis.direction == "maximize"
    good: list[float] = []
    finals = sorted(
        (
            v
            for t in trials
            if t.state == TrialState.COMPLETE and (v := trial_value(t)) is not None
        ),
        reverse=maximize,
    )
    # The good trials: the best half of the completed ones, and each batch size's best.
    cut = finals[(len(finals) - 1) // 2] if finals else None
    for t in trials:
        b = trial_batch_size(t)
        if b is None or not t.intermediate_values:
            continue
        steps = sorted(t.intermediate_values)
        values = [t.intermediate_values[s] for s in steps]
        thick = t.number in best_trials
        final = trial_value(t) if t.state == TrialState.COMPLETE else None
        if thick or (
            final is not None and cut is not None and (final >= cut if maximize else final <= cut)
        ):
            # Their later half: the first evaluations of any run are poor by nature.
            good.extend(values[len(values) // 2 :])
        ax.plot(
            steps,
            values,
            color=colors[b],
            lw=2.2 if thick else 0.8,
            alpha=1.0 if thick else 0.35,
            ls="-" if t.state != TrialState.RUNNING else ":",
            label=f"batch {b} (best, #{t.number})" if thick else None,
            zorder=3 if thick else 2,
        )
        drawn = True
    if not drawn:
        _empty(ax, "No intermediate values reported")
        return fig
    if analysis.target is not None:
        ax.axhline(analysis.target, color="0.3", ls="--", lw=1, label="target")
    _follow_good(
        ax,
        good,
        maximize,
        extra=[analysis.target] if analysis.target is not None else None,
    )
    ax.xaxis.set_major_formatter(_thousands())
    ax.set_xlabel("samples seen")
    ax.set_ylabel(analysis.metric)
    _legend_outside(ax)
    ax.grid(alpha=0.3)
    return fig


def plot_batch_sizes(analysis: BatchSizeAnalysis) -> Figure:
    """Left: each batch size's compared values (top-k search values, or confirm reruns) with
    the t-interval of their mean, and the best search value. Right: samples/s."""
    fig = _figure(9, 3.8)
    left, right = fig.subplots(1, 2)
    stats = list(analysis.per_batch)
    if not stats:
        _empty(left, "No trial yet")
        _empty(right, "No trial yet")
        return fig
    counts = [len(s.compared) if analysis.basis == "confirm" else s.n_complete for s in stats]
    # "n=" under each batch size while there is room; a bare count in brackets beyond that.
    roomy = len(stats) <= 6
    labels = [
        f"{s.batch_size}\n" + (f"n={n}" if roomy else f"({n})")
        for s, n in zip(stats, counts, strict=True)
    ]
    x = np.arange(len(stats))
    what = "confirm reruns" if analysis.basis == "confirm" else "top-k trials"
    pct = f"{100 * analysis.confidence:.0f}%"
    for xi, s in zip(x, stats, strict=True):
        if s.compared:
            left.scatter(
                [xi] * len(s.compared), s.compared, s=12, color="0.6", zorder=2, alpha=0.8
            )
    means = [s.compared_mean if s.compared_mean is not None else math.nan for s in stats]
    low = [m - s.interval[0] if s.interval else 0.0 for m, s in zip(means, stats, strict=True)]
    high = [s.interval[1] - m if s.interval else 0.0 for m, s in zip(means, stats, strict=True)]
    left.errorbar(
        x,
        means,
        yerr=[low, high],
        fmt="o",
        color="#4C72B0",
        capsize=4,
        label=f"mean of {what}, {pct} t-interval",
        zorder=3,
    )
    best = [s.best if s.best is not None else math.nan for s in stats]
    left.scatter(x, best, marker="*", s=120, color="crimson", zorder=4, label="best search trial")
    tied = set(analysis.tied) if len(analysis.tied) > 1 else set()
    for xi, s in zip(x, stats, strict=True):
        if s.batch_size in tied:
            left.axvspan(xi - 0.4, xi + 0.4, color="#55A868", alpha=0.12, lw=0)
    left.set_xticks(x, labels)
    left.set_xlabel(
        "batch size ("
        + ("n = " if roomy else "in brackets: ")
        + ("reruns" if analysis.basis == "confirm" else "completed trials")
        + ")"
        + ("; shaded: tied with the best" if tied else "")
    )
    left.set_ylabel(analysis.metric)
    left.legend(fontsize=8, loc="best")
    left.grid(alpha=0.3)
    speeds = [s.samples_per_second or 0.0 for s in stats]
    if any(speeds):
        right.bar(x, speeds, color="#55A868")
        right.set_xticks(x, [str(s.batch_size) for s in stats])
        right.set_xlabel("batch size")
        right.set_ylabel("samples / s (median)")
        right.yaxis.set_major_formatter(_thousands())
        right.grid(alpha=0.3, axis="y")
    else:
        _empty(right, "No samples_per_second recorded")
    return fig


def plot_forecast(study: optuna.Study, *, factor: int = 8) -> Figure:
    """The batch within 1% of the best and its lr against the samples trained, per budget
    searched, with the fitted power law and its band out to ``factor`` x the largest budget.

    The band widens linearly in log space from the largest budget (where the level itself is
    measured) to the forecast's 95% interval at the target."""
    from bsopt.analysis._forecast import forecast

    fig = _figure(9.5, 3.8)
    left, right = fig.subplots(1, 2)
    seen = [t.user_attrs.get("samples_seen") for t in study.get_trials(deepcopy=False)]
    largest = max((float(v) for v in seen if isinstance(v, (int, float))), default=0.0)
    fc = (
        forecast(study, samples=max(1, round(factor * largest)), resamples=30) if largest else None
    )
    if fc is None or len(fc.levels) < 2:
        for ax in (left, right):
            _empty(ax, "Trials at one budget: no forecast.\nSearch at 3+ budgets, e.g. with\n"
                   "bsopt.search.BudgetLevels.")  # fmt: skip
        return fig
    for name, ax, label in (("batch_size", left, "batch within 1%"), ("lr", right, "lr")):
        points = [(lv.samples, getattr(lv, name)) for lv in fc.levels if getattr(lv, name)]
        _scatter(ax, points, color="C0", zorder=3, label="measured (per budget)")
        value = getattr(fc, name)
        interval = fc.interval if name == "batch_size" else fc.lr_interval
        if value is not None and points:
            start = _at(points, fc.samples, value, points[0][0])
            ax.plot([points[0][0], fc.samples], [start, value], color="C1", label="power law")
            if interval is not None:
                last = points[-1]
                ax.fill_between(
                    [last[0], fc.samples],
                    [last[1], interval[0]],
                    [last[1], interval[1]],
                    color="C1",
                    alpha=0.2,
                    label="95% band",
                )
            ax.scatter([fc.samples], [value], marker="*", s=120, color="C1", zorder=4,
                       label=f"forecast at {fc.samples:,}")  # fmt: skip
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("samples trained (D)")
        ax.set_ylabel(label)
        ax.legend(fontsize=7)
    left.set_title(fc.text.splitlines()[0][:90], fontsize=8)
    return fig


def _at(points: Sequence[tuple[float, float]], target: float, value: float, at: float) -> float:
    """The fitted line's value at ``at``, from its value at ``target`` and the points' slope."""
    import numpy as np

    x = np.log([p[0] for p in points])
    y = np.log([p[1] for p in points])
    slope = float(np.polyfit(x, y, 1)[0]) if len(points) > 1 else 0.0
    return float(value * (at / target) ** slope)


def _png(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    return buffer.getvalue()


# ---------------------------------------------------------------------------------------------
# Text
# ---------------------------------------------------------------------------------------------


def _note(analysis: BatchSizeAnalysis, importances: Importances) -> str:
    return "\n\n".join(
        [
            f"## bsopt verdict: {analysis.study_name}",
            analysis.verdict,
            "### By batch size",
            analysis.to_markdown(),
            "### Hyperparameter importance",
            importances.to_markdown(),
            f"*Written by bsopt report, {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC.*",
        ]
    )


_CSS = """
body{font-family:system-ui,sans-serif;max-width:1000px;margin:2em auto;padding:0 1em;color:#222}
h1{font-size:1.6em}h2{margin-top:1.6em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:1em 0;font-size:.9em}
td,th{border:1px solid #ccc;padding:.25em .6em;text-align:right}th{background:#f4f4f4}
td:first-child,th:first-child{text-align:left}
.verdict{background:#f6fbf6;border-left:4px solid #55A868;padding:.2em 1em}
figure{margin:1.5em 0}img{max-width:100%}figcaption{color:#555;font-size:.9em}
"""


def _importance_html(importances: Importances) -> str:
    """The importance table, what its numbers are, then the notes."""
    table, legend = importances.table(), importances.legend()
    parts = [html_table(table)] if table is not None else []
    if legend is not None:
        parts.append(html_paragraphs([legend]))
    notes = importances.note_lines()
    if notes:
        parts.append(html_list(notes))
    return "\n".join(parts)


def _html(
    study: optuna.Study,
    analysis: BatchSizeAnalysis,
    importances: Importances,
    pngs: dict[str, bytes],
    storage_text: str,
) -> str:
    figures = "\n".join(
        f'<figure id="plot-{name}"><img alt="{html.escape(PLOTS[name])}" '
        f'src="data:image/png;base64,{base64.b64encode(data).decode()}">'
        f"<figcaption>{html.escape(PLOTS[name])}</figcaption></figure>"
        for name, data in pngs.items()
    )
    title = f"bsopt report: {study.study_name}"
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>{_CSS}</style></head><body>
<h1>{html.escape(title)}</h1>
<p>Storage: <code>{html.escape(storage_text)}</code> ·
written {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC</p>
<h2>Verdict</h2>
<div class="verdict" id="verdict">{html_paragraphs(verdict_lines(analysis.findings))}</div>
<h2>By batch size</h2>
{html_table(analysis.table())}
<h2>Hyperparameter importance</h2>
{_importance_html(importances)}
<h2>Plots</h2>
{figures}
</body></html>
"""


def _markdown(
    study: optuna.Study, analysis: BatchSizeAnalysis, importances: Importances, names: list[str]
) -> str:
    parts = [
        f"# bsopt report: {study.study_name}",
        "## Verdict",
        analysis.verdict,
        "## By batch size",
        analysis.to_markdown(),
        "## Hyperparameter importance",
        importances.to_markdown(),
        "## Plots",
        *(f"![{PLOTS[n]}]({n}.png)" for n in names),
    ]
    return "\n\n".join(parts) + "\n"


# ---------------------------------------------------------------------------------------------
# Entry point
# ---------------------------------------------------------------------------------------------


_UNSAFE = re.compile(r"[^\w.-]+")


def safe_folder_name(study_name: str) -> str:
    """``study_name`` as one folder name: characters other than letters, digits (any
    script), ``.``,
    ``_`` and ``-`` become ``_``.

    Raises:
        ValueError: the name holds a NUL character, is an absolute path, or has a ``..``
            part: a report named after it could land outside its folder, so it is refused
            rather than quietly renamed.
    """
    if "\0" in study_name:
        raise ValueError(
            f"The study name {study_name!r} holds a NUL character, which no folder name may "
            "hold. Pass the report folder with --out."
        )
    if (
        Path(study_name).is_absolute()
        or study_name.startswith(("/", "\\"))
        or (re.match(r"^[A-Za-z]:[\\/]", study_name))
    ):
        raise ValueError(
            f"The study name {study_name!r} is an absolute path; the report folder "
            f"{DEFAULT_REPORT_DIR}/<study name> would leave {DEFAULT_REPORT_DIR}. "
            "Pass the report folder with --out."
        )
    if ".." in re.split(r"[\\/]", study_name):
        raise ValueError(
            f"The study name {study_name!r} has a '..' part; the report folder "
            f"{DEFAULT_REPORT_DIR}/<study name> would leave {DEFAULT_REPORT_DIR}. "
            "Pass the report folder with --out."
        )
    name = _UNSAFE.sub("_", study_name).strip(".")
    return name or "_"


def write_file(path: Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` without following a link planted there.

    The bytes go to a new temporary file in the same folder, which then replaces ``path``
    (``os.replace`` renames over a symbolic link itself, never its target), so a link in
    the report folder cannot redirect the write to a file outside it. Returns ``path``.
    """
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    # O_EXCL: a new file of our own, never an existing one or a link (mode 0o666 & ~umask,
    # as an ordinary write would create it).
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    return path


def default_report_folder(study_name: str) -> Path:
    """``bsopt-report/<study name made safe>`` (:func:`safe_folder_name`)."""
    return Path(DEFAULT_REPORT_DIR) / safe_folder_name(study_name)


def write_report(
    study: optuna.Study | str,
    out: str | Path | None = None,
    *,
    storage: str | None = None,
    target: float | None = None,
    min_trials: int = 3,
    importance_seeds: int = 3,
) -> Report:
    """Analyse a stored study and write its report.

    Args:
        study: a study, or the name of one in ``storage``.
        out: the folder to write into (created if needed); default
            ``bsopt-report/<study name>`` in the working directory, the name made safe as
            one folder name (:func:`safe_folder_name`).
        storage: the storage URL when ``study`` is a name (``None``: ``$BSOPT_STORAGE``, then
            ``sqlite:///storage/bsopt.db``).
        target, min_trials: passed to :func:`~bsopt.analyze_batch_sizes`.
        importance_seeds: evaluator seeds for :func:`~bsopt.param_importances`.

    Returns:
        A :class:`Report` naming the files written (``report.html``, ``report.md`` and one PNG
        per plot) and holding the analysis.

    Raises:
        ValueError: no such study; or no ``out`` and a study name that is an absolute path,
            holds a ``..`` part or a NUL character.
    """
    from bsopt.store import mask_url, resolve_storage_url, writable_folder

    if target is not None and not (isinstance(target, (int, float)) and math.isfinite(target)):
        raise ValueError(
            f"target must be a finite number (the metric value to reach), but got {target!r}. "
            "Pass e.g. target=0.95, or None for the worst per-batch-size best value."
        )
    loaded = load_study(study, storage=storage)
    analysis = analyze_batch_sizes(loaded, target=target, min_trials=min_trials)
    importances = param_importances(loaded, seeds=importance_seeds)
    if out is not None and "\0" in str(out):
        raise ValueError(f"out must be a folder path, but {str(out)!r} holds a NUL character.")
    folder = writable_folder(
        Path(out) if out is not None else default_report_folder(loaded.study_name),
        what="report",
        fix="Choose a writable place with --out.",
    )
    # Confirm reruns are not search trials: the verdict and the batch-size plot use them.
    trials = [t for t in loaded.get_trials(deepcopy=False) if not is_confirm_run(t)]
    figures = {
        "history": plot_history(trials, analysis),
        "importance": plot_importance(importances),
        "lr_batch": plot_lr_batch(trials, analysis),
        "curves": plot_curves(trials, analysis),
        "batch_sizes": plot_batch_sizes(analysis),
        "forecast": plot_forecast(loaded),
    }
    for name, fig in figures.items():
        fig.suptitle(PLOTS[name], fontsize=11)
    pngs = {name: _png(fig) for name, fig in figures.items()}
    paths = {}
    for name, data in pngs.items():
        paths[name] = write_file(folder / f"{name}.png", data)
    if isinstance(study, str):
        storage_text = mask_url(resolve_storage_url(storage))
    else:
        # Optuna wraps an RDB storage in a cache; the URL lives on the wrapped one.
        backend = getattr(loaded._storage, "_backend", loaded._storage)
        url = getattr(backend, "url", None)
        storage_text = mask_url(url) if isinstance(url, str) else type(backend).__name__
    html = _html(loaded, analysis, importances, pngs, storage_text)
    html_path = write_file(folder / "report.html", html.encode("utf-8"))
    md = _markdown(loaded, analysis, importances, list(pngs))
    md_path = write_file(folder / "report.md", md.encode("utf-8"))
    return Report(html_path, md_path, paths, analysis, importances)
