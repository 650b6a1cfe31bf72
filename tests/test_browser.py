"""Real-browser test: `streamlit run app.py` driven by Debian's headless chromium through Playwright.

Visits every page, asserts no exception or error element and that images really loaded, and saves
screenshots under test-artifacts/ (look at them).
"""

from __future__ import annotations

import time

import pytest

from tests.conftest import ROOT
from tests.harness import StreamlitServer, assert_clean, launch_chromium, require_chromium

pytestmark = pytest.mark.browser
IDLE = "!document.querySelector('[data-testid=\"stStatusWidget\"]')"  # no script run going on
ARTIFACTS = ROOT / "test-artifacts"

require_chromium()


@pytest.fixture(scope="module")
def server():
    with StreamlitServer(ROOT / "app.py", ROOT) as running:
        yield running.url


@pytest.fixture(scope="module")
def fresh_server(tmp_path_factory):
    """A server of its own with an empty cache folder: its first shared-space visit finds no UMAP on disk, whatever
    other tests of the session computed."""
    import os

    env = {**os.environ, "CHTN_CACHE_DIR": str(tmp_path_factory.mktemp("fresh-cache"))}
    with StreamlitServer(ROOT / "app.py", ROOT, env=env) as running:
        yield running.url


@pytest.fixture(scope="module")
def page(server):
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        tab = browser.new_page(viewport={"width": 1400, "height": 1000})
        yield tab
        browser.close()


def _images_loaded(tab) -> list[int]:
    return tab.eval_on_selector_all(
        '[data-testid="stMain"] img', "els => els.map(e => e.complete ? e.naturalWidth : 0)"
    )


def test_overview_renders(page, server):
    page.goto(f"{server}/", wait_until="networkidle")
    page.get_by_text("MAP (mean of directions)").wait_for(timeout=300_000)
    page.locator(".js-plotly-plot").first.wait_for(timeout=60_000)
    page.wait_for_timeout(1000)
    assert_clean(page)
    assert page.get_by_text("Model card").count() >= 1
    page.screenshot(path=str(ARTIFACTS / "overview.png"), full_page=True)
    chart = page.locator(".js-plotly-plot").first
    chart.scroll_into_view_if_needed()
    assert chart.locator("g.point, path.point").count() >= 20  # bars for the 20 categories
    chart.screenshot(path=str(ARTIFACTS / "overview_chart.png"))
    table = page.locator('[data-testid="stDataFrame"]').first
    table.scroll_into_view_if_needed()
    table.screenshot(path=str(ARTIFACTS / "overview_queries.png"))


def test_retrieval_explorer_renders_with_loaded_images(page, server):
    page.goto(f"{server}/explorer?direction=t2i&k=10", wait_until="networkidle")
    page.get_by_text("Top 10 images").wait_for(timeout=300_000)
    page.wait_for_function("document.querySelectorAll('[data-testid=\"stMain\"] img').length >= 11", timeout=60_000)
    page.wait_for_timeout(1500)
    assert_clean(page)
    widths = _images_loaded(page)
    assert len(widths) >= 11 and all(w > 0 for w in widths), widths  # query image + 10 results
    page.screenshot(path=str(ARTIFACTS / "retrieval_t2i.png"), full_page=True)


