"""The "Source bias" page under AppTest on the sample: the gate said plainly, the table, the charts."""

from __future__ import annotations

import time

import pytest

from tests.test_app import _app

pytestmark = pytest.mark.slow
BACKGROUND = "they compute in the background"


def _complete(at, tries: int = 600):
    """Rerun until the source diagnostics' background job has finished (a browser's poll does it by itself)."""
    for _ in range(tries):
        if not any(BACKGROUND in i.value for i in at.info):
            return at
        time.sleep(0.5)
        at.run()
    raise AssertionError("the source diagnostics never arrived")


def test_the_gain_comes_first_and_the_source_diagnostics_follow_from_a_background_job(tmp_path, monkeypatch):
    """An empty cache: the first run shows the transfer gain at once and says the rest is on its way (no warning
    that the source is missing: it is not); the job's result is the complete report, which then stays cached."""
    monkeypatch.setenv("CHTN_CACHE_DIR", str(tmp_path))
    at = _app("views/bias.py", checkpoint="chtn_fashion_source")
    assert not at.error and any(BACKGROUND in i.value for i in at.info)
    assert "ΔAP I->T" in at.dataframe[0].value and "A-distance" not in at.dataframe[0].value
    assert not any("No source data" in w.value for w in at.warning)
    assert "source: being read" in " ".join(c.value for c in at.caption)
    at = _complete(at)
    assert not at.error and "A-distance" in at.dataframe[0].value
    again = _app("views/bias.py", checkpoint="chtn_fashion_source")  # another session: from the disk cache
    assert not any(BACKGROUND in i.value for i in again.info) and "A-distance" in again.dataframe[0].value


def test_cifar_source_page_says_the_source_was_switched_off_and_shows_every_category():
    at = _complete(_app("views/bias.py", checkpoint="chtn_cifar_source"))
    assert not at.error, [e.value for e in at.error]
    assert any("switched the source off" in w.value for w in at.warning)
    table = at.dataframe[0].value
    assert len(table) == 20 and {"ΔAP I->T", "flag T->I", "covering source class", "A-distance"} <= set(table)
    assert table["explore"].str.startswith("/explorer?checkpoint=chtn_cifar_source").all()
    assert table["explore"].str.contains("search=").all() and table["map"].str.contains("category=").all()
    assert {m.label for m in at.metric} == {
        "helped",
        "negative transfer",
        "negligible effect",
        "no detectable effect",
        "insufficient evidence",
    }
    assert len(at.get("plotly_chart")) >= 5
    captions = " ".join(c.value for c in at.caption)
    assert "Benjamini-Hochberg" in captions and "unadjusted" in captions and "Holm-adjusted p < 0.05" in captions
    compared = " ".join(m.value for m in at.markdown)
    assert "The flags compare these two checkpoints (1 run with the source, 3 without), not the recipes" in compared
    for column in ("q I->T", "q T->I"):
        assert "0.000" not in set(table[column])  # below 0.001 it reads "< 0.001"


def test_with_each_recipes_runs_the_flags_compare_the_recipes_and_without_them_two_checkpoints():
    at = _app("views/bias.py", checkpoint="chtn_fashion_source")
    assert not at.error and at.checkbox(key="runs").value
    assert "The flags compare the two recipes: 3 training runs" in " ".join(m.value for m in at.markdown)
    assert "chtn_fashion_source_s2" in " ".join(c.value for c in at.caption)
    at.checkbox(key="runs").uncheck().run()  # bound to ?runs= : the address bar says runs=false
    assert not at.error and at.checkbox(key="runs").value is False
    assert "The flags compare these two checkpoints (1 run" in " ".join(m.value for m in at.markdown)


def test_a_checkpoint_without_source_is_told_what_to_pick():
    at = _app("views/bias.py", checkpoint="chtn_no_source")
    assert not at.error and "trained without a source domain" in at.info[0].value


def test_a_missing_source_still_shows_the_gain_and_says_what_it_cannot_show():
    at = _app("views/bias.py", checkpoint="chtn_cifar_source")
    at.text_input(key="bi_source").set_value("/nonexistent/cifar").run()
    assert not at.exception and not at.error
    at = _complete(at)  # the ImageNet prior of the test images follows from the background
    assert any("does not exist" in w.value for w in at.warning)
    assert any("No source data" in w.value for w in at.warning)
    assert "ΔAP I->T" in at.dataframe[0].value


@pytest.mark.xdist_group("umap")  # the map starts a UMAP job: compiled once, on the worker of tests/test_projection.py
def test_links_open_the_explorer_and_the_map_on_the_category():
    explorer = _app("views/explorer.py", checkpoint="chtn_fashion_source", search="Heels", direction="i2t")
    assert not explorer.error and explorer.text_input(key="search").value == "Heels"
    space = _app("views/space.py", checkpoint="chtn_fashion_source", category="Heels")
    assert not space.error and space.selectbox(key="category").value == "Heels"
