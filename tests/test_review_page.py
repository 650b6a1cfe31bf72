"""The Review page under AppTest on the sample: counts, saving verdicts (and refusing to lose a note), meeting links
that reopen the same queue at the same item, and verdicts from another checkpoint shown as history."""

from __future__ import annotations

import functools

import pytest

from analysis import outcomes as oc
from analysis.review import queue as rq
from analysis.review.store import ReviewStore
from tests.test_app import _app

pytestmark = pytest.mark.slow


@functools.cache
def mis_retrieved() -> int:
    """How many test queries (both directions) the default sample checkpoint mis-retrieves: the page's "of N"."""
    from analysis import workspace as ws
    from chtn import gallery as gal

    checkpoint = ws.open_checkpoint(ws.DEFAULT_CHECKPOINT)
    gallery = gal.embed_split(checkpoint, ws.open_dataset(ws.SAMPLE_DATASET, checkpoint)[0], "test")
    outcomes = oc.query_outcomes(gallery, gal.evaluate_gallery(gallery, checkpoint.label_names), checkpoint.label_names)
    return int(outcomes["mis_retrieved"].sum())


def _metric(at, label: str) -> str:
    return next(m.value for m in at.metric if m.label == label)


def _verdict(at, verdict: str, note: str):
    """Choose a verdict, type a note and press Save."""
    at.radio(key=next(r.key for r in at.radio if r.key and r.key.endswith("_verdict"))).set_value(verdict)
    at.text_area(key=next(t.key for t in at.text_area if t.key.endswith("_note"))).input(note)
    return next(b for b in at.button if b.label == "Save verdict").click().run()


def test_saving_a_verdict_counts_it_and_shows_the_note_verbatim(review_db):
    at = _app("views/review.py")
    assert not at.error and _metric(at, "Reviewed") == f"0 of {mis_retrieved()}"
    assert any("SQLite file" in c.value and str(review_db) in c.value for c in at.caption)
    note = "<script>alert(1)</script> '); DROP TABLE verdicts; -- **not bold**"
    at = _verdict(at, "label noise", note)
    assert any("type your name" in e.value for e in at.error)  # no name yet: nothing saved, the note stays
    assert at.text_area(key=next(t.key for t in at.text_area if t.key.endswith("_note"))).value == note
    at.sidebar.text_input(key="rv_reviewer").input("Ada").run()
    at = _verdict(at, "label noise", note)
    assert (
        not at.error
        and _metric(at, "Reviewed") == f"1 of {mis_retrieved()}"
        and _metric(at, "Unreviewed") == str(mis_retrieved() - 1)
    )
    assert note in [t.value for t in at.text]  # st.text: shown as typed, nothing rendered or run
    stored = ReviewStore(review_db).verdicts(*_keys())
    assert list(stored["note"]) == [note] and list(stored["reviewer"]) == ["Ada"]


def _keys() -> tuple[str, str]:
    from analysis import workspace as ws

    checkpoint = ws.open_checkpoint(ws.DEFAULT_CHECKPOINT)
    data, _ = ws.open_dataset(ws.SAMPLE_DATASET, checkpoint)
    return data.fingerprint(), checkpoint.digest


def test_a_meeting_link_reopens_the_same_queue_at_the_same_item(review_db):
    spec = rq.QueueSpec(size=6, seed=2, strata=("category", "kind"))
    dataset, checkpoint = _keys()
    queue_id = spec.queue_id(checkpoint, dataset)
    at = _app("views/review.py", queue=queue_id, item="4", **spec.to_params())
    assert not at.error and _metric(at, "Reviewed") == "0 of 6"
    first = next(m.value for m in at.markdown if m.value.startswith("**#4 ·"))
    stored = ReviewStore(review_db).queue(queue_id)
    assert stored is not None and len(stored["spec"]["items"]) == 6
    query_id = stored["spec"]["items"][3][0]
    assert f"`{query_id}`" in first
    again = _app("views/review.py", queue=queue_id, item="4", **spec.to_params())  # another person, same link
    assert next(m.value for m in again.markdown if m.value.startswith("**#4 ·")) == first
    next(b for b in again.button if b.label == "Next").click().run()
    assert again.query_params["item"] == ["5"] or again.query_params["item"] == "5"


def _meeting_titles(at) -> list[str]:
    return [s.value for s in at.subheader if s.value.startswith("Meeting queue: ")]


def test_a_started_meeting_queue_replaces_its_form_with_a_title_and_a_link_to_copy(review_db):
    at = _app("views/review.py")
    at.segmented_control(key="rv_mode_None").set_value("Meeting queue").run()
    assert [b for b in at.button if b.label == "Start the meeting queue"] and not _meeting_titles(at)
    next(b for b in at.button if b.label == "Start the meeting queue").click().run()
    assert not at.exception and not at.error
    assert not [b for b in at.button if b.label == "Start the meeting queue"]  # the spec is gone once it started
    queue_id = at.query_params["queue"][0] if isinstance(at.query_params["queue"], list) else at.query_params["queue"]
    assert _meeting_titles(at)
    link = next(c.value for c in at.code if "/review?" in c.value)  # the "Copy link" box
    assert f"queue={queue_id}" in link and "item=1" in link and "checkpoint=chtn_fashion_source" in link