def test_the_shared_space_fetches_plotly_code_as_it_loads(page, server):
    """The shared space's HTML names Streamlit's plotly chart code for preloading (app.py's PreloadCharts), so the
    browser fetches it with Streamlit's own code rather than once the map arrives; a page whose answer is text
    (the explorer) does not."""
    import gzip
    import re
    from urllib.request import Request, urlopen

    def html(path: str) -> str:
        asked = Request(f"{server}{path}", headers={"Accept": "text/html", "Accept-Encoding": "gzip"})  # a browser's
        with urlopen(asked, timeout=60) as answer:
            body = answer.read()
            return (gzip.decompress(body) if answer.headers.get("Content-Encoding") == "gzip" else body).decode()

    link = r'<link rel="modulepreload" crossorigin href="\./static/js/(PlotlyChart\.[\w-]+\.js)">\n</head>'
    chunk = re.search(link, html("/space"))
    assert chunk and not re.search(link, html("/explorer"))
    with urlopen(f"{server}/static/js/{chunk.group(1)}", timeout=60) as code:
        assert code.status == 200 and len(code.read()) > 1_000_000
    first_visit = page.context.browser.new_context(viewport={"width": 1400, "height": 1000})  # nothing cached yet
    try:
        tab = first_visit.new_page()
        tab.goto(f"{server}/space", wait_until="commit")
        tab.get_by_text("Selection: 0 items").wait_for(timeout=300_000)
        tab.locator(".js-plotly-plot").first.wait_for(timeout=120_000)
        kinds = tab.evaluate(
            "performance.getEntriesByType('resource')"
            ".filter(r => r.name.includes('/PlotlyChart.')).map(r => r.initiatorType)"
        )
    finally:
        first_visit.close()
    assert kinds and kinds[0] in ("other", "link"), kinds  # the preload (the chart's own import says "script")


def test_navigation_and_image_to_text(page, server):
    page.goto(f"{server}/", wait_until="networkidle")
    page.get_by_text("MAP (mean of directions)").wait_for(timeout=300_000)
    page.locator('[data-testid="stSidebarNav"] a', has_text="Retrieval explorer").click()
    page.get_by_text("Top 10 texts").wait_for(timeout=120_000)
    page.wait_for_timeout(1000)
    assert_clean(page)
    assert "query=" in page.url and "direction=i2t" in page.url
    assert all(w > 0 for w in _images_loaded(page))
    page.screenshot(path=str(ARTIFACTS / "retrieval_i2t.png"), full_page=True)


def test_a_bound_widget_writes_the_address_bar(page, server):
    """Streamlit's query-parameter binding: a search typed in the explorer is in the URL at once, so the address bar
    is the link to share; the query the page writes itself is there too."""
    page.goto(f"{server}/explorer?direction=i2t", wait_until="networkidle")
    page.get_by_text("Top 10 texts").wait_for(timeout=300_000)
    search = page.locator('input[aria-label="Search by id, title or category"]')
    search.fill("watches")
    search.press("Enter")
    page.wait_for_function("location.search.includes('search=watches')", timeout=60_000)
    page.wait_for_timeout(1500)
    assert_clean(page)
    assert "query=" in page.url and "direction=i2t" in page.url


def test_explain_link_opens_the_attribution_of_that_result(page, server):
    """One click from a result card to its explanation: the result's pair and the query's own pair, each image in
    colour beside its heat map, one colour scale, highlighted words, no error."""
    page.goto(f"{server}/explorer?direction=t2i&k=10", wait_until="networkidle")
    page.get_by_text("Top 10 images").wait_for(timeout=300_000)
    page.locator('[data-testid="stPageLink"] a', has_text="Explain").nth(1).click()
    page.get_by_text("Why this result?").first.wait_for(timeout=120_000)
    page.get_by_text("Strongest words").first.wait_for(timeout=300_000)
    page.get_by_text("Download PNG").nth(1).wait_for(timeout=300_000)  # the second pair's map, drawn after the first
    page.wait_for_timeout(1500)
    assert_clean(page)
    assert "attribution" in page.url and "result=" in page.url
    assert all(w > 0 for w in _images_loaded(page))
    assert page.get_by_text("Download PNG").count() == 2 and page.get_by_text("Colour scale:").count() == 1
    assert page.get_by_text("In colour, as the model saw it").count() == 2
    page.screenshot(path=str(ARTIFACTS / "attribution.png"), full_page=True)


