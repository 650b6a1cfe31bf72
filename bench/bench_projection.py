"""Shared-space projection: our cached, stratified function against calling umap-learn directly, and the
browser render time of the WebGL scatter.

    python -m bench.bench_projection                     # 1k, 10k, 100k points; writes docs/projection_benchmark.md
    python -m bench.bench_projection --sizes 1000 --no-browser --no-markdown   # quick smoke run
    python -m bench.bench_projection --cold-only         # first use only; writes docs/projection_first_use.md

Points have the real width (the sample checkpoint's 20-d softmax common representation). Where the data is
smaller than a size, they are synthetic: the sample's real test embeddings resampled with small Gaussian
noise and renormalised onto the simplex, half images and half texts, with their real categories.

1. projection time: `analysis.projection.project.project_gallery` (fresh cache folder) against `umap.UMAP(...)
   .fit_transform` on the same points with the same parameters, same run; the ratio is our overhead
   (normalisation, sampling, hashing and writing the cache);
2. cached reopen: `project_gallery` again on the same inputs (read from disk);
3. browser render: a Streamlit page that draws `analysis.projection.render.scatter_figure` of N points
   (spawned once per size, headless chromium) from page load to the plotly WebGL canvas being drawn;
4. cold first use (run first, before anything here compiles): fresh processes with an EMPTY numba cache
   (`NUMBA_CACHE_DIR` = a new temp dir) and an empty projection cache, on the sample's 800 real points:
   PCA (what the page shows at once), the start of the UMAP worker process (analysis/projection/worker.py:
   every fit runs there), the first UMAP fit (the worker imports umap-learn and numba compiles it) and a second,
   warm fit (the baseline of the ratio); and a second fresh process that first runs `warm_up_umap` (what app.py
   starts at server start) and then fits.
5. a session's work while a UMAP fits: the time of a page-sized piece of Python work (building the scatter figure
   of 800 points, as the shared space does on each run), repeated while nothing else runs, while a UMAP of
   `--fit-size` points fits in a thread of this process (how the dashboard fitted before the UMAP worker), and while
   it fits in the UMAP worker (analysis/projection/worker.py). numba's compiled UMAP keeps the interpreter lock for
   an epoch at a time, so a fit in the server's own process stalls every session in steps of an epoch.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from tests.harness import StreamlitServer, launch_chromium

if TYPE_CHECKING:
    import pandas as pd

ROOT = Path(__file__).resolve().parents[1]

RENDER_PAGE = """
import streamlit as st
from analysis.projection.render import scatter_figure
from bench.bench_projection import synthetic_table
st.plotly_chart(scatter_figure(synthetic_table(int(st.query_params.get("n", 1000))), "category"), on_select="rerun",
                selection_mode=("lasso", "box"))
st.write("rendered-marker")
"""


def synthetic_table(n: int) -> pd.DataFrame:
    """A shared-space points table of n random points in 20 categories, both modalities (what the figure draws)."""
    import pandas as pd

    rng = np.random.default_rng(0)
    return pd.DataFrame(
        {"x": rng.normal(size=n), "y": rng.normal(size=n), "row": np.arange(n) // 2,
         "id": [str(i) for i in range(n)], "modality": np.where(np.arange(n) % 2, "text", "image"),
         "category": [f"c{i % 20}" for i in range(n)], "title": "t", "outcome": "top-1 correct"}
    )  # fmt: skip


def points(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(images, texts, labels) of n points in all (n/2 pairs), from the sample's real test embeddings."""
    from analysis.workspace import SAMPLE_DATASET, open_checkpoint, open_dataset
    from chtn.gallery import embed_split

    checkpoint = open_checkpoint("chtn_fashion_source")
    g = embed_split(checkpoint, open_dataset(SAMPLE_DATASET, checkpoint)[0])
    pairs = n // 2
    rng = np.random.default_rng(0)
    pick = rng.integers(0, len(g.labels), pairs)

    def jitter(x: np.ndarray) -> np.ndarray:
        noisy = np.clip(x[pick] + rng.normal(scale=0.02, size=(pairs, x.shape[1])), 1e-6, None)
        return (noisy / noisy.sum(1, keepdims=True)).astype(np.float32)

    if pairs <= len(g.labels):
        return g.image[:pairs], g.text[:pairs], g.labels[:pairs]
    return jitter(g.image), jitter(g.text), g.labels[pick]


