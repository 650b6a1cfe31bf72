"""The Review page's use cases without a browser (analysis.review.workflow): opening a meeting queue from its link,
walking the queue, the counts, what the verdict form shows, and saving the verdicts typed, on a small outcomes table
and a real SQLite review database."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from analysis.review import queue as rq
from analysis.review import workflow as wf
from analysis.review.drafts import Draft, SaveTarget, VerdictDesk
from analysis.review.store import ReviewStore
from analysis.store import StoreError
from chtn.errors import CHTNError

DATASET, CHECKPOINT = "ds0123456789abcd", "ck0123456789abcd"


def _outcomes() -> pd.DataFrame:
    """Eight queries of both directions as analysis.outcomes.query_outcomes lays them out; six are mis-retrieved."""
    rows = []
    for i in range(8):
        wrong = i not in (2, 5)
        rows.append(
            {
                "row": i // 2,
                "query_id": f"q{i // 2}",
                "direction": ("i2t", "t2i")[i % 2],
                "category": ("Heels", "Watches")[i % 2],
                "ap": 0.2 + i / 20,
                "own_rank": 3,
                "own_tied_with": 0,
                "top1_id": "x",
                "top1_category": "Flats",
                "top1_score": 0.5,
                "kind": ("wrong_top1" if i % 3 else "low_ap") if wrong else "",
                "mis_retrieved": wrong,
                "severity": 1 - i / 10 if wrong else 0.0,
            }
        )
    return pd.DataFrame(rows)


def _verdicts(rows: list[tuple[str, str, str, str, str]]) -> pd.DataFrame:
    """Current verdicts (query_id, direction, verdict, note, reviewer) as the store returns them."""
    return pd.DataFrame(
        [
            {"query_id": q, "direction": d, "verdict": v, "note": n, "reviewer": r, "created_at": pd.Timestamp(0)}
            for q, d, v, n, r in rows
        ]
    )


@pytest.fixture
def store(tmp_path: Path) -> ReviewStore:
    return ReviewStore(tmp_path / "review.sqlite")


def test_a_started_meeting_link_opens_the_same_items_for_everyone_and_records_them(store: ReviewStore) -> None:
    annotated = wf.review_state(store, _outcomes(), DATASET, CHECKPOINT).annotated
    spec = rq.QueueSpec(size=4, seed=3, strata=("category",))
    link = wf.start_meeting(spec, CHECKPOINT, DATASET)
    assert link["item"] == "1" and link["queue"] == spec.queue_id(CHECKPOINT, DATASET) and link["size"] == "4"
    opened, items = wf.open_meeting(store, annotated, {**link, "checkpoint": "sample"}, CHECKPOINT, DATASET, "Ada")
    assert opened == spec and len(items) == 4 and list(items["position"]) == [1, 2, 3, 4]
    recorded = store.queue(link["queue"])
    assert recorded["created_by"] == "Ada"
    assert recorded["spec"]["items"] == [[q, d] for q, d in zip(items["query_id"], items["direction"])]
    # someone else, later, with other outcomes (a re-ranking changed the severities): the recorded list, in order
    shuffled = annotated.assign(severity=annotated["severity"][::-1].to_numpy())
    _, again = wf.open_meeting(store, shuffled, link, CHECKPOINT, DATASET)
    assert list(zip(again["query_id"], again["direction"])) == list(zip(items["query_id"], items["direction"]))


def test_a_meeting_link_that_does_not_fit_is_a_clear_error(store: ReviewStore) -> None:
    annotated = wf.review_state(store, _outcomes(), DATASET, CHECKPOINT).annotated
    link = wf.start_meeting(rq.QueueSpec(size=4), CHECKPOINT, DATASET)
    with pytest.raises(CHTNError, match="another checkpoint or dataset"):
        wf.open_meeting(store, annotated, link, "another-checkpoint", DATASET)
    with pytest.raises(CHTNError, match="another checkpoint or dataset, or its spec was edited"):
        wf.open_meeting(store, annotated, {**link, "seed": "7"}, CHECKPOINT, DATASET)
    with pytest.raises(CHTNError, match="size must be a whole number"):
        wf.open_meeting(store, annotated, {**link, "size": "lots"}, CHECKPOINT, DATASET)
    assert store.queue(link["queue"]) is None  # nothing recorded for a link that does not fit


def test_walking_the_queue_clamps_the_item_and_finds_the_next_unreviewed() -> None:
    for text, expected in (("3", 3), ("0", 1), ("99", 5), ("-2", 1), ("²", 1), ("", 1), (None, 1), ("1234567", 1)):
        assert wf.item_position(text, 5) == expected, text
    queue = pd.DataFrame({"position": [1, 2, 3, 4], "status": ["reviewed", "unreviewed", "disputed", "unreviewed"]})
    assert [wf.next_unreviewed(queue, p) for p in (1, 2, 3, 4)] == [2, 4, 4, None]


def test_the_counts_tell_reviewed_disputed_and_new_regressions_apart() -> None:
    outcomes = _outcomes()
    current = _verdicts(
        [
            ("q0", "i2t", "label noise", "", "ada"),
            ("q0", "t2i", "model error", "", "ada"),
            ("q0", "t2i", "label noise", "", "bob"),  # disagreement: disputed
        ]
    )
    previous = outcomes.assign(mis_retrieved=False)[["query_id", "direction", "ap", "own_rank", "mis_retrieved"]]
    annotated = rq.annotate(outcomes, current, previous)
    queue = wf.all_misretrievals(annotated)
    tally = wf.tally(queue, outcomes)
    assert (tally.total, tally.reviewed, tally.disputed, tally.unreviewed) == (6, 2, 1, 4)
    assert tally.new_regressions == 6 and (tally.mis_retrieved, tally.queries) == (6, 8)
    only_heels = wf.all_misretrievals(annotated, categories=["Heels"], statuses=["unreviewed"])
    assert set(only_heels["category"]) == {"Heels"} and set(only_heels["status"]) == {"unreviewed"}
    assert wf.tally(only_heels.iloc[0:0], outcomes).new_regressions == 0


def test_the_form_shows_the_reviewers_own_current_verdict_only() -> None:
    verdicts = _verdicts([("q1", "i2t", "label noise", "old", "ada"), ("q1", "i2t", "model error", "b", "bob")])
    mine = wf.item_verdicts(verdicts, "q1", "i2t")
    assert wf.reviewer_verdict(mine, "bob") == Draft("model error", "b")
    assert wf.reviewer_verdict(mine, "cyd") is None and wf.reviewer_verdict(mine, "") is None
    assert wf.item_verdicts(verdicts, "q1", "t2i").empty and wf.item_verdicts(pd.DataFrame(), "q1", "i2t").empty


def test_drafts_elsewhere_are_named_by_position_or_by_query() -> None:
    queue = pd.DataFrame({"query_id": ["q1", "q2"], "direction": ["i2t", "t2i"], "position": [1, 2]})
    unsaved = [("q1", "i2t"), ("q2", "t2i"), ("q9", "i2t")]
    assert wf.drafts_elsewhere(unsaved, ("q2", "t2i"), queue) == ["#1", "q9 (i2t, not in this queue)"]
    assert (
        wf.drafts_elsewhere([("q2", "t2i")], ("q2", "t2i"), queue)
        == []
        == wf.drafts_elsewhere([], ("q1", "i2t"), queue)
    )


def test_the_item_heading_states_a_tied_own_pair_as_its_range() -> None:
    item = wf.all_misretrievals(rq.annotate(_outcomes(), pd.DataFrame())).iloc[0]
    tied = wf.item_headline(item, 2, (2, 1, 3), "epoch 1 (0abe07f6)")
    assert tied.startswith(f"**#1 · Image → Text** · query `{item['query_id']}` · **Heels**")
    assert "its own pair: ranks 1–3 (#2 in gallery order)" in tied and "since epoch 1 (0abe07f6)" in tied
    alone = wf.item_headline(item, 2, (0, 2, 2), None)
    assert "its own pair: #2 ·" in alone and "gallery order" not in alone
    assert "since no earlier reviewed checkpoint" in alone
    assert wf.choice_label(item, unsaved=True).endswith("· Heels · unreviewed · unsaved draft")


def test_the_pickers_labels_are_each_items_label_with_its_draft_flag() -> None:
    items = wf.all_misretrievals(rq.annotate(_outcomes(), pd.DataFrame()))
    drafted = {(items["query_id"].iloc[1], items["direction"].iloc[1])}
    labels = wf.choice_labels(items, lambda query_id, direction: (query_id, direction) in drafted)
    assert len(labels) == len(items) > 2
    assert labels == [
        wf.choice_label(row, (row["query_id"], row["direction"]) in drafted) for _, row in items.iterrows()
    ]
    assert labels[1].endswith("unsaved draft") and not labels[0].endswith("unsaved draft")


def test_a_long_note_is_cut_saying_how_long_it_is() -> None:
    assert wf.note_excerpt("short") == "short"
    assert wf.note_excerpt("x" * 2500) == "x" * 2000 + "… (2,500 characters in all)"


def test_saving_stores_every_pending_verdict_in_order_and_says_which(store: ReviewStore) -> None:
    state: dict = {"rv_reviewer": "Ada"}
    desk = VerdictDesk(state)
    target = SaveTarget(DATASET, CHECKPOINT, "epoch 1", _outcomes())
    for query_id, verdict in (("q0", "label noise"), ("q1", "model error")):
        verdict_key, note_key = desk.widget_keys(query_id, "i2t")
        state[verdict_key], state[note_key] = verdict, f"on {query_id}"
        desk.request_save(query_id, "i2t", wf.item_label(1, query_id, "i2t"), None)
    announced: list[str] = []
    last = wf.save_pending(desk, store, "", target, lambda pending: announced.append(pending.label))
    assert announced == ["#1 · query q0 (i2t)", "#1 · query q1 (i2t)"] and desk.pending() == []
    stored = store.verdicts(DATASET, CHECKPOINT)
    assert list(stored["note"]) == ["on q0", "on q1"] and last is not None and last.row_id == stored["id"].iloc[-1]
    assert wf.save_pending(desk, store, "", target) == last  # nothing left: the last save is still reported


def test_saving_without_a_database_keeps_the_draft_and_says_why() -> None:
    state: dict = {"rv_reviewer": "Ada"}
    desk = VerdictDesk(state)
    verdict_key, note_key = desk.widget_keys("q0", "i2t")
    state[verdict_key], state[note_key] = "label noise", "keep me"
    desk.request_save("q0", "i2t", "#1 · query q0 (i2t)", None)
    target = SaveTarget(DATASET, CHECKPOINT, "epoch 1", _outcomes())
    assert wf.save_pending(desk, None, "The database is gone.", target) is None
    assert desk.draft("q0", "i2t") == Draft("label noise", "keep me")
    assert "The database is gone." in (desk.error("q0", "i2t") or "")


class _Unreadable(ReviewStore):
    """A store that opened but cannot be read now (the server went away)."""

    def __init__(self) -> None:  # opens nothing
        pass

    def current_verdicts(self, dataset: str, checkpoint: str) -> pd.DataFrame:
        raise StoreError("The server closed the connection.")


def test_an_unreadable_store_still_gives_the_queue_and_the_reason() -> None:
    state, error = wf.open_review_state(_Unreadable(), _outcomes(), DATASET, CHECKPOINT)
    assert error == "The server closed the connection."
    assert len(wf.all_misretrievals(state.annotated)) == 6 and set(state.annotated["status"]) == {"unreviewed"}
    assert wf.verdict_history(None, DATASET, CHECKPOINT)[0].empty


def test_an_export_names_its_queue(store: ReviewStore) -> None:
    spec = rq.QueueSpec(size=4)
    assert wf.queue_name(store, None, None) == "all mis-retrievals"
    assert wf.queue_name(store, "0123456789ab", spec) == f"meeting queue 0123456789ab ({spec.describe()})"
