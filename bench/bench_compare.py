"""`chtn compare` (the CI gate) on the fashion protocol's 2,425-item test split: catalogue source (B) against no
source (A), k = 5 pairs per category, seed 0, the default rule (10,000 resamples per slice).

    python -m bench.bench_compare          # reuses bench.bench_bias's k=5 cells (trains them if absent)

Each command runs as a CI step would: a fresh process, timed from start to exit, embeddings read from the disk
cache (a first run with an empty cache also embeds both splits; that cost is printed by bench.bench_review).
Baseline in the same run: `chtn evaluate` of the candidate alone on the same split (load, rank, MAP). Also
checks the gate against itself (A vs A: zero change, GO). Results go to bench/out/compare.json.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.bench_core import ROOT
from bench.bench_review import protocol_inputs


def timed(argv: list[str]) -> tuple[float, int, str]:
    """(seconds, exit code, output) of `python -m chtn ARGV` in a fresh process."""
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "chtn", *argv], capture_output=True, text=True, cwd=ROOT)
    return time.perf_counter() - started, done.returncode, done.stdout + done.stderr


def main() -> None:
    manifest, candidate, baseline = protocol_inputs()
    out = Path(tempfile.mkdtemp(prefix="bench-compare-"))
    data = ["--data", str(manifest)]
    runs = {
        "evaluate B (baseline)": ["evaluate", "--checkpoint", str(candidate), *data, "--out", str(out / "eval")],
        "compare B vs A (gate)": [
            "compare",
            "--baseline",
            str(baseline),
            "--candidate",
            str(candidate),
            *data,
            "--out",
            str(out / "gate"),
        ],
        "compare A vs A": [
            "compare",
            "--baseline",
            str(baseline),
            "--candidate",
            str(baseline),
            *data,
            "--out",
            str(out / "self"),
        ],
    }
    results = {}
    for name, argv in runs.items():
        seconds, code, output = timed(argv)
        results[name] = {"seconds": round(seconds, 1), "exit": code}
        print(f"{name:<24} {seconds:7.1f} s  exit {code}  {output.strip().splitlines()[-1]}")
    ratio = results["compare B vs A (gate)"]["seconds"] / results["evaluate B (baseline)"]["seconds"]
    print(f"gate / evaluate = {ratio:.2f}")
    document = json.loads((out / "gate" / "comparison.json").read_text(encoding="utf-8"))
    headline = {
        m["type"]: {k: m[k] for k in ("baseline_value", "value", "change", "confidence_interval", "p_value")}
        for m in document["quantitative_analysis"]["performance_metrics"]
        if m["slice"] == "overall"
    }
    results["gate"] = {k: document["gate"][k] for k in ("verdict", "summary")}
    results["headline"] = headline
    results["queries"] = document["quantitative_analysis"]["queries"]
    for metric in ("map", "map_i2t", "map_t2i", "pair_recall@1", "pair_recall@10"):
        m, ci = headline[metric], headline[metric]["confidence_interval"]
        print(
            f"{metric:<16} A {m['baseline_value']:.4f}  B {m['value']:.4f}  B-A {m['change']:+.4f} "
            f"[{ci['lower_bound']:+.4f}, {ci['upper_bound']:+.4f}]  p {m['p_value']:.4f}"
        )
    print(results["gate"]["summary"], results["queries"])
    (ROOT / "bench" / "out" / "compare.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
