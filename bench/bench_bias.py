"""Source-bias report on the fixed fashion protocol: catalogue source vs no source, k pairs per category, one seed.

    python -m bench.bench_bias                      # k=5, seed 0, preset small; writes bench/out/bias_k5/
    python -m bench.bench_bias --k 20 --preset ensemble
    python -m bench.bench_bias --reuse              # the report again on the cells trained before

Trains the two cells exactly as `bench.bench_core` does (same pairs, same catalogue source), writes the
protocol as a manifest, and runs the report (`analysis.bias.report`) on the 2,425-item test split: the
per-category transfer gain the seed's claim is judged by. Timed twice in one run: computed (image features
from the feature cache bench_core filled; the freshly trained cells have no report yet) and read back.
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path

import numpy as np

from analysis.bias.render import category_table, write_report
from analysis.bias.report import BiasSettings, bias_report
from bench.bench_core import DATA, ROOT, load_protocol, pick_pairs, run_cell
from chtn.checkpoint import load_checkpoint
from chtn.data import SourceDataset, load_pairs
from chtn.features import FeatureCache


def write_manifest(p: dict, pair_rows: np.ndarray, path: Path) -> Path:
    """The cell's pairs (split train) and the protocol's test rows as a pairs manifest."""
    meta = p["meta"]
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "image", "text", "label", "split"])
        for split, rows in (("train", pair_rows), ("test", p["test_rows"])):
            for r in rows:
                image = DATA / "fashion" / meta.image[r]
                writer.writerow([meta.id[r], str(image), meta.productDisplayName[r], meta.articleType[r], split])
    return path


def catalogue_source(p: dict, pair_rows: np.ndarray) -> SourceDataset:
    """The catalogue source of `bench_core.source_for` as image files (same rows, same class order)."""
    meta = p["meta"]
    rows = np.concatenate([np.setdiff1d(p["train_rows"], pair_rows), p["outside_rows"]])
    labels = meta.articleType.to_numpy()[rows].tolist()
    paths = [DATA / "fashion" / meta.image[r] for r in rows]
    return SourceDataset(paths, labels, sorted(set(labels)), source="fashion catalogue (bench protocol)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--preset", default="small")
    parser.add_argument("--cache-dir", default=None, help="feature cache (the bench_core one is warm)")
    parser.add_argument("--out", default=None)
    parser.add_argument("--reuse", action="store_true", help="keep cells already trained by an earlier run")
    args = parser.parse_args()
    out = Path(args.out or ROOT / "bench" / "out" / f"bias_k{args.k}")
    cache = FeatureCache(args.cache_dir)
    p = load_protocol(cache)
    pair_rows = pick_pairs(p, args.k, args.seed)
    cells = {}
    for source in ("catalogue", "none"):
        work = ROOT / "bench" / "out" / "runs" / f"bias_{args.k}_{args.seed}_{source}_{args.preset}"
        if args.reuse and (work / "best.safetensors").exists():
            cells[source] = {"k": args.k, "seed": args.seed, "source": source, "reused": True}
        else:
            cells[source] = run_cell(p, args.k, args.seed, source, args.preset, {}, work)
        cells[source]["checkpoint"] = str(work / "best.safetensors")
        print(json.dumps(cells[source]))
    out.mkdir(parents=True, exist_ok=True)
    checkpoint, reference = (load_checkpoint(cells[s]["checkpoint"]) for s in ("catalogue", "none"))
    data = load_pairs(write_manifest(p, pair_rows, out / "protocol_pairs.csv"), checkpoint.label_names)
    source = catalogue_source(p, pair_rows)
    timings = {}
    cache_dir = Path(args.cache_dir) if args.cache_dir else None
    for run in ("computed", "from report cache"):  # the cells were just trained: their first report is a miss
        started = time.perf_counter()
        report = bias_report(checkpoint, data, reference, source, BiasSettings(), cache_dir=cache_dir)
        timings[run] = round(time.perf_counter() - started, 1)
        print(f"{run}: {timings[run]} s")
    write_report(report, out, f"Source bias on the fashion protocol, k={args.k}, seed {args.seed}, {args.preset}")
    summary = {"cells": cells, "seconds": timings, "test_items": len(data.split("test")), "source_images": len(source)}
    (out / "bench.json").write_text(json.dumps(summary, indent=2))
    table = category_table(report)
    print(table[["category", "ΔAP I->T", "CI I->T", "flag I->T", "ΔAP T->I", "CI T->I", "flag T->I"]].to_string())
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
