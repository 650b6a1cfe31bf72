"""Cross-modal retrieval evaluation (MAP) for image<->text models.

Protocol: query set = gallery = test split; every image queries all texts (I->T)
and every text queries all images (T->I) by cosine similarity. An item is
relevant when it shares the query's category label. AP is taken over the full
ranked list ("MAP@all") unless ``at_k`` is given, in which case "MAP@k" is AP over
the top k normalised by the number of relevant items retrieved in the top k (the
definition used by cross-modal papers, e.g. MAP@50); it is 0 if none is retrieved.

Scores and ties are those of :mod:`chtn.ranking`, the module the explorer and the CLI
rank with too: float32 cosine scores with the same bits for one query or a batch; a
tie means exactly equal scores and is broken stably by gallery index (lower index
ranks first, like MATLAB's stable sort). Near-ties (common with softmax features) are
ordered by their value, however small the gap. Queries with no relevant item in the
gallery have undefined AP (NaN): they are excluded from the mean and counted in
``EvaluationReport.summary()``.

Instance-level figures (query i's own pair is gallery row i): the protocol rank of the
pair (``paired_rank``, stable tie-break), its tie group (items whose score rounds to the
same multiple of ``TIE_TOLERANCE``: "tied to four decimals", the order among which the model
did not make), and own-pair
recall@k and median rank under an explicit tie rule: exactly tied items are taken in a
uniformly random order (tie-aware expected values, McSherry & Najork, ECIR 2008). A pair
exactly tied with t other items over ranks [a, a + t] has rank r with probability
1 / (t + 1) for each r there, so it counts min(1, max(0, k - a + 1) / (t + 1)) towards
recall@k, and its expected rank is a + t / 2. The gallery-order tie-break would instead
favour pairs that happen to come first in the file.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from chtn.directions import Direction
from chtn.metrics import RECALL_AT
from chtn.ranking import TIE_TOLERANCE, TieGroups, cosine_scores, normalize_rows, rank_of, tie_groups


@dataclass(frozen=True)
class RetrievalEval:
    """Per-direction result."""

    direction: Direction
    map: float  # mean AP over queries that have >=1 relevant item
    ap: np.ndarray  # (n_queries,) AP per query, NaN where undefined
    paired_rank: np.ndarray  # (n_queries,) 1-based rank of the paired item (same row), -1 if unpaired
    top1_correct: np.ndarray  # (n_queries,) bool: is the top-1 result relevant
    at_k: int | None  # None for MAP over the full ranking
    query_labels: np.ndarray  # (n_queries,) category index of each query (for per-category breakdowns)
    paired_ties: TieGroups | None  # (n_queries,) arrays: the pair's four-decimal tie group; None if unpaired
    paired_exact: TieGroups | None  # (n_queries,) arrays: the items scoring exactly as the pair; None if unpaired

    def own_pair_recall(self, k: int) -> float:
        """Tie-aware expected share of queries whose own pair ranks in the top k (module docstring); NaN if unpaired."""
        if self.paired_exact is None:
            return float("nan")
        first, size = self.paired_exact.first, self.paired_exact.others + 1
        return float(np.mean(np.clip((k - first + 1) / size, 0.0, 1.0)))

    def own_pair_expected_rank(self) -> np.ndarray:
        """(n_queries,) expected rank of each query's own pair with its exact ties in random order (-1 if unpaired)."""
        if self.paired_exact is None:
            return np.full(len(self.ap), -1.0)
        return (self.paired_exact.first + self.paired_exact.last) / 2


def _ranked_ap(rel_sorted: np.ndarray, n_relevant: np.ndarray, at_k: int | None) -> np.ndarray:
    """AP per row of a (n_q, n_g) bool matrix of relevance in ranked order; NaN where n_relevant == 0."""
    rel = rel_sorted[:, :at_k] if at_k is not None else rel_sorted
    hits = np.cumsum(rel, axis=1)
    precision_sum = (hits / np.arange(1, rel.shape[1] + 1) * rel).sum(axis=1)
    retrieved = rel.sum(axis=1)
    ap = np.divide(precision_sum, retrieved, out=np.zeros(len(rel)), where=retrieved > 0)
    return np.where(n_relevant > 0, ap, np.nan)


