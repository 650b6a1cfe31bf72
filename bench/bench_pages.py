"""Time to each dashboard page's main answer in a real browser, cold and warm, against a bare Streamlit page.

    python -m bench.bench_pages                 # writes the section "Time to each page's main answer" of
                                                # docs/app_benchmark.md and prints its table
    python -m bench.bench_pages --repeats 1 --no-markdown   # quick smoke run
    python -m bench.bench_pages --pages "Why this result?,Compare checkpoints"   # some pages, table printed only
    python -m bench.bench_pages --only-in-turn  # the pages in turn on one new server only (a minute), printed

Per page, as a new user meets it on the sample:
- **cold**: a new server (`python -m streamlit run app.py`, the harness of the browser tests) with an empty
  `CHTN_CACHE_DIR` and `NUMBA_CACHE_DIR` (a fresh install) and a new review database; the time from the page load to
  its main answer on screen, after the server answered /_stcore/health. Each page gets its own fresh server, so each
  figure is that page opened first (while app.py's start-up warm-up runs beside it).
- **cold, server warmed up first**: the same on another new server, opened once the warm-up's console lines say it
  has finished: a server started before the meeting, on which nobody has opened a page yet.
- **warm**: the same server, the page loaded again (`--repeats` times; median, min-max in brackets).
- **complete** (pages that answer first and fill in the rest in the background): until the rest is there too.
- **server busy**: on the server warmed up first, the page opened in a new browser (one more person) right after
  another browser opened Source bias, whose image diagnostics then compute in the background: what a page costs
  while an earlier visit's background work runs.
- **in turn**: every page opened one after another, each in a new browser, on ONE new server with empty caches,
  from the moment it answers /_stcore/health (4 s on each page after its answer): a meeting's first minute on a
  fresh install, where the pages meet the warm-up's later steps (the first attribution, compiling umap-learn) and
  the background jobs of the pages opened before them.
- **bare**: a page of two lines (`st.title`, `st.write`) started and reloaded the same way, interleaved.

The main answer is a text each page shows once its answer is drawn, and the plot for a page whose answer is one
(MAIN below: the shared space's map, whose code the browser fetches only then); every page is checked for
exceptions, error boxes and dialogs (the run fails on any). The sample's embeddings and source features are
shipped, so no cold page embeds the test split.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import re
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple

from bench.bench_app import (
    BARE_SCRIPT,
    BenchError,
    _assert_clean,
    _stats,
    _wait_bare,
    _wait_quiet,
    _warm_up_seconds,
    write_sections,
)
from tests.harness import StreamlitServer, launch_chromium

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "app_benchmark.md"
HEADING = "## Time to each page's main answer"
IN_TURN_PAUSE = 4.0  # seconds on each page after its answer before the next is opened (in turn)


class Main(NamedTuple):
    """How a page is timed: its address, the text that says its main answer is on screen (and `plot`: a plot too,
    for a page whose answer is a plot), and for a page that fills in the rest afterwards, how to see the rest has
    come: an interim note gone, or a final text shown."""

    path: str
    answer: str
    pending: str | None = None
    final: str | None = None
    plot: bool = False


MAIN: dict[str, Main] = {
    "Overview": Main("/", "MAP (mean of directions)"),
    "Retrieval explorer": Main("/explorer", "Top 10 texts"),
    "Why this result?": Main(
        "/attribution?direction=i2t&query=13501&result=11375", "Similarity of the pair", final="Strongest words"
    ),
    "Shared space": Main("/space", "Selection: 0 items", pending="Showing PCA while UMAP", plot=True),
    "Source bias": Main(
        "/bias?checkpoint=chtn_fashion_source", "Domain gate.", pending="they compute in the background"
    ),
    "Review": Main("/review", "Save verdict"),
    "Compare checkpoints": Main("/compare?checkpoint=chtn_no_source&baseline=chtn_fashion_source", "The rules say"),
}


@contextmanager
def _tab(browser) -> Iterator:
    """A tab in a browser context of its own (an empty HTTP cache), closed before its server stops: a tab left open
    keeps trying to reach its stopped server and takes CPU from the pages measured after it."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    try:
        yield context.new_page()
    finally:
        context.close()


def _answer(tab, url: str, main: Main, timeout_ms: int) -> float:
    """Seconds from starting a page load of `url` to its main answer visible (the page is then checked clean)."""
    start = time.perf_counter()
    tab.goto(url, wait_until="commit", timeout=timeout_ms)
    tab.get_by_text(main.answer).first.wait_for(state="visible", timeout=timeout_ms)
    if main.plot:  # drawn: plotly's code is fetched on a page's first plot, after the text around it
        tab.locator(".js-plotly-plot").first.wait_for(state="visible", timeout=timeout_ms)
    seconds = time.perf_counter() - start
    _assert_clean(tab, url)
    return seconds


def _complete(tab, main: Main, timeout_ms: int, started: float) -> float:
    """Seconds from `started` until the rest of the page arrived by itself (its interim note gone, its final text
    shown)."""
    if main.pending and (note := tab.get_by_text(main.pending)).count():
        note.first.wait_for(state="detached", timeout=timeout_ms)
    if main.final:
        tab.get_by_text(main.final).first.wait_for(state="visible", timeout=timeout_ms)
    return time.perf_counter() - started


