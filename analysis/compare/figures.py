"""Checkpoint A/B comparison on one dataset: per-query figures of both, their paired differences with intervals
(overall and per category), and the queries B fixed or broke. The "Compare checkpoints" page, the go/no-go rules
(:mod:`analysis.compare.rules`) and `chtn compare` all read these tables.

Conventions (docs/conventions.md): the unit is the per-query difference B - A on the identical query set
(the same dataset fingerprint and ids, ranked by :mod:`chtn.ranking` for both); I->T and T->I are separate
families and their per-query mean is reported too; intervals, tests and Holm come from :mod:`analysis.stats`.

Per-query metrics: AP (``map_*``); the own pair's tie-aware hit at k (``pair_recall@k_*``: 1 if it ranks within k,
the expected share when its exact ties straddle k); the own pair's expected rank (``pair_median_rank_*``, whose
figure is the difference of medians, with a paired bootstrap interval and no test).
"""

from __future__ import annotations

import dataclasses
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from analysis import stats
from analysis.compare.rules import Decision, RuleResult, RuleSet, decide, evaluate
from analysis.outcomes import CHANGE_AP, query_outcomes
from chtn.directions import DIRECTIONS
from chtn.errors import CHTNError
from chtn.evaluate import EvaluationReport, RetrievalEval
from chtn.gallery import Gallery
from chtn.metrics import METRICS, RECALL_AT


def check_comparable(labels_a: Sequence[str], labels_b: Sequence[str], name_a: str, name_b: str) -> None:
    """Both checkpoints must know the same categories (any order); else a `CHTNError` naming the difference."""
    only_a, only_b = sorted(set(labels_a) - set(labels_b)), sorted(set(labels_b) - set(labels_a))
    if only_a or only_b:
        parts = [f"only {name} knows {', '.join(names[:5])}{' …' if len(names) > 5 else ''}"
                 for name, names in ((name_a, only_a), (name_b, only_b)) if names]  # fmt: skip
        raise CHTNError(
            f"The two checkpoints have different label sets ({'; '.join(parts)}): they retrieve different "
            "categories, so their rankings cannot be compared query by query. Pick two checkpoints trained on the "
            "same categories."
        )


def _recall_hits(side: RetrievalEval, k: int) -> np.ndarray:
    """Per query, the tie-aware chance that its own pair ranks within k (the rule of `own_pair_recall`; NaN if
    unpaired)."""
    if side.paired_exact is None:
        return np.full(len(side.ap), np.nan)
    first, size = side.paired_exact.first, side.paired_exact.others + 1
    return np.clip((k - first + 1) / size, 0.0, 1.0)


def per_query(report: EvaluationReport) -> dict[str, np.ndarray]:
    """Metric name -> per-query values (one per test row): directional metrics and their direction means."""
    values: dict[str, np.ndarray] = {}
    for d in DIRECTIONS:
        side = getattr(report, d)
        values[f"map_{d}"] = side.ap
        for k in RECALL_AT:
            values[f"pair_recall@{k}_{d}"] = _recall_hits(side, k)
        values[f"pair_median_rank_{d}"] = side.own_pair_expected_rank()
    values["map"] = (values["map_i2t"] + values["map_t2i"]) / 2
    for k in RECALL_AT:
        values[f"pair_recall@{k}"] = (values[f"pair_recall@{k}_i2t"] + values[f"pair_recall@{k}_t2i"]) / 2
    return values


def _is_median(metric: str) -> bool:
    return metric.startswith("pair_median_rank")


@dataclass(frozen=True)
class Evaluated:
    """One checkpoint's test split: its name, its embedded gallery (`chtn.gallery`) and its evaluation."""

    name: str
    gallery: Gallery
    report: EvaluationReport


@dataclass(frozen=True)
class Comparison:
    """Everything compared, with the statistics' settings (recorded in every output)."""

    figures: pd.DataFrame  # one row per (metric, slice): see `figures`
    queries: pd.DataFrame  # one row per (query, direction): see `query_changes`
    categories: list[str]
    n_queries: int
    resamples: int
    seed: int
    runs: tuple[int, int] = (1, 1)  # training runs (checkpoints) of A and of B

    @property
    def of_recipes(self) -> bool:
        """Several runs on both sides: the figures hold training-seed variance and speak of the two recipes. With
        one run on a side they compare these checkpoints only."""
        return min(self.runs) >= 2

    def statement(self) -> str:
        """What the figures compare, said on every headline."""
        a, b = self.runs
        if self.of_recipes:
            return (
                f"{a} training runs of A against {b} of B: intervals and tests are across runs (Welch's t), so the "
                "figures compare the two recipes, training-seed variance included."
            )
        if a == b == 1:
            return (
                "One checkpoint per side: the figures compare these two checkpoints, not their recipes (a retrained "
                "run of the same recipe moves them); overall intervals resample whole categories."
            )
        return (
            f"{a} run{'s' if a > 1 else ''} of A against {b} of B: a side with one run holds no training-seed "
            "variance, so the figures compare these checkpoints (each side's runs averaged per query), not recipes."
        )


