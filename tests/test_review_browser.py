"""The meeting in a real browser: two people open one meeting link, both save a verdict at the same moment, each
sees the other's appear without a click, and after a reload both verdicts are there, for both of them, and each
browser still knows its reviewer's name; a verdict saved with Ctrl+Enter and left at once with J
while the database is slow (another writer holds its lock) is stored; downloads clicked in quick succession all
arrive."""

from __future__ import annotations

import os
import re
import sqlite3
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from analysis import workspace as ws
from analysis.review import queue as rq
from analysis.review.store import ReviewStore
from tests.conftest import ROOT
from tests.harness import ERROR_SELECTORS, StreamlitServer, assert_clean, launch_chromium, require_chromium
from views.links import compare_link, review_link

pytestmark = [pytest.mark.browser, pytest.mark.slow]

ARTIFACTS = ROOT / "test-artifacts"  # screenshots to look at (gitignored)

require_chromium()


def _wait_for(tab, text: str) -> None:
    errors = tab.locator(", ".join(ERROR_SELECTORS.values()))
    tab.get_by_text(text).first.or_(errors.first).wait_for(timeout=300_000)
    assert_clean(tab)


def test_two_people_on_one_meeting_link_both_keep_their_verdicts(tmp_path):
    from playwright.sync_api import expect, sync_playwright

    checkpoint = ws.open_checkpoint(ws.DEFAULT_CHECKPOINT)
    dataset = ws.open_dataset(ws.SAMPLE_DATASET, checkpoint)[0].fingerprint()
    spec = rq.QueueSpec(size=8, seed=5)
    queue_id = spec.queue_id(checkpoint.digest, dataset)
    link = review_link(ws.DEFAULT_CHECKPOINT, queue_id, 3, spec).url
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
        for tab in tabs.values():
            _wait_for(tab, "Save verdict")
            assert tab.get_by_text("Meeting queue").count() and "#3 ·" in tab.locator("body").inner_text()
        tabs["Ada"].get_by_role("button", name="Copy link").click()  # the address to paste: this server, the page once
        copied = urlsplit(tabs["Ada"].locator('[data-testid="stCode"]').first.inner_text().strip())
        assert f"{copied.scheme}://{copied.netloc}" == server.url and copied.path == "/review"
        assert parse_qs(copied.query) == {"checkpoint": [ws.DEFAULT_CHECKPOINT], "queue": [queue_id], "item": ["3"]}
        tabs["Ada"].keyboard.press("Escape")
        for name, tab in tabs.items():
            tab.get_by_label("Your name").fill(name)
            tab.get_by_label("Your name").press("Enter")
            verdict, note = people[name]
            tab.get_by_role("radiogroup", name=re.compile(r"^Verdict on #3 ")).get_by_text(verdict, exact=True).click()
            tab.get_by_label(re.compile(r"^Notes on #3 ")).fill(note)
        for tab in tabs.values():  # both press Save before either page is read
            tab.get_by_role("button", name="Save verdict").click()
        for name, tab in tabs.items():
            _wait_for(tab, f"— {name},")
        for name, tab in tabs.items():  # the other's verdict appears by itself, nothing clicked (a refresh every 5 s)
            other = next(n for n in people if n != name)
            tab.get_by_text(f"— {other},").first.wait_for(timeout=30_000)
        for tab in tabs.values():
            tab.reload()
        for name, tab in tabs.items():
            _wait_for(tab, "Verdicts on this checkpoint")
            expect(tab.get_by_label("Your name")).to_have_value(name, timeout=30_000)  # kept by this browser, not
            # by the link
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
    from tests.conftest import PAIRS, recipe_runs

    out = tmp_path / "gate"
    argv = ["compare", "--baseline", *recipe_runs("chtn_fashion_source"), "--candidate",
            *recipe_runs("chtn_no_source"), "--data", str(PAIRS), "--out", str(out)]  # fmt: skip
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
        ARTIFACTS.mkdir(exist_ok=True)
        report.screenshot(path=ARTIFACTS / "compare_report_cli.png", full_page=True)
        with StreamlitServer(ROOT / "app.py", ROOT, env=env) as server:
            page = context.new_page()
            page.goto(server.url + compare_link("chtn_no_source", "chtn_fashion_source").url)
            _wait_for(page, "The rules say NO-GO")
            page.get_by_role("heading", name="Per category").scroll_into_view_if_needed()  # not a table cell
            page.locator(".js-plotly-plot").first.wait_for(timeout=60_000)
            assert_clean(page)
            page.screenshot(path=ARTIFACTS / "compare.png", full_page=True)
            with page.expect_download() as download:
                page.get_by_role("button", name=re.compile("Report \\(HTML")).click()
            downloaded = Path(download.value.path()).read_text(encoding="utf-8")
        browser.close()
    cli = (out / "report.html").read_text(encoding="utf-8")
    assert "data:image/jpeg;base64," in cli and re.search(r"<td>[+-]\d+\.\d%</td>", cli)  # thumbnails; relative in %
    assert _comparable(downloaded) == _comparable(cli)  # the page's download is the CLI's report


