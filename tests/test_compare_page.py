"""The Compare checkpoints page under AppTest on the sample: the gate's verdict and figures, decisions recorded
append-only with a mandatory override reason, and B's regressions sent to the review queue."""

from __future__ import annotations

import pytest

from analysis.compare import decisions
from analysis.review.store import ReviewStore
from tests.test_app import _app, _evaluated
from tests.test_compare_cli import write_small_split

pytestmark = pytest.mark.slow


def _verdict_box(at) -> str:
    return next(box.value for box in [*at.success, *at.warning] if "The rules say" in box.value)


def _compared(at) -> str:
    return next(m.value for m in at.markdown if m.value.startswith("**What is compared.**"))


def test_the_source_gain_is_go_and_losing_it_is_no_go(review_db):
    """The sample ships three training runs of each recipe: the page finds them and decides between the recipes."""
    at = _app("views/compare.py", checkpoint="chtn_fashion_source", baseline="chtn_no_source")
    assert "The rules say GO" in _verdict_box(at) and not [e for e in at.error if "Cannot" in e.value]
    assert "3 training runs of A against 3 of B" in _compared(at) and "the two recipes" in _compared(at)
    runs = " ".join(c.value for c in at.caption)
    assert "`chtn_no_source_s1`" in runs and "`chtn_fashion_source_s2`" in runs
    headline = at.dataframe[0].value
    assert list(headline["metric"][:3]) == ["MAP (mean of directions)", "MAP I->T", "MAP T->I"]
    assert headline["B − A"].iloc[0] > 0 and headline["95% CI"].iloc[0].startswith("[+0.0")
    assert {"own-pair recall@1 I->T", "own-pair median rank T->I (lower is better)"} <= set(headline["metric"])
    rules = at.dataframe[1].value
    assert rules.iloc[0]["status"] == "pass" and rules.iloc[0]["severity"] == "block"
    assert len(at.get("plotly_chart")) == 2  # forest plot, aligned spaces
    reverse = _app("views/compare.py", checkpoint="chtn_no_source", baseline="chtn_fashion_source")
    assert "The rules say NO-GO" in _verdict_box(reverse) and "MAP on overall" in _verdict_box(reverse)


def test_the_checkpoints_of_one_dataset_read_it_once(review_db, monkeypatch):
    """Compare opens six checkpoints (three training runs a side) on one dataset with the same label names: the split
    is read and validated once for all of them (the shared dataset cache is keyed by the label names)."""
    import streamlit as st

    from analysis import workspace as ws

    reads: list[tuple] = []
    read = ws.open_dataset
    monkeypatch.setattr(
        ws,
        "open_dataset",
        lambda path, checkpoint, *args, **kwargs: (
            reads.append((path, checkpoint.path.name)) or read(path, checkpoint, *args, **kwargs)
        ),
    )
    st.cache_resource.clear()  # as on a fresh server
    at = _app("views/compare.py", checkpoint="chtn_fashion_source", baseline="chtn_no_source")
    assert "The rules say GO" in _verdict_box(at) and "3 training runs of A against 3 of B" in _compared(at)
    assert len(reads) == 1, reads


@pytest.mark.parametrize("runs", ["false", "0"])  # "0": a link written before ?runs= was bound to its checkbox
def test_one_checkpoint_per_side_says_so_and_makes_no_recipe_decision(review_db, runs):
    at = _app("views/compare.py", checkpoint="chtn_fashion_source", baseline="chtn_no_source", runs=runs)
    assert "The rules say INSUFFICIENT EVIDENCE" in _verdict_box(at) and not at.error
    assert "set min_runs = 1" in _verdict_box(at)
    assert _compared(at).startswith("**What is compared.** One checkpoint per side: the figures compare these two")
    assert at.checkbox(key="runs").value is False


def test_odd_flags_in_a_link_open_with_their_defaults(review_db):
    """Bound widgets drop a URL value they cannot read: the page opens as without it, no error."""
    at = _app("views/compare.py", checkpoint="chtn_fashion_source", baseline="chtn_no_source", runs="yes", strict="2")
    assert not at.exception and not at.error and "The rules say GO" in _verdict_box(at)
    assert at.checkbox(key="runs").value is True and at.checkbox(key="strict").value is False


