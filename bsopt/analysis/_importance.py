"""Hyperparameter importance by three evaluators side by side, each with the trials it used
and its spread over evaluator seeds."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
import warnings

import numpy as np
import optuna
from optuna.distributions import BaseDistribution
from optuna.trial import FrozenTrial

from bsopt.analysis._load import SEARCHED_BATCH, complete_trials, load_study, trial_value
from bsopt.analysis._text import Line, Span, Table, line, markdown, markdown_list, markdown_table

#: Evaluators of :func:`param_importances`, by the name the report shows.
EVALUATORS = ("PED-ANOVA", "fANOVA", "MDI forest")


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
class Interactions:
    """How far the main effects explain the value, from the parameters every trial has.

    ``main_share``: the share of the variance of a random forest fitted to the trials that
    its main effects explain (its partial dependences on one parameter each); the rest is
    interactions between parameters. ``pair``/``pair_share``: the pair with the strongest
    pure two-way interaction and the share it alone explains (its partial dependence less
    the two main effects, Friedman's H). Every evaluator's normalised importances share out
    the main effects only, so with a small ``main_share`` the table misleads.
    ``leaders``: each evaluator's first-ranked parameter.
    """

    main_share: float
    pair: tuple[str, str] | None
    pair_share: float
    leaders: tuple[tuple[str, str], ...]

    def disagree(self) -> bool:
        return len({p for _, p in self.leaders}) > 1


#: Main effects explaining less than this share are worth a sentence, and so is a pair
#: explaining more than :data:`STRONG_PAIR`.
WEAK_MAIN = 0.8
STRONG_PAIR = 0.1


@dataclass(frozen=True)
class Importances:
    """The result of :func:`param_importances`: rows by evaluator, plus notes on what was
    left out and why, and how much of the value interactions hold (``interactions``)."""

    rows: tuple[ImportanceRow, ...]
    notes: tuple[str, ...] = ()
    interactions: Interactions | None = None

    def ranking(self, evaluator: str) -> list[str]:
        """Parameter names by decreasing mean importance under ``evaluator``."""
        rows = [r for r in self.rows if r.evaluator == evaluator]
        return [r.param for r in sorted(rows, key=lambda r: -r.mean)]

    def evaluators(self) -> list[str]:
        """The evaluators with rows, in :data:`EVALUATORS` order."""
        return [e for e in EVALUATORS if any(r.evaluator == e for r in self.rows)]

    def params(self) -> list[str]:
        """Every parameter: ranked by the first evaluator, then the rest by name."""
        ranked = self.ranking(self.evaluators()[0]) if self.rows else []
        return ranked + sorted({r.param for r in self.rows} - set(ranked))

    def table(self) -> Table | None:
        """Parameters × evaluators: mean (± std over seeds) and the trials used."""
        if not self.rows:
            return None
        evaluators = self.evaluators()
        by_key = {(r.evaluator, r.param): r for r in self.rows}
        rows = []
        for p in self.params():
            cells = [self._cell(by_key.get((e, p))) for e in evaluators]
            conditional = any(r.conditional for r in self.rows if r.param == p)
            name = line(p, " ", Span("(conditional)", "em")) if conditional else line(p)
            rows.append((name, *cells))
        header = (line("parameter"), *(line(e) for e in evaluators))
        return Table(header, tuple(rows), ("left", *("right" for _ in evaluators)))

    @staticmethod
    def _cell(row: ImportanceRow | None) -> Line:
        if row is None:
            return line("–")
        spread = f" ± {row.std:.2f}" if row.n_seeds > 1 else ""
        return line(f"{row.mean:.2f}{spread} (n={row.n_trials})")

    def legend(self) -> Line | None:
        """What the table's numbers are, when there is a table."""
        if not self.rows:
            return None
        seeds = {r.evaluator: r.n_seeds for r in self.rows}
        return line(
            "Mean ± std over evaluator seeds ("
            + ", ".join(f"{e}: {seeds[e]}" for e in self.evaluators())
            + "); n = completed trials used."
        )

    def note_lines(self) -> list[Line]:
        """The notes as list items (one saying so when nothing was computed), the
        interactions first."""
        if not self.rows and not self.notes:
            return [line("No importance computed.")]
        return [line(n) for n in (*self.interaction_notes(), *self.notes)]

    def interaction_notes(self) -> list[str]:
        """What the interactions change in reading the table, in words."""
        i = self.interactions
        if i is None:
            return []
        out = [
            f"Main effects explain {100 * i.main_share:.0f}% of the variance of a random "
            "forest fitted to the trials; "
            + (
                "the table's shares are of that part only, normalised to 1."
                if i.main_share < WEAK_MAIN
                else "interactions add little."
            )
        ]
        if i.pair is not None and i.pair_share >= STRONG_PAIR:
            out.append(
                f"Strongest interaction: {i.pair[0]} × {i.pair[1]}, "
                f"{100 * i.pair_share:.0f}% of the variance on its own: the best value of "
                "one depends on the other, so tune them together."
            )
        if i.disagree():
            ranked = "; ".join(f"{e} ranks {p} first" for e, p in i.leaders)
            out.append(
                f"The evaluators disagree ({ranked}): trust only what they share, or run "
                "more trials."
            )
        return out

    def to_markdown(self) -> str:
        """A Markdown table (parameters × evaluators) followed by the notes."""
        table, legend = self.table(), self.legend()
        if table is None or legend is None:
            return markdown_list(self.note_lines())
        notes = markdown_list(self.note_lines())
        return f"{markdown_table(table)}\n\n{markdown(legend)}" + (f"\n{notes}" if notes else "")


def _display_name(param: str) -> str:
    return "batch_size" if param == SEARCHED_BATCH else param


def _searched(distributions: dict[str, BaseDistribution]) -> set[str]:
    """Parameters the sampler actually searched: single-point ones are records, not choices."""
    out = {name for name, dist in distributions.items() if not dist.single()}
    if SEARCHED_BATCH in out:
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


def _check_importance_options(
    evaluators: Sequence[str], seeds: int, n_trees: int, min_trials: int
) -> None:
    unknown = [e for e in evaluators if e not in EVALUATORS]
    if unknown:
        raise ValueError(
            f"evaluators must be chosen from {EVALUATORS}, but got {unknown!r}. "
            "Leave it out to use all three."
        )
    for name, value in (("seeds", seeds), ("n_trees", n_trees), ("min_trials", min_trials)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an integer >= 1, but got {value!r}.")


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
    _check_importance_options(evaluators, seeds, n_trees, min_trials)
    study = load_study(study, storage=storage)
    complete = [t for t in complete_trials(study) if _searched(t.distributions)]
    needed = max(min_trials, 2)
    if len(complete) < needed:
        return Importances(
            (),
            (
                f"Too few completed trials for importance: {len(complete)} "
                f"(at least {needed} needed).",
            ),
        )
    searched = [_searched(t.distributions) for t in complete]
    common = set.intersection(*searched)
    conditional = sorted(set.union(*searched) - common)
    local = _in_memory(study, complete)
    rows: list[ImportanceRow] = []
    notes: list[str] = []
    for group, reported in _groups(common, conditional):
        n_used = sum(1 for s in searched if set(group) <= s)
        if n_used < needed:
            notes.append(
                f"{', '.join(_display_name(p) for p in reported)}: only {n_used} completed "
                f"trials have it (at least {needed} needed); not evaluated."
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
            try:
                values = _evaluate(local, name, group, reported, runs, n_trees)
            except (ValueError, RuntimeError) as e:
                notes.append(f"{name} on {', '.join(group)}: not computed ({e}).")
                continue
            rows.extend(_rows(name, values, n_used, runs, conditional))
    interactions = _interactions(local, sorted(common), rows, n_trees, needed)
    if conditional:
        notes.append(
            "Conditional parameters ("
            + ", ".join(_display_name(p) for p in conditional)
            + ") exist in only some trials; each was evaluated, together with the parameters "
            "every trial has, on the completed trials that have it."
        )
    return Importances(tuple(rows), tuple(notes), interactions)


def _interactions(
    local: optuna.Study, params: list[str], rows: list[ImportanceRow], n_trees: int, needed: int
) -> Interactions | None:
    """:class:`Interactions` of the common ``params`` (two at least), or ``None``."""
    if len(params) < 2 or len(local.trials) < needed:
        return None
    main_share, pair, pair_share = _decomposed(local, params, n_trees)
    leaders = []
    for evaluator in EVALUATORS:
        mine = [r for r in rows if r.evaluator == evaluator and not r.conditional]
        if mine:
            leaders.append((evaluator, max(mine, key=lambda r: r.mean).param))
    return Interactions(main_share, pair, pair_share, tuple(leaders))


def _encoded(local: optuna.Study, params: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """The trials' ``params`` as columns in [0, 1] (log scale where searched so), and
    their values."""
    trials = local.trials
    columns = []
    for p in params:
        dist = trials[0].distributions[p]
        raw = np.array([dist.to_internal_repr(t.params[p]) for t in trials], dtype=float)
        if getattr(dist, "log", False):
            raw = np.log(raw)
        span = raw.max() - raw.min()
        columns.append((raw - raw.min()) / span if span > 0 else np.zeros_like(raw))
    values = np.array([t.value for t in trials], dtype=float)
    return np.column_stack(columns), values


def _decomposed(
    local: optuna.Study, params: list[str], n_trees: int
) -> tuple[float, tuple[str, str] | None, float]:
    """``(main share, strongest pair, its share)`` of the variance of a random-forest fit
    over the trials: the main effects are its partial dependences on one parameter, a pair's
    pure interaction its partial dependence on two less their main effects (Friedman's H)."""
    from sklearn.ensemble import RandomForestRegressor

    x, y = _encoded(local, params)
    forest = RandomForestRegressor(
        n_estimators=max(n_trees, 32), min_samples_leaf=2, random_state=0
    )
    forest.fit(x, y)
    total = float(np.var(forest.predict(x)))
    if total <= 0:
        return 1.0, None, 0.0

    # Partial dependence is averaged over (at most 150) trials: n² predictions per set.
    rows = x[np.random.default_rng(0).permutation(len(x))[:150]]

    def dependence(columns: list[int]) -> np.ndarray:
        # Partial dependence at each trial's own values of ``columns``, centred.
        grid = np.repeat(rows[None, :, :], len(x), axis=0)
        grid[:, :, columns] = x[:, None, columns]
        out = forest.predict(grid.reshape(-1, x.shape[1])).reshape(len(x), len(rows)).mean(1)
        return np.asarray(out - out.mean())

    single = {j: dependence([j]) for j in range(len(params))}
    main = min(1.0, sum(float(np.mean(d**2)) for d in single.values()) / total)
    best: tuple[tuple[str, str] | None, float] = (None, 0.0)
    for j in range(len(params)):
        for k in range(j + 1, len(params)):
            pure = dependence([j, k]) - single[j] - single[k]
            share = float(np.mean(pure**2)) / total
            if share > best[1]:
                best = ((_display_name(params[j]), _display_name(params[k])), share)
    return main, best[0], best[1]


def _groups(common: set[str], conditional: list[str]) -> list[tuple[list[str], list[str]]]:
    """``(evaluated together, reported)`` parameter groups: the common parameters, then each
    conditional one with them. Each group is evaluated on the completed trials that hold all
    of its parameters."""
    groups: list[tuple[list[str], list[str]]] = []
    if common:
        groups.append((sorted(common), sorted(common)))
    for param in conditional:
        groups.append(([*sorted(common), param], [param]))
    return groups


def _in_memory(study: optuna.Study, complete: list[FrozenTrial]) -> optuna.Study:
    """A copy of ``complete`` in an in-memory study, judged on the first objective."""
    # Evaluators re-read the trials several times per call; a copy in memory spares the
    # database those queries (seconds on a 100-trial SQLite study).
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
    return local


def _evaluate(
    local: optuna.Study,
    name: str,
    group: list[str],
    reported: list[str],
    runs: int,
    n_trees: int,
) -> dict[str, list[float]]:
    """The importance of each ``reported`` parameter under ``runs`` seeds of evaluator
    ``name``, evaluated on ``group``."""
    values: dict[str, list[float]] = {p: [] for p in reported}
    for seed in range(runs):
        with warnings.catch_warnings():
            # PED-ANOVA warns on few trials per regime; the n column says it.
            warnings.simplefilter("ignore")
            # NOTE: sorted, because Optuna 5.0's MDI evaluator labels its forest's
            # columns (sorted by name) with the names in the order given.
            result = optuna.importance.get_param_importances(
                local, evaluator=_make_evaluator(name, seed, n_trees), params=sorted(group)
            )
        for p in reported:
            values[p].append(float(result.get(p, 0.0)))
    return values


def _rows(
    name: str, values: dict[str, list[float]], n_used: int, runs: int, conditional: list[str]
) -> list[ImportanceRow]:
    return [
        ImportanceRow(
            evaluator=name,
            param=_display_name(p),
            mean=float(np.mean(vals)),
            std=float(np.std(vals)),
            n_trials=n_used,
            n_seeds=runs,
            conditional=p in conditional,
        )
        for p, vals in values.items()
    ]