def _values(reports: Sequence[EvaluationReport]) -> dict[str, np.ndarray]:
    """Metric -> (runs, queries) per-query values of one side's runs."""
    per_run = [per_query(report) for report in reports]
    return {metric: np.stack([values[metric] for values in per_run]) for metric in per_run[0]}


def figures(
    a: Sequence[EvaluationReport],
    b: Sequence[EvaluationReport],
    ids_a: Sequence[str],
    ids_b: Sequence[str],
    resamples: int = stats.RESAMPLES,
    seed: int = 0,
) -> pd.DataFrame:
    """Paired figures of B against A: every metric on `overall`, the directional ones per `category:<name>`.

    `a` and `b` are one side's training runs (one report each, all on the same split). With two or more runs on both
    sides every figure is compared across runs (Welch's t on each run's mean). Otherwise each side's runs are averaged
    per query; the overall figures then resample whole categories (`stats.cluster_comparison`) and the per-category
    ones their queries. Medians of the own pair's rank are a difference of medians with a query bootstrap interval.

    Columns: metric, slice, direction (i2t / t2i / mean), n, baseline, candidate, delta, relative, ci_low, ci_high,
    p_value, p_holm (Holm across the categories of a metric; NaN on overall), effect_size, wins, ties, losses,
    insufficient, unit (queries / clusters / runs), runs_a, runs_b. Categories are matched by name (the checkpoints
    may order them differently). A split whose queries are all of one category is insufficient evidence
    throughout: every item is relevant to every query, so each ranking is perfect and no difference can show.
    """
    stats.check_same_queries(ids_a, ids_b, "the baseline's and the candidate's test queries")
    for report in [*a[1:], *b]:
        check_comparable(a[0].label_names, report.label_names, "the baseline", "the candidate")
    values_a, values_b = _values(a), _values(b)
    query_labels = np.asarray(a[0].label_names)[a[0].i2t.query_labels]
    rows = []
    for metric in values_a:
        direction = METRICS[metric].direction or "mean"
        row = _row(metric, direction, values_a[metric], values_b[metric], query_labels, resamples, seed)
        rows.append(row)
    for metric in [m for m in values_a if m.endswith(DIRECTIONS) and not _is_median(m)]:
        slices = {f"category:{name}": query_labels == name for name in a[0].label_names}
        table = stats.compare_slices(values_a[metric], values_b[metric], slices, "holm", resamples, seed)
        for record in table.to_dict("records"):
            rows.append(
                {
                    "metric": metric,
                    "slice": record["slice"],
                    "direction": metric.rsplit("_", 1)[1],
                    **figure_columns(record),
                    "p_holm": record["p_adjusted"],
                }
            )
    table = pd.DataFrame(rows)
    if len(set(query_labels)) < 2:
        table["insufficient"] = True
    return table


def insufficient_statement(comparison: Comparison) -> str:
    """Why a comparison whose every slice is insufficient evidence says neither GO nor NO-GO, and the fix."""
    n, present = comparison.n_queries, comparison.figures
    categories = int(present.loc[present["slice"] != "overall", "slice"].nunique())
    why = (
        "a single category makes every ranking perfect"
        if categories < 2
        else f"no slice, not even the whole split, reaches the {stats.MIN_QUERIES} queries the statistics need"
    )
    return (
        f"insufficient evidence: the test split has {n} queries in {categories} categor"
        f"{'y' if categories == 1 else 'ies'}: {why}; the gate can say neither GO nor NO-GO. Use a test split "
        f"with at least two categories and {stats.MIN_QUERIES} queries or more."
    )


def figure_columns(record: dict) -> dict:
    """A figure row's statistics columns from a `stats.PairedComparison.to_dict()` record."""
    return {
        "n": record["n"],
        "baseline": record["mean_a"],
        "candidate": record["mean_b"],
        "delta": record["delta"],
        "relative": record["relative"],
        "ci_low": record["ci_low"],
        "ci_high": record["ci_high"],
        "p_value": record["p_value"],
        "effect_size": record["effect_size"],
        "wins": record["wins"],
        "ties": record["ties"],
        "losses": record["losses"],
        "insufficient": record["insufficient"],
        "unit": record["unit"],
        "runs_a": record["runs_a"],
        "runs_b": record["runs_b"],
    }