def test_a_link_whose_queue_does_not_fit_is_a_clear_error(review_db):
    at = _app("views/review.py", queue="0123456789ab", size="6")
    assert any("another checkpoint or dataset" in e.value for e in at.error) and not at.exception
    bad = _app("views/review.py", queue="0123456789ab", size="lots")
    assert any("size must be a whole number" in e.value for e in bad.error)


def test_an_unusable_database_keeps_the_note_and_says_why(tmp_path, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("CHTN_REVIEW_DB", str(blocker / "review.sqlite"))  # its folder is a file: cannot open
    at = _app("views/review.py")
    assert any("Verdicts cannot be saved now" in e.value for e in at.error)
    at.sidebar.text_input(key="rv_reviewer").input("Ada").run()
    at = _verdict(at, "model error", "keep me")
    assert any("still in the form" in e.value for e in at.error)
    assert at.text_area(key=next(t.key for t in at.text_area if t.key.endswith("_note"))).value == "keep me"
    assert _metric(at, "Reviewed") == f"0 of {mis_retrieved()}"


def _mis_retrievals(name: str):
    from analysis import workspace as ws
    from chtn import gallery as gal

    checkpoint = ws.open_checkpoint(name)
    data, _ = ws.open_dataset(ws.SAMPLE_DATASET, checkpoint)
    gallery = gal.embed_split(checkpoint, data, "test")
    report = gal.evaluate_gallery(gallery, checkpoint.label_names)
    return oc.misretrievals(oc.query_outcomes(gallery, report, checkpoint.label_names)).reset_index(drop=True)


def test_verdicts_on_another_checkpoint_show_as_history_and_changes_are_filterable(review_db):
    before, after = _mis_retrievals("chtn_no_source"), _mis_retrievals("chtn_fashion_source")
    key = lambda t: list(zip(t["query_id"], t["direction"]))  # noqa: E731
    shared = next(k for k in key(before) if k in key(after))  # mis-retrieved by both checkpoints
    at = _app("views/review.py", checkpoint="chtn_no_source", item=str(key(before).index(shared) + 1))
    at.sidebar.text_input(key="rv_reviewer").input("Bob").run()
    assert f"`{shared[0]}`" in next(m.value for m in at.markdown if m.value.startswith("**#"))
    _verdict(at, "label noise", "seen before")

    at = _app("views/review.py", checkpoint="chtn_fashion_source", item=str(key(after).index(shared) + 1))
    history = next(m.value for m in at.markdown if m.value.startswith("**On other checkpoints"))
    assert "label noise — 1 reviewer, checkpoint" in history and "(chtn_no_source)" in history
    new = set(key(after)) - set(key(before))
    assert _metric(at, "New regressions") == str(len(new)) != "0"
    at.toggle(key="rv_changed").set_value(True)
    at.query_params["item"] = "1"
    at.run()
    assert "**new regression**" in next(m.value for m in at.markdown if m.value.startswith("**#1 ·"))


@pytest.mark.xdist_group("umap")  # the page starts a UMAP job: compiled once, on the worker of tests/test_projection.py
def test_the_map_link_centres_the_shared_space_on_the_item():
    from analysis import workspace as ws

    checkpoint = ws.open_checkpoint(ws.DEFAULT_CHECKPOINT)
    query_id = ws.open_dataset(ws.SAMPLE_DATASET, checkpoint)[0].ids[5]
    at = _app("views/space.py", point=query_id, modality="text")
    assert not at.error and any(c.value.startswith(f"Centred on {query_id} (text)") for c in at.caption)
    figure = at.get("plotly_chart")[0].proto.spec
    assert '"name":"focus"' in figure.replace(" ", "")


def test_a_locked_database_says_so_and_keeps_the_note(review_db):
    import sqlite3

    at = _app("views/review.py")
    at.sidebar.text_input(key="rv_reviewer").input("Ada").run()
    holder = sqlite3.connect(review_db, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another writer holds the lock past the store's busy timeout
    try:
        at = _verdict(at, "ambiguous", "typed while someone else was writing")
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert any("Not saved" in e.value and "locked" in e.value and "still in the form" in e.value for e in at.error)
    note = next(t for t in at.text_area if t.key.endswith("_note"))
    assert note.value == "typed while someone else was writing" and _metric(at, "Reviewed") == f"0 of {mis_retrieved()}"
    at = _verdict(at, "ambiguous", note.value)  # the lock is gone: the same form saves
    assert not at.error and _metric(at, "Reviewed") == f"1 of {mis_retrieved()}"


def _form(at) -> tuple[str | None, str]:
    """The verdict and note the item's form shows."""
    radio = next(r for r in at.radio if r.key and r.key.endswith("_verdict"))
    return radio.value, next(t for t in at.text_area if t.key.endswith("_note")).value


def _press(at, *labels: str):
    """Press these buttons in one go, as a browser sends a Save and a J pressed before the save's run got far."""
    for label in labels:
        next(b for b in at.button if b.label == label).click()
    return at.run()


def test_what_was_typed_survives_moving_on_and_coming_back(review_db):
    """A note without a verdict is a draft that moving on keeps (never saved behind the reviewer's back); a verdict
    chosen is saved on the way out, as if Save had been pressed (its press may not have reached the server)."""
    at = _app("views/review.py")
    at.sidebar.text_input(key="rv_reviewer").input("Ada").run()
    first = next(m.value for m in at.markdown if m.value.startswith("**#1 ·"))
    at.text_area(key=next(t.key for t in at.text_area if t.key.endswith("_note"))).input("half-typed thought")
    at = _press(at, "Next")
    assert next(m.value for m in at.markdown if m.value.startswith("**#2 ·")) and _form(at) == (None, "")
    assert any("Unsaved drafts" in c.value and "#1" in c.value for c in at.caption)
    assert at.selectbox[0].options[0].endswith("· unsaved draft")
    assert ReviewStore(review_db).verdicts(*_keys()).empty  # a note alone is kept in the session, not saved
    at = _press(at, "Previous")
    assert next(m.value for m in at.markdown if m.value.startswith("**#1 ·")) == first
    assert _form(at) == (None, "half-typed thought") and not at.error
    at.radio(key=next(r.key for r in at.radio if r.key and r.key.endswith("_verdict"))).set_value("data problem")
    at = _press(at, "Next")  # no Save pressed: the verdict chosen goes to the database on the way out
    assert list(ReviewStore(review_db).verdicts(*_keys())["note"]) == ["half-typed thought"]
    assert not any("Unsaved drafts" in c.value for c in at.caption) and not at.error


def test_save_then_next_at_once_stores_the_verdict_and_names_its_row(review_db):
    at = _app("views/review.py")
    at.sidebar.text_input(key="rv_reviewer").input("Ada").run()
    first = next(m.value for m in at.markdown if m.value.startswith("**#1 ·"))
    at.radio(key=next(r.key for r in at.radio if r.key and r.key.endswith("_verdict"))).set_value("label noise")
    at.text_area(key=next(t.key for t in at.text_area if t.key.endswith("_note"))).input("saved on the way out")
    at = _press(at, "Save verdict", "Next")
    stored = ReviewStore(review_db).verdicts(*_keys())
    assert list(stored["note"]) == ["saved on the way out"] and f"`{stored['query_id'][0]}`" in first
    (row_id,) = stored["id"]
    assert any(s.value.startswith(f"Saved #{row_id}: label noise on #1 · query ") for s in at.success)
    assert next(m.value for m in at.markdown if m.value.startswith("**#2 ·")) and not at.error
    assert _metric(at, "Reviewed") == f"1 of {mis_retrieved()}" and not any(
        "Unsaved drafts" in c.value for c in at.caption
    )
    at = _press(at, "Previous")  # back on #1: the stored verdict, and the row it is
    assert _form(at) == ("label noise", "saved on the way out")
    assert any(c.value == f"Saved as #{row_id} in the review database." for c in at.caption)


def test_two_reviewers_give_agreement_a_dispute_link_and_a_changed_verdict_its_history(review_db):
    """Ada, then Bo (another session) on the same item; Ada changes her verdict: the item shows the trail, and the
    agreement panel counts one disputed item and links to it."""
    at = _app("views/review.py")
    at.sidebar.text_input(key="rv_reviewer").input("Ada").run()
    at = _verdict(at, "label noise", "")
    bo = _app("views/review.py")
    bo.sidebar.text_input(key="rv_reviewer").input("Bo").run()
    bo = _verdict(bo, "model error", "not noise")
    at = _verdict(at.run(), "ambiguous", "changed my mind")
    assert not at.error and _metric(at, "Disputed") == "1"
    texts = " ".join(m.value for m in at.markdown)
    assert "**History on this checkpoint**" in texts and "Ada: label noise (replaced)" in texts
    assert "Bo: model error" in texts and "Ada: ambiguous" in texts
    panel = next(e for e in at.expander if e.label.startswith("Agreement between reviewers"))
    assert panel.label.endswith("1 items with two or more")
    assert any("1 disputed" in c.value for c in at.caption)
    assert _metric(at, "Krippendorff's alpha") == "0.00"  # one item, two verdicts: no agreement beyond chance
