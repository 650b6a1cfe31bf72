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

End to end, per size (`--no-commands` skips it): a dataset of that many test items (`bench/make_large_split.py`,
synthetic embeddings cached for two sample checkpoints), then, each in a fresh process with no evaluation cached:
`chtn review queue` (a 30-item meeting queue) and `chtn compare` with one checkpoint per side (10,000 resamples).
With `--protocol-cache DIR` (bench_core's feature cache), a row for the real 2,425-item protocol test split: the
softmax baseline's embeddings of it (fitted on the protocol's training rows), engine against plain loop.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
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
CHECKPOINTS = ("chtn_fashion_source", "chtn_no_source")  # sample checkpoints of the end-to-end columns

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


def measure(n: int, baseline_queries: int, commands: bool) -> dict:
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
    row = {"n": n, **ours, "plain": plain, "plain_queries": timed, "ratio": plain / ours["warm"]}
    if commands:
        with tempfile.TemporaryDirectory(prefix="chtn-scale-") as work:
            row.update(command_seconds(n, Path(work)))
    return row


def command_seconds(n: int, work: Path) -> dict:
    """Seconds of `chtn review queue` and `chtn compare` on an n-item test split, each a fresh process whose
    evaluations are not cached (their embeddings are: synthetic, bench/make_large_split.py)."""
    from bench.make_large_split import store_synthetic_embeddings, write_large_split

    cache, env = work / "cache", {**os.environ, "CHTN_CACHE_DIR": str(work / "cache")}
    os.environ["CHTN_CACHE_DIR"] = str(cache)  # where store_synthetic_embeddings puts them
    pairs = write_large_split(n, work / "data")
    fashion, no_source = (str(ROOT / "sample_data" / "checkpoints" / f"{name}.safetensors") for name in CHECKPOINTS)
    for checkpoint in (fashion, no_source):
        store_synthetic_embeddings(pairs, checkpoint)
    commands = {
        "queue": ["review", "queue", "--checkpoint", fashion, "--format", "csv"],
        "compare": ["compare", "--baseline", no_source, "--candidate", fashion],
    }
    where = {"queue": ["--review-db", str(work / "review.sqlite")], "compare": ["--out", str(work / "compare")]}
    seconds, said = {}, {}
    for name, argv in commands.items():
        shutil.rmtree(cache / "evaluations", ignore_errors=True)
        start = time.perf_counter()
        said[name] = subprocess.run(
            [sys.executable, "-m", "chtn", *argv, "--data", str(pairs), *where[name]],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
        )
        seconds[name] = time.perf_counter() - start
        # compare's exit code is its decision (with one run per side: 2, insufficient evidence), not a failure
        if said[name].returncode and not (name == "compare" and (work / "compare" / "figures.csv").exists()):
            raise SystemExit(f"chtn {name} failed:\n{said[name].stdout[-2000:]}\n{said[name].stderr[-2000:]}")
    if "(10,000 resamples" not in said["compare"].stdout:
        raise SystemExit(f"chtn compare did not draw 10,000 resamples:\n{said['compare'].stdout[:2000]}")
    return seconds


def protocol_row(cache_dir: Path) -> dict:
    """The real 2,425-item protocol test split (bench_core's), embedded by the softmax baseline fitted on its
    training rows: engine against plain loop, as `sample_row`."""
    from bench.bench_core import feature_set, load_protocol
    from chtn.baseline import common_space, softmax_maps
    from chtn.features import FeatureCache

    p = load_protocol(FeatureCache(cache_dir))
    train, test = feature_set(p, p["train_rows"]), feature_set(p, p["test_rows"])
    image, text = softmax_maps(train, len(p["types"]), 0.01)
    return timed_split(common_space(test.image, image, True), common_space(test.text, text, True), test.labels)


def timed_split(image: np.ndarray, text: np.ndarray, labels: np.ndarray) -> dict:
    """A real split's evaluation in this (warm) process against the plain loop on all its queries."""
    names = [str(c) for c in range(int(labels.max()) + 1)]
    evaluate_embeddings(image, text, labels, names)  # warm: imports, pools, page faults
    start = time.perf_counter()
    report = evaluate_embeddings(image, text, labels, names)
    warm = time.perf_counter() - start
    plain = sum(plain_loop_map(q, g, labels, len(q))[0] for q, g in ((image, text), (text, image)))
    return {"n": len(labels), "warm": warm, "plain": plain, "ratio": plain / warm, "map": report.mean_map}