def average_precision(scores: np.ndarray, relevant: np.ndarray, at_k: int | None = None) -> float:
    """AP of one query given gallery scores (n_g,) and a bool relevance mask (n_g,).

    Ranks by descending score with a stable tie-break by gallery index; NaN if
    nothing is relevant. With ``at_k``, computes MAP@k-style AP over the top k.
    """
    relevant = np.asarray(relevant, dtype=bool)
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
    return float(_ranked_ap(relevant[order][None, :], np.array([relevant.sum()]), at_k)[0])


def evaluate_direction(
    query: np.ndarray,
    gallery: np.ndarray,
    query_labels: np.ndarray,
    gallery_labels: np.ndarray,
    direction: Direction,
    at_k: int | None = None,
    chunk_size: int = 1024,
) -> RetrievalEval:
    """Rank the gallery for every query by cosine similarity and score it.

    Scores come from :func:`chtn.ranking.cosine_scores` ``chunk_size`` query rows at a
    time, so memory stays O(chunk_size * n_gallery) however large the test split is.
    Query i's paired item is gallery row i; its rank and tie groups come from
    :func:`chtn.ranking.rank_of` and :func:`chtn.ranking.tie_groups`, the functions the
    explorer uses. If the sets differ in size ``paired_rank`` is all -1 and there are no
    tie groups.
    """
    q_labels, g_labels = np.asarray(query_labels), np.asarray(gallery_labels)
    if len(query) != len(q_labels) or len(gallery) != len(g_labels):
        raise ValueError("embeddings and labels must have the same number of rows")
    q, g = normalize_rows(query), normalize_rows(gallery)
    n_q, paired = len(q), len(q) == len(g)
    ap = np.full(n_q, np.nan)
    top1 = np.zeros(n_q, dtype=bool)
    for start in range(0, n_q, chunk_size):
        rows = np.arange(start, min(start + chunk_size, n_q))
        order = np.argsort(-cosine_scores(q[rows], g, normalized=True), axis=1, kind="stable")
        relevant = q_labels[rows, None] == g_labels[None, :]
        rel_sorted = np.take_along_axis(relevant, order, axis=1)
        ap[rows] = _ranked_ap(rel_sorted, relevant.sum(axis=1), at_k)
        top1[rows] = rel_sorted[:, 0] if len(g) else False
    rank, ties, exact = np.full(n_q, -1, dtype=np.int64), None, None
    if paired and n_q:
        own = np.arange(n_q)
        rank = rank_of(q, g, own, normalized=True)
        ties = _single(tie_groups(q, g, own[:, None], normalized=True))
        exact = _single(tie_groups(q, g, own[:, None], tolerance=0.0, normalized=True))
    defined = ~np.isnan(ap)
    mean_ap = float(ap[defined].mean()) if defined.any() else float("nan")
    return RetrievalEval(direction, mean_ap, ap, rank, top1, at_k, q_labels, ties, exact)


def _single(groups: TieGroups) -> TieGroups:
    """Tie groups of one result per query as (n_queries,) arrays."""
    return TieGroups(groups.others[:, 0], groups.first[:, 0], groups.last[:, 0])


