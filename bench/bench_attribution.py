"""Latency and memory of one pair's attributions on this machine, against one forward+backward pass.

    python -m bench.bench_attribution              # 5 pairs; prints the table, writes docs/attribution_benchmark.md
    python -m bench.bench_attribution --pairs 2 --no-markdown   # quick smoke run

Everything runs on the embedded sample (`sample_data/`, checkpoint `chtn_fashion_source`) in one process:

1. baseline, measured first in the same run: one forward+backward pass of the full image path
   (pixels -> EfficientNet-Lite0 -> CHTN image stream -> similarity -> d/dpixels) and of the full text
   path (word pieces -> MiniLM + TF-IDF -> CHTN text stream -> similarity -> d/dembeddings), median of 10;
2. every method on --pairs test pairs (image i2t: the image attributed against its own text), each
   computed from scratch (a fresh attribution cache), median latency, the same in units of the
   baseline pass, IG's completeness gap relative to f(x) - f(baseline), and the peak extra resident
   memory (Linux VmHWM, reset before each method through /proc/self/clear_refs);
3. the page's default answer: the attribution page (Streamlit AppTest) opened on a pair whose
   attributions are not cached yet (Grad-CAM on the image + Layer IG on the text), and the same pair
   reopened from the disk cache.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

METHODS = [  # (label, Settings fields, side)
    ("Grad-CAM (page default)", {"method": "gradcam"}, "image"),
    ("IG, 16 steps", {"method": "ig", "n_steps": 16}, "image"),
    ("IG, 32 steps", {"method": "ig", "n_steps": 32}, "image"),
    ("IG, 64 steps", {"method": "ig", "n_steps": 64}, "image"),
    ("IG, 32 steps, refinement off", {"method": "ig", "n_steps": 32, "refine": False}, "image"),
    ("IG + SmoothGrad (4 x 16 steps)", {"method": "smoothgrad", "n_steps": 16}, "image"),
    ("Occlusion (32 px window, stride 16)", {"method": "occlusion"}, "image"),
    ("text Layer IG, 32 steps (page)", {"n_steps": 32}, "text"),
]


def _kib(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return float(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def _reset_peak() -> None:
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS (Linux >= 4.0)


def baseline_passes(explainer, image, text, repeats: int = 10) -> dict[str, float]:
    """Median seconds of one forward+backward through the whole image path and the whole text path."""
    import torch

    from analysis.attribution.objective import anchors, combine, cosine_terms

    tower = explainer.tower
    pixels = tower.pixels(image.value)
    inputs = tower.text.inputs(text.value)
    text_anchor, image_anchor = anchors(explainer.embed(text)[0]), anchors(explainer.embed(image)[0])

    def image_pass() -> None:
        x = pixels.clone().requires_grad_(True)
        torch.autograd.grad(combine(cosine_terms(tower.encode_image(x), text_anchor)).sum(), x)

    def text_pass() -> None:
        words = tower.text.word_embeddings(inputs.input_ids).detach().requires_grad_()
        z = tower.encode_text(words, inputs.attention_mask, inputs.tfidf)
        torch.autograd.grad(combine(cosine_terms(z, image_anchor)).sum(), words)

    result = {}
    for name, fn in (("image", image_pass), ("text", text_pass)):
        fn()  # warm-up
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            fn()
            times.append(time.perf_counter() - started)
        result[name] = statistics.median(times)
    return result


def method_rows(checkpoint, pairs, passes: dict[str, float]) -> list[dict]:
    from analysis.attribution.explainer import PairExplainer
    from analysis.attribution.types import Settings

    rows = []
    for label, fields, side in METHODS:
        explainer = PairExplainer(checkpoint, cache_dir=Path(tempfile.mkdtemp(prefix="bench-attr-")))
        explainer.explain(*pairs[0], Settings(**fields))  # warm-up (lazy imports, allocator)
        before = _kib("VmRSS")
        _reset_peak()
        seconds, gaps, steps = [], [], []
        for image, text in pairs[1:]:
            item, other = (image, text) if side == "image" else (text, image)
            result = explainer.explain(item, other, Settings(**fields))
            seconds.append(result.seconds)
            if result.delta is not None:
                gaps.append(abs(result.delta) / max(abs(result.value - result.baseline_value), 1e-3))
                steps.append(result.n_steps)
        latency = statistics.median(seconds)
        rows.append(
            {
                "method": label,
                "seconds": latency,
                "passes": latency / passes[side],
                "gap": statistics.median(gaps) if gaps else None,
                "grad_evals": statistics.median(steps) if steps else None,
                "peak_mb": (_kib("VmHWM") - before) / 1024,
            }
        )
        print(f"{label:40s} {latency:7.3f} s  {latency / passes[side]:6.1f} passes", flush=True)
    return rows


def plain_captum_row(checkpoint, pairs, passes: dict[str, float], n_steps: int = 32) -> dict:
    """Reference: Captum's IntegratedGradients with evenly spaced steps on the same image path and pairs."""
    import torch
    from captum.attr import IntegratedGradients

    from analysis.attribution.explainer import PairExplainer
    from analysis.attribution.objective import ImageObjective, anchors

    explainer = PairExplainer(checkpoint, cache_dir=Path(tempfile.mkdtemp(prefix="bench-attr-")))
    objective = ImageObjective(explainer.tower)
    seconds, gaps = [], []
    for image, text in pairs[1:]:
        anchor = anchors(explainer.embed(text)[0])
        pixels = explainer.tower.pixels(image.value)
        black = torch.full_like(pixels, -1.0)
        started = time.perf_counter()
        _, delta = IntegratedGradients(objective).attribute(
            pixels,
            baselines=black,
            additional_forward_args=(anchor,),
            n_steps=n_steps,
            internal_batch_size=16,
            return_convergence_delta=True,
        )
        seconds.append(time.perf_counter() - started)
        with torch.no_grad():
            f_gap = float(objective(pixels, anchor) - objective(black, anchor))
        gaps.append(abs(float(delta)) / max(abs(f_gap), 1e-3))
    latency = statistics.median(seconds)
    print(f"{'Captum IG, uniform 32 steps':40s} {latency:7.3f} s  {latency / passes['image']:6.1f} passes", flush=True)
    return {
        "method": f"reference: Captum IG, {n_steps} evenly spaced steps",
        "seconds": latency,
        "passes": latency / passes["image"],
        "gap": statistics.median(gaps),
        "grad_evals": n_steps,
        "peak_mb": None,
    }