def direct_umap(x: np.ndarray, params) -> np.ndarray:
    """umap-learn called directly, in this process, as the page's defaults would call it: the baseline."""
    import umap

    from chtn.ranking import normalize_rows

    return umap.UMAP(
        n_components=2,
        n_neighbors=params.n_neighbors,
        min_dist=params.min_dist,
        metric=params.metric,
        random_state=params.seed,
        n_jobs=1,
    ).fit_transform(normalize_rows(x))


def time_projection(n: int) -> dict[str, float]:
    from analysis.projection.project import ProjectionParams, project_gallery

    image, text, labels = points(n)
    params = ProjectionParams(max_points=max(n, 10))
    cache = Path(tempfile.mkdtemp(prefix="bench-proj-"))
    started = time.perf_counter()
    project_gallery(image, text, labels, params, cache)
    ours = time.perf_counter() - started
    started = time.perf_counter()
    again = project_gallery(image, text, labels, params, cache)
    reopen = time.perf_counter() - started
    assert again.from_cache
    started = time.perf_counter()
    direct_umap(np.concatenate([image, text]), params)
    direct = time.perf_counter() - started
    return {"n": n, "ours": ours, "direct": direct, "reopen": reopen}


COLD_PROBE = """
import json, os, sys, time
started = time.perf_counter()
from pathlib import Path
import numpy as np
from analysis.projection.project import ProjectionParams, project, project_gallery, warm_up_umap
from analysis.projection.worker import in_worker
image, text, labels = (np.load(sys.argv[1])[k] for k in ("image", "text", "labels"))
out, cache = {"imports": time.perf_counter() - started}, Path(sys.argv[2])
if sys.argv[3] == "warm-up":
    t = time.perf_counter(); warm_up_umap(); out["warm_up"] = time.perf_counter() - t
t = time.perf_counter(); project_gallery(image, text, labels, ProjectionParams(method="pca"), cache)
out["pca"] = time.perf_counter() - t
t = time.perf_counter(); project(np.concatenate([image, text]), ProjectionParams(method="pca"))
out["pca_again"] = time.perf_counter() - t
t = time.perf_counter(); in_worker(os.getpid); out["worker_start"] = time.perf_counter() - t
t = time.perf_counter(); project_gallery(image, text, labels, ProjectionParams(), cache)
out["first_fit"] = time.perf_counter() - t
t = time.perf_counter(); project(np.concatenate([image, text]), ProjectionParams())
out["second_fit"] = time.perf_counter() - t
print(json.dumps(out))
"""


def page_work_during_fit(n: int) -> dict[str, list[float]]:
    """Seconds of each page-sized piece of work (see the docstring, 5): idle, during a fit in this process, during
    a fit in the UMAP worker. Both fits are warm (compiled before)."""
    from analysis.projection.project import ProjectionParams, _umap_layout, project
    from analysis.projection.render import scatter_figure
    from chtn.ranking import normalize_rows

    table = synthetic_table(800)

    def work() -> float:
        started = time.perf_counter()
        scatter_figure(table, "category")
        return time.perf_counter() - started

    image, text, _ = points(n)
    x, params = normalize_rows(np.concatenate([image, text])), ProjectionParams()
    times = {"nothing else runs": [work() for _ in range(30)]}
    for where, fit in (
        ("a UMAP fits in a thread of this process", lambda: _umap_layout(x, params)),
        ("a UMAP fits in the UMAP worker", lambda: project(x, params)),
    ):
        thread = threading.Thread(target=fit)
        thread.start()
        times[where] = []
        while thread.is_alive():
            times[where].append(work())
        thread.join()
    return times


