"""Evaluation at scale: the engine (`chtn.evaluate.evaluate_embeddings`, both directions, full ranking) against the
plain numpy loop it replaced (a stable `argsort` of every score row), on synthetic clustered embeddings and on the
sample's real test split.

    python -m bench.bench_scale                          # 2.5k-100k items; writes docs/scale_benchmark.md
    python -m bench.bench_scale --sizes 2500 10000 --no-markdown   # a quick look

Per size, all in one run on this machine:
- cold: a fresh Python process that imports chtn, builds the embeddings and evaluates (what a CLI run pays);
  its peak resident memory (ru_maxrss of that process, the interpreter and torch included);
- warm: the same evaluation again in that process;
- plain loop: the old evaluation (cosine scores in the engine's blocks of queries, a stable argsort per row, AP from
  the sorted relevance), timed on its first `--baseline-queries` queries per direction and scaled to all queries
  (its cost is the same for every query); the ratio is plain / warm.
Both give the same MAP (checked on the timed queries). Synthetic data: 20 classes, d = 20, each item its class
centre plus Gaussian noise (sd 1.5), image and text drawn independently.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from bench.bench_app import write_sections
from chtn.engine import block_rows, ranked_ap
from chtn.evaluate import evaluate_direction, evaluate_embeddings
from chtn.ranking import cosine_scores

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "scale_benchmark.md"
SIZES = [2_500, 10_000, 20_000, 50_000, 100_000]
CLASSES, DIM, NOISE = 20, 20, 1.5

CHILD = """
import json, resource, sys, time
t0 = time.perf_counter()
from bench.bench_scale import synthetic
from chtn.evaluate import evaluate_embeddings
image, text, labels = synthetic(int(sys.argv[1]))
names = [str(c) for c in range(int(labels.max()) + 1)]
report = evaluate_embeddings(image, text, labels, names)
cold = time.perf_counter() - t0
t1 = time.perf_counter()
evaluate_embeddings(image, text, labels, names)
warm = time.perf_counter() - t1
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
print(json.dumps({"cold": cold, "warm": warm, "peak_gb": peak, "map": report.mean_map}))
"""


def synthetic(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(image, text, labels): n clustered pairs, reproducible from the seed."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, CLASSES, n)
    centres = rng.standard_normal((CLASSES, DIM)).astype(np.float32)
    image = centres[labels] + NOISE * rng.standard_normal((n, DIM)).astype(np.float32)
    text = centres[labels] + NOISE * rng.standard_normal((n, DIM)).astype(np.float32)
    return image, text, labels


def plain_loop_map(query: np.ndarray, gallery: np.ndarray, labels: np.ndarray, n_queries: int) -> tuple[float, float]:
    """(seconds, mean AP) of the old evaluation over the first `n_queries` queries of one direction."""
    start = time.perf_counter()
    aps = []
    step = block_rows(len(gallery))  # the engine's block: the same memory budget
    for lo in range(0, n_queries, step):
        rows = np.arange(lo, min(lo + step, n_queries))
        scores = cosine_scores(query[rows], gallery)
        order = np.argsort(-scores, axis=1, kind="stable")
        aps.append(ranked_ap(np.take_along_axis(labels[rows, None] == labels[None, :], order, axis=1)))
    return time.perf_counter() - start, float(np.concatenate(aps).mean())


def measure(n: int, baseline_queries: int) -> dict:
    child = subprocess.run([sys.executable, "-c", CHILD, str(n)], capture_output=True, text=True, cwd=ROOT, check=True)
    ours = json.loads(child.stdout.strip().splitlines()[-1])
    image, text, labels = synthetic(n)
    timed = min(n, baseline_queries)
    plain = 0.0
    for query, gallery in ((image, text), (text, image)):
        seconds, plain_map = plain_loop_map(query, gallery, labels, timed)
        plain += seconds * n / timed
        engine_map = evaluate_direction(query[:timed], gallery, labels[:timed], labels, "i2t").map
        if abs(engine_map - plain_map) > 1e-9:
            raise SystemExit(f"n={n}: the engine's MAP {engine_map} differs from the plain loop's {plain_map}")
    return {"n": n, **ours, "plain": plain, "plain_queries": timed, "ratio": plain / ours["warm"]}


def sample_row() -> dict:
    """The sample's real test split, as the dashboard evaluates it."""
    from analysis.workspace import DEFAULT_CHECKPOINT, SAMPLE_DATASET, open_checkpoint, open_dataset
    from chtn.gallery import embed_split

    checkpoint = open_checkpoint(DEFAULT_CHECKPOINT)
    test = open_dataset(SAMPLE_DATASET, checkpoint)[0]
    gallery = embed_split(checkpoint, test, "test")
    start = time.perf_counter()
    report = evaluate_embeddings(gallery.image, gallery.text, gallery.labels, checkpoint.label_names)
    warm = time.perf_counter() - start
    plain = sum(
        plain_loop_map(q, g, gallery.labels, len(q))[0]
        for q, g in ((gallery.image, gallery.text), (gallery.text, gallery.image))
    )
    return {"n": len(test), "warm": warm, "plain": plain, "ratio": plain / warm, "map": report.mean_map}


