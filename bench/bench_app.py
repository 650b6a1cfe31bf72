"""Benchmark of the Streamlit dashboard (`app.py`) in a real headless browser, against a bare Streamlit page.

    python -m bench.bench_app                      # full run, prints the table and writes docs/app_benchmark.md
    python -m bench.bench_app --repeats 1 --switches 1 --no-markdown   # quick smoke run
    python -m bench.bench_app --first-open-against ad14ddb   # a new user's first open: that revision vs this tree

The app is started and driven by the harness tests/test_browser.py uses (tests/harness.py:
`python -m streamlit run app.py` on a free port, headless, no file watcher; Debian's chromium through
Playwright, never `playwright install`). "Rendered" means: the overview shows the text "MAP (mean of directions)" AND a
`.js-plotly-plot` is present; the retrieval explorer shows "Top 10 texts"; the bare page shows "hello".
Every rendered page is checked for `stException`, `stAlertContentError` and `[role="dialog"]`: the run
fails loudly on any of them.

Measurements (one run, all on the same machine, ours and the bare page interleaved):

1. cold start (a fresh install): `CHTN_CACHE_DIR` and `NUMBA_CACHE_DIR` = fresh empty temp dirs; spawn ->
   overview rendered. The sample checkpoint ships its test split's embeddings (`chtn/gallery.py`), so nothing
   may be embedded (asserted: no embeddings `.npz` appears in the cache).
1b. a checkpoint of the user's own, first open: a copy of the sample checkpoint in a temp folder (same
   weights, no shipped embeddings beside it), opened by `/?checkpoint=<path>` on a new server with the same
   cache dir; spawn -> overview rendered, which embeds the sample test split (400 images and texts through
   the real encoders, behind a progress bar) and writes the embeddings `.npz` (asserted).
2. warm start: the same cache dir, a NEW server process; spawn -> overview rendered. The embeddings
   `.npz` of 1b must keep its mtime (asserted: nothing is recomputed).
3. warm reload: the same server, a new page load of "/" -> rendered, right after the first render (while
   app.py compiles UMAP in the background), and again once the server log says that compilation finished.
4. page switch: click the sidebar link "Retrieval explorer" -> "Top 10 texts" visible, and back to
   "Overview" -> "MAP (mean of directions)" visible (median of --switches each way).
5. baseline: a bare page (`st.title("bare"); st.write("hello")`), spawn -> rendered and reload -> rendered.

6. first open (`--first-open-against REV`, instead of 1-5): what a new user waits from `streamlit run app.py`
   to a usable overview, for the code and sample of revision REV (`git archive`, in a temp folder) and for
   this working tree, interleaved in one run: each start a new server with an empty `CHTN_CACHE_DIR` and an
   empty `NUMBA_CACHE_DIR` (a fresh install), spawn -> overview rendered. Asserted per start whether it
   embedded the split (an embeddings `.npz` appeared in the cache) or not.

Each server start gets a fresh browser context (empty HTTP cache: a new port is a new origin anyway);
reloads reuse the context of that start. Warm measurements are repeated --repeats times (median
reported, min-max in brackets). Spawn -> rendered is also split into spawn -> /_stcore/health "ok"
(server up) and page load -> rendered (first script run).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from urllib.parse import quote

from tests.harness import HarnessError, StreamlitServer, launch_chromium, page_problems

ROOT = Path(__file__).resolve().parents[1]
MACHINE_NOTE = "2-core CPU, no GPU"
SAMPLE_CHECKPOINT = ROOT / "sample_data" / "checkpoints" / "chtn_fashion_source.safetensors"  # the default one
BARE_SCRIPT = 'import streamlit as st\nst.title("bare")\nst.write("hello")\n'


class BenchError(RuntimeError):
    pass


def write_sections(doc: Path, text: str) -> None:
    """Write `text`'s `## ` sections (and its title part, if any) into `doc`, replacing the ones of the same heading
    and keeping every other in place: each benchmark script owns its own sections of a doc they share."""

    def split(markdown: str) -> tuple[str, dict[str, str]]:
        head, *sections = markdown.split("\n## ")
        return head, {s.split("\n", 1)[0]: "## " + s.rstrip() + "\n" for s in sections}

    old_head, old = split(doc.read_text(encoding="utf-8") if doc.exists() else "")
    new_head, new = split("\n" + text.strip() + "\n")
    merged = {**old, **new}  # old order, replaced in place; new headings at the end
    head = new_head.strip() or old_head.strip()
    doc.write_text("\n".join(filter(None, [head + "\n" if head else "", *merged.values()])), encoding="utf-8")


def _assert_clean(tab, where: str) -> None:
    problems = page_problems(tab)
    if problems:
        shot = Path(tempfile.gettempdir()) / f"bench_app_failure_{int(time.time())}.png"
        tab.screenshot(path=str(shot), full_page=True)
        raise BenchError(f"{where}: the page shows {'; '.join(problems)} (screenshot: {shot})")


def _settle(tab) -> None:
    """Untimed: let the script run finish (status widget gone) before the next action."""
    try:
        tab.wait_for_function("!document.querySelector('[data-testid=\"stStatusWidget\"]')", timeout=30_000)
    except Exception:  # noqa: BLE001 - settling is best effort, the markers are what is timed
        pass
    tab.wait_for_timeout(300)


def _wait_overview(tab, timeout_ms: int) -> None:
    tab.get_by_text("MAP (mean of directions)").first.wait_for(state="visible", timeout=timeout_ms)
    tab.locator(".js-plotly-plot").first.wait_for(state="attached", timeout=timeout_ms)


def _wait_bare(tab, timeout_ms: int) -> None:
    tab.get_by_text("hello").first.wait_for(state="visible", timeout=timeout_ms)


def _load(tab, url: str, wait, timeout_ms: int) -> float:
    """Seconds from starting a page load of `url` to the page rendered."""
    start = time.perf_counter()
    tab.goto(url, wait_until="commit", timeout=timeout_ms)
    wait(tab, timeout_ms)
    return time.perf_counter() - start


def _start(
    browser,
    script: Path,
    cwd: Path,
    env: dict[str, str],
    log: Path,
    wait,
    timeout_ms: int,
    watch_progress: bool = False,
    path: str = "/",
):
    """Spawn a server and load `path` in a fresh context. Returns (server, context, tab, timings dict)."""
    server = StreamlitServer(script, cwd, env, log, warm_up=True)  # as a user starts it
    try:
        healthy = server.wait_healthy()
        context = browser.new_context(viewport={"width": 1400, "height": 1000})
        tab = context.new_page()
        t_load = time.perf_counter()
        tab.goto(server.url + path, wait_until="commit", timeout=timeout_ms)
        timings: dict[str, float] = {"health": healthy}
        if watch_progress:  # first open of a checkpoint: when the embedding progress bar appears and goes away
            try:
                tab.locator('[data-testid="stProgress"]').first.wait_for(state="attached", timeout=timeout_ms)
                timings["progress_shown"] = time.perf_counter() - server.t_spawn
                tab.locator('[data-testid="stProgress"]').first.wait_for(state="detached", timeout=timeout_ms)
                timings["progress_gone"] = time.perf_counter() - server.t_spawn
            except Exception:  # noqa: BLE001 - the breakdown is informative only
                pass
        wait(tab, timeout_ms)
        end = time.perf_counter()
        timings["rendered"] = end - server.t_spawn
        timings["load_to_rendered"] = end - t_load
    except BaseException:
        server.stop()
        raise
    return server, context, tab, timings


def _overview_once(browser, tree: Path, env: dict, log: Path, label: str, timeout_ms: int, **start) -> dict:
    """Start `tree`'s app.py on a new server, wait for a clean overview, stop; the timings of `_start`."""
    server, context, tab, timings = _start(
        browser, tree / "app.py", tree, env, log, _wait_overview, timeout_ms, **start
    )
    try:
        _assert_clean(tab, label)
        _settle(tab)
    finally:
        context.close()
        server.stop()
    return timings


