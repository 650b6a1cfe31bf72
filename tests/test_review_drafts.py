"""What a reviewer types on the Review page, kept until the review database has it (analysis.review.drafts), on a
real SQLite file and the sample's outcomes: a save pressed before moving on is stored by the next run, a refused
save keeps the draft, and coming back to an item shows its unsaved draft."""

from __future__ import annotations

import dataclasses
import sqlite3
from pathlib import Path

import pytest

from analysis import outcomes as oc
from analysis.review.drafts import NO_NAME, Draft, SaveTarget, VerdictDesk
from analysis.review.store import ReviewStore


@pytest.fixture(scope="module")
def target() -> SaveTarget:
    from analysis import workspace as ws
    from chtn import gallery as gal

    checkpoint = ws.open_checkpoint(ws.DEFAULT_CHECKPOINT)
    data, _ = ws.open_dataset(ws.SAMPLE_DATASET, checkpoint)
    gallery = gal.embed_split(checkpoint, data, "test")
    outcomes = oc.query_outcomes(gallery, gal.evaluate_gallery(gallery, checkpoint.label_names), checkpoint.label_names)
    return SaveTarget(data.fingerprint(), checkpoint.digest, checkpoint.path.stem, outcomes)


def _type(desk: VerdictDesk, item: tuple[str, str], verdict: str | None, note: str) -> None:
    """What the widgets do: hold the value, then call their on_change callback."""
    verdict_key, note_key = desk.widget_keys(*item)
    desk.state[verdict_key], desk.state[note_key] = verdict, note
    desk.keep_draft(*item)


def _leave(desk: VerdictDesk, item: tuple[str, str]) -> None:
    """Streamlit forgets the state of widgets a run does not draw: what navigating away does to an item's form."""
    for key in desk.widget_keys(*item):
        desk.state.pop(key, None)


def test_a_save_pressed_just_before_moving_on_is_stored_by_the_next_run(tmp_path: Path, target: SaveTarget) -> None:
    store = ReviewStore(tmp_path / "review.sqlite")
    state: dict = {"rv_reviewer": " Ada "}
    desk, item, other = VerdictDesk(state), ("q7", "i2t"), ("q9", "t2i")
    _type(desk, item, "label noise", "the caption says socks")
    desk.request_save(*item, "#1 · query q7 (i2t)", "meeting1")
    _leave(desk, item)  # J was pressed: the run that would have saved is gone, the next shows another item
    _type(desk, other, "model error", "")  # and the reviewer is already typing there
    result = VerdictDesk(state).save_next(store, "", target)  # the next run, with a desk over the same session
    stored = store.verdicts(target.dataset, target.checkpoint)
    assert result.error is None and list(stored["id"]) == [result.row_id]
    assert stored.iloc[0][["query_id", "verdict", "note", "reviewer", "queue_id"]].tolist() == [
        "q7", "label noise", "the caption says socks", "Ada", "meeting1"
    ]  # fmt: skip
    assert desk.pending() == [] and desk.saved_id(*item) == result.row_id and desk.draft(*item) is None
    assert desk.draft(*other) == Draft("model error", "") and desk.unsaved() == [other]
    assert len(store.outcomes(target.dataset, target.checkpoint)) == len(target.outcomes)  # the snapshot with it


def test_a_refused_save_keeps_the_draft_and_coming_back_shows_it(tmp_path: Path, target: SaveTarget) -> None:
    path = tmp_path / "review.sqlite"
    store = ReviewStore(path, busy_timeout_s=0.2)
    state: dict = {"rv_reviewer": "Ada"}
    desk, item = VerdictDesk(state), ("q7", "i2t")
    _type(desk, item, "ambiguous", "typed while someone else was writing")
    desk.request_save(*item, "#1 · query q7 (i2t)", None)
    _leave(desk, item)
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another writer holds the lock past the busy timeout
    try:
        result = desk.save_next(store, "", target)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert result.row_id is None and "locked" in result.error and "still in the form" in result.error
    assert desk.error(*item) == result.error and store.verdicts(target.dataset).empty
    desk.prefill(*item, stored=None)  # back on the item: the form shows the draft
    assert [state[k] for k in desk.widget_keys(*item)] == ["ambiguous", "typed while someone else was writing"]
    desk.request_save(*item, "#1 · query q7 (i2t)", None)  # the lock is gone: the same text saves
    assert desk.error(*item) is None
    saved = desk.save_next(store, "", target)
    assert list(store.verdicts(target.dataset)["note"]) == ["typed while someone else was writing"]
    assert desk.saved_id(*item) == saved.row_id and desk.unsaved() == []


