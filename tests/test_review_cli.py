"""`chtn review queue|export` on the sample: the page's meeting queue and exports, for pipelines."""

from __future__ import annotations

import io
import json

import pandas as pd
import pytest

from analysis import outcomes as oc
from analysis.review import queue as rq
from analysis.review.store import ReviewStore
from chtn.cli import main
from tests.conftest import CHECKPOINTS, PAIRS

CHECKPOINT = str(CHECKPOINTS / "chtn_fashion_source.safetensors")


@pytest.fixture(scope="module")
def sample():
    from analysis import workspace as ws
    from chtn import gallery as gal

    checkpoint = ws.open_checkpoint(ws.DEFAULT_CHECKPOINT)
    data, _ = ws.open_dataset(ws.SAMPLE_DATASET, checkpoint)
    gallery = gal.embed_split(checkpoint, data, "test")
    outcomes = oc.query_outcomes(gallery, gal.evaluate_gallery(gallery, checkpoint.label_names), checkpoint.label_names)
    return checkpoint, data.fingerprint(), outcomes


def _review(*args: str) -> list[str]:
    return ["review", *args[:1], "--checkpoint", CHECKPOINT, "--data", str(PAIRS), *args[1:]]


def test_queue_prints_the_meeting_queue_the_page_shows(sample, tmp_path, capsys):
    checkpoint, dataset, outcomes = sample
    database = str(tmp_path / "review.sqlite")
    assert main(_review("queue", "--db", database, "--spec", "size=7,seed=4,strata=category", "--format", "json")) == 0
    printed_streams = capsys.readouterr()
    out, err = printed_streams.out, printed_streams.err
    printed = pd.DataFrame(json.loads(out))  # stdout is the JSON alone: the status lines went to stderr
    spec = rq.QueueSpec(size=7, seed=4, strata=("category",))
    expected = rq.meeting_queue(rq.annotate(outcomes, pd.DataFrame()), spec)
    assert list(printed["query_id"]) == list(expected["query_id"]) and list(printed["position"]) == list(range(1, 8))
    queue_id = spec.queue_id(checkpoint.digest, dataset)
    assert f"meeting queue {queue_id}" in err and ReviewStore(database).queue(queue_id) is not None
    assert err.startswith("review database: ")
    assert main(_review("queue", "--db", database, "--spec", queue_id)) == 0  # the recorded queue, by its id
    table = capsys.readouterr().out
    assert all(q in table for q in expected["query_id"])
    assert main(_review("queue", "--db", database, "--spec", queue_id, "--format", "csv")) == 0
    printed = pd.read_csv(io.StringIO(capsys.readouterr().out), dtype=str)  # the CSV alone
    assert list(printed["query_id"]) == list(expected["query_id"])


def test_export_writes_csv_json_and_summary_with_the_verdicts(sample, tmp_path, capsys):
    checkpoint, dataset, outcomes = sample
    database = str(tmp_path / "review.sqlite")
    first = oc.misretrievals(outcomes).iloc[0]
    ReviewStore(database).save_verdict(
        dataset=dataset, checkpoint=checkpoint.digest, checkpoint_name="chtn_fashion_source",
        query_id=first["query_id"], direction=first["direction"], verdict="ambiguous", note="=1+1 <i>x</i>",
        reviewer="ada",
    )  # fmt: skip
    out = tmp_path / "export"
    assert main(_review("export", "--review-db", database, "--out", str(out))) == 0
    assert f"reviewed 1 of {len(oc.misretrievals(outcomes))}" in capsys.readouterr().err
    stem = "review_chtn_fashion_source_all-misretrievals"  # the checkpoint and the queue name every file
    assert sorted(p.name for p in out.iterdir()) == [f"{stem}.csv", f"{stem}.json", f"{stem}_summary.html"]
    document = json.loads((out / f"{stem}.json").read_text(encoding="utf-8"))
    assert document["items"][0]["current_verdicts"][0]["note"] == "=1+1 <i>x</i>"
    assert document["context"]["checkpoint"] == checkpoint.digest and document["context"]["dataset"] == dataset
    csv = (out / f"{stem}.csv").read_text(encoding="utf-8")
    assert '"ada: =1+1 <i>x</i>"' in csv  # verbatim; the cell starts with the reviewer, so it is never a formula
    rows = pd.read_csv(out / f"{stem}.csv", dtype=str, keep_default_na=False)
    assert list(rows.columns[:4]) == ["checkpoint", "checkpoint_hash", "queue_id", "position"]
    assert set(rows.checkpoint) == {"chtn_fashion_source"} and set(rows.checkpoint_hash) == {checkpoint.digest}
    assert set(rows.queue_id) == {""}  # all mis-retrievals: no meeting queue
    assert "&lt;i&gt;x&lt;/i&gt;" in (out / f"{stem}_summary.html").read_text(encoding="utf-8")
    spec = "size=5,seed=2"
    queue_id = rq.QueueSpec(size=5, seed=2).queue_id(checkpoint.digest, dataset)
    assert main(_review("export", "--review-db", database, "--out", str(out), "--spec", spec)) == 0
    meeting = pd.read_csv(out / f"review_chtn_fashion_source_{queue_id}.csv", dtype=str)
    assert set(meeting.queue_id) == {queue_id} and len(meeting) == 5  # beside the first export, not over it
    assert len(list(out.iterdir())) == 6


@pytest.mark.parametrize(
    "args, message",
    [
        (("queue", "--spec", "size=0"), "size must be a whole number"),
        (("queue", "--spec", "colour=red"), "not field=value"),
        (("queue", "--spec", "/nonexistent/spec.json"), "Cannot read the queue spec file"),
        (("queue", "--spec", "size=30,,"), "item 2 of 3 is empty"),
        (("queue", "--spec", '{"size": [1]}'), "size must be a whole number"),
        (("queue", "--spec", '{"categories": [1]}'), "categories must be a list of strings"),
        (("queue", "--db", "/proc/version/review.sqlite"), "review database"),
        (("export", "--out", "/proc/version/out"), "--out"),
    ],
)
def test_bad_input_is_a_clear_error_with_exit_2(args, message, tmp_path, capsys):
    argv = _review(*args)
    if "--db" not in argv:
        argv += ["--db", str(tmp_path / "review.sqlite")]
    assert main(argv) == 2
    assert message in capsys.readouterr().err
