"""Checkpoint A/B comparison on one dataset: per-query figures of both, their paired differences with intervals
(overall and per category), and the queries B fixed or broke. The "Compare checkpoints" page, the go/no-go rules
(:mod:`analysis.gate_rules`) and `chtn compare` all read these tables.

Conventions (docs/conventions.md): the unit is the per-query difference B - A on the identical query set
(the same dataset fingerprint and ids, ranked by :mod:`chtn.ranking` for both); I->T and T->I are separate
families and their per-query mean is reported too; intervals, tests and Holm come from :mod:`analysis.stats`.

Per-query metrics: AP (``map_*``); the own pair's tie-aware hit at k (``pair_recall@k_*``: 1 if it ranks within k,
the expected share when its exact ties straddle k); the own pair's expected rank (``pair_median_rank_*``, whose
figure is the difference of medians, with a paired bootstrap interval and no test).
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from analysis import stats
from analysis.gate_rules import Decision, RuleResult, RuleSet, decide, evaluate
from analysis.review_queue import CHANGE_AP, query_outcomes
from chtn.errors import CHTNError
from chtn.evaluate import EvaluationReport, RetrievalEval
from chtn.gallery import Gallery

DIRECTIONS = ("i2t", "t2i")
RECALL_AT = (1, 10)
ARROWS = {"i2t": "I->T", "t2i": "T->I"}


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
    """Per query, the tie-aware chance that its own pair ranks within k (the rule of `own_pair_recall`)."""
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
class Comparison:
    """Everything compared, with the statistics' settings (recorded in every output)."""

    figures: pd.DataFrame  # one row per (metric, slice): see `figures`
    queries: pd.DataFrame  # one row per (query, direction): see `query_changes`
    categories: list[str]
    n_queries: int
    resamples: int
    seed: int


def figures(
    a: EvaluationReport,
    b: EvaluationReport,
    ids_a: Sequence[str],
    ids_b: Sequence[str],
    resamples: int = stats.RESAMPLES,
    seed: int = 0,
) -> pd.DataFrame:
    """Paired figures of B against A: every metric on `overall`, the directional ones per `category:<name>`.

    Columns: metric, slice, direction (i2t / t2i / mean), n, baseline, candidate, delta, relative, ci_low, ci_high,
    p_value, p_holm (Holm across the categories x directions of a metric family; NaN on overall), effect_size,
    wins, ties, losses, insufficient. Categories are matched by name (the checkpoints may order them differently).
    A split whose queries are all of one category is insufficient evidence throughout: every item is relevant to
    every query, so each ranking is perfect and no difference can show.
    """
    stats.check_same_queries(ids_a, ids_b, "the baseline's and the candidate's test queries")
    check_comparable(a.label_names, b.label_names, "the baseline", "the candidate")
    values_a, values_b = per_query(a), per_query(b)
    query_labels = np.asarray(a.label_names)[a.i2t.query_labels]
    rows = []
    for metric in values_a:
        direction = metric.rsplit("_", 1)[1] if metric.endswith(DIRECTIONS) else "mean"
        rows.append(_row(metric, "overall", direction, values_a[metric], values_b[metric], resamples, seed))
    for metric in [m for m in values_a if m.endswith(DIRECTIONS) and not _is_median(m)]:
        slices = {f"category:{name}": query_labels == name for name in a.label_names}
        table = stats.compare_slices(values_a[metric], values_b[metric], slices, "holm", resamples, seed)
        for record in table.to_dict("records"):
            rows.append(
                {
                    "metric": metric,
                    "slice": record["slice"],
                    "direction": metric.rsplit("_", 1)[1],
                    **_columns(record),
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


def _columns(record: dict) -> dict:
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
    }


def _row(metric: str, slice_: str, direction: str, a: np.ndarray, b: np.ndarray, resamples: int, seed: int) -> dict:
    """One overall figure: the paired comparison of means, or for median ranks the difference of medians."""
    stream = zlib.crc32(f"{metric}|{slice_}".encode())
    if not _is_median(metric):
        result = stats.paired_comparison(a, b, resamples, seed, stream=stream).to_dict()
        return {"metric": metric, "slice": slice_, "direction": direction, **_columns(result), "p_holm": np.nan}
    low, high = stats.median_difference_ci(a, b, resamples, seed, stream)
    base, cand = float(np.median(a)), float(np.median(b))
    d = b - a
    return {
        "metric": metric,
        "slice": slice_,
        "direction": direction,
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
        "p_holm": np.nan,
    }


def query_changes(outcomes_a: pd.DataFrame, outcomes_b: pd.DataFrame) -> pd.DataFrame:
    """Per (query, direction): both checkpoints' AP and own-pair rank, their changes, and what B did to it:
    **fixed** (mis-retrieved by A, not by B), **broken** (the reverse), better / worse (AP moved by at least
    `review_queue.CHANGE_AP`), same. From `review_queue.query_outcomes` of each checkpoint."""
    keys = ["query_id", "direction"]
    kept = ["row", "category", "ap", "own_rank", "kind", "mis_retrieved", "severity"]
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
    gallery_a: Gallery,
    report_a: EvaluationReport,
    gallery_b: Gallery,
    report_b: EvaluationReport,
    rules: RuleSet,
    strict: bool = False,
) -> Outcome:
    """Both embedded test splits (`chtn.gallery`), compared with the rule file's statistics settings and judged by
    its rules: exactly what the Compare page shows and what `chtn compare` gates on."""
    settings = rules.stats
    table = figures(report_a, report_b, gallery_a.data.ids, gallery_b.data.ids, settings.resamples, settings.seed)
    changes = query_changes(
        query_outcomes(gallery_a, report_a, report_a.label_names),
        query_outcomes(gallery_b, report_b, report_b.label_names),
    )
    comparison = Comparison(
        table, changes, list(report_a.label_names), len(gallery_a), settings.resamples, settings.seed
    )
    results = evaluate(rules, table, report_a.label_names)
    return Outcome(comparison, results, decide(results, strict, settings.min_effect), rules)
