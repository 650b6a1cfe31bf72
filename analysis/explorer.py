"""Retrieval-explorer logic: choosing a query (no Streamlit here); its results come from `chtn.search`.

Every rank, score and tie group comes from :mod:`chtn.ranking`, as in evaluation, so the result grid,
"its own pair ranks", the Overview's paired rank and the Worst / Next mis-retrieval buttons agree.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from chtn.directions import Direction
from chtn.evaluate import EvaluationReport
from chtn.gallery import Gallery
from chtn.ranking import cosine_scores
from chtn.search import query_side

if TYPE_CHECKING:
    from chtn.tower import Tower


def query_score(query: np.ndarray, gallery: Gallery, direction: Direction, result_row: int) -> float:
    """Cosine similarity of a query embedding (a test item's or a free text's) and a result: the very score the
    explorer ranks by."""
    targets = query_side(gallery, direction)[1]
    return float(cosine_scores(query, targets[result_row : result_row + 1])[0, 0])


def pair_score(gallery: Gallery, direction: Direction, query_row: int, result_row: int) -> float:
    """`query_score` of a test query."""
    return query_score(query_side(gallery, direction)[0][query_row], gallery, direction, result_row)


def search_queries(gallery: Gallery, text: str, label_names: Sequence[str]) -> list[int]:
    """Rows whose id equals `text`, or whose title or category contains it (case-insensitive)."""
    needle = text.strip().lower()
    if not needle:
        return list(range(len(gallery)))
    data = gallery.data
    return [
        i
        for i in range(len(gallery))
        if data.ids[i].lower() == needle
        or needle in data.texts[i].lower()
        or needle in label_names[gallery.labels[i]].lower()
    ]


def worst_query(report: EvaluationReport, direction: Direction) -> int:
    """The query with the lowest AP in this direction (first one on ties)."""
    ap = getattr(report, direction).ap
    return int(np.nanargmin(ap))


def worst_query_per_category(
    report: EvaluationReport, direction: Direction, label_names: Sequence[str]
) -> dict[str, int]:
    """Per category, its query with the lowest AP in this direction (first one on ties)."""
    side = getattr(report, direction)
    worst = {}
    for index, name in enumerate(label_names):
        rows = np.flatnonzero(side.query_labels == index)
        if rows.size and np.isfinite(side.ap[rows]).any():
            worst[name] = int(rows[np.nanargmin(side.ap[rows])])
    return worst


def next_misretrieval(report: EvaluationReport, direction: Direction, current: int | None) -> int | None:
    """The next query after `current` (wrapping around) whose top-1 result is wrong; None if there is none."""
    wrong = np.flatnonzero(~getattr(report, direction).top1_correct)
    if len(wrong) == 0:
        return None
    later = wrong[wrong > (-1 if current is None else current)]
    return int(later[0] if len(later) else wrong[0])


def top_tie_note(table: pd.DataFrame) -> str | None:
    """What the page says before the results when the first ones are one tie group (None when the top result stands
    alone): their order there is the gallery order, so the grid's first cards are not the model's preference."""
    if table.empty or table.tied_with.iloc[0] <= 0:
        return None
    last, score = int(table.tie_last.iloc[0]), float(table.score.iloc[0])
    beyond = f", more than the {len(table)} shown" if last > len(table) else ""
    return (
        f"**The first {last} results are tied** at {score:.4f} (to four decimals){beyond}: the model ranks them "
        "equally, and the grid shows them in gallery order, not in an order of preference."
    )


FREE_TEXT_MAX_CHARS = 10_000  # the explorer's free-text box; a longer paste is cut by the browser


def free_text_note(text: str, tower: Tower) -> str | None:
    """What the explorer says about a free-text query that is not read whole (None when it is): the box's character
    limit was reached, or MiniLM's word-piece limit cut it (how much it read; TF-IDF, when present, reads it all)."""
    notes = []
    if len(text) >= FREE_TEXT_MAX_CHARS:
        notes.append(f"The box holds {FREE_TEXT_MAX_CHARS:,} characters: anything pasted beyond them was cut.")
    minilm = tower.text.minilm
    if minilm is not None and (cut := minilm.truncation(text)) is not None:
        pieces, chars = cut
        rest = " TF-IDF features read the whole text." if tower.text.tfidf is not None else ""
        notes.append(
            f"The text model reads at most {minilm.max_length - 2} word pieces: it used the first {chars:,} of "
            f"{len(text):,} characters ({pieces:,} word pieces in all).{rest} Shorten the query to be read whole."
        )
    return " ".join(notes) or None