def test_a_checkpoint_against_itself_changes_nothing(review_db):
    at = _app("views/compare.py", checkpoint="chtn_fashion_source", baseline="chtn_fashion_source")
    assert "The rules say GO" in _verdict_box(at)
    assert (at.dataframe[0].value["B − A"] == 0).all()
    assert {m.label: m.value for m in at.metric}["same"] == "800"


def test_decisions_are_recorded_append_only_and_an_override_needs_its_reason(review_db):
    at = _app("views/compare.py", checkpoint="chtn_no_source", baseline="chtn_fashion_source")
    at.radio(key="cp_verdict").set_value("GO with override")
    at.text_input(key="cp_deciders").input("ada, bob")
    at.text_area(key="cp_rationale").input("ship <b>anyway</b>")
    next(b for b in at.button if b.label == "Record the decision").click().run()
    assert any("needs its reason" in e.value and "still in the form" in e.value for e in at.error)
    assert at.text_area(key="cp_rationale").value == "ship <b>anyway</b>"
    at.text_input(key="cp_override").input("the loss is on categories being relabelled")
    next(b for b in at.button if b.label == "Record the decision").click().run()
    at.radio(key="cp_verdict").set_value("NO-GO")
    next(b for b in at.button if b.label == "Record the decision").click().run()
    log = next(d.value for d in at.dataframe if "superseded_by" in d.value.columns)
    assert list(log["decision"]) == ["NO-GO", "GO with override"] and log["superseded_by"].iloc[1] == log["id"].iloc[0]
    stored = ReviewStore(review_db, also=(decisions.SCHEMA,))
    digests = _digests()
    records = decisions.decisions(stored, digests["dataset"], digests["chtn_fashion_source"], digests["chtn_no_source"])
    assert records.iloc[1]["override_reason"] == "the loss is on categories being relabelled"
    assert records.iloc[0]["rule_sha256"] and records.iloc[0]["resamples"] == 10000
    assert records.iloc[0]["rules"][0]["rule"] == "MAP non-inferiority"


def _digests() -> dict[str, str]:
    from analysis import workspace as ws

    out = {name: ws.open_checkpoint(name).digest for name in ("chtn_fashion_source", "chtn_no_source")}
    checkpoint = ws.open_checkpoint("chtn_no_source")
    out["dataset"] = ws.open_dataset(ws.SAMPLE_DATASET, checkpoint)[0].fingerprint()
    return out


def test_regressions_go_to_the_review_queue(review_db):
    at = _app("views/compare.py", checkpoint="chtn_fashion_source", baseline="chtn_no_source")
    broken = int({m.label: m.value for m in at.metric}["broken"])
    listed = next(d.value for d in at.dataframe if "ap_change" in d.value.columns)  # the broken queries, shown
    assert len(listed) == broken and list(listed.columns[:3]) == ["image", "query_id", "title"]
    assert listed.image.str.startswith("data:image/jpeg;base64,").all() and listed.title.str.len().gt(0).all()
    card = next(d.value for d in at.dataframe if list(d.value.columns) == ["A (baseline)", "B (candidate)"])
    first = listed.iloc[0]  # the card shows the largest regression until another row is picked
    assert float(card.loc["AP", "A (baseline)"]) == pytest.approx(first.ap_a, abs=5e-4)
    assert float(card.loc["AP", "B (candidate)"]) == pytest.approx(first.ap_b, abs=5e-4)
    assert card.loc["own-pair rank", "B (candidate)"] == str(int(first.own_rank_b))
    top1 = card.loc["top-1 category", "B (candidate)"]  # B's top-1 category, relevant when it is the query's
    category = top1.rsplit(" (", 1)[0]
    assert top1 == f"{category} ({'relevant' if category == first.category else 'not relevant'})"
    assert any(first.query_id in m.value and "broken by B" in m.value for m in at.markdown)
    next(b for b in at.button if b.label == "Send B's regressions to the review queue").click().run()
    queue_id = at.session_state["cp_queue"]
    stored = ReviewStore(review_db).queue(queue_id)
    assert stored["spec"]["title"] == "regressions of B" and len(stored["spec"]["items"]) == broken
    review = _app("views/review.py", checkpoint="chtn_fashion_source", queue=queue_id)
    assert not review.error and "Meeting queue: regressions of B" in [h.value for h in review.subheader]
    assert next(m.value for m in review.metric if m.label == "Reviewed") == f"0 of {broken}"


