"""One test set per (checkpoint, dataset): every command and every page scores the same rows of a flawed copy of the
whole sample (tests/flaws.py `build_flawed_sample`), whose flawed test rows a check of the test split alone used to
keep: 395 rows here, where evaluate, compare and review once scored 399 and bias and training 395."""

from __future__ import annotations

import csv
import io
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from analysis import workspace as ws
from chtn.checkpoint import load_checkpoint
from chtn.cli import main
from chtn.data import load_pairs
from chtn.validation import load_checked_pairs
from tests.conftest import CHECKPOINTS, ROOT
from tests.flaws import build_flawed_sample
from tests.test_app import _evaluated

CANDIDATE, REFERENCE = (CHECKPOINTS / f"chtn_{name}.safetensors" for name in ("fashion_source", "no_source"))
PAGES = ("overview", "explorer", "attribution", "space", "review", "compare", "bias")


@pytest.fixture(scope="module")
def flawed(tmp_path_factory) -> tuple[str, list[str]]:
    """The flawed sample's manifest and the ids of the test rows that every command must keep, in file order."""
    folder = tmp_path_factory.mktemp("flawed_sample")
    flaws = build_flawed_sample(folder)
    dropped = {i for ids in flaws.values() for i in ids}
    with (folder / "pairs.csv").open(newline="", encoding="utf-8") as handle:
        rows = [r for r in csv.DictReader(handle) if r["split"] == "test"]
    return str(folder / "pairs.csv"), [r["id"] for r in rows if r["id"] not in dropped]


def test_the_test_split_is_the_whole_dataset_verdict_on_its_rows(flawed):
    """`chtn train` and `chtn bias` read every row; the others read the test split: the same 395 rows."""
    path, kept = flawed
    labels = load_checkpoint(CANDIDATE).label_names
    whole, _ = load_checked_pairs(path, None, labels, skip_invalid=True)
    split, report = load_checked_pairs(path, "test", labels, skip_invalid=True)
    assert whole.split("test").ids == split.ids == kept and len(kept) == 395
    assert report.skipped_note("test split").startswith("Skipped 5 invalid of 400 rows of the test split.")


def test_every_command_scores_the_same_test_rows(flawed, tmp_path, capsys):
    path, kept = flawed
    common = ["--data", path, "--skip-invalid"]
    assert main(["evaluate", "--checkpoint", str(CANDIDATE), *common, "--out", str(tmp_path / "ev")]) == 0
    per_query = pd.read_csv(tmp_path / "ev" / "per_query.csv", dtype={"id": str})
    assert per_query[per_query.direction == "i2t"].id.tolist() == kept
    assert main(["embed", "--checkpoint", str(CANDIDATE), *common, "--out", str(tmp_path / "e.npz")]) == 0
    assert np.load(tmp_path / "e.npz")["ids"].tolist() == kept
    compare = ["compare", "--baseline", str(REFERENCE), "--candidate", str(CANDIDATE), *common]
    assert main([*compare, "--out", str(tmp_path / "cmp")]) in (0, 1, 2)  # the verdict is not what is tested
    queries = pd.read_csv(tmp_path / "cmp" / "queries.csv", dtype={"query_id": str})
    assert queries[queries.direction == "i2t"].query_id.tolist() == kept
    capsys.readouterr()
    review = ["review", "queue", "--checkpoint", str(CANDIDATE), *common, "--db", str(tmp_path / "r.db")]
    assert main([*review, "--format", "csv", "--spec", "size=400,seed=0"]) == 0
    queue = pd.read_csv(io.StringIO(capsys.readouterr().out), dtype={"query_id": str})  # stdout: the CSV alone
    assert set(queue.query_id) <= set(kept) and len(queue) > 0
    bias = ["bias", "--checkpoint", str(CANDIDATE), "--reference", str(REFERENCE), *common]
    assert main([*bias, "--out", str(tmp_path / "b")]) == 0
    gain = pd.read_csv(tmp_path / "b" / "gain.csv").query("direction == 'i2t'")  # bias writes counts, not ids
    data = load_pairs(path)
    test_rows = [r for r, split in enumerate(data.splits) if split == "test" and data.ids[r] in set(kept)]
    assert dict(zip(gain.category, gain.n)) == Counter(data.labels[r] for r in test_rows)


def test_every_page_opens_the_same_test_rows_and_says_which_it_dropped(flawed):
    path, kept = flawed
    data, _ = ws.open_dataset(path, ws.open_checkpoint("chtn_fashion_source"), skip_invalid=True)
    assert data.ids == kept  # what every page's `context()` opens
    at = AppTest.from_file(str(ROOT / "dashboard.py"), default_timeout=300)
    at.run()
    at.selectbox(key="sb_dataset").set_value("Manifest or Wikipedia folder (path)…").run()
    at.text_input(key="sb_dataset_path").input(path).run()
    _evaluated(at.checkbox(key="sb_skip_invalid").check().run())
    for page in PAGES:
        _evaluated(at.switch_page(f"views/{page}.py").run())
        assert not at.exception and not at.error, page
        assert at.warning[0].value.startswith("Skipped 5 invalid of 400 rows of the test split."), page
    link = {name: at.query_params[name] for name in ("checkpoint", "data", "skip")}  # the address bar's
    assert link["data"] in (str(Path(path).resolve()), [str(Path(path).resolve())]) and link["skip"] in (
        "true",
        ["true"],
    )
    shared = AppTest.from_file(str(ROOT / "dashboard.py"), default_timeout=300)  # a colleague opening that address
    shared.query_params.update(link)
    _evaluated(shared.switch_page("views/explorer.py").run())
    assert not shared.exception and not shared.error
    assert shared.warning[0].value.startswith("Skipped 5 invalid of 400 rows of the test split.")
