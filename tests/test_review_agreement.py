"""Agreement between reviewers (analysis.review.agreement) against a hand-written reference, and what the meeting's
exports say about it: agreement, the items still disputed, each item's verdict history and its pictures."""

from __future__ import annotations

import csv
import io
import json
from itertools import permutations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import cohen_kappa_score

from analysis.review import queue as rq
from analysis.review.agreement import agreement
from analysis.review.render import ReviewContext, export_files
from analysis.review.store import VERDICTS


def _current(rows: list[tuple[str, str, str]]) -> pd.DataFrame:
    """Current verdicts (query_id, reviewer, verdict), all image-to-text."""
    return pd.DataFrame(
        [(q, "i2t", r, v) for q, r, v in rows], columns=["query_id", "direction", "reviewer", "verdict"]
    )


def _reference_alpha(units: list[list[str]]) -> float:
    """Krippendorff's nominal alpha from its definition: pairable values of each unit with m_u >= 2 values,
    alpha = 1 - (n - 1) * sum_u sum_{pairs i != j} [v_i != v_j] / (m_u - 1)  /  sum_{c != k} n_c n_k."""
    units = [u for u in units if len(u) >= 2]
    n = sum(len(u) for u in units)
    observed = sum(sum(a != b for a, b in permutations(u, 2)) / (len(u) - 1) for u in units)
    totals = pd.Series([v for u in units for v in u]).value_counts()
    expected = n * n - float((totals**2).sum())
    return 1 - (n - 1) * observed / expected


def test_alpha_and_kappa_match_their_definitions_and_only_shared_items_count():
    current = _current(
        [
            ("a", "ada", "model error"), ("a", "bo", "model error"),
            ("b", "ada", "label noise"), ("b", "bo", "model error"),
            ("c", "ada", "ambiguous"), ("c", "bo", "ambiguous"), ("c", "cy", "label noise"),
            ("d", "ada", "acceptable"),  # one reviewer: not an agreement item
        ]
    )  # fmt: skip
    result = agreement(current)
    assert result.items == 3 and result.reviewers == 3
    units = [["model error", "model error"], ["label noise", "model error"], ["ambiguous", "ambiguous", "label noise"]]
    assert result.alpha == pytest.approx(_reference_alpha(units))
    ada_bo = cohen_kappa_score(["model error", "label noise", "ambiguous"], ["model error", "model error", "ambiguous"])
    assert result.kappa == pytest.approx(ada_bo) and result.kappa_pairs == 1  # ada-cy and bo-cy share one item only
    assert result.disputed["query_id"].tolist() == ["b", "c"]
    assert result.disputed["verdicts"].tolist()[0] == "ada: label noise; bo: model error"
    per_class = result.per_class.set_index("verdict")
    assert per_class.loc["ambiguous", "items"] == 1 and per_class.loc["acceptable", "items"] == 0
    binary = [[str(v == "ambiguous") for v in u] for u in units]
    assert per_class.loc["ambiguous", "alpha"] == pytest.approx(_reference_alpha(binary))
    only_a = agreement(current, pd.DataFrame({"query_id": ["a", "d"], "direction": ["i2t", "i2t"]}))
    assert only_a.items == 1 and only_a.alpha is None and "same verdict" in only_a.note


def test_no_shared_item_says_what_agreement_needs():
    result = agreement(_current([("a", "ada", "model error"), ("b", "bo", "label noise")]))
    assert result.items == 0 and result.alpha is None and "two or more reviewers" in result.summary()
    assert agreement(_current([])).items == 0


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from("abcdef"), st.sampled_from(["ada", "bo", "cy"]), st.sampled_from(VERDICTS)),
        max_size=18,
        unique_by=lambda row: row[:2],
    )
)
def test_any_set_of_verdicts_gives_bounded_figures(rows):
    result = agreement(_current(rows))
    for value in (result.alpha, result.kappa):
        assert value is None or -1.0 <= value <= 1.0 + 1e-9
    if result.alpha is not None:
        units = _current(rows).groupby("query_id")["verdict"].apply(list).tolist()
        assert result.alpha == pytest.approx(_reference_alpha(units))
    assert len(result.disputed) <= result.items


def test_exports_carry_agreement_disputes_history_and_pictures(tmp_path):
    from PIL import Image

    images = []
    for i in range(3):
        path = tmp_path / f"{i}.png"
        Image.new("RGB", (40, 30), (80 * i, 20, 200)).save(path)
        images.append(path)
    queue = pd.DataFrame(
        {
            "position": [1, 2, 3], "query_id": ["a", "b", "c"], "direction": ["i2t"] * 3, "category": ["x"] * 3,
            "kind": ["k"] * 3, "severity": [1.0] * 3, "ap": [0.1] * 3, "own_rank": [2] * 3, "own_tied_with": [0] * 3,
            "top1_id": ["b", "c", "a"], "top1_category": ["y"] * 3, "top1_score": [0.9] * 3, "change": [""] * 3,
            "row": [0, 1, 2], "top1_row": [1, 2, 0],
        }
    )  # fmt: skip
    stamps = pd.to_datetime(["2026-12-03 10:01", "2026-12-03 10:02", "2026-12-03 10:05", "2026-12-03 10:06"], utc=True)
    history = pd.DataFrame(
        {
            "id": [1, 2, 3, 4], "query_id": ["a", "a", "a", "b"], "direction": ["i2t"] * 4,
            "reviewer": ["ada", "bo", "ada", "ada"], "note": ["", "", "we agree", ""], "created_at": stamps,
            "verdict": ["model error", "label noise", "label noise", "ambiguous"], "checkpoint": "c" * 16,
            "queue_id": "q",
        }
    )  # fmt: skip
    current = history[history["id"].isin([2, 3, 4])]
    dispute = pd.concat([current, current.iloc[[0]].assign(id=5, query_id="c", verdict="acceptable")])
    dispute = pd.concat([dispute, dispute.iloc[[-1]].assign(id=6, reviewer="ada", verdict="model error")])
    annotated = rq.annotate(queue, dispute)
    context = ReviewContext("c" * 16, "ck", "d" * 16, "pairs.csv", "meeting queue q", "SQLite file", "now", "0.1", "q")
    files = {f.name: f.payload for f in export_files(annotated, dispute, history, context, images)}
    rows = list(csv.DictReader(io.StringIO(files["review_ck_q.csv"].decode())))
    assert rows[0]["verdict_history"] == (
        "2026-12-03 10:01 ada: model error · 2026-12-03 10:02 bo: label noise · 2026-12-03 10:05 ada: label noise"
    )
    assert rows[0]["query_image"] == str(images[0]) and rows[0]["top1_image"] == str(images[1])
    document = json.loads(files["review_ck_q.json"])
    assert document["agreement"]["items"] == 2 and document["agreement"]["disputed"][0]["query_id"] == "c"
    assert all(r["alpha"] is None or isinstance(r["alpha"], float) for r in document["agreement"]["per_class"])
    page = files["review_ck_q_summary.html"].decode()
    assert "Still disputed (1)" in page and "bo: acceptable" not in page  # the dispute is listed by item
    assert page.count("data:image/jpeg;base64,") == 2  # the disputed item and the noted one, nothing else
    assert "Krippendorff&#x27;s alpha" in page and "History: 2026-12-03 10:01 ada: model error" in page
    assert np.isfinite(document["agreement"]["alpha"])