def _start_and_reload(
    browser,
    script: Path,
    cwd: Path,
    env: dict,
    log: Path,
    wait,
    timeout_ms: int,
    res: dict,
    key: str,
    reload_key: str,
    label: str,
):
    """Start a server and record spawn→rendered (and its parts) under `key`, then one reload under
    `reload_key`; ours and the bare baseline are measured by this same code. The caller closes."""
    server, context, tab, t = _start(browser, script, cwd, env, log, wait, timeout_ms)
    try:
        _assert_clean(tab, f"{label} (start)")
        res[key].append(t["rendered"])
        res[f"{key}_health"].append(t["health"])
        res[f"{key}_load"].append(t["load_to_rendered"])
        _settle(tab)
        res[reload_key].append(_load(tab, server.url + "/", wait, timeout_ms))
        _assert_clean(tab, f"{label} (reload)")
        _settle(tab)
    except BaseException:
        context.close()
        server.stop()
        raise
    return server, context, tab


def _warm_up_seconds(log: Path, step: str = "UMAP compiled", timeout: float = 300.0) -> float:
    """Wait for app.py's warm-up line that starts with `step` ("UMAP compiled", its last) in the server log; return
    its seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in log.read_text(errors="replace").splitlines():
            if line.startswith(f"chtn: {step}"):
                return float(line.split(" in ")[-1].removesuffix(" s"))
        time.sleep(0.2)
    raise BenchError(f"no warm-up line 'chtn: {step} ...' in {log} after {timeout:.0f} s")


def _switch(tab, link: str, text: str, timeout_ms: int) -> float:
    start = time.perf_counter()
    tab.locator('[data-testid="stSidebarNav"] a', has_text=link).first.click()
    tab.get_by_text(text).first.wait_for(state="visible", timeout=timeout_ms)
    return time.perf_counter() - start


def _embeddings(cache: Path) -> list[Path]:
    return sorted((cache / "embeddings").glob("*.npz"))


def _stats(values: list[float]) -> str:
    if not values:
        return "n/a"
    med = statistics.median(values)
    return f"{med:.2f}" if len(values) == 1 else f"{med:.2f} [{min(values):.2f}-{max(values):.2f}]"


def _wait_quiet(limit: float = 0.6, timeout: float = 120.0) -> float:
    """Wait (up to `timeout`) until the 1-minute load average per core drops below `limit`."""
    deadline = time.time() + timeout
    cores = os.cpu_count() or 1
    while True:
        load = os.getloadavg()[0] / cores
        if load < limit or time.time() > deadline:
            return load
        time.sleep(5)


def run(repeats: int, switches: int) -> dict:
    from playwright.sync_api import sync_playwright

    work = Path(tempfile.mkdtemp(prefix="bench-app-"))
    cache = work / "cache"
    cache.mkdir()
    bare_dir = work / "bare"
    bare_dir.mkdir()
    (bare_dir / "bare.py").write_text(BARE_SCRIPT)
    env = {**os.environ, "CHTN_CACHE_DIR": str(cache), "NUMBA_CACHE_DIR": str(work / "numba")}
    bare_env = dict(os.environ)
    logs = work / "logs"
    logs.mkdir()
    res: dict = {
        "warm": [],
        "warm_health": [],
        "warm_load": [],
        "reload": [],
        "warm_up": [],
        "reload_after": [],
        "to_retrieval": [],
        "to_overview": [],
        "bare": [],
        "bare_health": [],
        "bare_load": [],
        "bare_reload": [],
        "load_before": _wait_quiet(),
        "work": str(work),
    }
    timeout_ms = 600_000
    with sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        try:
            # 1. cold start: a fresh install reads the sample's shipped embeddings
            print("cold start (fresh install; the sample's embeddings are shipped)…", flush=True)
            res["cold"] = _overview_once(browser, ROOT, env, logs / "cold.log", "overview (cold)", timeout_ms)
            if _embeddings(cache):
                raise BenchError(f"the cold start embedded the split: {_embeddings(cache)} (shipped embeddings unused)")

            # 1b. first open of a checkpoint with no shipped embeddings: embeds the test split once
            print("first open of the user's own checkpoint (embeds the sample test split)…", flush=True)
            own = work / "own" / SAMPLE_CHECKPOINT.name
            own.parent.mkdir()
            shutil.copyfile(SAMPLE_CHECKPOINT, own)
            res["own"] = _overview_once(
                browser,
                ROOT,
                env,
                logs / "own.log",
                "overview (own checkpoint, first open)",
                timeout_ms,
                watch_progress=True,
                path="/?checkpoint=" + quote(str(own)),
            )
            files = _embeddings(cache)
            if not files:
                raise BenchError(f"no embeddings .npz under {cache / 'embeddings'} after the own checkpoint opened")
            mtimes = {f: f.stat().st_mtime_ns for f in files}
            res["npz"] = [f.name for f in files]

            for i in range(repeats):
                # 2. warm start, 3. warm reload (ours)
                print(f"warm start + reload {i + 1}/{repeats}…", flush=True)
                server, context, tab = _start_and_reload(
                    browser,
                    ROOT / "app.py",
                    ROOT,
                    env,
                    logs / f"warm{i}.log",
                    _wait_overview,
                    timeout_ms,
                    res,
                    "warm",
                    "reload",
                    f"overview {i + 1}",
                )
                try:
                    # 3b. the same reload once the server's one-off UMAP compilation (app.py) has finished
                    res["warm_up"].append(_warm_up_seconds(server.log_path))
                    res["reload_after"].append(_load(tab, server.url + "/", _wait_overview, timeout_ms))
                    _assert_clean(tab, f"overview {i + 1} (reload after the warm-up)")
                    _settle(tab)
                    if i == repeats - 1:
                        # 4. page switches, on the last warm server
                        print(f"page switches ×{switches}…", flush=True)
                        for j in range(switches):
                            res["to_retrieval"].append(_switch(tab, "Retrieval explorer", "Top 10 texts", timeout_ms))
                            _assert_clean(tab, f"retrieval explorer (switch {j + 1})")
                            _settle(tab)
                            res["to_overview"].append(_switch(tab, "Overview", "MAP (mean of directions)", timeout_ms))
                            _assert_clean(tab, f"overview (switch back {j + 1})")
                            _settle(tab)
                finally:
                    context.close()
                    server.stop()
                changed = [f.name for f in files if not f.exists() or f.stat().st_mtime_ns != mtimes[f]]
                if changed or _embeddings(cache) != files:
                    raise BenchError(f"warm start {i + 1} rewrote the embeddings: {changed or _embeddings(cache)}")

                # 5. baseline: bare page, interleaved with ours
                print(f"bare start + reload {i + 1}/{repeats}…", flush=True)
                server, context, _ = _start_and_reload(
                    browser,
                    bare_dir / "bare.py",
                    bare_dir,
                    bare_env,
                    logs / f"bare{i}.log",
                    _wait_bare,
                    timeout_ms,
                    res,
                    "bare",
                    "bare_reload",
                    f"bare page {i + 1}",
                )
                context.close()
                server.stop()
        finally:
            browser.close()
    res["load_after"] = os.getloadavg()[0] / (os.cpu_count() or 1)
    return res


def _export(rev: str, into: Path) -> Path:
    """The files of git revision `rev` of this repository, unpacked under `into` (code and sample data)."""
    archive = subprocess.run(["git", "archive", "--format=tar", rev], cwd=ROOT, capture_output=True, check=True)
    into.mkdir(parents=True)
    archive_path = into.parent / f"{into.name}.tar"
    archive_path.write_bytes(archive.stdout)
    with tarfile.open(archive_path) as tar:
        tar.extractall(into, filter="data")
    archive_path.unlink()
    return into


def first_open(rev: str, repeats: int) -> dict:
    """Spawn -> usable overview for a fresh install of revision `rev` and of this tree, interleaved (section 6)."""
    from playwright.sync_api import sync_playwright

    work = Path(tempfile.mkdtemp(prefix="bench-first-open-"))
    trees = {rev: _export(rev, work / "baseline"), "this tree": ROOT}
    head = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=ROOT, capture_output=True, text=True)
    res: dict = {"trees": list(trees), "head": head.stdout.strip(), "load_before": _wait_quiet(timeout=30)}
    res["work"] = str(work)
    for label in trees:
        res[label] = {"rendered": [], "health": [], "load": [], "embedded": []}
    timeout_ms = 600_000
    with sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        try:
            for i in range(repeats):
                for n, (label, tree) in enumerate(trees.items()):
                    print(f"first open {i + 1}/{repeats}: {label}…", flush=True)
                    cache = work / f"cache-{i}-{n}"
                    env = {
                        **os.environ,
                        "CHTN_CACHE_DIR": str(cache),
                        "NUMBA_CACHE_DIR": str(work / f"numba-{i}-{n}"),
                        "PYTHONPATH": str(tree),
                    }
                    log = work / f"first-{i}-{n}.log"
                    t = _overview_once(browser, tree, env, log, f"overview, first open of {label}", timeout_ms)
                    res[label]["rendered"].append(t["rendered"])
                    res[label]["health"].append(t["health"])
                    res[label]["load"].append(t["load_to_rendered"])
                    res[label]["embedded"].append(bool(_embeddings(cache)))
        finally:
            browser.close()
    res["load_after"] = os.getloadavg()[0] / (os.cpu_count() or 1)
    return res


def first_open_table(res: dict) -> str:
    base, ours = (res[label] for label in res["trees"])
    med = statistics.median
    lines = [
        f"| fresh install, spawn → usable overview | {res['trees'][0]}, s | this tree, s | this tree / "
        f"{res['trees'][0]} |",
        "|---|---:|---:|---:|",
        f"| spawn → overview rendered | {_stats(base['rendered'])} | {_stats(ours['rendered'])} | "
        f"{med(ours['rendered']) / med(base['rendered']):.2f} |",
        f"| of which spawn → server healthy | {_stats(base['health'])} | {_stats(ours['health'])} | |",
        f"| of which page load → rendered | {_stats(base['load'])} | {_stats(ours['load'])} | "
        f"{med(ours['load']) / med(base['load']):.2f} |",
        f"| embedded the test split (starts) | {sum(base['embedded'])}/{len(base['embedded'])} | "
        f"{sum(ours['embedded'])}/{len(ours['embedded'])} | |",
    ]
    return "\n".join(lines)


def first_open_markdown(res: dict, when: str, rev: str) -> str:
    return f"""# A new user's first open: `streamlit run app.py` to a usable overview