def markdown(rows: list[dict], sample: dict, when: str) -> str:
    lines = [
        "| items | cold (s) | warm (s) | plain loop (s) | plain / warm | peak memory (GB) | MAP |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        plain = (
            f"{r['plain']:,.1f} (from {r['plain_queries']:,} queries)"
            if r["plain_queries"] < r["n"]
            else (f"{r['plain']:,.1f}")
        )
        lines.append(
            f"| {r['n']:,} | {r['cold']:,.1f} | {r['warm']:,.1f} | {plain} | {r['ratio']:.1f}× | {r['peak_gb']:.2f} "
            f"| {r['map']:.4f} |"
        )
    cpu = platform.processor() or platform.machine()
    return f"""# Scale benchmark

What evaluating a large test split costs, and how to reproduce it.

## Evaluation engine on CPU

Generated by `python -m bench.bench_scale` on {when} ({os.cpu_count()} cores, {cpu}).
Both directions, full ranking (MAP@all, own-pair rank and tie groups), synthetic clustered embeddings (20 classes,
d = 20). Cold: a fresh process (imports, data, evaluation); warm: the same evaluation again in it. Plain loop: the
old evaluation (stable argsort per row), timed in the same run on the first queries of each direction and scaled to
all of them; its MAP equals the engine's on those queries (checked). Peak memory: the cold process's peak RSS.

{chr(10).join(lines)}

The sample's real test split ({sample["n"]} pairs, `chtn_fashion_source`): engine {sample["warm"] * 1e3:.0f} ms, plain
loop {sample["plain"] * 1e3:.0f} ms ({sample["ratio"]:.1f}×), MAP {sample["map"]:.4f}.

## Evaluation engine on a GPU

Not run yet: `bench/bench_gpu.py` measures it when a device is lent.
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=SIZES)
    parser.add_argument("--baseline-queries", type=int, default=2_000)
    parser.add_argument("--no-markdown", action="store_true")
    args = parser.parse_args()
    rows = []
    for n in args.sizes:
        rows.append(measure(n, args.baseline_queries))
        r = rows[-1]
        print(
            f"{n:>7,} items: cold {r['cold']:7.1f} s  warm {r['warm']:7.1f} s  plain {r['plain']:8.1f} s  "
            f"({r['ratio']:.1f}x)  peak {r['peak_gb']:.2f} GB  MAP {r['map']:.4f}",
            flush=True,
        )
    sample = sample_row()
    print(f"sample test split ({sample['n']}): {sample['warm']:.3f} s vs plain {sample['plain']:.3f} s")
    if not args.no_markdown:
        when = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
        write_sections(DOC, markdown(rows, sample, when))
        print(f"wrote {DOC}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
