"""The Compare page's use cases without a browser (analysis.compare.workflow): recording the team's decision (and
every way it is refused without losing the form), the review evidence, the decision log, which checkpoint a changed
query's links open, and the aligned spaces' table, on a real SQLite review database."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from analysis.compare import decisions
from analysis.compare import workflow as wf
from analysis.compare.figures import Outcome
from analysis.compare.rules import Decision, read_rules
from analysis.review.store import ReviewStore

PAIR = wf.Pair("ds0123456789abcd", "a" * 16, "b" * 16, "chtn_no_source", "chtn_fashion_source")


@pytest.fixture
def store(tmp_path: Path) -> ReviewStore:
    return ReviewStore(tmp_path / "review.sqlite", also=(decisions.SCHEMA,))


@pytest.fixture(scope="module")
def outcome() -> Outcome:
    """What a decision is taken on: the shipped rule file and the gate's GO (the figures are not recorded)."""
    gate = Decision("GO", 0, [], [], "GO: every rule passes.")
    return Outcome(SimpleNamespace(resamples=10_000, seed=0), [], gate, read_rules(None))  # type: ignore[arg-type]


def _record(store, outcome, **form) -> wf.Recorded:
    return wf.record_decision(store, None, PAIR, wf.DecisionForm(**form), outcome, {"label noise": 2})


def test_a_decision_is_recorded_with_the_evidence_it_was_taken_on(store, outcome) -> None:
    recorded = _record(store, outcome, decision="GO", deciders="ada, bob", rationale="the gain holds")
    assert recorded.outcome == "recorded" and recorded.record is not None
    (row,) = decisions.decisions(store, PAIR.dataset, PAIR.baseline, PAIR.candidate).to_dict("records")
    assert row["id"] == recorded.record["id"] and row["decision"] == "GO" and row["deciders"] == "ada, bob"
    assert row["gate"] == "GO: every rule passes." and row["review_counts"] == {"label noise": 2}
    assert row["rule_sha256"] == outcome.rules.sha256 and row["rule_text"] == outcome.rules.text
    assert (row["baseline_name"], row["candidate_name"]) == ("chtn_no_source", "chtn_fashion_source")


@pytest.mark.parametrize(
    ("form", "says"),
    [
        (dict(decision=None, deciders="ada"), "Not recorded: choose a decision."),
        (dict(decision="GO with override", deciders="ada"), "needs its reason"),
        (dict(decision="NO-GO", deciders="  "), "Name the deciders"),
    ],
)
def test_what_the_room_can_fix_is_refused_and_the_form_kept(store, outcome, form, says) -> None:
    recorded = _record(store, outcome, **form)
    assert recorded.outcome == "refused" and says in recorded.message and recorded.record is None
    assert form["decision"] is None or "still in the form" in recorded.message
    assert decisions.decisions(store, PAIR.dataset, PAIR.baseline, PAIR.candidate).empty


def test_without_a_database_nothing_is_recorded_and_it_says_why(outcome) -> None:
    recorded = wf.record_decision(
        None, "The folder is read-only.", PAIR, wf.DecisionForm("GO", deciders="a"), outcome, {}
    )
    assert recorded.outcome == "refused"
    assert recorded.message == "Not recorded: The folder is read-only. Your text is still in the form."


def test_the_same_decision_twice_is_a_repeat_and_a_new_rationale_supersedes(store, outcome) -> None:
    first = _record(store, outcome, decision="NO-GO", deciders="ada", rationale="regressions on Heels")
    repeat = _record(store, outcome, decision="NO-GO", deciders="ada ", rationale="regressions on Heels")
    assert repeat.outcome == "repeated" and f"#{first.record['id']}" in repeat.message
    later = _record(store, outcome, decision="NO-GO", deciders="ada", rationale="Heels relabelled: still NO-GO")
    assert later.outcome == "recorded"
    log = wf.decision_log(decisions.decisions(store, PAIR.dataset, PAIR.baseline, PAIR.candidate).to_dict("records"))
    assert list(log.columns) == wf.LOG_COLUMNS and list(log["id"]) == [later.record["id"], first.record["id"]]
    assert log["superseded_by"].iloc[1] == later.record["id"] and pd.isna(log["superseded_by"].iloc[0])
    assert wf.decision_log([]).empty and list(wf.decision_log([]).columns) == wf.LOG_COLUMNS


def test_links_of_a_changed_query_open_the_checkpoint_that_mis_retrieves_it() -> None:
    assert [wf.concerned_checkpoint(c, "A.pt", "B.pt") for c in ("fixed", "better", "broken", "worse")] == [
        "A.pt", "A.pt", "B.pt", "B.pt"
    ]  # fmt: skip
    assert wf.review_evidence({}) == "Verdicts of the review queue on B's regressions: none yet"
    assert wf.review_evidence({"label noise": 2, "model error": 1}).endswith("label noise 2, model error 1")


def test_the_aligned_table_puts_images_then_texts_in_both_coordinates() -> None:
    a, b = np.arange(12.0).reshape(6, 2), -np.arange(12.0).reshape(6, 2)
    points = wf.aligned_points(a, b, ["i0", "i1", "i2"], [1, 0, 1], ["Heels", "Watches"])
    assert list(points["modality"]) == ["image"] * 3 + ["text"] * 3 and list(points["id"]) == ["i0", "i1", "i2"] * 2
    assert list(points["category"][:3]) == ["Watches", "Heels", "Watches"]
    assert points[["x_a", "y_a"]].to_numpy().tolist() == a.tolist() and points["y_b"].iloc[5] == -11.0