def _fresh_install(env: dict[str, str], cache: Path) -> dict[str, str]:
    """`env` with a new, empty feature cache, numba cache and review database under `cache` (created here)."""
    cache.mkdir(parents=True)
    return {
        **env,
        "CHTN_CACHE_DIR": str(cache / "chtn"),
        "NUMBA_CACHE_DIR": str(cache / "numba"),
        "CHTN_REVIEW_DB": str(cache / "review.sqlite"),
    }


def _page(browser, name: str, env: dict[str, str], work: Path, repeats: int, timeout_ms: int, started: bool) -> dict:
    """One page on a new server with empty caches: its cold answer (opened right after the server answers /health,
    or with `started`, once app.py's start-up warm-up has finished: a server started before the meeting), the rest
    of it, and `repeats` warm reloads."""
    main = MAIN[name]
    cache = work / (re.sub(r"\W+", "-", name) + ("-started" if started else ""))
    fresh = _fresh_install(env, cache)
    with (
        StreamlitServer(ROOT / "app.py", ROOT, fresh, cache / "server.log", warm_up=True) as server,
        _tab(browser) as tab,
    ):
        healthy = server.wait_healthy()
        log = server.log_path
        warm_up = (_warm_up_seconds(log, "encoders"), _warm_up_seconds(log)) if started else None
        begun = time.perf_counter()
        cold = _answer(tab, server.url + main.path, main, timeout_ms)
        complete = _complete(tab, main, timeout_ms, begun) if main.pending or main.final else None
        time.sleep(1.0)  # let the page's last run finish before the reloads
        warm = [_answer(tab, server.url + main.path, main, timeout_ms) for _ in range(repeats)]
        busy = _busy(browser, server.url, main, timeout_ms) if started and name != "Source bias" else None
    return {"health": healthy, "warm_up": warm_up, "cold": cold, "complete": complete, "warm": warm, "busy": busy}


def _busy(browser, url: str, main: Main, timeout_ms: int) -> float:
    """The page opened by one more person (a new browser) while the server computes what another visit started in
    the background: someone opens Source bias (its image diagnostics, about 30 s on 2 cores), then the page opens."""
    bias = MAIN["Source bias"]
    with _tab(browser) as other, _tab(browser) as newcomer:
        _answer(other, url + bias.path, bias, timeout_ms)
        other.locator(".js-plotly-plot").first.wait_for(state="visible", timeout=timeout_ms)
        time.sleep(1.0)  # its browser has drawn: in a meeting it runs on another machine, not beside this one
        if not other.get_by_text(bias.pending).count():
            raise BenchError("Source bias showed no background job: the busy load would measure a quiet server")
        return _answer(newcomer, url + main.path, main, timeout_ms)


def _in_turn(browser, names: list[str], env: dict[str, str], work: Path, timeout_ms: int) -> dict:
    """The pages one after another on one new server with empty caches, from its first healthy answer on: per page,
    its answer's seconds and when it was opened (seconds after /health)."""
    cache = work / "in-turn"
    fresh = _fresh_install(env, cache)
    times = {}
    with StreamlitServer(ROOT / "app.py", ROOT, fresh, cache / "server.log", warm_up=True) as server:
        server.wait_healthy()
        healthy = time.perf_counter()
        for name in names:
            with _tab(browser) as tab:
                opened = time.perf_counter() - healthy
                times[name] = (_answer(tab, server.url + MAIN[name].path, MAIN[name], timeout_ms), opened)
                time.sleep(IN_TURN_PAUSE)
    return times


def _bare(browser, work: Path, repeats: int, timeout_ms: int) -> dict:
    folder = work / "bare"
    folder.mkdir()
    (folder / "bare.py").write_text(BARE_SCRIPT)
    with (
        StreamlitServer(folder / "bare.py", folder, dict(os.environ), folder / "server.log") as server,
        _tab(browser) as tab,
    ):
        healthy = server.wait_healthy()

        def load() -> float:
            start = time.perf_counter()
            tab.goto(server.url + "/", wait_until="commit", timeout=timeout_ms)
            _wait_bare(tab, timeout_ms)
            return time.perf_counter() - start

        cold = load()
        return {"health": healthy, "cold": cold, "warm": [load() for _ in range(repeats)]}


def run(repeats: int, pages: list[str], only_in_turn: bool = False) -> dict:
    from playwright.sync_api import sync_playwright

    work = Path(tempfile.mkdtemp(prefix="bench-pages-"))
    env = dict(os.environ)
    res: dict = {"load_before": _wait_quiet(), "pages": {}, "started": {}}
    timeout_ms = 600_000
    with sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        try:
            res["bare"] = _bare(browser, work, repeats, timeout_ms)
            for name in [] if only_in_turn else pages:
                print(f"{name}: cold, then {repeats} warm loads; then cold once the server has warmed up…", flush=True)
                res["pages"][name] = _page(browser, name, env, work, repeats, timeout_ms, started=False)
                res["started"][name] = _page(browser, name, env, work, 0, timeout_ms, started=True)
            print("All pages in turn on one new server…", flush=True)
            res["in_turn"] = _in_turn(browser, pages, env, work, timeout_ms)
        finally:
            browser.close()
    res["load_after"] = os.getloadavg()[0] / (os.cpu_count() or 1)
    return res


