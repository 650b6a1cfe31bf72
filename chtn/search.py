"""One query's results over an embedded split: top-k with tie groups and where the query's own pair ranks.

The dashboard's retrieval explorer and `chtn search` show exactly this. Every rank, score and tie group comes
from :mod:`chtn.ranking`, as in evaluation.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from chtn.directions import Direction
from chtn.gallery import Gallery
from chtn.ranking import rank_of, tie_groups, top_k


def query_side(gallery: Gallery, direction: Direction) -> tuple[np.ndarray, np.ndarray]:
    """(query embeddings, gallery embeddings) for a direction."""
    return (gallery.image, gallery.text) if direction == "i2t" else (gallery.text, gallery.image)


@dataclass(frozen=True)
class ResultView:
    """Top-k results of one query, ready to render.

    ``table`` columns: rank, row, id, score, tied_with, tie_first, tie_last, category, relevant, text, image;
    ``tied_with`` counts the other allowed items whose score rounds to the result's (``chtn.ranking.tie_groups``) and
    ``tie_first``..``tie_last`` are the ranks they span together (the order inside is the tie-break).
    """

    table: pd.DataFrame
    paired_rank: int | None  # 1-based rank of the query's own pair among the allowed rows (0 = filtered out)
    paired_tie: tuple[int, int, int] | None  # its (tied_with, tie_first, tie_last); None if filtered out or no pair
    n_allowed: int  # gallery rows after the category filter


def retrieve(
    gallery: Gallery,
    direction: Direction,
    query: np.ndarray,
    k: int,
    label_names: Sequence[str],
    categories: Sequence[str] | None = None,
    query_label: int | None = None,
    paired_row: int | None = None,
) -> ResultView:
    """Top-k of `query` over the other modality of the gallery, optionally restricted to some categories,
    with each result's tie group (and the own pair's, when it is in the filtered gallery)."""
    _, targets = query_side(gallery, direction)
    mask = None
    if categories:
        wanted = [label_names.index(c) for c in categories]
        mask = np.isin(gallery.labels, wanted)
    found = top_k(query, targets, k, mask=mask)
    rows = found.indices[0]
    pair_allowed = paired_row is not None and (mask is None or bool(mask[paired_row]))
    probe = np.append(rows, [paired_row]) if pair_allowed else rows  # one pass gives the pair's group too
    groups = tie_groups(query, targets, probe[None, :], mask=mask)
    data = gallery.data
    table = pd.DataFrame(
        {
            "rank": np.arange(1, len(rows) + 1),
            "row": rows,
            "id": [data.ids[r] for r in rows],
            "score": found.scores[0],
            "tied_with": groups.others[0, : len(rows)],
            "tie_first": groups.first[0, : len(rows)],
            "tie_last": groups.last[0, : len(rows)],
            "category": [label_names[gallery.labels[r]] for r in rows],
            "relevant": [None if query_label is None else bool(gallery.labels[r] == query_label) for r in rows],
            "text": [data.texts[r] for r in rows],
            "image": [str(data.image_paths[r]) for r in rows],
        }
    )
    paired = paired_tie = None
    if paired_row is not None:
        paired = int(rank_of(query, targets, np.array([paired_row]), mask=mask)[0])
    if pair_allowed:
        paired_tie = (int(groups.others[0, -1]), int(groups.first[0, -1]), int(groups.last[0, -1]))
    return ResultView(table, paired, paired_tie, int(len(targets) if mask is None else mask.sum()))
