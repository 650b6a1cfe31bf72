"""A review meeting walked end to end in a real browser, timed step by step, with a screenshot of each step.

    python -m bench.walk_meeting          # writes the section "A meeting, walked end to end" of
                                          # docs/app_benchmark.md and the screenshots under test-artifacts/meeting/

What a team does in a meeting on the sample, as two people in two browsers on one server (a new review database):
Ada starts a 6-item meeting queue and shares its link; Bob opens it; both name themselves and give verdicts on
the first three items (they agree on two and disagree on the third); both see the other's verdicts and the
agreement panel; Ada downloads the CSV, the JSON and the meeting summary, which opens offline; then the room opens
Compare on the two sample checkpoints, records a NO-GO decision with its deciders and rationale, and downloads the
comparison report. Every page is checked for exceptions, error boxes and dialogs (the walk fails on any).
"""

from __future__ import annotations

import datetime as dt
import os
import platform
import re
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from bench.bench_app import BenchError, _settle, write_sections
from tests.harness import StreamlitServer, launch_chromium, page_problems
from views.links import compare_link

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "app_benchmark.md"
HEADING = "## A meeting, walked end to end"
SHOTS = ROOT / "test-artifacts" / "meeting"
TIMEOUT_MS = 120_000
# reviewer: their verdicts on items 1-3 (they disagree on #3) and a note on it
VERDICTS = {
    "Ada": (("model error", "model error", "label noise"), "Ada: the caption names the wrong colour"),
    "Bob": (("model error", "model error", "model error"), "Bob: the image is the wrong product"),
}


def _visible(tab, text: str | re.Pattern) -> None:
    """Wait until `text` is on screen, then fail on an exception, error box or dialog."""
    tab.get_by_text(text).first.wait_for(state="visible", timeout=TIMEOUT_MS)
    problems = page_problems(tab)
    if problems:
        raise BenchError(f"{tab.url}: {'; '.join(problems)}")


class Walk:
    """The steps' timings and screenshots."""

    def __init__(self) -> None:
        self.steps: list[tuple[str, float, str]] = []

    def step(self, what: str, shot: str, tab, action: Callable[[], None]) -> None:
        start = time.perf_counter()
        action()
        seconds = time.perf_counter() - start
        _settle(tab)  # untimed: the page's run has finished, so the screenshot shows no element still drawing
        tab.screenshot(path=SHOTS / shot, full_page=True)
        self.steps.append((what, seconds, shot))
        print(f"{seconds:6.1f} s  {what}  ({shot})", flush=True)


def _verdicts(tab, name: str) -> None:
    """`name` gives the verdicts of VERDICTS on items 1-3, saving each and moving on with Next."""
    chosen, note = VERDICTS[name]
    for position, verdict in enumerate(chosen, start=1):
        _visible(tab, re.compile(rf"^Verdict on #{position} "))
        group = tab.get_by_role("radiogroup", name=re.compile(rf"^Verdict on #{position} "))
        group.get_by_text(verdict, exact=True).click()
        if position == 3:
            tab.get_by_label(re.compile(r"^Notes on #3 ")).fill(note)
        tab.get_by_role("button", name="Save verdict").click()
        _visible(tab, re.compile(rf"^Saved #\d+: {verdict} on #{position} .* by {name}\."))
        if position < 3:
            tab.get_by_text("Next", exact=True).first.click()  # the button's label; not "Next unreviewed"


def _download(tab, label: str, folder: Path) -> Path:
    with tab.expect_download() as download:
        tab.get_by_role("button", name=re.compile(re.escape(label))).click()
    path = folder / download.value.suggested_filename
    download.value.save_as(path)
    return path