def test_the_chinese_sample_explains_each_word_of_a_title(page, server):
    """The Chinese sample opened by path as a user would: "Why this result?" gives each word of a Chinese title
    (jieba's segmentation) its own highlight and score, drawn in a CJK font (Debian's fonts-noto-cjk), no error."""
    import shutil
    import subprocess
    from urllib.parse import quote

    from chtn import segment

    fonts = subprocess.run(["fc-list", ":lang=zh"], capture_output=True, text=True) if shutil.which("fc-list") else None
    assert fonts and fonts.stdout.strip(), "no CJK font: apt-get install -y fonts-noto-cjk (.ci/run does)"
    zh = ROOT / "sample_data" / "fashion_zh"
    checkpoint = zh / "checkpoints" / "chtn_zh_fashion_source.safetensors"
    page.goto(f"{server}/attribution?checkpoint={quote(str(checkpoint))}", wait_until="networkidle")
    page.locator('[data-testid="stSidebar"] [data-testid="stSelectbox"]').nth(1).click()
    page.get_by_role("option", name="Manifest or Wikipedia folder (path)…").click()
    path_box = page.get_by_label("Dataset path")
    path_box.fill(str(zh / "pairs.csv"))
    path_box.press("Enter")
    words = page.locator('[data-testid="stMain"] span[title^="+"], [data-testid="stMain"] span[title^="-"]')
    # The English sample's explanation stays on screen while the run for the path goes on: wait for the Chinese
    # title's words themselves, not for headings that both explanations share.
    deadline = time.monotonic() + 300
    while not any(segment.CJK.search(w) for w in words.all_inner_texts()) and time.monotonic() < deadline:
        page.wait_for_timeout(500)
    page.get_by_text("Download PNG").nth(1).wait_for(timeout=300_000)
    page.wait_for_timeout(1500)
    assert_clean(page)
    shown = words.all_inner_texts()
    chinese = [w for w in shown if segment.CJK.search(w)]
    assert len(chinese) >= 4, shown  # the two titles split into words, not one block each
    assert all(len(w) <= 6 for w in chinese), chinese  # jieba's words, not whole sentences
    titles = words.evaluate_all("els => els.map(e => e.title.split(' ')[0])")
    assert len(set(titles)) > 2, titles  # scores of their own
    words.first.scroll_into_view_if_needed()
    page.screenshot(path=str(ARTIFACTS / "attribution_chinese.png"))