def test_a_bad_rule_file_is_a_clear_error(review_db, tmp_path):
    rule = tmp_path / "rule.toml"
    rule.write_text('[[rule]]\nmetric = "map"\nslice = "everything"\nseverity = "block"\nvalue = { lower = 0 }\n')
    at = _app("views/compare.py", baseline="chtn_no_source", rule=str(rule))
    assert any("Cannot compare" in e.value and 'field "slice"' in e.value for e in at.error)


def test_a_split_without_evidence_says_so_instead_of_a_verdict(review_db, tmp_path):
    from views.common import DATA_PATH

    manifest, n = write_small_split(tmp_path, 20, 1)
    at = _app("views/compare.py", checkpoint="chtn_fashion_source", baseline="chtn_no_source")
    at.sidebar.selectbox(key="sb_dataset").set_value(DATA_PATH).run()
    _evaluated(at.sidebar.text_input(key="sb_dataset_path").input(str(manifest)).run())
    assert not at.exception and not at.error
    (box,) = [w.value for w in at.warning if "insufficient evidence" in w.value]
    assert f"{n} queries in 1 category" in box and "neither GO nor NO-GO" in box
    assert not [w for w in [*at.success, *at.warning] if "The rules say" in w.value]


def test_the_same_decision_recorded_twice_is_refused_with_the_record_it_repeats(review_db):
    at = _app("views/compare.py", checkpoint="chtn_no_source", baseline="chtn_fashion_source")
    at.radio(key="cp_verdict").set_value("NO-GO")
    at.text_input(key="cp_deciders").input("ada, bob")
    at.text_area(key="cp_rationale").input("regressions on Heels")
    next(b for b in at.button if b.label == "Record the decision").click().run()
    next(b for b in at.button if b.label == "Record the decision").click().run()  # pressed again, same text
    digests = _digests()
    records = decisions.decisions(
        ReviewStore(review_db, also=(decisions.SCHEMA,)),
        digests["dataset"],
        digests["chtn_fashion_source"],
        digests["chtn_no_source"],
    )
    assert len(records) == 1 and not at.error
    (warning,) = [w.value for w in at.warning if "Not recorded again" in w.value]
    assert f"already recorded: #{records['id'][0]}, NO-GO by ada, bob" in warning


def test_a_checkpoint_of_another_dataset_is_compared_with_one_of_its_own(review_db):
    """The Chinese sample's checkpoint, opened by a link with its dataset: Baseline A defaults to the built-in baseline
    beside it (fitted on the same pairs), not to the English sample's no-source run; naming that one instead says
    that A and B were trained on different datasets."""
    from tests.conftest import ROOT

    zh = ROOT / "sample_data" / "fashion_zh"
    link = {"checkpoint": str(zh / "checkpoints" / "chtn_zh_fashion_source.safetensors"), "data": str(zh / "pairs.csv")}
    at = _evaluated(_app("views/compare.py", **link))
    assert not at.error and at.markdown[0].value.startswith("**B** `chtn_zh_fashion_source`")
    assert "against **A** `baseline_softmax`" in at.markdown[0].value
    assert not [box for box in at.info if "different datasets" in box.value]
    other = _evaluated(_app("views/compare.py", **link, baseline="chtn_no_source"))
    (note,) = [box.value for box in other.info if "different datasets" in box.value]
    assert "on sample_data/fashion/pairs.csv" in note and "on sample_data/fashion_zh/pairs.csv" in note