@dataclass(frozen=True)
class EvaluationReport:
    """Both retrieval directions plus the category names, with tabular views."""

    i2t: RetrievalEval
    t2i: RetrievalEval
    label_names: list[str]

    @property
    def mean_map(self) -> float:
        """Average of the I->T and T->I MAP, the headline number."""
        return (self.i2t.map + self.t2i.map) / 2

    def per_category(self) -> pd.DataFrame:
        """Mean AP of each category's queries (NaN APs skipped), one row per label name."""

        def category_means(r: RetrievalEval) -> pd.Series:
            means = pd.Series(r.ap).groupby(r.query_labels).mean()  # pandas mean skips NaN
            return means.reindex(range(len(self.label_names)))

        i2t, t2i = category_means(self.i2t).to_numpy(), category_means(self.t2i).to_numpy()
        counts = np.bincount(self.i2t.query_labels, minlength=len(self.label_names))
        return pd.DataFrame(
            {"category": self.label_names, "n": counts, "ap_i2t": i2t, "ap_t2i": t2i, "ap_mean": (i2t + t2i) / 2}
        )

    def per_query(self, ids: Sequence[str], texts: Sequence[str] | None = None) -> pd.DataFrame:
        """One row per query per direction (i2t rows first) for error analysis.

        ``paired_rank`` is the protocol rank of the query's own pair; ``paired_tied_with`` the other items
        with its score to four decimals (``chtn.ranking.tie_groups``) and ``paired_tie_first``/``_last`` the ranks
        they span together;
        ``paired_expected_rank`` its rank with exact ties in random order (the rule of the recall figures).
        Paired columns are -1 when query set and gallery differ.
        """
        frames = []
        for r in (self.i2t, self.t2i):
            if len(ids) != len(r.ap) or (texts is not None and len(texts) != len(r.ap)):
                raise ValueError("ids/texts must have one entry per query")
            ties = r.paired_ties or TieGroups(*np.full((3, len(r.ap)), -1))
            frame = pd.DataFrame(
                {
                    "id": list(ids),
                    "direction": r.direction,
                    "category": [self.label_names[i] for i in r.query_labels],
                    "ap": r.ap,
                    "paired_rank": r.paired_rank,
                    "paired_tied_with": ties.others,
                    "paired_tie_first": ties.first,
                    "paired_tie_last": ties.last,
                    "paired_expected_rank": r.own_pair_expected_rank(),
                    "top1_correct": r.top1_correct,
                }
            )
            if texts is not None:
                frame["text"] = list(texts)
            frames.append(frame)
        return pd.concat(frames, ignore_index=True)

    def summary(self) -> dict:
        """Headline numbers; n_queries and n_undefined are summed over both directions.

        Own-pair figures per direction (NaN when query set and gallery differ): ``pair_recall@1``,
        ``pair_recall@10`` and ``pair_median_rank`` under the tie-aware rule of the module docstring, and
        ``pair_median_stable_rank``, the median of the protocol rank (the per-query table's column).
        """
        k = self.i2t.at_k
        out = {
            "map_i2t": self.i2t.map,
            "map_t2i": self.t2i.map,
            "map_mean": self.mean_map,
            "at_k": k,
            "metric": "MAP@all" if k is None else f"MAP@{k}",
            "n_queries": len(self.i2t.ap) + len(self.t2i.ap),
            "n_undefined": int(np.isnan(self.i2t.ap).sum() + np.isnan(self.t2i.ap).sum()),
        }
        for r in (self.i2t, self.t2i):
            paired, d = r.paired_exact is not None, r.direction
            for k in RECALL_AT:
                out[f"pair_recall@{k}_{d}"] = r.own_pair_recall(k)
            out[f"pair_median_rank_{d}"] = float(np.median(r.own_pair_expected_rank())) if paired else float("nan")
            out[f"pair_median_stable_rank_{d}"] = float(np.median(r.paired_rank)) if paired else float("nan")
        out["pair_tie_rule"] = "exactly tied items in random order (tie-aware expected values, McSherry & Najork 2008)"
        out["tie_tolerance"] = TIE_TOLERANCE
        return out


def evaluate_embeddings(
    image_emb: np.ndarray, text_emb: np.ndarray, labels: np.ndarray, label_names: Sequence[str], at_k: int | None = None
) -> EvaluationReport:
    """Evaluate I->T and T->I retrieval; row i of each modality is a pair with category labels[i]."""
    labels = np.asarray(labels)
    return EvaluationReport(
        evaluate_direction(image_emb, text_emb, labels, labels, "i2t", at_k),
        evaluate_direction(text_emb, image_emb, labels, labels, "t2i", at_k),
        list(label_names),
    )