def page_answer(pair_ids: tuple[str, str]) -> dict[str, float]:
    """Seconds for the attribution page (AppTest) to answer a pair, uncached and then cached, and for AppTest to
    run a bare one-line page (its own cost per run: Streamlit 1.67 rescans every installed package for
    components on each AppTest run, which a real server does once at start-up)."""
    from streamlit.testing.v1 import AppTest

    def bare() -> float:
        at = AppTest.from_string('import streamlit as st\nst.write("hello")', default_timeout=600)
        started = time.perf_counter()
        at.run()
        return time.perf_counter() - started

    def run(query: str, result: str) -> float:
        at = AppTest.from_file(str(ROOT / "dashboard.py"), default_timeout=600)
        at.switch_page("views/attribution.py")
        at.query_params.update({"direction": "i2t", "query": query, "result": result})
        started = time.perf_counter()
        at.run()
        elapsed = time.perf_counter() - started
        assert not at.exception and not at.error, (at.exception, at.error)
        return elapsed

    from analysis.projection.project import UMAP_WARMED

    run(*pair_ids)  # warm-up: loads checkpoint, embeddings and encoders into Streamlit's resource cache
    # app.py then compiles UMAP in its worker process (once per server); measured while it runs, the answer would
    # include that one-off compilation's share of the 2 cores (2.3 s instead of 0.8 s here). Wait for it.
    UMAP_WARMED.wait(timeout=600)
    bare()  # warm-up
    return {
        "uncached": _run_fresh(run, pair_ids),
        "cached": run(*pair_ids),
        "bare": statistics.median(bare() for _ in range(3)),
    }


