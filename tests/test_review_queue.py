"""The review queue on the real sample: what counts as mis-retrieved, severity order, verdict status, changes since
the last reviewed checkpoint, meeting queues that are the same for everyone, and the exports."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from analysis import outcomes as oc
from analysis.review import queue as rq
from analysis.review.render import (
    ReviewContext,
    export_files,
    export_table,
    queue_json,
    summary_html,
    verdict_counts,
)
from chtn.errors import CHTNError
from chtn.ranking import cosine_scores, top_k
from chtn.search import query_side

VERDICT_COLUMNS = [
    "id", "dataset", "checkpoint", "checkpoint_name", "query_id", "direction", "verdict", "note", "reviewer",
    "queue_id", "created_at",
]  # fmt: skip


def _open(name: str):
    from analysis import workspace as ws
    from chtn import gallery as gal

    checkpoint = ws.open_checkpoint(name)
    data, _ = ws.open_dataset(ws.SAMPLE_DATASET, checkpoint)
    gallery = gal.embed_split(checkpoint, data, "test")
    return checkpoint, gallery, gal.evaluate_gallery(gallery, checkpoint.label_names)


@pytest.fixture(scope="module")
def sample():
    checkpoint, gallery, report = _open("chtn_fashion_source")
    return checkpoint, gallery, report, oc.query_outcomes(gallery, report, checkpoint.label_names)


def _verdicts(rows: list[tuple[str, str, str, str, str]]) -> pd.DataFrame:
    """Current-verdict rows (query_id, direction, verdict, note, reviewer) as the store returns them."""
    frame = pd.DataFrame(
        [
            (i, "d", "c", "ck", q, d, v, n, r, None, pd.Timestamp("2026-01-01", tz="UTC"))
            for i, (q, d, v, n, r) in enumerate(rows)
        ],
        columns=VERDICT_COLUMNS,
    )
    return frame


def test_outcomes_agree_with_the_ranking_core(sample):
    checkpoint, gallery, report, outcomes = sample
    assert len(outcomes) == 2 * len(gallery) and set(outcomes["direction"]) == {"i2t", "t2i"}
    for direction in ("i2t", "t2i"):
        side = outcomes[outcomes["direction"] == direction]
        queries, targets = query_side(gallery, direction)
        best = top_k(queries, targets, 1)
        np.testing.assert_array_equal(side["top1_row"], best.indices[:, 0])
        np.testing.assert_array_equal(side["top1_score"], best.scores[:, 0])
        evaluation = getattr(report, direction)
        np.testing.assert_array_equal(side["own_rank"], evaluation.paired_rank)
        np.testing.assert_array_equal(side["kind"] == "wrong_top1", ~evaluation.top1_correct)
        # the first relevant item's rank, checked against a full stable sort of one query's scores
        for row in (0, int(np.argmax(~evaluation.top1_correct))):
            order = np.argsort(-cosine_scores(queries[row], targets)[0], kind="stable")
            relevant = gallery.labels[order] == gallery.labels[row]
            first = side["first_relevant"].iloc[row]
            assert relevant[first - 1] and not relevant[: first - 1].any()


def test_kinds_and_severity_order(sample):
    _, _, _, outcomes = sample
    wrong = oc.misretrievals(outcomes)
    assert len(wrong) == int(outcomes["mis_retrieved"].sum()) > 50
    assert set(wrong["kind"]) == set(oc.KINDS)
    assert (np.diff(wrong["severity"].to_numpy()) <= 0).all()
    assert wrong["severity"].between(0, 1).all()
    low = wrong[wrong["kind"] == "low_ap"]
    assert (low["ap"] < oc.LOW_AP).all()
    outranked = wrong[wrong["kind"] == "pair_outranked"]
    assert (outranked["own_rank"] > outranked["n_relevant"]).all() and (outranked["ap"] >= oc.LOW_AP).all()
    fine = outcomes[~outcomes["mis_retrieved"]]
    assert (fine["own_rank"] <= fine["n_relevant"]).all() and (fine["ap"] >= oc.LOW_AP).all()


def test_status_is_per_reviewer_and_disputes_are_seen(sample):
    _, _, _, outcomes = sample
    wrong = oc.misretrievals(outcomes)
    (q1, d1), (q2, d2) = wrong[["query_id", "direction"]].iloc[:2].itertuples(index=False)
    current = _verdicts(
        [
            (q1, d1, "label noise", "", "ada"),
            (q1, d1, "label noise", "same", "bob"),
            (q2, d2, "model error", "<b>x</b>", "ada"),
            (q2, d2, "ambiguous", "", "bob"),
        ]
    )
    table = rq.annotate(outcomes, current)
    first = table[(table.query_id == q1) & (table.direction == d1)].iloc[0]
    second = table[(table.query_id == q2) & (table.direction == d2)].iloc[0]
    assert (first.status, first.verdict, first.reviewers) == ("reviewed", "label noise ×2", "ada, bob")
    assert second.status == "disputed" and "ada: <b>x</b>" in second.notes
    counts = rq.counts(oc.misretrievals(table))
    assert counts["reviewed"] == 1 and counts["disputed"] == 1 and counts["unreviewed"] == counts["total"] - 2
    only = rq.filter_table(oc.misretrievals(table), statuses=["disputed"])
    assert list(only["query_id"]) == [q2]


def test_changes_since_the_last_reviewed_checkpoint_put_new_regressions_first(sample):
    checkpoint, gallery, report, outcomes = sample
    before = oc.query_outcomes(*_open("chtn_no_source")[1:], checkpoint.label_names)
    table = rq.annotate(outcomes, _verdicts([]), oc.snapshot(before))
    wrong = oc.misretrievals(table)
    merged = wrong.merge(before, on=["query_id", "direction"], suffixes=("", "_before"))
    new = merged["change"] == "new regression"
    assert new.any() and (~merged.loc[new, "mis_retrieved_before"]).all()
    worse = merged["change"] == "worse"
    assert (merged.loc[worse, "ap"] <= merged.loc[worse, "ap_before"] - oc.CHANGE_AP).all()
    changed = rq.filter_table(wrong, changed_only=True)
    assert set(changed["change"]) <= {"new regression", "worse", "better"}
    order = changed["change"].map(oc.CHANGES).to_numpy()
    assert (np.diff(order) >= 0).all() and changed["change"].iloc[0] == "new regression"
    assert (rq.annotate(outcomes, _verdicts([]))["change"] == "not reviewed before").all()


def test_meeting_queue_is_stratified_deterministic_and_survives_a_url_round_trip(sample):
    checkpoint, gallery, _, outcomes = sample
    table = rq.annotate(outcomes, _verdicts([]))
    spec = rq.QueueSpec(size=24, seed=7, strata=("category", "direction"))
    queue = rq.meeting_queue(table, spec)
    assert len(queue) == 24 and list(queue["position"]) == list(range(1, 25))
    assert (np.diff(queue["severity"].to_numpy()) <= 0).all()
    # round-robin over strata: no stratum gives a second item before every stratum has given one
    strata = oc.misretrievals(table).groupby(["category", "direction"]).size()
    assert queue.groupby(["category", "direction"]).size().max() == (1 if len(strata) >= 24 else 2)
    again = rq.meeting_queue(rq.annotate(outcomes.sample(frac=1, random_state=3), _verdicts([])), spec)
    assert list(again["query_id"] + again["direction"]) == list(queue["query_id"] + queue["direction"])
    other = rq.meeting_queue(table, rq.QueueSpec(size=24, seed=8, strata=("category", "direction")))
    assert set(other["query_id"] + other["direction"]) != set(queue["query_id"] + queue["direction"])
    assert rq.QueueSpec.from_params({**spec.to_params(), "checkpoint": "x", "item": "3"}) == spec
    assert rq.QueueSpec.parse("size=24,seed=7,strata=category+direction") == spec
    assert rq.QueueSpec.parse(json.dumps({"size": 24, "seed": 7, "strata": ["category", "direction"]})) == spec
    digest, fingerprint = checkpoint.digest, gallery.data.fingerprint()
    assert spec.queue_id(digest, fingerprint) != spec.queue_id(digest, "other data")
    kinds = rq.meeting_queue(table, rq.QueueSpec(size=500, kinds=("low_ap",), directions=("t2i",)))
    assert len(kinds) == int(((table.kind == "low_ap") & (table.direction == "t2i")).sum())
    stored = rq.queue_from_items(table, list(zip(queue["query_id"], queue["direction"])))
    assert list(stored["query_id"]) == list(queue["query_id"])


@pytest.mark.parametrize(
    "text, field",
    [
        ("size=0", "size"),
        ("size=abc", "size"),
        ("seed=-1", "seed"),
        ("strata=colour", "strata"),
        ("pick=best", "pick"),
        ("directions=", "directions"),
        ("sizes=3", "field=value"),
        ("{not json", "JSON"),
        ("[1, 2]", "field=value"),
        ("size=30,,", "item 2 of 3 is empty"),
        (",size=30", "item 1 of 2 is empty"),
        ("strata=category++kind", "empty value between '\\+' signs"),
        ('{"size": [1]}', "size must be a whole number"),
        ('{"seed": 1.5}', "seed must be a whole number"),
        ('{"categories": [1]}', "categories must be a list of strings"),
        ('{"kinds": null}', "kinds must be a list of strings"),
        ('{"pick": ["severe"]}', "pick must be"),
        ('{"size": 1' + "0" * 5000 + "}", "too many digits"),
        ('{"size": ' * 100_000, "nested too deeply"),
    ],
)
def test_bad_specs_name_the_field(text, field):
    with pytest.raises(CHTNError, match=field):
        rq.QueueSpec.parse(text)


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10)
    | st.sampled_from(["category", "i2t", "wrong_top1", "severe", "30"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8,
)  # fmt: skip


@settings(max_examples=150, deadline=None)
@given(spec=st.dictionaries(st.sampled_from(list(rq.QueueSpec.__dataclass_fields__)), _json_values, max_size=4))
def test_any_json_spec_is_a_spec_or_a_clean_error(spec):
    try:
        parsed = rq.QueueSpec.parse(json.dumps(spec))
    except CHTNError as exc:
        assert str(exc).startswith("Invalid queue spec: ")
    else:
        assert 1 <= parsed.size <= 10_000 and all(isinstance(c, str) for c in parsed.categories)


@settings(max_examples=150, deadline=None)
@given(text=st.text(alphabet="size=30,sed+catgorykindsrpc{}[]\"': ", max_size=40))
def test_any_spec_string_is_a_spec_or_a_clean_error(text):
    try:
        rq.QueueSpec.parse(text)
    except CHTNError as exc:
        assert str(exc).startswith("Invalid queue spec: ")


def test_exports_keep_notes_verbatim_and_inert(sample):
    _, _, _, outcomes = sample
    items = rq.meeting_queue(rq.annotate(outcomes, _verdicts([])), rq.QueueSpec(size=10, pick="severe"))
    q, d = items[["query_id", "direction"]].iloc[0]
    note = '=HYPERLINK("http://x")\n<script>alert(1)</script> \'); DROP TABLE verdicts; --' + "é" * 100_000
    current = _verdicts([(q, d, "data problem", note, "ada")])
    queue = rq.queue_from_items(rq.annotate(outcomes, current), list(zip(items["query_id"], items["direction"])))
    context = ReviewContext("c" * 16, "ck", "d" * 16, "pairs.csv", "meeting queue x", "SQLite file y", "now", "0.1")
    document = json.loads(queue_json(queue, current, current, context))
    first = document["items"][0]
    assert first["current_verdicts"][0]["note"] == note and first["verdict"] == "data problem"
    assert document["counts"] == verdict_counts(queue) and document["counts"]["data problem"] == 1
    page = summary_html(queue, current, current, context)
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "Reviewed 1 of 10" in page
    csv = export_table(queue)
    assert list(csv.columns)[:3] == ["position", "query_id", "direction"] and len(csv) == 10
    names = [f.name for f in export_files(queue, current, current, replace(context, checkpoint_name="ck 1/x"))]
    assert names == ["review_ck-1-x_all-misretrievals.csv", "review_ck-1-x_all-misretrievals.json",
                     "review_ck-1-x_all-misretrievals_summary.html"]  # fmt: skip
    assert export_files(queue, current, current, replace(context, queue_id="q7"))[0].name == "review_ck_q7.csv"