def _comparable(report: str) -> str:
    """A report without what differs between two builds of the same comparison: its build time and plotly's
    random element ids."""
    report = re.sub(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d\d:\d\d", "<time>", report)
    return re.sub(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", "<id>", report)


def _meeting_link(size: int, seed: int) -> tuple[str, str, str, str]:
    """A meeting queue's link, with the dataset fingerprint, checkpoint digest and queue id it is about."""

    checkpoint = ws.open_checkpoint(ws.DEFAULT_CHECKPOINT)
    dataset = ws.open_dataset(ws.SAMPLE_DATASET, checkpoint)[0].fingerprint()
    spec = rq.QueueSpec(size=size, seed=seed)
    queue_id = spec.queue_id(checkpoint.digest, dataset)
    link = review_link(ws.DEFAULT_CHECKPOINT, queue_id, 1, spec).url
    return link, dataset, checkpoint.digest, queue_id


def _hold_lock(database: Path) -> sqlite3.Connection:
    """Take the database's write lock from this process, as another program writing would: every save waits in
    SQLite's busy timeout until the returned connection rolls back."""
    holder = sqlite3.connect(database, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    return holder


def _item(tab) -> str:
    """The query id of the item on screen."""
    heading = tab.locator("p").filter(has_text=re.compile(r"^#\d+ · .* · query ")).first.inner_text()
    return re.search(r" · query (\S+) · ", heading).group(1)


def _settled(tab) -> None:
    """Wait until the page's run has finished and no element of an earlier run is on screen: a reviewer reads the
    item before typing, and what is typed into the previous item's form, still shown mid-rerun, belongs to it."""
    tab.wait_for_function(
        "!document.querySelector('[data-stale=\"true\"]') && "
        "!document.querySelector('[data-testid=\"stStatusWidgetRunningIcon\"]')",
        timeout=60_000,
    )


def _move_on(tab, position: int, query: str, note: str) -> None:
    """Wait until the page left item `position`. A key press the browser sends while the page reruns is sometimes
    dropped by Streamlit's front end; then the item is still on screen with what was typed in its form (asserted:
    nothing is lost), and the reviewer, seeing nothing happen, presses J again, which saves the draft first."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    for _ in range(3):
        try:
            tab.get_by_text(re.compile(rf"^Notes on #{position + 1} · query ")).first.wait_for(timeout=15_000)
            return
        except PlaywrightTimeout:
            tab.screenshot(path=ARTIFACTS / "review-stuck.png", full_page=True)
            assert tab.get_by_label(f"Notes on #{position} · query {query}", exact=True).input_value() == note
            tab.evaluate("document.activeElement && document.activeElement.blur()")
            tab.keyboard.press("j")
    raise AssertionError(f"the page never left item #{position}")


def test_save_then_j_at_once_on_a_slow_database_keeps_every_verdict_of_both_reviewers(tmp_path):
    from playwright.sync_api import sync_playwright

    link, dataset, checkpoint, queue_id = _meeting_link(size=6, seed=11)
    database = tmp_path / "review.sqlite"
    env = {**os.environ, "CHTN_REVIEW_DB": str(database)}
    typed: dict[tuple[str, str], str] = {}  # (reviewer, query id) -> note
    ARTIFACTS.mkdir(exist_ok=True)
    with StreamlitServer(ROOT / "app.py", ROOT, env=env) as server, sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        tabs = {
            name: browser.new_context(viewport={"width": 1400, "height": 1000}).new_page() for name in ("Ada", "Bob")
        }
        for name, tab in tabs.items():
            tab.goto(server.url + link)
            _wait_for(tab, "Save verdict")
            tab.get_by_label("Your name").fill(name)
            tab.get_by_label("Your name").press("Enter")
            tab.get_by_role("button", name="Save verdict").wait_for()
        for round_ in range(2):
            for name, tab in tabs.items():  # both type while nothing is slow yet
                _wait_for(tab, f"#{round_ + 1} ·")
                _settled(tab)
                note = f"{name}'s note on item {round_ + 1}: <b>kept</b>"
                label = tab.get_by_text(re.compile(rf"^Notes on #{round_ + 1} · query \S+$")).first  # its own form,
                query = label.inner_text().rsplit(" ", 1)[1]  # not the previous item's, still on screen mid-rerun
                typed[(name, query)] = note
                verdict = "label noise" if name == "Ada" else "model error"
                group = tab.get_by_role("radiogroup", name=f"Verdict on #{round_ + 1} · query {query}", exact=True)
                group.get_by_text(verdict, exact=True).click()
                _settled(tab)  # the verdict's click reruns the page
                tab.get_by_label(f"Notes on #{round_ + 1} · query {query}", exact=True).fill(note)
            holder = _hold_lock(database)
            try:
                for tab in tabs.values():  # each presses Ctrl+Enter in the note and J at once: the saves wait
                    tab.get_by_label(re.compile(rf"^Notes on #{round_ + 1} ")).press("Control+Enter")
                    tab.evaluate("document.activeElement && document.activeElement.blur()")
                    tab.keyboard.press("j")
                tabs["Bob"].wait_for_timeout(1500)  # the database stays locked a while: the saves wait for it
                if round_ == 0:
                    tabs["Ada"].screenshot(path=ARTIFACTS / "review-saving.png")
            finally:
                holder.execute("ROLLBACK")
                holder.close()
            for name, tab in tabs.items():  # "Saved #7: label noise on #1 · query 1234 (i2t) by Ada."
                previous = [q for (who, q), _ in typed.items() if who == name][-1]
                _move_on(tab, round_ + 1, previous, typed[(name, previous)])
                try:
                    tab.get_by_text(f"on #{round_ + 1} · query").first.wait_for(timeout=60_000)
                except Exception:
                    tab.screenshot(path=ARTIFACTS / f"review-not-saved-{name}.png", full_page=True)
                    raise
        for name, tab in tabs.items():
            assert_clean(tab)
            tab.screenshot(path=ARTIFACTS / f"review-saved-{name}.png", full_page=True)
        browser.close()
    stored = ReviewStore(database).verdicts(dataset, checkpoint)
    rows = [(r.reviewer, r.query_id, r.verdict, r.note) for r in stored.itertuples()]
    latest = stored.sort_values("id").groupby(["reviewer", "query_id"]).last()
    assert {key: row.note for key, row in latest.iterrows()} == typed, rows  # every typed verdict, on its own item
    assert all((who, query) in typed and note == typed[(who, query)] for who, query, _, note in rows), rows
    assert len(rows) == len(typed), rows  # a Save and a J delivered in overlapping runs store one row, not a repeat
    assert set(stored["queue_id"]) == {queue_id}


def _downloads(tab, labels: list[str]) -> dict[str, bytes]:
    """Click each download button right after the previous one; every click's file must arrive (by file name)."""
    arrived: list = []
    tab.on("download", lambda download: arrived.append(download))
    for label in labels:
        tab.get_by_role("button", name=label).click()
    tab.wait_for_timeout(500)
    deadline = 60
    while len(arrived) < len(labels) and deadline:
        tab.wait_for_timeout(1000)
        deadline -= 1
    assert len(arrived) == len(labels), [download.suggested_filename for download in arrived]
    return {download.suggested_filename: Path(download.path()).read_bytes() for download in arrived}


def test_downloads_clicked_one_right_after_another_all_arrive(tmp_path):
    from playwright.sync_api import sync_playwright

    link, _, _, queue_id = _meeting_link(size=6, seed=11)
    env = {**os.environ, "CHTN_REVIEW_DB": str(tmp_path / "review.sqlite")}
    with StreamlitServer(ROOT / "app.py", ROOT, env=env) as server, sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        tab = browser.new_context(viewport={"width": 1400, "height": 1000}, accept_downloads=True).new_page()
        tab.goto(server.url + link)
        _wait_for(tab, "Meeting summary (HTML)")
        files = _downloads(tab, ["Queue as CSV", "Queue as JSON", "Meeting summary (HTML)", "Queue as CSV"])
        stem = f"review_{ws.DEFAULT_CHECKPOINT}_{queue_id}"  # the checkpoint and the queue name every file
        assert set(files) == {f"{stem}.csv", f"{stem}.json", f"{stem}_summary.html"}
        assert files[f"{stem}.csv"].startswith(b'"checkpoint","checkpoint_hash","queue_id","position",')
        assert b'"items"' in files[f"{stem}.json"]
        assert_clean(tab)
        tab.goto(server.url + compare_link("chtn_no_source", "chtn_fashion_source").url)
        _wait_for(tab, "Model card (JSON)")
        files = _downloads(tab, ["Report (HTML, opens offline)", "Model card (JSON)", "Model card (JSON)"])
        stem = "compare_chtn_fashion_source_vs_chtn_no_source"  # baseline A vs candidate B
        assert set(files) == {f"{stem}.html", f"{stem}.json"}
        assert b"Rules say NO-GO" in files[f"{stem}.html"]
        assert_clean(tab)
        browser.close()
