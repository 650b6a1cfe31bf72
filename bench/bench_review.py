"""Meeting review on the fashion protocol's 2,425-item test split: building a meeting queue, and saving a verdict.

    python -m bench.bench_review                       # reuses bench.bench_bias's k=5 cells (trains them if absent)
    python -m bench.bench_review --postgres URL        # also times saving to a PostgreSQL server

Queue: every query of both directions ranked and classified (`analysis.outcomes.query_outcomes`), joined with the
store's verdicts and the last reviewed checkpoint's snapshot, a 30-item stratified meeting queue drawn and
recorded. Baseline in the same run: the evaluation of the split (`evaluate_gallery`), which ranks the same scores.
Cold = a fresh process with empty in-process caches (the embeddings come from the disk cache, as on a server
that has opened the checkpoint before); warm = the same calls again in this process.

Verdict: `ReviewStore.save_verdict` (WAL, synchronous=FULL, one transaction per verdict, returns after COMMIT),
median and 95th percentile of 200 saves. Baseline in the same run: a bare `sqlite3` INSERT + COMMIT of the same
row with the same pragmas, i.e. what the durability itself costs without the store's code.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.bench_core import ROOT

BIAS_OUT = ROOT / "bench" / "out" / "bias_k5"
CELLS = ROOT / "bench" / "out" / "runs"
SAVES = 200


def protocol_inputs() -> tuple[Path, Path, Path]:
    """(manifest, candidate checkpoint, previous checkpoint) of bench_bias's k=5 run, trained when missing."""
    manifest = BIAS_OUT / "protocol_pairs.csv"
    candidate = CELLS / "bias_5_0_catalogue_small" / "best.safetensors"
    previous = CELLS / "bias_5_0_none_small" / "best.safetensors"
    if not (manifest.exists() and candidate.exists() and previous.exists()):
        subprocess.run([sys.executable, "-m", "bench.bench_bias", "--reuse"], check=True, cwd=ROOT)
    return manifest, candidate, previous


def build_queue(manifest: Path, candidate: Path, previous: Path, database: str) -> dict[str, float]:
    """Open both checkpoints and the split, then time the evaluation (baseline) and the queue build."""
    from analysis import outcomes as oc
    from analysis.review import queue as rq
    from analysis.review.store import ReviewStore
    from analysis.review.workflow import open_queue, review_state
    from chtn.checkpoint import load_checkpoint
    from chtn.data import load_pairs
    from chtn.gallery import embed_split, evaluate_gallery

    seconds: dict[str, float] = {}
    started = time.perf_counter()
    store = ReviewStore(database)
    ready = {}
    for name, path in (("previous", previous), ("candidate", candidate)):
        checkpoint = load_checkpoint(path)
        data = load_pairs(manifest, checkpoint.label_names)
        ready[name] = (checkpoint, data, embed_split(checkpoint, data, "test"))
    seconds["open checkpoints, data, embeddings (disk cache)"] = time.perf_counter() - started
    checkpoint, data, gallery = ready["previous"]
    dataset = data.fingerprint()
    previous_outcomes = oc.query_outcomes(
        gallery, evaluate_gallery(gallery, checkpoint.label_names), checkpoint.label_names
    )
    store.save_outcomes(
        dataset=dataset,
        checkpoint=checkpoint.digest,
        checkpoint_name="previous",
        outcomes=oc.snapshot(previous_outcomes),
    )
    store.save_verdict(
        dataset=dataset,
        checkpoint=checkpoint.digest,
        checkpoint_name="previous",
        query_id=data.ids[0],
        direction="i2t",
        verdict="acceptable",
        note="",
        reviewer="bench",
    )
    checkpoint, data, gallery = ready["candidate"]
    for run in ("cold", "warm"):
        started = time.perf_counter()
        report = evaluate_gallery(gallery, checkpoint.label_names)
        seconds[f"{run}: evaluation (baseline)"] = time.perf_counter() - started
        started = time.perf_counter()
        outcomes = oc.query_outcomes(gallery, report, checkpoint.label_names)
        state = review_state(store, outcomes, dataset, checkpoint.digest)
        spec = rq.QueueSpec(size=30, seed=len(seconds))  # a new queue each time: built and recorded, not read back
        queue = open_queue(
            store, state.annotated, spec, spec.queue_id(checkpoint.digest, dataset), checkpoint.digest, dataset
        )
        seconds[f"{run}: meeting queue (rank, classify, join verdicts, draw, record)"] = time.perf_counter() - started
        assert len(queue) == 30
    seconds["queries"] = len(outcomes)
    seconds["mis-retrieved"] = int(outcomes["mis_retrieved"].sum())
    seconds["new regressions"] = int((state.annotated["change"] == "new regression").sum())
    return seconds