@pytest.mark.parametrize(
    "reviewer, verdict, available, reason",
    [("", "ambiguous", True, NO_NAME), ("Ada", None, True, "choose a verdict"), ("Ada", "ambiguous", False, "gone")],
)
def test_a_save_that_cannot_be_done_says_why_and_keeps_the_text(
    tmp_path: Path, target: SaveTarget, reviewer: str, verdict: str | None, available: bool, reason: str
) -> None:
    store = ReviewStore(tmp_path / "review.sqlite") if available else None
    desk, item = VerdictDesk({"rv_reviewer": reviewer}), ("q7", "i2t")
    _type(desk, item, verdict, "keep me")
    desk.request_save(*item, "#1", None)
    result = desk.save_next(store, "The database is gone.", target)
    assert reason in result.error and desk.draft(*item) == Draft(verdict, "keep me") and desk.pending() == []
    if store is not None:
        assert store.verdicts(target.dataset).empty


def test_text_typed_after_pressing_save_stays_a_draft(tmp_path: Path, target: SaveTarget) -> None:
    store = ReviewStore(tmp_path / "review.sqlite")
    desk, item = VerdictDesk({"rv_reviewer": "Ada"}), ("q7", "i2t")
    _type(desk, item, "acceptable", "first thought")
    desk.request_save(*item, "#1", None)
    _type(desk, item, "acceptable", "first thought, and a second one")  # typed on while the save was pending
    desk.save_next(store, "", target)
    assert list(store.verdicts(target.dataset)["note"]) == ["first thought"]
    assert desk.draft(*item) == Draft("acceptable", "first thought, and a second one")


def test_the_stored_verdict_fills_a_form_without_a_draft_and_a_live_form_is_left_alone() -> None:
    state: dict = {}
    desk, item = VerdictDesk(state), ("q7", "i2t")
    desk.prefill(*item, Draft("label noise", "from the store"))
    assert [state[k] for k in desk.widget_keys(*item)] == ["label noise", "from the store"]
    state[desk.widget_keys(*item)[1]] = "being typed"
    desk.prefill(*item, Draft("label noise", "from the store"))
    assert state[desk.widget_keys(*item)[1]] == "being typed"


def test_the_last_save_is_remembered_for_the_runs_after_it(tmp_path: Path, target: SaveTarget) -> None:
    state: dict = {"rv_reviewer": "Ada"}
    desk, store = VerdictDesk(state), ReviewStore(tmp_path / "review.sqlite")
    assert desk.last_saved() is None
    _type(desk, ("q7", "i2t"), "acceptable", "")
    desk.request_save("q7", "i2t", "#1", None)
    saved = desk.save_next(store, "", target)
    assert VerdictDesk(state).last_saved() == saved and saved.row_id == store.verdicts(target.dataset)["id"][0]


def test_moving_on_saves_a_chosen_verdict_and_keeps_a_note_alone(tmp_path: Path, target: SaveTarget) -> None:
    """J / K / U and the picker: a Save pressed just before may not have reached the server; the verdict chosen is
    saved anyway, once, and a note without a verdict stays a draft."""
    store = ReviewStore(tmp_path / "review.sqlite")
    desk, item, other = VerdictDesk({"rv_reviewer": "Ada"}), ("q7", "i2t"), ("q9", "t2i")
    _type(desk, item, "label noise", "Ctrl+Enter never arrived")
    desk.save_on_leave(*item, "#1", "meeting1")
    desk.save_on_leave(*item, "#1", "meeting1")  # pressed twice: queued once
    _type(desk, other, None, "a thought, no verdict yet")
    desk.save_on_leave(*other, "#2", "meeting1")
    assert [(p.query_id, p.draft.note) for p in desk.pending()] == [("q7", "Ctrl+Enter never arrived")]
    desk.save_next(store, "", target)
    assert list(store.verdicts(target.dataset)["note"]) == ["Ctrl+Enter never arrived"]
    assert desk.unsaved() == [other] and desk.save_next(store, "", target) is None