def during_fit_lines(n: int, times: dict[str, list[float]]) -> list[str]:
    """Markdown rows of `page_work_during_fit`: median and slowest, against the idle median."""
    idle = float(np.median(times["nothing else runs"]))
    rows = [
        f"| while (UMAP of {n:,} points) | pieces of work | median, ms | 95th percentile, ms | slowest, ms | "
        "median ÷ idle |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for where, seconds in times.items():
        ms = np.array(seconds) * 1000
        rows.append(
            f"| {where} | {len(ms)} | {np.median(ms):.0f} | {np.percentile(ms, 95):.0f} | {ms.max():.0f} | "
            f"{np.median(ms) / 1000 / idle:.1f} |"
        )
    return rows


def cold_first_use() -> dict[str, dict[str, float]]:
    """Seconds of each step in fresh processes with empty numba and projection caches (see the docstring, 4)."""
    work = Path(tempfile.mkdtemp(prefix="bench-proj-cold-"))
    np.savez(work / "points.npz", **dict(zip(("image", "text", "labels"), points(800))))
    runs = {}
    for mode in ("cold", "warm-up"):
        env = {**os.environ, "NUMBA_CACHE_DIR": str(work / f"numba-{mode}"), "PYTHONPATH": str(ROOT)}
        done = subprocess.run(
            [sys.executable, "-W", "ignore", "-c", COLD_PROBE, str(work / "points.npz"), str(work / mode), mode],
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        )
        runs[mode] = json.loads(done.stdout.strip().splitlines()[-1])
    return runs


def cold_lines(runs: dict[str, dict[str, float]]) -> list[str]:
    """Markdown table rows of `cold_first_use`, ratios against the warm fit of the same process."""
    cold, warm = runs["cold"], runs["warm-up"]
    first_use = cold["worker_start"] + cold["first_fit"]
    return [
        "| step (fresh process, empty numba and projection caches, 800 sample points) | seconds | ÷ warm fit |",
        "|---|---:|---:|",
        f"| PCA, first call (what the page shows at once) | {cold['pca']:.2f} | "
        f"{cold['pca'] / cold['second_fit']:.2f} |",
        f"| PCA again, same process (not from the cache) | {cold['pca_again']:.3f} | "
        f"{cold['pca_again'] / cold['second_fit']:.3f} |",
        f"| UMAP worker process started (a new Python; it imports what each call needs when it comes) | "
        f"{cold['worker_start']:.2f} | {cold['worker_start'] / cold['second_fit']:.1f} |",
        f"| first UMAP fit (`project_gallery`; the worker imports umap-learn, numba compiles it) | "
        f"{cold['first_fit']:.2f} | {cold['first_fit'] / cold['second_fit']:.1f} |",
        f"| **first use: worker start + first fit** (what a visitor waited before) | **{first_use:.2f}** | "
        f"**{first_use / cold['second_fit']:.1f}** |",
        f"| second UMAP fit, same worker (baseline) | {cold['second_fit']:.2f} | 1.0 |",
        f"| with the start-up warm-up (another fresh process): `warm_up_umap` | {warm['warm_up']:.2f} | "
        f"{warm['warm_up'] / warm['second_fit']:.1f} |",
        f"| … then the first UMAP fit of the sample | {warm['first_fit']:.2f} | "
        f"{warm['first_fit'] / warm['second_fit']:.1f} |",
        f"| … its second fit (baseline of that process) | {warm['second_fit']:.2f} | 1.0 |",
    ]


def first_use_markdown(runs: dict[str, dict[str, float]]) -> str:
    return "\n".join(
        [
            "# Shared space on first use: UMAP with an empty numba cache",
            "",
            f"Measured {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC on {platform.machine()}, {os.cpu_count()} CPU "
            "cores (shared with other work: timings are noisy), no GPU, by:",
            "",
            "```bash",
            "python -m bench.bench_projection --cold-only",
            "```",
            "",
            "Each process is fresh, with `NUMBA_CACHE_DIR` pointed at a new empty folder (a fresh install: "
            "umap-learn and pynndescent compile their numba code) and an empty projection cache; UMAP at the "
            "page's defaults (n_neighbors 15, min_dist 0.1, cosine, seed 0) on the sample's 800 real points "
            "(test split of `chtn_fashion_source`, images and texts).",
            "",
            *cold_lines(runs),
            "",
            "The shared-space page no longer waits for this: a UMAP that is not in the disk cache is computed by "
            "a background job (one per content key, shared by all sessions) while the page shows the PCA at once "
            'with the note "Showing PCA while UMAP compiles/computes (first use on this server, or of these '
            'parameters)", and switches to the UMAP when it is ready. At server start `app.py` runs '
            "`warm_up_umap`, which starts the UMAP worker (a process at nice 10, so the server's interpreter and "
            "its pages are not held up by the compilation) and compiles there; by the time someone opens the "
            "page the compilation is usually done and the UMAP takes about one warm fit.",
            "",
        ]
    )


def browser_render(sizes: list[int]) -> dict[int, float]:
    from playwright.sync_api import sync_playwright

    script = Path(tempfile.mkdtemp()) / "render.py"
    script.write_text(RENDER_PAGE)
    times = {}
    with (
        StreamlitServer(script, ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}) as server,
        sync_playwright() as playwright,
    ):
        browser = launch_chromium(playwright)
        for n in sizes:
            tab = browser.new_page(viewport={"width": 1400, "height": 1000})
            started = time.perf_counter()
            tab.goto(f"{server.url}/?n={n}")
            tab.get_by_text("rendered-marker").wait_for(timeout=600_000)
            tab.locator(".js-plotly-plot canvas").first.wait_for(timeout=600_000)
            tab.wait_for_function(
                "() => { const p = document.querySelector('.js-plotly-plot');"
                " return p && p._fullData && p._fullData.length >= 20; }",
                timeout=600_000,
            )
            times[n] = time.perf_counter() - started
            tab.close()
        browser.close()
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10_000, 100_000])
    parser.add_argument("--render-sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--no-browser", action="store_true")
    parser.add_argument("--no-markdown", action="store_true")
    parser.add_argument("--cold-only", action="store_true", help="only the cold first use (section 4)")
    parser.add_argument("--fit-size", type=int, default=10_000, help="points of the UMAP fitted in section 5")
    args = parser.parse_args()
    from analysis.projection.project import ProjectionParams, project

    runs = cold_first_use()  # before this process compiles anything (the probes are fresh processes anyway)
    print("\n".join(cold_lines(runs)), flush=True)
    if not args.no_markdown:
        (ROOT / "docs" / "projection_first_use.md").write_text(first_use_markdown(runs))
        print("wrote docs/projection_first_use.md")
    if args.cold_only:
        return

    # warm-up: numba compiles umap's exact path (< 4096 points) and pynndescent's (larger sets) once, before timing,
    # both in the UMAP worker (ours) and in this process (the baseline)
    for n in (200, 5000):
        project(np.random.default_rng(0).random((n, 20)), ProjectionParams())
        direct_umap(np.random.default_rng(0).random((n, 20)), ProjectionParams())
    rows = []
    for n in args.sizes:
        row = time_projection(n)
        rows.append(row)
        print(
            f"{n:>7} points: ours {row['ours']:.2f} s, umap-learn directly {row['direct']:.2f} s "
            f"(x{row['ours'] / row['direct']:.2f}), cached reopen {row['reopen'] * 1000:.0f} ms",
            flush=True,
        )
    during = page_work_during_fit(args.fit_size)
    print("\n".join(during_fit_lines(args.fit_size, during)), flush=True)
    render = {} if args.no_browser else browser_render(args.render_sizes)
    for n, seconds in render.items():
        print(f"browser render of {n:,} points (WebGL): {seconds:.2f} s")
    if not args.no_markdown:
        lines = [
            "# Shared-space projection benchmark",
            "",
            f"Measured {dt.date.today()} on {platform.machine()}, {os.cpu_count()} CPU cores, no GPU, by:",
            "",
            "```bash",
            "python -m bench.bench_projection",
            "```",
            "",
            "Real width (20-d softmax common representation of the sample checkpoint); above the sample's 800 "
            "points the embeddings are resampled with noise (see the script). UMAP n_neighbors 15, min_dist 0.1, "
            "cosine, seed 0. Ours fits in the UMAP worker process (the transfer of points and layout included), the "
            "baseline in the benchmark's own process.",
            "",
            "| points | `project_gallery` (ours) | umap-learn directly | ratio | cached reopen |",
            "|---|---|---|---|---|",
        ]
        lines += [
            f"| {r['n']:,} | {r['ours']:.2f} s | {r['direct']:.2f} s | {r['ours'] / r['direct']:.2f}x | "
            f"{r['reopen'] * 1000:.0f} ms |"
            for r in rows
        ]
        lines += [
            "",
            "A session's work while a UMAP fits: building the scatter figure of 800 points (what the shared space "
            "does on each run), again and again while nothing else runs, while a UMAP fits in a thread of this "
            "process (how the dashboard fitted before the UMAP worker), and while it fits in the UMAP worker process "
            "(nice 10). Both fits warm.",
            "",
            *during_fit_lines(args.fit_size, during),
        ]
        if render:
            lines += [
                "",
                "Browser render (headless chromium, page load to the WebGL scatter drawn, one Streamlit "
                "page per size):",
                "",
                "| points | render |",
                "|---|---|",
            ]
            lines += [f"| {n:,} | {s:.2f} s |" for n, s in render.items()]
        (ROOT / "docs" / "projection_benchmark.md").write_text("\n".join(lines) + "\n")
        print("wrote docs/projection_benchmark.md")


if __name__ == "__main__":
    main()