def table(res: dict) -> str:
    bare = res["bare"]
    rows = [
        "| page (main answer) | cold: load → answer, s | cold, server warmed up first: load → answer, s "
        "| complete, s | warm reload, s | warm / bare | server busy: new browser → answer, s "
        "| in turn on a new server: answer, s (opened at) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
        f'| bare Streamlit page ("hello") | {bare["cold"]:.2f} | | | {_stats(bare["warm"])} | 1.00 | | |',
    ]
    bare_warm = sorted(bare["warm"])[len(bare["warm"]) // 2]
    for name, page in res["pages"].items():
        shown = f'"{MAIN[name].answer}"' + (", its plot drawn" if MAIN[name].plot else "")
        complete = "" if page["complete"] is None else f"{page['complete']:.2f}"
        warm = sorted(page["warm"])[len(page["warm"]) // 2]
        in_turn = res["in_turn"][name]
        rows.append(
            f"| {name} ({shown}) | {page['cold']:.2f} | {res['started'][name]['cold']:.2f} | {complete} "
            f"| {_stats(page['warm'])} | {warm / bare_warm:.1f} | {_seconds(res['started'][name]['busy'])} "
            f"| {in_turn[0]:.2f} (+{in_turn[1]:.0f} s) |"
        )
    steps = [started["warm_up"] for started in res["started"].values()]
    rows.append(
        f"\nThe start-up warm-up (app.py, its console lines): encoders, the sample and one attribution "
        f"{_stats([first for first, _ in steps])} s, then UMAP {_stats([umap for _, umap in steps])} s."
    )
    return "\n".join(rows)


def _seconds(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def markdown(res: dict, when: str) -> str:
    return f"""{HEADING}

Generated by `python -m bench.bench_pages` on {when}; reproduce from the repository root with that command.
Machine: 2-core CPU, no GPU ({os.cpu_count()} cores reported, {platform.machine()}, Linux {platform.release()});
1-minute load average per core {res["load_before"]:.2f} before the run, {res["load_after"]:.2f} after.

Per page: **cold** is a new server with empty caches (a fresh install: `CHTN_CACHE_DIR` and `NUMBA_CACHE_DIR` empty,
a new review database), from the page load to its main answer on screen (the text in brackets, and the plot where
the answer is one); each page is the
first one opened on its own server, right after it answers `/_stcore/health`, while app.py's start-up warm-up runs
beside it. **Cold, server warmed up first** is the same on another new server with empty caches, opened once the
warm-up has finished (a server started before the meeting): nobody has opened a page on it yet. **Complete** is,
for the pages that answer first and fill in the rest afterwards, until the rest is there (the shared space's UMAP in
place of the interim PCA; source bias's ImageNet prior, coverage, capture and discrepancy after its transfer gain;
the attributions of "Why this result?" after the pair's similarities). **Warm**
reloads the page on the same server (median, min-max). **Server busy** is, on the server warmed up first, the page
opened in a new browser right after someone opened Source bias in another, while its image diagnostics compute in
the background (about 30 s on 2 cores; n/a for Source bias itself, whose diagnostics are done by then). **In turn**
is every page opened one after another (in this table's order, each in a new browser, {IN_TURN_PAUSE:.0f} s on each
after its answer) on one more new server with empty caches, from its first answer to `/_stcore/health` on: a
meeting's first minute on a fresh install, when the warm-up's later steps and the background jobs of the pages
opened before still run; in brackets, when the page was opened.
The bare page is two lines of Streamlit, loaded the same way in the same run.

{table(res)}
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3, help="warm reloads per page, default 3")
    parser.add_argument("--no-markdown", action="store_true", help="only print the table")
    parser.add_argument("--pages", default=",".join(MAIN), help="comma-separated subset of the pages (then no doc)")
    parser.add_argument("--only-in-turn", action="store_true", help="only the pages in turn, printed (no doc)")
    args = parser.parse_args()
    pages = [name.strip() for name in args.pages.split(",")]
    if unknown := sorted(set(pages) - set(MAIN)):
        parser.error(f"unknown page(s) {', '.join(unknown)}: choose from {', '.join(MAIN)}")
    res = run(args.repeats, pages, args.only_in_turn)
    if args.only_in_turn:
        for name, (answer, at) in res["in_turn"].items():
            print(f"{name}: {answer:.2f} s (opened at +{at:.0f} s)")
        return 0
    print(table(res))
    if not args.no_markdown and pages == list(MAIN):
        when = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
        write_sections(DOC, markdown(res, when))
        print(f"wrote {DOC}")
    if any(page["cold"] > 600 for page in res["pages"].values()):
        raise BenchError("a page took over 10 minutes")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