def save_latency(database: str) -> list[float]:
    """Seconds per `save_verdict` (each a durable transaction) over SAVES saves."""
    from analysis.review.store import ReviewStore

    store = ReviewStore(database)
    times = []
    for i in range(SAVES):
        started = time.perf_counter()
        store.save_verdict(
            dataset="d" * 16,
            checkpoint="c" * 16,
            checkpoint_name="bench",
            query_id=str(i),
            direction="i2t",
            verdict="model error",
            note="a note of ordinary length " * 4,
            reviewer="bench",
        )
        times.append(time.perf_counter() - started)
    store.close()
    return times


def bare_sqlite_latency(path: Path) -> list[float]:
    """The same row through sqlite3 alone, with the store's pragmas: the floor set by fsync."""
    connection = sqlite3.connect(path, isolation_level=None)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=FULL")
    connection.execute("CREATE TABLE v (dataset, checkpoint, query_id, direction, verdict, note, reviewer, at)")
    times = []
    for i in range(SAVES):
        started = time.perf_counter()
        connection.execute("BEGIN IMMEDIATE")
        connection.execute(
            "INSERT INTO v VALUES (?, ?, ?, ?, ?, ?, ?, datetime('now'))",
            ("d" * 16, "c" * 16, str(i), "i2t", "model error", "a note of ordinary length " * 4, "bench"),
        )
        connection.execute("COMMIT")
        times.append(time.perf_counter() - started)
    connection.close()
    return times


def _ms(times: list[float]) -> dict[str, float]:
    ordered = sorted(times)
    return {"median_ms": statistics.median(ordered) * 1e3, "p95_ms": ordered[int(0.95 * len(ordered))] * 1e3}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--postgres", default=None, help="a PostgreSQL URL to time saving against as well")
    parser.add_argument(
        "--child", nargs=4, metavar=("MANIFEST", "CANDIDATE", "PREVIOUS", "DATABASE"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.child:
        print(json.dumps(build_queue(*map(Path, args.child[:3]), args.child[3])))
        return
    manifest, candidate, previous = protocol_inputs()
    folder = Path(tempfile.mkdtemp(prefix="bench-review-"))
    child = [
        sys.executable,
        "-m",
        "bench.bench_review",
        "--child",
        str(manifest),
        str(candidate),
        str(previous),
        str(folder / "queue.sqlite"),
    ]
    started = time.perf_counter()
    queue = json.loads(subprocess.run(child, check=True, capture_output=True, text=True, cwd=ROOT).stdout)
    queue["fresh process, total (imports included)"] = time.perf_counter() - started
    results = {"queue_seconds": queue}
    saves = {
        "sqlite3 alone (baseline)": _ms(bare_sqlite_latency(folder / "bare.sqlite")),
        "ReviewStore, SQLite": _ms(save_latency(str(folder / "store.sqlite"))),
    }
    if args.postgres:
        saves["ReviewStore, PostgreSQL"] = _ms(save_latency(args.postgres))
    results["save_verdict"] = saves
    for name, value in queue.items():
        print(f"{name:<70} {value:10.3f}" if isinstance(value, float) else f"{name:<70} {value:>10}")
    for run in ("cold", "warm"):
        build = queue[f"{run}: meeting queue (rank, classify, join verdicts, draw, record)"]
        print(f"{run}: queue / evaluation = {build / queue[f'{run}: evaluation (baseline)']:.2f}")
    base = saves["sqlite3 alone (baseline)"]["median_ms"]
    for name, figures in saves.items():
        print(
            f"save a verdict, {name:<28} median {figures['median_ms']:7.2f} ms  p95 {figures['p95_ms']:7.2f} ms  "
            f"ratio to sqlite3 alone {figures['median_ms'] / base:5.2f}"
        )
    (ROOT / "bench" / "out" / "review.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
