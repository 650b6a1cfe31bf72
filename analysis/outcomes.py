"""What happened to each query of a checkpoint's test split: its outcome (rank of the own pair, AP, top-1), whether
it is **mis-retrieved** and how badly, and how it changed against another checkpoint. The review queue and the
A/B comparison both read these tables, so "mis-retrieved", "low AP" and "changed" mean one thing everywhere.

Every score and rank comes from :mod:`chtn.ranking` (bit-exact whatever the batch), so outcomes rebuilt on
another machine from the same checkpoint and data list the same queries.

A query is **mis-retrieved** when one of these holds (its *kind* is the first that does):
- ``wrong_top1``: its top-1 result belongs to another category;
- ``low_ap``: its average precision is below ``LOW_AP``;
- ``pair_outranked``: items of other categories outrank its own pair (the pair's rank exceeds the number of
  relevant items). On the sample, the own pair ranks beyond 10 for half the queries, most of them behind
  relevant items only, which is not an error.

**Severity** (0..1, higher first) is the mean of three depths: 1 - AP; how far down the first relevant result
comes (log rank / log gallery size: a confident wrong top-1 pushes every relevant item down); and how far down
the own pair comes (same scale).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from chtn.evaluate import EvaluationReport
from chtn.gallery import Gallery
from chtn.ranking import cosine_scores
from chtn.search import query_side

LOW_AP = 0.5
KINDS = {"wrong_top1": "wrong top-1", "low_ap": "low AP", "pair_outranked": "own pair outranked"}
# A query's AP "changed" between two checkpoints when it moved by at least this much.
CHANGE_AP = 0.05
CHANGES = {"new regression": 0, "worse": 1, "better": 2, "same": 3, "not reviewed before": 4}
_BLOCK = 512  # queries scored at once: a (512 x gallery) float32 block


def _first_relevant(scores: np.ndarray, relevant: np.ndarray) -> np.ndarray:
    """1-based rank of each row's best relevant item under the ordering convention (score desc, row asc);
    0 where a row has no relevant item."""
    masked = np.where(relevant, scores, -np.inf)
    best = masked.max(axis=1, keepdims=True)
    best_row = np.argmax(masked == best, axis=1)[:, None]  # lowest row among the relevant items at that score
    columns = np.arange(scores.shape[1])[None, :]
    before = (scores > best) | ((scores == best) & (columns < best_row))
    return np.where(relevant.any(axis=1), before.sum(axis=1) + 1, 0)


def query_outcomes(gallery: Gallery, report: EvaluationReport, label_names: Sequence[str]) -> pd.DataFrame:
    """Every query of both directions with its outcome: one row per (query, direction), i2t first.

    Columns: row, query_id, direction, category, ap, own_rank, own_tied_with, n_relevant, first_relevant,
    top1_row, top1_id, top1_category, top1_score, kind ('' when retrieved well), mis_retrieved, severity.
    """
    ids = np.asarray(gallery.data.ids)
    names = np.asarray(label_names)
    counts = np.bincount(gallery.labels, minlength=len(label_names))
    frames = []
    for side in (report.i2t, report.t2i):
        queries, targets = query_side(gallery, side.direction)
        n = len(queries)
        first = np.empty(n, dtype=np.int64)
        top1 = np.empty(n, dtype=np.int64)
        top1_score = np.empty(n, dtype=np.float32)
        for lo in range(0, n, _BLOCK):
            scores = cosine_scores(queries[lo : lo + _BLOCK], targets)
            relevant = gallery.labels[None, :] == side.query_labels[lo : lo + _BLOCK, None]
            first[lo : lo + _BLOCK] = _first_relevant(scores, relevant)
            top1[lo : lo + _BLOCK] = np.argmax(scores, axis=1)  # first maximum: the lowest row, as ranking ties
            top1_score[lo : lo + _BLOCK] = scores[np.arange(len(scores)), top1[lo : lo + _BLOCK]]
        n_relevant = counts[side.query_labels]
        own = side.paired_rank
        kind = np.select(
            [~side.top1_correct, side.ap < LOW_AP, own > n_relevant], list(KINDS), default=""
        )  # NaN AP compares False: a query without relevant items is judged by its top-1 only
        depth = np.log(np.maximum(np.stack([first, own]), 1)) / np.log(max(len(targets), 2))
        severity = (np.nan_to_num(1 - side.ap, nan=1.0) + depth[0] + depth[1]) / 3
        frames.append(
            pd.DataFrame(
                {
                    "row": np.arange(n),
                    "query_id": ids,
                    "direction": side.direction,
                    "category": names[side.query_labels],
                    "ap": side.ap,
                    "own_rank": own,
                    "own_tied_with": side.paired_ties.others if side.paired_ties is not None else -1,
                    "n_relevant": n_relevant,
                    "first_relevant": first,
                    "top1_row": top1,
                    "top1_id": ids[top1],
                    "top1_category": names[gallery.labels[top1]],
                    "top1_score": top1_score,
                    "kind": kind,
                    "mis_retrieved": kind != "",
                    "severity": severity,
                }
            )
        )
    return pd.concat(frames, ignore_index=True)


def misretrievals(outcomes: pd.DataFrame) -> pd.DataFrame:
    """The mis-retrieved queries, most severe first (ties: direction, then query row)."""
    wrong = outcomes[outcomes["mis_retrieved"]]
    return wrong.sort_values(["severity", "direction", "row"], ascending=[False, True, True], kind="stable")


def snapshot(outcomes: pd.DataFrame) -> pd.DataFrame:
    """What the store keeps of a checkpoint's outcomes, so later checkpoints can say what changed."""
    return outcomes[["query_id", "direction", "ap", "own_rank", "mis_retrieved"]].reset_index(drop=True)


def changes(items: pd.DataFrame, previous: pd.DataFrame) -> pd.Series:
    """How each item's outcome changed since a previous checkpoint's snapshot (`CHANGES`; "not reviewed before"
    when there is no snapshot or the query was not in it)."""
    if previous.empty:
        return pd.Series("not reviewed before", index=items.index)
    before = previous.set_index(["query_id", "direction"])
    keys = pd.MultiIndex.from_frame(items[["query_id", "direction"]])
    was_wrong = before["mis_retrieved"].reindex(keys).to_numpy()
    old_ap = before["ap"].reindex(keys).to_numpy(dtype=float)
    delta = items["ap"].to_numpy(dtype=float) - old_ap
    now_wrong = items["mis_retrieved"].to_numpy(dtype=bool)
    known = pd.notna(was_wrong)
    was = np.where(known, was_wrong, False).astype(bool)
    label = np.select(
        [~known, now_wrong & ~was, delta <= -CHANGE_AP, delta >= CHANGE_AP],
        ["not reviewed before", "new regression", "worse", "better"],
        default="same",
    )
    return pd.Series(label, index=items.index)
