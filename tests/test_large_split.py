"""A 20,000-item test split (bench/make_large_split.py) on the dashboard under AppTest: the evaluation runs as one
background job shared by every session, the page shows its progress meanwhile, then its figures."""

from __future__ import annotations

import time
from pathlib import Path

from streamlit.testing.v1 import AppTest

from bench.make_large_split import store_synthetic_embeddings, write_large_split
from tests.conftest import ROOT
from views.common import DATA_PATH, evaluation_jobs

ITEMS = 20_000


def _open(pairs: Path) -> AppTest:
    """A new session on the Overview with the sidebar's dataset set to `pairs`."""
    at = AppTest.from_file(str(ROOT / "dashboard.py"), default_timeout=300)
    at.run()
    at.selectbox(key="sb_dataset").select(DATA_PATH).run()
    at.text_input(key="sb_dataset_path").input(str(pairs)).run()
    assert not at.exception, at.exception
    return at


def _waiting(at: AppTest) -> bool:
    return any(f"on {ITEMS:,} test items" in info.value for info in at.info)


def test_a_large_split_shows_one_shared_evaluation_in_progress_then_its_figures(tmp_path):
    pairs = write_large_split(ITEMS, tmp_path)
    store_synthetic_embeddings(pairs, "chtn_fashion_source")  # the text encoder would take minutes on 20,000 titles
    first = _open(pairs)
    assert _waiting(first) and not first.error and not first.metric  # progress, no half-drawn page
    second = _open(pairs)  # another session asks for the same evaluation while it runs
    assert _waiting(second)
    assert len(evaluation_jobs().running()) == 1  # it waits for the same job, it does not start another

    deadline = time.monotonic() + 1800  # a bound against a hang, not a speed check
    while evaluation_jobs().running() and time.monotonic() < deadline:
        time.sleep(1)
    for at in (first, second):
        at.run()
        assert not _waiting(at) and not at.error and not at.exception
        labels = {metric.label: metric.value for metric in at.metric}
        assert 0 < float(labels["MAP (mean of directions)"]) <= 1
        assert len(at.dataframe[0].value) == 2 * ITEMS  # every query, both directions