def _run_fresh(run, pair_ids: tuple[str, str]) -> float:
    """The page on a pair whose attributions are not on disk (the attribution cache folder is emptied)."""
    import shutil

    from chtn.hashing import default_cache_dir

    shutil.rmtree(default_cache_dir() / "attributions", ignore_errors=True)
    return run(*pair_ids)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=5, help="test pairs per method (after one warm-up pair)")
    parser.add_argument("--no-markdown", action="store_true", help="do not write docs/attribution_benchmark.md")
    args = parser.parse_args()
    os.environ.setdefault("CHTN_CACHE_DIR", tempfile.mkdtemp(prefix="bench-attr-cache-"))

    import torch

    from analysis.attribution.explainer import PairExplainer
    from analysis.attribution.types import explainer_items
    from analysis.workspace import SAMPLE_DATASET, open_checkpoint, open_dataset

    torch.set_num_threads(os.cpu_count() or 1)
    checkpoint = open_checkpoint("chtn_fashion_source")
    test, _ = open_dataset(SAMPLE_DATASET, checkpoint)
    rows_of = range(0, len(test.ids), max(1, len(test.ids) // (args.pairs + 1)))
    pairs = [explainer_items(test.ids, test.texts, test.image_paths, r) for r in list(rows_of)[: args.pairs + 1]]
    passes = baseline_passes(PairExplainer(checkpoint, cache_dir=Path(tempfile.mkdtemp())), *pairs[0])
    print(f"one forward+backward: image {passes['image']:.3f} s, text {passes['text']:.3f} s", flush=True)
    rows = method_rows(checkpoint, pairs, passes) + [plain_captum_row(checkpoint, pairs, passes)]
    page = page_answer((pairs[1][0].name, pairs[1][1].name))
    print(f"page default answer: uncached {page['uncached']:.2f} s, cached {page['cached']:.2f} s, ", end="")
    print(f"bare AppTest page {page['bare']:.2f} s")
    if not args.no_markdown:
        write_markdown(rows, passes, page, args.pairs)


def write_markdown(rows: list[dict], passes: dict[str, float], page: dict[str, float], n_pairs: int) -> None:
    lines = [
        "# Attribution benchmark",
        "",
        f"Measured {dt.date.today()} on {platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, "
        "no GPU, by:",
        "",
        "```bash",
        f"python -m bench.bench_attribution --pairs {n_pairs}",
        "```",
        "",
        f"Baseline in the same run: one forward+backward pass of the whole image path = **{passes['image']:.3f} s**, "
        f"of the whole text path = **{passes['text']:.3f} s** (median of 10). Each method is computed from "
        f"scratch on {n_pairs} test pairs of the sample (median shown).",
        "",
        "| method | latency | in passes | gradient evaluations | completeness gap / (f(x)-f(b)) | peak extra memory |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        gap = f"{r['gap']:.1%}" if r["gap"] is not None else "—"
        evals = f"{r['grad_evals']:.0f}" if r["grad_evals"] is not None else "—"
        memory = f"{r['peak_mb']:.0f} MB" if r["peak_mb"] is not None else "—"
        lines.append(f"| {r['method']} | {r['seconds']:.3f} s | {r['passes']:.1f} | {evals} | {gap} | {memory} |")
    lines += [
        "",
        f"**The page's default answer** (Grad-CAM on the image and Layer IG on the text, opened through "
        f"Streamlit's AppTest on a pair not attributed before): **{page['uncached']:.2f} s**; reopened from the "
        f"disk cache: {page['cached']:.2f} s. Baseline in the same run: AppTest runs a bare one-line page in "
        f"{page['bare']:.2f} s (median of 3), mostly Streamlit scanning the installed packages for components, "
        "which AppTest repeats on every run and a real server does once at start-up; the page's own work is the "
        f"difference: {page['uncached'] - page['bare']:.2f} s uncached, {page['cached'] - page['bare']:.2f} s "
        "cached. Measured after app.py's one-off UMAP compilation has finished.",
        "",
        "Our IG spends more gradient evaluations than its nominal steps: a forward-only probe places the "
        "steps where the saturating similarity changes, and segments whose own completeness gap is large "
        "are halved and redone, within 3 x n_steps (`analysis/attribution/quadrature.py`; the page's 'Refine IG' "
        "toggle, "
        "on by default; off = n_steps evaluations). The reference row shows "
        "what evenly spaced steps give on the same pairs. Peak memory is the growth of the resident set "
        "(VmHWM) while the method runs after a warm-up pair; a later row can reuse memory the allocator kept "
        "from an earlier one. IG's is bounded by `internal_batch_size` (16 here).",
        "",
    ]
    (ROOT / "docs" / "attribution_benchmark.md").write_text("\n".join(lines))
    print("wrote docs/attribution_benchmark.md")


if __name__ == "__main__":
    main()
