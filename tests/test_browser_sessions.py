"""Several reviewers at once, in a real browser: concurrent sessions of one server each see their own result.

Five browser contexts (five Streamlit sessions) open different explorer queries and attribution pairs at the
same moment; every page must show exactly the figures computed for its own query in this process.
"""

from __future__ import annotations

import numpy as np
import pytest

from analysis.workspace import DEFAULT_CHECKPOINT
from tests.conftest import ROOT
from tests.harness import ERROR_SELECTORS, StreamlitServer, assert_clean, launch_chromium, require_chromium
from views.links import attribution_link, explorer_link

pytestmark = [pytest.mark.browser, pytest.mark.slow]

require_chromium()


@pytest.fixture(scope="module")
def expected():
    """The sample's gallery and evaluation, computed here with the functions the pages use."""
    from analysis import workspace as ws
    from chtn import gallery as gal

    checkpoint = ws.open_checkpoint(ws.DEFAULT_CHECKPOINT)
    gallery = gal.embed_split(checkpoint, ws.open_dataset(ws.SAMPLE_DATASET, checkpoint)[0], "test")
    return gallery, gal.evaluate_gallery(gallery, checkpoint.label_names)


def _wait_for(tab, text: str) -> None:
    """Until the page shows `text` or an error (then fail with the error's text at once)."""
    errors = tab.locator(", ".join(ERROR_SELECTORS.values()))
    tab.get_by_text(text).first.or_(errors.first).wait_for(timeout=300_000)
    assert_clean(tab)


def _metric(tab, label: str) -> str:
    metric = tab.locator('[data-testid="stMetric"]', has_text=label).first
    return metric.locator('[data-testid="stMetricValue"]').inner_text().strip()


def test_concurrent_sessions_each_see_their_own_query(expected):
    from playwright.sync_api import sync_playwright

    from analysis.explorer import pair_score
    from chtn.ranking import own_pair_headline

    gallery, report = expected
    ap, ranks, ties = report.i2t.ap, report.i2t.paired_rank, report.i2t.paired_ties
    rows = [int(np.argmax(ranks == 1)), int(np.argmax(ranks > 5)), int(np.nanargmin(ap))]  # distinct figures
    pairs = [(rows[0], rows[2]), (rows[2], rows[1])]  # (query, result) for the attribution page
    ids = gallery.data.ids
    with StreamlitServer(ROOT / "app.py", ROOT) as server, sync_playwright() as playwright:
        browser = launch_chromium(playwright)  # the split is embedded (above); the pages race to build the tower
        explorers = [browser.new_context().new_page() for _ in rows]
        explainers = [browser.new_context().new_page() for _ in pairs]
        for tab, row in zip(explorers, rows):  # all requests go out before any page is read
            tab.goto(server.url + explorer_link(DEFAULT_CHECKPOINT, "i2t", ids[row], k=5).url, wait_until="commit")
        for tab, (query, result) in zip(explainers, pairs):
            link = attribution_link(DEFAULT_CHECKPOINT, "i2t", ids[query], ids[result])
            tab.goto(server.url + link.url, wait_until="commit")
        for tab, row in zip(explorers, rows):
            _wait_for(tab, "Top 5 texts")
            assert _metric(tab, "Query AP") == f"{ap[row]:.3f}"
            tie = (ties.others[row], ties.first[row], ties.last[row])
            assert _metric(tab, "Its own pair") == own_pair_headline(ranks[row], tie)
        for tab, (query, result) in zip(explainers, pairs):
            _wait_for(tab, "Strongest words")
            assert _metric(tab, "Similarity of the pair") == f"{pair_score(gallery, 'i2t', query, result):.4f}"
        browser.close()