def _wait_for_text(page, text: str, shot: str, seconds: float = 120) -> None:
    """Poll the page's rendered text until it holds `text`; on a timeout, keep a screenshot in ARTIFACTS and say
    what the page showed instead."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if text in page.locator("body").inner_text():
            return
        page.wait_for_timeout(500)
    page.screenshot(path=str(ARTIFACTS / shot), full_page=True)
    raise AssertionError(f"{text!r} never appeared at {page.url}: {page.locator('body').inner_text()[:1500]}")


def test_shared_space_lasso_fills_the_selection_table(page, fresh_server):
    """The first visit shows the PCA with a note, then the UMAP by itself; a lasso drawn with the mouse over the
    UMAP map fills the selection table and its per-category counts, and Back from the explorer reopens it."""
    import re

    page.goto(f"{fresh_server}/space", wait_until="networkidle")
    page.get_by_text("Selection: 0 items").wait_for(timeout=300_000)
    page.locator(".js-plotly-plot").first.wait_for(timeout=60_000)
    # first visit on this server (empty cache): the PCA at once, saying so, while the UMAP computes
    page.get_by_text("Showing PCA while UMAP compiles/computes (first use on this server").wait_for(timeout=60_000)
    assert_clean(page)
    assert page.get_by_text("All 800 points are shown").count() == 1
    page.screenshot(path=str(ARTIFACTS / "space_pca_first.png"), full_page=True)
    page.get_by_text("Showing UMAP (umap-learn)").wait_for(timeout=600_000)  # switches by itself
    page.locator(".js-plotly-plot").first.wait_for(timeout=60_000)
    page.wait_for_timeout(1500)
    assert_clean(page)
    assert page.get_by_text("Showing PCA while UMAP").count() == 0
    assert page.get_by_text("All 800 points are shown").count() == 1
    page.screenshot(path=str(ARTIFACTS / "space.png"), full_page=True)
    area = page.locator(".js-plotly-plot .nsewdrag").first.bounding_box()
    x, y, w, h = area["x"], area["y"], area["width"], area["height"]
    page.mouse.move(x + 0.05 * w, y + 0.05 * h)
    page.mouse.down()
    for fx, fy in ((0.6, 0.05), (0.6, 0.6), (0.05, 0.6), (0.05, 0.06)):
        page.mouse.move(x + fx * w, y + fy * h, steps=12)
    page.mouse.up()
    heading = page.get_by_text(re.compile(r"Selection: [1-9]\d* items?"))
    heading.wait_for(timeout=120_000)
    page.wait_for_timeout(1500)
    assert_clean(page)
    count = int(re.search(r"\d+", heading.inner_text()).group())
    assert 0 < count < 800
    assert page.locator('[data-testid="stDataFrame"]').count() >= 3  # gap table, selection, per-category counts
    explore = page.locator('[data-testid="stPageLink"] a', has_text="retrieval explorer")
    explore.first.wait_for(timeout=60_000)  # drawn after the tables: on a loaded machine a moment later
    assert explore.count() == 1
    heading.scroll_into_view_if_needed()
    page.wait_for_timeout(500)
    page.screenshot(path=str(ARTIFACTS / "space_selection.png"))
    map_url = page.url
    assert "region=" in map_url  # the lasso's shape is in the link
    page.locator('[data-testid="stPageLink"] a', has_text="retrieval explorer").click()  # click-through
    page.get_by_text("Retrieval explorer").first.wait_for(timeout=120_000)
    page.get_by_text(re.compile(r"Top 10 (texts|images)")).wait_for(timeout=120_000)
    assert_clean(page)
    assert "explorer" in page.url and "query=" in page.url
    page.wait_for_function(IDLE, timeout=120_000)
    page.wait_for_timeout(2000)  # a follow-up run (the explorer's deferred parts) starts a moment after the first
    page.wait_for_function(IDLE, timeout=120_000)
    page.go_back()  # the lasso is in the map's URL: Back reopens the same selection
    _wait_for_text(page, "A selection reopened", "space_back_failure.png", seconds=60)
    again = int(re.search(r"\d+", page.get_by_text(re.compile(r"Selection: \d+ items?")).inner_text()).group())
    assert "region=" in page.url and abs(again - count) <= max(3, count // 20)  # the lasso's shape, thinned
    assert_clean(page)
    page.screenshot(path=str(ARTIFACTS / "space_back.png"), full_page=True)
    # through the sidebar and back: the session keeps the selection, and the address carries it again
    page.locator('[data-testid="stSidebarNav"] a', has_text="Overview").click()
    page.get_by_text("Average precision per category").first.wait_for(timeout=120_000)
    page.wait_for_function(IDLE, timeout=120_000)
    page.locator('[data-testid="stSidebarNav"] a', has_text="Shared space").click()
    _wait_for_text(page, "A selection reopened", "space_sidebar_failure.png", seconds=60)
    page.wait_for_function(IDLE, timeout=120_000)
    assert "space" in page.url and "region=" in page.url
    assert page.get_by_text(f"Selection: {again} item").count() == 1
    page.get_by_role("button", name="Clear selection").click()
    page.get_by_text("Selection: 0 items").wait_for(timeout=60_000)
    page.wait_for_function(IDLE, timeout=120_000)
    assert "region=" not in page.url
    assert_clean(page)


def test_upload_an_image_query_and_a_non_image(page, server, tmp_path):
    from tests.conftest import PAIRS

    photo = next((PAIRS.parent / "images").glob("*.jpg"))
    page.goto(f"{server}/explorer", wait_until="networkidle")
    page.get_by_text("Top 10 texts").wait_for(timeout=300_000)
    page.get_by_text("Upload an image").click()
    uploader = page.locator('[data-testid="stMain"] [data-testid="stFileUploader"] input[type="file"]')
    uploader.set_input_files(str(photo))
    page.get_by_text("Top 10 texts").wait_for(timeout=120_000)
    page.wait_for_timeout(1000)
    assert_clean(page)
    page.screenshot(path=str(ARTIFACTS / "retrieval_upload.png"), full_page=True)
    fake = tmp_path / "notes.jpg"
    fake.write_text("this is not an image")
    uploader.set_input_files(str(fake))
    error = page.locator('[data-testid="stAlertContentError"]')
    error.wait_for(timeout=60_000)
    assert "notes.jpg is not a readable image" in error.inner_text()
    assert page.locator('[data-testid="stException"]').count() == 0
    uploader.set_input_files(str(photo))  # the photo again: its results link to their explanation
    page.get_by_text("Top 10 texts").wait_for(timeout=120_000)
    page.wait_for_function(IDLE, timeout=120_000)  # as a user sees it: the explorer's run over before the click (a
    page.wait_for_timeout(1000)  # run still going on a loaded machine writes its URL over the link's)
    page.wait_for_function(IDLE, timeout=120_000)
    page.locator('[data-testid="stPageLink"] a', has_text="Explain").first.click()
    page.get_by_text(f"uploaded image “{photo.name}”").wait_for(timeout=300_000)
    page.get_by_text("Strongest words").first.wait_for(timeout=300_000)
    assert_clean(page)
    assert "upload=" in page.url and "query=" not in page.url
    page.screenshot(path=str(ARTIFACTS / "attribution_upload.png"), full_page=True)


def test_upload_a_checkpoint_then_a_corrupt_one(page, server, tmp_path):
    from tests.conftest import CHECKPOINTS

    page.goto(f"{server}/", wait_until="networkidle")
    page.get_by_text("MAP (mean of directions)").wait_for(timeout=300_000)
    page.locator('[data-testid="stSidebar"] [data-testid="stSelectbox"]').first.click()
    page.get_by_role("option", name="Upload a file…").click()
    uploader = page.locator('[data-testid="stSidebar"] [data-testid="stFileUploader"] input[type="file"]')
    uploader.set_input_files(str(CHECKPOINTS / "chtn_no_source.safetensors"))
    page.get_by_text("none (no-source ablation)").wait_for(timeout=120_000)
    page.wait_for_timeout(500)
    assert_clean(page)
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes((CHECKPOINTS / "chtn_no_source.safetensors").read_bytes()[:5000])
    uploader.set_input_files(str(broken))
    error = page.locator('[data-testid="stAlertContentError"]')
    error.wait_for(timeout=60_000)
    assert "broken.safetensors is not a readable safetensors file" in error.inner_text()
    assert page.locator('[data-testid="stException"]').count() == 0
    page.screenshot(path=str(ARTIFACTS / "bad_checkpoint_upload.png"), full_page=True)


def test_a_flawed_dataset_says_what_to_do_and_opens_with_skip_invalid_rows(page, server, tmp_path):
    """tests/flaws.py's copy of sample rows: the error box names the problems and the sidebar choice; ticking
    "Skip invalid rows" opens the rest with a warning that says what was skipped."""
    from tests.flaws import build_flawed

    build_flawed(tmp_path / "flawed")
    page.goto(f"{server}/", wait_until="networkidle")
    page.get_by_text("MAP (mean of directions)").wait_for(timeout=300_000)
    page.locator('[data-testid="stSidebar"] [data-testid="stSelectbox"]').nth(1).click()
    page.get_by_role("option", name="Manifest or Wikipedia folder (path)…").click()
    path_box = page.get_by_label("Dataset path")
    path_box.fill(str(tmp_path / "flawed" / "pairs.csv"))
    path_box.press("Enter")
    error = page.locator('[data-testid="stAlertContentError"]')
    error.wait_for(timeout=120_000)
    assert 'tick "Skip invalid rows"' in error.inner_text() and "image too large" in error.inner_text()
    page.screenshot(path=str(ARTIFACTS / "flawed_dataset_error.png"), full_page=True)
    page.get_by_test_id("stCheckbox").get_by_text("Skip invalid rows").click()
    warnings = page.locator('[data-testid="stAlertContentWarning"]')
    warning = warnings.filter(has_text="Skipped")
    warning.wait_for(timeout=300_000)
    assert "Skipped 12 invalid of 24 rows of the test split." in warning.inner_text()
    assert "pair split across train/test: 1" in warning.inner_text()  # the leak: dropped here as by `chtn train`
    page.get_by_text("MAP (mean of directions)").wait_for(timeout=300_000)
    assert_clean(page)
    page.screenshot(path=str(ARTIFACTS / "flawed_dataset_skipped.png"), full_page=True)


def test_bad_links_and_a_16_bit_png_query_are_handled(page, server, tmp_path):
    """A NUL byte in a shared link is an error box (the sidebar still works); a 16-bit PNG is a query like any."""
    import numpy as np
    from PIL import Image

    page.goto(f"{server}/?checkpoint=runs%00/x.safetensors", wait_until="networkidle")
    error = page.locator('[data-testid="stAlertContentError"]')
    error.wait_for(timeout=120_000)
    assert "NUL" in error.inner_text() and page.locator('[data-testid="stException"]').count() == 0
    page.screenshot(path=str(ARTIFACTS / "nul_link.png"), full_page=True)
    deep = tmp_path / "deep.png"
    Image.fromarray((np.linspace(0, 65535, 224 * 224).reshape(224, 224)).astype(np.uint16)).save(deep)
    assert Image.open(deep).mode.startswith("I;16")
    page.goto(f"{server}/explorer?checkpoint=chtn_fashion_source", wait_until="networkidle")
    page.get_by_text("Top 10 texts").wait_for(timeout=300_000)
    page.get_by_text("Upload an image").click()
    page.locator('[data-testid="stMain"] [data-testid="stFileUploader"] input[type="file"]').set_input_files(str(deep))
    page.get_by_text("Top 10 texts").wait_for(timeout=120_000)
    page.wait_for_timeout(1000)
    assert_clean(page)


def test_source_bias_page_shows_the_gate_the_table_and_the_charts(page, server):
    page.goto(f"{server}/bias?checkpoint=chtn_cifar_source", wait_until="networkidle")
    page.get_by_text("switched the source off").wait_for(timeout=600_000)
    pending = page.get_by_text("they compute in the background")
    if pending.count():  # this server's cache is empty: the gain at once, the source diagnostics by themselves
        page.screenshot(path=str(ARTIFACTS / "source_bias_pending.png"), full_page=True)
        pending.wait_for(state="detached", timeout=600_000)
    page.locator(".js-plotly-plot").nth(5).wait_for(timeout=120_000)
    page.wait_for_timeout(1500)
    assert_clean(page)
    page.screenshot(path=str(ARTIFACTS / "source_bias.png"), full_page=True)


def test_the_cli_bias_report_opens_offline_with_its_plots(page, tmp_path):
    """`chtn bias` writes one self-contained HTML file: opened from disk, every plot draws (plotly.js inlined)."""
    from chtn.cli import main
    from tests.conftest import CHECKPOINTS, PAIRS

    out = tmp_path / "bias"
    cifar = CHECKPOINTS / "chtn_cifar_source.safetensors"
    assert (
        main(["bias", "--checkpoint", str(cifar), "--data", str(PAIRS), "--out", str(out), "--resamples", "500"]) == 0
    )
    page.route("http*://**", lambda route: route.abort())  # offline: any fetch would fail
    page.goto((out / "report.html").as_uri())
    page.locator(".js-plotly-plot .main-svg").nth(6).wait_for(timeout=60_000)
    assert page.locator(".js-plotly-plot").count() >= 7
    assert "switched the source off" in page.inner_text("body")
    page.screenshot(path=str(ARTIFACTS / "bias_report_html.png"), full_page=False)
    page.unroute("http*://**")
