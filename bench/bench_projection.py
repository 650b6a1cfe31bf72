"""Shared-space projection: our cached, stratified function against calling umap-learn directly, and the
browser render time of the WebGL scatter.

    python -m bench.bench_projection                     # 1k, 10k, 100k points; writes docs/projection_benchmark.md
    python -m bench.bench_projection --sizes 1000 --no-browser --no-markdown   # quick smoke run

Points have the real width (the sample checkpoint's 20-d softmax common representation). Where the data is
smaller than a size, they are synthetic: the sample's real test embeddings resampled with small Gaussian
noise and renormalised onto the simplex, half images and half texts, with their real categories.

1. projection time: `analysis.projection.project_gallery` (fresh cache folder) against `umap.UMAP(...)
   .fit_transform` on the same points with the same parameters, same run; the ratio is our overhead
   (normalisation, sampling, hashing and writing the cache);
2. cached reopen: `project_gallery` again on the same inputs (read from disk);
3. browser render: a Streamlit page that draws `analysis.projection_render.scatter_figure` of N points
   (spawned once per size, headless chromium) from page load to the plotly WebGL canvas being drawn.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

from tests.harness import StreamlitServer, launch_chromium

ROOT = Path(__file__).resolve().parents[1]

RENDER_PAGE = """
import numpy as np, pandas as pd, streamlit as st
from analysis.projection_render import scatter_figure
n = int(st.query_params.get("n", 1000))
rng = np.random.default_rng(0)
table = pd.DataFrame({"x": rng.normal(size=n), "y": rng.normal(size=n), "row": np.arange(n) // 2,
                      "id": [str(i) for i in range(n)], "modality": np.where(np.arange(n) % 2, "text", "image"),
                      "category": [f"c{i % 20}" for i in range(n)], "title": "t", "outcome": "top-1 correct"})
st.plotly_chart(scatter_figure(table, "category"), on_select="rerun", selection_mode=("lasso", "box"))
st.write("rendered-marker")
"""


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


def time_projection(n: int) -> dict[str, float]:
    import umap

    from analysis.projection import ProjectionParams, project_gallery
    from chtn.ranking import normalize_rows

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
    umap.UMAP(
        n_components=2,
        n_neighbors=params.n_neighbors,
        min_dist=params.min_dist,
        metric=params.metric,
        random_state=params.seed,
    ).fit_transform(normalize_rows(np.concatenate([image, text])))
    direct = time.perf_counter() - started
    return {"n": n, "ours": ours, "direct": direct, "reopen": reopen}


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
    args = parser.parse_args()
    from analysis.projection import ProjectionParams, project

    # warm-up: numba compiles umap's exact path (< 4096 points) and pynndescent's (larger sets) once, before timing
    for n in (200, 5000):
        project(np.random.default_rng(0).random((n, 20)), ProjectionParams())
    rows = []
    for n in args.sizes:
        row = time_projection(n)
        rows.append(row)
        print(
            f"{n:>7} points: ours {row['ours']:.2f} s, umap-learn directly {row['direct']:.2f} s "
            f"(x{row['ours'] / row['direct']:.2f}), cached reopen {row['reopen'] * 1000:.0f} ms",
            flush=True,
        )
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
            "cosine, seed 0, in one process.",
            "",
            "| points | `project_gallery` (ours) | umap-learn directly | ratio | cached reopen |",
            "|---|---|---|---|---|",
        ]
        lines += [
            f"| {r['n']:,} | {r['ours']:.2f} s | {r['direct']:.2f} s | {r['ours'] / r['direct']:.2f}x | "
            f"{r['reopen'] * 1000:.0f} ms |"
            for r in rows
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