def test_two_overlapping_runs_save_a_pending_verdict_once(tmp_path: Path, target: SaveTarget) -> None:
    """A run blocked on a locked database while the next run of the session starts: both work through the same
    queue, and the verdict is stored once, with no error in either (this was an IndexError on the page)."""
    import threading

    path = tmp_path / "review.sqlite"
    store, state = ReviewStore(path), {"rv_reviewer": "Ada"}
    desk, item = VerdictDesk(state), ("q7", "i2t")
    _type(desk, item, "model error", "saved once")
    desk.request_save(*item, "#1", None)
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    results: list = []
    runs = [threading.Thread(target=lambda: results.append(VerdictDesk(state).save_next(store, "", target)))]
    runs.append(threading.Thread(target=lambda: results.append(VerdictDesk(state).save_next(store, "", target))))
    for run in runs:
        run.start()
    threading.Event().wait(0.5)  # both are in: one waits for the database, the other for the first
    holder.execute("ROLLBACK")
    holder.close()
    for run in runs:
        run.join()
    stored = store.verdicts(target.dataset)
    assert list(stored["note"]) == ["saved once"] and sorted(r is None for r in results) == [False, True]


def test_moving_on_from_what_the_database_holds_saves_nothing_again(tmp_path: Path, target: SaveTarget) -> None:
    """Saved with Ctrl+Enter, then J: the form still holds the saved text, which is not stored a second time; nor is
    a verdict stored in an earlier session that the form merely shows."""
    store = ReviewStore(tmp_path / "review.sqlite")
    desk, item, earlier = VerdictDesk({"rv_reviewer": "Ada"}), ("q7", "i2t"), ("q9", "t2i")
    _type(desk, item, "ambiguous", "once")
    desk.request_save(*item, "#1", None)
    desk.save_next(store, "", target)
    desk.save_on_leave(*item, "#1", None)
    desk.prefill(*earlier, Draft("acceptable", "from yesterday"))
    desk.save_on_leave(*earlier, "#2", None)
    assert desk.pending() == [] and desk.unsaved() == [] and len(store.verdicts(target.dataset)) == 1


def test_a_save_delivered_twice_or_of_what_is_stored_adds_no_row(tmp_path: Path, target: SaveTarget) -> None:
    store = ReviewStore(tmp_path / "review.sqlite")
    desk, item = VerdictDesk({"rv_reviewer": "Ada"}), ("q7", "i2t")
    _type(desk, item, "ambiguous", "once")
    desk.request_save(*item, "#1", None)
    desk.request_save(*item, "#1", None)  # the same Ctrl+Enter, delivered again
    assert len(desk.pending()) == 1
    desk.save_next(store, "", target)
    desk.request_save(*item, "#1", None)  # pressed again on the saved text
    assert desk.pending() == [] and len(store.verdicts(target.dataset)) == 1
    _type(desk, item, "ambiguous", "once, and more")  # a change is a new row
    desk.request_save(*item, "#1", None)
    desk.save_next(store, "", target)
    assert list(store.verdicts(target.dataset)["note"]) == ["once", "once, and more"]


def test_one_verdict_queued_twice_is_one_row_and_a_changed_mind_a_new_row(tmp_path: Path, target: SaveTarget) -> None:
    """A Save and a move-on delivered in overlapping runs can queue one verdict twice (under different labels): the
    database gets one row. Changing the verdict and changing it back is three rows, the latest being the last."""
    store = ReviewStore(tmp_path / "review.sqlite")
    state: dict = {"rv_reviewer": "Ada"}
    desk, item = VerdictDesk(state), ("q7", "i2t")
    _type(desk, item, "label noise", "socks")
    desk.request_save(*item, "#1 · query q7 (i2t)", None)
    desk.state["rv_pending"].append(dataclasses.replace(desk.pending()[0], label="#2 · query q7 (i2t)"))
    first, second = desk.save_next(store, "", target), desk.save_next(store, "", target)
    assert first.row_id == second.row_id and second.error is None
    assert len(store.verdicts(target.dataset, target.checkpoint)) == 1
    for verdict in ("model error", "label noise"):
        _type(desk, item, verdict, "socks")
        desk.request_save(*item, "#1 · query q7 (i2t)", None)
        desk.save_next(store, "", target)
    stored = store.verdicts(target.dataset, target.checkpoint).sort_values("id")
    assert stored["verdict"].tolist() == ["label noise", "model error", "label noise"]
    assert desk.saved_id(*item) == stored["id"].iloc[-1]
