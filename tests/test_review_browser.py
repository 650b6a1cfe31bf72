"""The meeting in a real browser: two people open one meeting link, both save a verdict at the same moment, and
after a reload both verdicts are there, for both of them."""

from __future__ import annotations

import os

import pytest

from analysis import review_queue as rq
from analysis.review_store import ReviewStore
from tests.conftest import ROOT
from tests.harness import ERROR_SELECTORS, StreamlitServer, assert_clean, launch_chromium, require_chromium

pytestmark = [pytest.mark.browser, pytest.mark.slow]

require_chromium()


def _wait_for(tab, text: str) -> None:
    errors = tab.locator(", ".join(ERROR_SELECTORS.values()))
    tab.get_by_text(text).first.or_(errors.first).wait_for(timeout=300_000)
    assert_clean(tab)


def test_two_people_on_one_meeting_link_both_keep_their_verdicts(tmp_path):
    from playwright.sync_api import sync_playwright

    from analysis import workspace as ws

    checkpoint = ws.open_checkpoint(ws.DEFAULT_CHECKPOINT)
    dataset = ws.open_dataset(ws.SAMPLE_DATASET, checkpoint)[0].fingerprint()
    spec = rq.QueueSpec(size=8, seed=5)
    queue_id = spec.queue_id(checkpoint.digest, dataset)
    link = f"/review?queue={queue_id}&item=3&" + "&".join(f"{k}={v}" for k, v in spec.to_params().items())
    database = tmp_path / "review.sqlite"
    env = {**os.environ, "CHTN_REVIEW_DB": str(database)}
    people = {
        "Ada": ("label noise", "Ada's note: the caption says socks"),
        "Bob": ("model error", "Bob <b>disagrees</b>"),
    }
    with StreamlitServer(ROOT / "app.py", ROOT, env=env) as server, sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        tabs = {name: browser.new_context(viewport={"width": 1400, "height": 1200}).new_page() for name in people}
        for tab in tabs.values():
            tab.goto(server.url + link)
        for name, tab in tabs.items():
            _wait_for(tab, "Save verdict")
            assert tab.get_by_text("Meeting queue").count() and "#3 ·" in tab.locator("body").inner_text()
            tab.get_by_label("Your name").fill(name)
            tab.get_by_label("Your name").press("Enter")
            verdict, note = people[name]
            tab.get_by_text(verdict, exact=True).click()
            tab.get_by_label("Notes").fill(note)
        for tab in tabs.values():  # both press Save before either page is read
            tab.get_by_role("button", name="Save verdict").click()
        for name, tab in tabs.items():
            _wait_for(tab, f"— {name},")
        for tab in tabs.values():
            tab.reload()
        for tab in tabs.values():
            _wait_for(tab, "Verdicts on this checkpoint")
            _wait_for(tab, "— Bob,")
            text = tab.locator("body").inner_text()
            assert "— Ada," in text and "Ada's note: the caption says socks" in text
            assert "Bob <b>disagrees</b>" in text  # shown as typed, not rendered
            assert tab.locator("b", has_text="disagrees").count() == 0
        browser.close()
    stored = ReviewStore(database).verdicts(dataset, checkpoint.digest)
    assert sorted(stored["reviewer"]) == ["Ada", "Bob"] and set(stored["queue_id"]) == {queue_id}
    assert dict(zip(stored["reviewer"], stored["note"])) == {name: note for name, (_, note) in people.items()}


def test_the_comparison_report_opens_offline_with_its_plots(tmp_path):
    """`chtn compare`'s HTML report, and the page's, in a real browser: no network, the forest plot drawn."""
    from playwright.sync_api import sync_playwright

    from chtn.cli import main
    from tests.conftest import CHECKPOINTS, PAIRS

    out = tmp_path / "gate"
    argv = ["compare", "--baseline", str(CHECKPOINTS / "chtn_fashion_source.safetensors"), "--candidate",
            str(CHECKPOINTS / "chtn_no_source.safetensors"), "--data", str(PAIRS), "--out", str(out)]  # fmt: skip
    assert main(argv) == 1
    env = {**os.environ, "CHTN_REVIEW_DB": str(tmp_path / "review.sqlite")}
    with sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        context = browser.new_context(viewport={"width": 1400, "height": 1100})
        requests = []
        context.on("request", lambda request: requests.append(request.url))
        report = context.new_page()
        report.goto((out / "report.html").as_uri())
        report.locator(".js-plotly-plot .scatterlayer .points path").first.wait_for(timeout=60_000)
        assert "Rules say NO-GO" in report.locator("body").inner_text()
        assert all(url.startswith("file://") or url.startswith("data:") for url in requests), requests
        with StreamlitServer(ROOT / "app.py", ROOT, env=env) as server:
            page = context.new_page()
            page.goto(f"{server.url}/compare?checkpoint=chtn_no_source&baseline=chtn_fashion_source")
            _wait_for(page, "The rules say NO-GO")
            page.get_by_text("Per category").first.scroll_into_view_if_needed()
            page.locator(".js-plotly-plot").first.wait_for(timeout=60_000)
            assert_clean(page)
        browser.close()