def walk(work: Path) -> Walk:
    from playwright.sync_api import sync_playwright

    SHOTS.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "CHTN_REVIEW_DB": str(work / "review.sqlite")}
    steps = Walk()
    with StreamlitServer(ROOT / "app.py", ROOT, env, work / "server.log") as server, sync_playwright() as pw:
        browser = launch_chromium(pw)
        ada, bob = (browser.new_context(viewport={"width": 1400, "height": 1100}).new_page() for _ in range(2))

        def start_queue() -> None:
            ada.goto(server.url + "/review")
            _visible(ada, "All mis-retrievals")
            ada.get_by_text("Meeting queue", exact=True).first.click()  # the mode of the page
            _visible(ada, "New meeting queue")
            ada.get_by_label("Items").fill("6")
            ada.get_by_role("button", name="Start the meeting queue").click()
            _visible(ada, "Save verdict")

        steps.step("Ada starts a 6-item meeting queue", "01_queue_started.png", ada, start_queue)
        link = ada.url

        def bob_opens() -> None:
            bob.goto(link)
            _visible(bob, "Save verdict")

        steps.step("Bob opens the queue's link", "02_bob_opens_link.png", bob, bob_opens)
        for name, tab in (("Ada", ada), ("Bob", bob)):

            def name_and_review(name: str = name, tab=tab) -> None:
                tab.get_by_label("Your name").fill(name)
                tab.get_by_label("Your name").press("Enter")
                _verdicts(tab, name)

            steps.step(f"{name} gives verdicts on items 1-3", f"03_{name.lower()}_verdicts.png", tab, name_and_review)

        def ada_sees_bob() -> None:
            _visible(ada, "— Bob,")  # refreshed by itself, nothing clicked
            ada.reload()  # the agreement panel counts at the page's next run
            _visible(ada, re.compile(r"^Agreement between reviewers · [1-9]"))
            if not ada.get_by_text("Krippendorff's alpha").first.is_visible():
                ada.get_by_text(re.compile("^Agreement between reviewers")).first.click()
            ada.locator('[data-testid="stMetric"]', has_text="Krippendorff's alpha").wait_for(timeout=TIMEOUT_MS)

        steps.step("Ada sees Bob's verdict and the agreement", "04_agreement.png", ada, ada_sees_bob)
        downloads = work / "downloads"
        downloads.mkdir()
        files: list[Path] = []

        def exports() -> None:
            for label in ("Queue as CSV", "Queue as JSON", "Meeting summary (HTML)"):
                files.append(_download(ada, label, downloads))
            summary = browser.new_context(offline=True).new_page()
            summary.goto(files[-1].as_uri())
            _visible(summary, "Still disputed")
            summary.screenshot(path=SHOTS / "05_summary_html.png", full_page=True)

        steps.step("Ada downloads CSV, JSON and the summary (opened offline)", "05_exports.png", ada, exports)

        def compare() -> None:
            ada.goto(server.url + compare_link("chtn_no_source", "chtn_fashion_source").url)
            _visible(ada, "The rules say")

        steps.step("The room opens Compare (B: no source, A: fashion source)", "06_compare.png", ada, compare)

        def decide() -> None:
            ada.get_by_role("radiogroup", name="Decision").get_by_text("NO-GO", exact=True).click()
            ada.get_by_label("Deciders").fill("Ada, Bob")
            ada.get_by_label("Rationale").fill("B loses MAP in both directions; the rules say no.")
            ada.get_by_role("button", name="Record the decision").click()
            _visible(ada, "Decisions on this comparison")
            files.append(_download(ada, "Report (HTML", downloads))

        steps.step("Record a NO-GO decision and download the report", "07_decision.png", ada, decide)
        report = browser.new_context(offline=True).new_page()
        report.goto(files[-1].as_uri())
        _visible(report, "Decision log")
        report.screenshot(path=SHOTS / "08_report_html.png", full_page=True)
        browser.close()
    print("downloaded:", ", ".join(f"{f.name} ({f.stat().st_size / 1e3:.0f} kB)" for f in files))
    return steps


def markdown(steps: Walk, when: str) -> str:
    rows = "\n".join(f"| {what} | {seconds:.1f} | `{shot}` |" for what, seconds, shot in steps.steps)
    total = sum(seconds for _, seconds, _ in steps.steps)
    return f"""{HEADING}

Generated by `python -m bench.walk_meeting` on {when} ({os.cpu_count()} cores, {platform.machine()}); it drives two
chromium browsers (Ada and Bob) on one server with a new review database, and leaves a screenshot of each step
under `test-artifacts/meeting/`. A step's time includes the typing and clicking of the script, not a person's.

| step | seconds | screenshot |
|---|---:|---|
{rows}
| **whole meeting** | **{total:.1f}** | |
"""


def main() -> int:
    steps = walk(Path(tempfile.mkdtemp(prefix="walk-meeting-")))
    when = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    write_sections(DOC, markdown(steps, when))
    print(f"wrote {DOC}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