Generated by `python -m bench.bench_app --first-open-against {rev}` on {when}.

Machine: {MACHINE_NOTE} ({os.cpu_count()} cores reported, shared with other engineers' work and a long
benchmark during this run: timings are noisy, compare the two columns of the same run only). 1-minute load
average per core: {res["load_before"]:.2f} before the run, {res["load_after"]:.2f} after.

Each start is a fresh install: a new server process, an empty `CHTN_CACHE_DIR` (no features, no embeddings)
and an empty `NUMBA_CACHE_DIR`; a fresh browser context; "usable overview" = "MAP (mean of directions)" visible and the
Plotly chart present, no exception or error box. Revision `{rev}` (its code and sample, from `git archive`)
and this tree (`git describe`: `{res["head"]}`) alternate; median of the starts, min-max in brackets.

{first_open_table(res)}

Revision `{rev}` embeds the sample's 400 test pairs on the first open (image and text encoders on CPU, behind
a progress bar). This tree reads the embeddings shipped beside each sample checkpoint
(`sample_data/checkpoints/<name>.embeddings.npz`, 65 KB each, exact float32, used only when the checkpoint's
content hash and the split's fingerprint match), so its first open embeds nothing. It starts the numba
warm-up of the shared-space page in a low-priority background thread after the first script run, so the
warm-up overlaps the end of this measurement (the browser's rendering) at most.
"""


def _versus(res: dict, label: str, ours: str, bare: str, samples: bool = True) -> tuple[str, ...]:
    """A table row: ours and the bare page's median [min-max], their ratio, and (optionally) the sample count."""
    ratio = statistics.median(res[ours]) / statistics.median(res[bare])
    return label, _stats(res[ours]), _stats(res[bare]), f"{ratio:.2f}", str(len(res[ours])) if samples else ""


def table(res: dict) -> str:
    cold, own = res["cold"], res["own"]
    rows = [
        (
            "Cold start (fresh install): spawn → overview rendered (empty caches, shipped embeddings read)",
            f"{cold['rendered']:.2f}",
            "n/a",
            "n/a",
            "1",
        ),
        ("  of which spawn → server healthy", f"{cold['health']:.2f}", "", "", ""),
        (
            "Own checkpoint, first open: spawn → overview rendered (embeds 400 test images and texts)",
            f"{own['rendered']:.2f}",
            "n/a",
            "n/a",
            "1",
        ),
        ("  of which spawn → server healthy", f"{own['health']:.2f}", "", "", ""),
        (
            "  of which spawn → embedding progress bar shown",
            f"{own['progress_shown']:.2f}" if "progress_shown" in own else "not seen",
            "",
            "",
            "",
        ),
        (
            "  of which spawn → embedding progress bar gone",
            f"{own['progress_gone']:.2f}" if "progress_gone" in own else "not seen",
            "",
            "",
            "",
        ),
        _versus(res, "Warm start: new server → overview rendered", "warm", "bare"),
        _versus(res, "  of which spawn → server healthy", "warm_health", "bare_health", samples=False),
        _versus(res, "  of which page load → rendered (first script run)", "warm_load", "bare_load", samples=False),
        _versus(res, "Warm reload: same server, new page load of / → rendered", "reload", "bare_reload"),
        _versus(
            res,
            "Warm reload after the server's one-off UMAP compilation (shared-space warm-up) finished",
            "reload_after",
            "bare_reload",
        ),
        (
            "  the warm-up itself: server start → UMAP compiled (worker process, nice 10)",
            _stats(res["warm_up"]),
            "",
            "",
            "",
        ),
        (
            'Page switch: Overview → Retrieval explorer ("Top 10 texts")',
            _stats(res["to_retrieval"]),
            "n/a",
            "n/a",
            str(len(res["to_retrieval"])),
        ),
        (
            'Page switch: Retrieval explorer → Overview ("MAP (mean of directions)")',
            _stats(res["to_overview"]),
            "n/a",
            "n/a",
            str(len(res["to_overview"])),
        ),
    ]
    lines = ["| measurement | ours, s | bare Streamlit page, s | ours / bare | samples |", "|---|---:|---:|---:|---:|"]
    lines += [f"| {' | '.join(row)} |" for row in rows]
    return "\n".join(lines)


def markdown(res: dict, when: str) -> str:
    return f"""# Dashboard benchmark: `app.py` in a real browser

Generated by `python -m bench.bench_app` on {when}.

Reproduce (from the repository root):

```bash
python -m bench.bench_app
```

Machine: {MACHINE_NOTE} ({os.cpu_count()} cores reported, {platform.processor() or platform.machine()}, Linux
{platform.release()}); Python {platform.python_version()}, Debian chromium headless through Playwright.
1-minute load average per core: {res["load_before"]:.2f} before the run, {res["load_after"]:.2f} after.

What is measured (seconds; median of the repeats, min-max in brackets):

- **Cold start** (a fresh install): `CHTN_CACHE_DIR` and `NUMBA_CACHE_DIR` set to fresh empty temp dirs;
  time from spawning `python -m streamlit run app.py` (headless, `--server.fileWatcherType none`) to the
  overview rendered in the browser ("MAP (mean of directions)" visible and a `.js-plotly-plot` present). The sample
  checkpoint ships its test split's embeddings, so nothing is embedded (asserted: no `.npz` in the cache).
- **Own checkpoint, first open**: a copy of the sample checkpoint in a temp folder, with no embeddings
  shipped beside it, opened by `/?checkpoint=<path>` on a new server (same cache dir): what a user waits the
  first time they open a checkpoint of their own on the sample. Includes embedding the test split (400 images
  and texts through the real encoders) and writing the embeddings `.npz` (asserted). The breakdown rows are
  when the server answered `/_stcore/health` and when the embedding progress bar appeared and went away (all
  measured from spawn).
- **Warm start**: same cache dir, a new server process; spawn → overview rendered. Asserted: the own
  checkpoint's embeddings `.npz` under `$CHTN_CACHE_DIR/embeddings` did not change (nothing recomputed).
  Split into spawn → healthy and page load → rendered (the first script run in the new process: imports,
  checkpoint and dataset loading, reading the `.npz`, evaluation, rendering).
- **Warm reload**: same server, a new page load of `/` → rendered (Streamlit caches already filled), right
  after the first render, while app.py's one-off background compilation of UMAP for the shared space runs
  (every new server process: numba caches only some of umap-learn's functions on disk); then again once the
  server log says it finished, and the time that took.
- **Page switch**: click the sidebar link, until "Top 10 texts" (retrieval explorer, image → text) or
  "MAP (mean of directions)" (overview) is visible; on the last warm server, after its warm-up.
- **Baseline**: a bare page (`st.title("bare"); st.write("hello")`) started and reloaded the same way,
  interleaved with ours; rendered = "hello" visible. Ratios are ours / bare.

Each server start gets a fresh browser context (empty HTTP cache); reloads and switches reuse it. Every
rendered page was checked for `stException`, `stAlertContentError` and `[role="dialog"]` (none found; the
script fails otherwise).

## Results

{table(res)}
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3, help="warm starts / reloads (ours and bare), default 3")
    parser.add_argument("--switches", type=int, default=5, help="page switches each way, default 5")
    parser.add_argument("--markdown", default=str(ROOT / "docs" / "app_benchmark.md"), help="doc to write")
    parser.add_argument("--no-markdown", action="store_true", help="only print the table")
    parser.add_argument("--first-open-against", metavar="REV", help="only section 6, against git revision REV")
    args = parser.parse_args()
    when = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    if args.first_open_against:
        try:
            res = first_open(args.first_open_against, args.repeats)
        except (BenchError, HarnessError) as exc:
            print(f"FAILED: {exc}", file=sys.stderr)
            return 1
        print(first_open_table(res))
        if not args.no_markdown:
            out = ROOT / "docs" / "first_open_benchmark.md"
            out.write_text(first_open_markdown(res, when, args.first_open_against))
            print(f"wrote {out}")
        return 0
    try:
        res = run(args.repeats, args.switches)
    except (BenchError, HarnessError) as exc:
        print(f"FAILED: {exc}", file=sys.stderr)
        return 1
    print()
    print(table(res))
    print(f"\nembeddings: {res['npz']}; logs under {res['work']}/logs")
    if not args.no_markdown:
        write_sections(Path(args.markdown), markdown(res, when))  # keeps bench_pages' and walk_meeting's sections
        print(f"wrote {args.markdown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