def sample_row() -> dict:
    """The sample's real test split, as the dashboard evaluates it."""
    from analysis.workspace import DEFAULT_CHECKPOINT, SAMPLE_DATASET, open_checkpoint, open_dataset
    from chtn.gallery import embed_split

    checkpoint = open_checkpoint(DEFAULT_CHECKPOINT)
    test = open_dataset(SAMPLE_DATASET, checkpoint)[0]
    gallery = embed_split(checkpoint, test, "test")
    return timed_split(gallery.image, gallery.text, gallery.labels)


def markdown(rows: list[dict], real: list[tuple[str, dict]], when: str) -> str:
    lines = [
        "| items | cold (s) | warm (s) | plain loop (s) | plain / warm | peak memory (GB) | MAP "
        "| 30-item queue, cold (s) | compare, 10,000 resamples, cold (s) |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        plain = (
            f"{r['plain']:,.1f} (from {r['plain_queries']:,} queries)"
            if r["plain_queries"] < r["n"]
            else (f"{r['plain']:,.1f}")
        )
        lines.append(
            f"| {r['n']:,} | {r['cold']:,.1f} | {r['warm']:,.1f} | {plain} | {r['ratio']:.1f}× | {r['peak_gb']:.2f} "
            f"| {r['map']:.4f} | {r.get('queue', float('nan')):,.1f} | {r.get('compare', float('nan')):,.1f} |"
        )
    reals = "\n".join(
        f"- {what} ({r['n']:,} pairs): engine {r['warm'] * 1e3:,.0f} ms, plain loop {r['plain'] * 1e3:,.0f} ms "
        f"({r['ratio']:.1f}×), MAP {r['map']:.4f}."
        for what, r in real
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
From 10,000 items the engine ranks in one worker process per core, below in one thread per core
(`chtn.engine.PROCESSES_FROM`). The last two columns run the commands end to end in a fresh process, on a dataset
of that many test items (`bench/make_large_split.py`) whose embeddings are cached (synthetic) and whose evaluations
are not: `chtn review queue` builds a 30-item meeting queue (one evaluation), `chtn compare` evaluates two
checkpoints and draws 10,000 resamples (bootstrap and sign-flip test, both directions).

{chr(10).join(lines)}

Real test splits, engine (warm) against the plain loop on all queries:

{reals}

## Evaluation engine on a GPU

Not run yet: `bench/bench_gpu.py` measures it when a device is lent.
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=SIZES)
    parser.add_argument("--baseline-queries", type=int, default=2_000)
    parser.add_argument("--no-commands", action="store_true", help="skip the queue and compare columns")
    parser.add_argument("--protocol-cache", type=Path, help="bench_core's feature cache: adds the protocol split")
    parser.add_argument("--no-markdown", action="store_true")
    args = parser.parse_args()
    rows = []
    for n in args.sizes:
        rows.append(measure(n, args.baseline_queries, not args.no_commands))
        r = rows[-1]
        print(
            f"{n:>7,} items: cold {r['cold']:7.1f} s  warm {r['warm']:7.1f} s  plain {r['plain']:8.1f} s  "
            f"({r['ratio']:.1f}x)  peak {r['peak_gb']:.2f} GB  MAP {r['map']:.4f}  "
            f"queue {r.get('queue', float('nan')):.1f} s  compare {r.get('compare', float('nan')):.1f} s",
            flush=True,
        )
    real = [("The sample's test split, `chtn_fashion_source`", sample_row())]
    if args.protocol_cache:
        real.append(
            (
                "The fashion protocol's test split (bench_core, seed 0), softmax baseline",
                protocol_row(args.protocol_cache),
            )
        )
    for what, r in real:
        print(f"{what} ({r['n']}): {r['warm']:.3f} s vs plain {r['plain']:.3f} s ({r['ratio']:.1f}x)", flush=True)
    if not args.no_markdown:
        when = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
        write_sections(DOC, markdown(rows, real, when))
        print(f"wrote {DOC}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