def _row(
    metric: str,
    direction: str,  # i2t, t2i or mean
    a: np.ndarray,
    b: np.ndarray,
    clusters: np.ndarray,
    resamples: int,
    seed: int,
) -> dict:
    """One overall figure from (runs, queries) values: across runs when both sides have two or more, else by category
    cluster of the per-query means; for median ranks the difference of medians with a query bootstrap interval."""
    stream = zlib.crc32(f"{metric}|overall".encode())
    runs = (len(a), len(b))
    head = {"metric": metric, "slice": "overall", "direction": direction}
    if not _is_median(metric):
        if min(runs) >= 2:
            result = stats.runs_comparison(list(a), list(b))
        else:
            result = stats.cluster_comparison(a.mean(axis=0), b.mean(axis=0), clusters, resamples, seed, stream=stream)
            result = dataclasses.replace(result, runs=runs)
        return {**head, **figure_columns(result.to_dict()), "p_holm": np.nan}
    a, b = a.mean(axis=0), b.mean(axis=0)
    low, high = stats.median_difference_ci(a, b, resamples, seed, stream)
    base, cand = float(np.median(a)), float(np.median(b))
    d = b - a
    return {
        **head,
        "n": len(a),
        "baseline": base,
        "candidate": cand,
        "delta": cand - base,
        "relative": (cand - base) / base if base else np.nan,
        "ci_low": low,
        "ci_high": high,
        "p_value": np.nan,
        "effect_size": np.nan,
        "wins": int((d < -stats.TIE).sum()),  # a lower rank is a win
        "ties": int((np.abs(d) <= stats.TIE).sum()),
        "losses": int((d > stats.TIE).sum()),
        "insufficient": len(a) < stats.MIN_QUERIES,
        "unit": "queries",
        "runs_a": runs[0],
        "runs_b": runs[1],
        "p_holm": np.nan,
    }


def query_changes(outcomes_a: pd.DataFrame, outcomes_b: pd.DataFrame) -> pd.DataFrame:
    """Per (query, direction): both checkpoints' AP, own-pair rank and top-1 result, the changes, and what B did:
    **fixed** (mis-retrieved by A, not by B), **broken** (the reverse), better / worse (AP moved by at least
    `outcomes.CHANGE_AP`), same. From `outcomes.query_outcomes` of each checkpoint."""
    keys = ["query_id", "direction"]
    kept = ["row", "category", "ap", "own_rank", "kind", "mis_retrieved", "severity"]
    kept += ["top1_row", "top1_id", "top1_category", "top1_score"]  # what each checkpoint put first
    both = outcomes_a[keys + kept].merge(outcomes_b[keys + kept], on=keys, suffixes=("_a", "_b"), validate="1:1")
    both["ap_change"] = both["ap_b"] - both["ap_a"]
    both["rank_change"] = both["own_rank_b"] - both["own_rank_a"]
    both["change"] = np.select(
        [
            both["mis_retrieved_a"] & ~both["mis_retrieved_b"],
            ~both["mis_retrieved_a"] & both["mis_retrieved_b"],
            both["ap_change"] >= CHANGE_AP,
            both["ap_change"] <= -CHANGE_AP,
        ],
        ["fixed", "broken", "better", "worse"],
        default="same",
    )
    return both.rename(columns={"row_a": "row", "category_a": "category"}).drop(columns=["row_b", "category_b"])


@dataclass(frozen=True)
class Outcome:
    """A full comparison: the figures, what B did to each query, every rule's result and the gate's decision."""

    comparison: Comparison
    results: list[RuleResult]  # in rule order
    decision: Decision
    rules: RuleSet


def compare_checkpoints(
    a: Sequence[Evaluated], b: Sequence[Evaluated], rules: RuleSet, strict: bool = False
) -> Outcome:
    """Baseline A's and candidate B's training runs (one or more each, the first being the checkpoint in question),
    compared with the rule file's statistics settings and judged by its rules: exactly what the Compare page shows
    and what `chtn compare` gates on. The queries fixed and broken are those of the two first checkpoints."""
    settings = rules.stats
    first_a, first_b = a[0], b[0]
    table = figures(
        [x.report for x in a],
        [x.report for x in b],
        first_a.gallery.data.ids,
        first_b.gallery.data.ids,
        settings.resamples,
        settings.seed,
    )
    for side in (*a[1:], *b[1:]):
        stats.check_same_queries(first_a.gallery.data.ids, side.gallery.data.ids, f"{side.name}'s test queries")
    changes = query_changes(
        query_outcomes(first_a.gallery, first_a.report, first_a.report.label_names),
        query_outcomes(first_b.gallery, first_b.report, first_b.report.label_names),
    )
    comparison = Comparison(
        table,
        changes,
        list(first_a.report.label_names),
        len(first_a.gallery),
        settings.resamples,
        settings.seed,
        (len(a), len(b)),
    )
    results = evaluate(rules, table, first_a.report.label_names)
    return Outcome(comparison, results, decide(results, strict, settings.min_effect), rules)
