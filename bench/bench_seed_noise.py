"""Training-seed noise: what the gate and the Source bias flags say about same-recipe (A/A) pairs, before and after
seeds were counted as a source of variance (issue 21), and whether the fashion source's effect still shows.

    python -m bench.bench_seed_noise            # trains seeds 3-7 once (~1 min each on 2 cores), then ~5 min

Runs: the sample's no-source recipe with training seeds 0-7 (0-2 shipped, 3-7 trained here into bench/out/seeds/
exactly as scripts/build_sample.py trains the replicates) and the fashion-source recipe's three shipped runs.
Any two different seeds of one recipe are an A/A pair: every flag and every NO-GO there is a false positive.

- before: one checkpoint per side, every interval resampling test queries (overall figures included), the rule
  file as it was (block on the lower CI bound, no min_runs), bias flags without a minimum practical effect;
- after, 1 run per side: the default rule (INSUFFICIENT EVIDENCE, never GO or NO-GO), and the same rule with
  min_runs = 1 (a decision between two checkpoints; overall intervals resample whole categories);
- after, 3 runs per side (disjoint seeds, 100 random ordered splits, seeded): the default rule, Welch's t across runs.

The "before" column is the baseline measured in the same run; the ratio is after / before. Resamples: 2,000 per
slice (the default rule's 10,000 changes no rate here by more than the Monte Carlo error, and takes 5x longer).
Results go to bench/out/seed_noise.json; docs/compare_benchmark.md (the gate) and docs/source_bias.md (the flags)
quote them.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import time
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from analysis import stats
from analysis.bias.gain import HELPED, HURT, transfer_gain
from analysis.compare.figures import figure_columns, figures, per_query
from analysis.compare.rules import DEFAULT_RULE, decide, evaluate, load_rules
from analysis.workspace import open_dataset
from bench.bench_core import ROOT
from chtn.checkpoint import load_checkpoint
from chtn.evaluate import EvaluationReport
from chtn.gallery import embed_split, evaluate_gallery
from scripts.build_sample import CHECKPOINTS, OUT, replicate_path, train_run

SEEDS = range(8)
RESAMPLES = 2_000
SPLITS = 100  # random ordered 3-vs-3 splits of disjoint seeds
SEEDS_DIR = ROOT / "bench" / "out" / "seeds"
PAIRS = OUT / "fashion" / "pairs.csv"


def run_path(name: str, seed: int) -> Path:
    """A run of recipe `name`: the shipped checkpoint (seed 0), a shipped replicate, or one trained here."""
    if seed == 0:
        return OUT / "checkpoints" / f"{name}.safetensors"
    shipped = replicate_path(name, seed)
    return shipped if shipped.exists() else SEEDS_DIR / f"{name}_s{seed}.safetensors"


def evaluated(path: Path) -> tuple[EvaluationReport, list[str]]:
    checkpoint = load_checkpoint(path)
    data = open_dataset(PAIRS, checkpoint, split=None)[0]
    gallery = embed_split(checkpoint, data, "test")
    return evaluate_gallery(gallery, checkpoint.label_names), gallery.data.ids


def rules_before() -> str:
    """The default rule as it was before training runs counted: block on the lower CI bound, one run enough."""
    text = DEFAULT_RULE.read_text(encoding="utf-8").replace('on = "ci_upper"', 'on = "ci_lower"')
    return text.replace("min_runs = 3", "min_runs = 1")


def queries_overall(table: pd.DataFrame, a: EvaluationReport, b: EvaluationReport) -> pd.DataFrame:
    """`table` with its overall (non-median) figures resampling single test queries, as before issue 21."""
    values_a, values_b = per_query(a), per_query(b)
    table = table.copy()
    for index in table.index[(table["slice"] == "overall") & ~table["metric"].str.startswith("pair_median")]:
        metric = table.at[index, "metric"]
        stream = zlib.crc32(f"{metric}|overall".encode())
        result = stats.paired_comparison(values_a[metric], values_b[metric], RESAMPLES, 0, stream=stream)
        for column, value in figure_columns(dataclasses.replace(result, runs=(1, 1)).to_dict()).items():
            table.at[index, column] = value
    return table


def judged(table: pd.DataFrame, rules_text: str, categories: list[str]) -> dict:
    """Verdict, warnings, and how many MAP category x direction slices are Holm-significant (p < 0.05)."""
    decision = decide(evaluate(load_rules(rules_text), table, categories))
    maps = table[table["metric"].isin(["map_i2t", "map_t2i"]) & (table["slice"] != "overall")]
    return {
        "verdict": decision.verdict,
        "warnings": len(decision.warnings),
        "holm_slices": int((maps["p_holm"] < 0.05).sum()),
        "slices": len(maps),
    }


def bias_flags(model: list[EvaluationReport], reference: list[EvaluationReport], min_effect: float) -> int:
    gain = transfer_gain(model, reference, RESAMPLES, 0, min_effect=min_effect)
    return int(gain["flag"].isin([HELPED, HURT]).sum())


def summary(rows: list[dict]) -> dict:
    frame = pd.DataFrame(rows)
    return {
        "pairs": len(frame),
        "no_go": float((frame["verdict"] == "NO-GO").mean()),
        "insufficient": float((frame["verdict"] == "INSUFFICIENT EVIDENCE").mean()),
        "any_warning": float((frame["warnings"] > 0).mean()),
        "holm_slices_mean": float(frame["holm_slices"].mean()),
        "any_holm_slice": float((frame["holm_slices"] > 0).mean()),
        "bias_flags_mean": float(frame["bias_flags"].mean()),
        "slices": int(frame["slices"].iloc[0]),
    }


def main() -> None:
    started = time.perf_counter()
    for seed in SEEDS:
        if not run_path("chtn_no_source", seed).exists():
            train_run("chtn_no_source", CHECKPOINTS["chtn_no_source"], seed, run_path("chtn_no_source", seed))
    runs = [evaluated(run_path("chtn_no_source", seed)) for seed in SEEDS]
    fashion = [evaluated(run_path("chtn_fashion_source", seed)) for seed in range(3)]
    categories = list(runs[0][0].label_names)
    default, before = DEFAULT_RULE.read_text(encoding="utf-8"), rules_before()
    checkpoint_rule = default.replace("min_runs = 3", "min_runs = 1")
    maps = np.array([np.nanmean(np.concatenate([r.i2t.ap, r.t2i.ap])) for r, _ in runs])
    rows: dict[str, list[dict]] = {"before, 1 vs 1": [], "after, 1 vs 1": [], "after, 1 vs 1, min_runs = 1": []}
    for i, j in tqdm(list(itertools.permutations(range(len(runs)), 2)), desc="A/A, 1 vs 1"):
        (a, ids_a), (b, ids_b) = runs[i], runs[j]
        table = figures([a], [b], ids_a, ids_b, RESAMPLES)
        flags_before, flags_after = bias_flags([b], [a], 0.0), bias_flags([b], [a], stats.MIN_EFFECT)
        rows["before, 1 vs 1"].append(
            {**judged(queries_overall(table, a, b), before, categories), "bias_flags": flags_before}
        )
        rows["after, 1 vs 1"].append({**judged(table, default, categories), "bias_flags": flags_after})
        checkpoints = judged(table, checkpoint_rule, categories)
        rows["after, 1 vs 1, min_runs = 1"].append({**checkpoints, "bias_flags": flags_after})
    rng = np.random.default_rng(0)
    rows["after, 3 vs 3"] = []
    for _ in tqdm(range(SPLITS), desc="A/A, 3 vs 3"):
        order = rng.permutation(len(runs))
        side_a, side_b = [runs[k] for k in order[:3]], [runs[k] for k in order[3:6]]
        table = figures([r for r, _ in side_a], [r for r, _ in side_b], side_a[0][1], side_b[0][1], RESAMPLES)
        flags = bias_flags([r for r, _ in side_b], [r for r, _ in side_a], stats.MIN_EFFECT)
        rows["after, 3 vs 3"].append({**judged(table, default, categories), "bias_flags": flags})
    # power: the fashion source's three runs against the no-source recipe's three shipped runs
    no_source = [r for r, _ in runs[:3]]
    lose = figures([r for r, _ in fashion], no_source, fashion[0][1], runs[0][1], RESAMPLES)
    power = {
        "losing the source (B = no source), default rule": judged(lose, default, categories)["verdict"],
        "MAP change": float(lose.query("metric == 'map' and slice == 'overall'")["delta"].iloc[0]),
        "bias flags, 3 vs 3": bias_flags([r for r, _ in fashion], no_source, stats.MIN_EFFECT),
        "bias flags, 1 vs 1 (seed 0)": bias_flags([fashion[0][0]], [no_source[0]], stats.MIN_EFFECT),
    }
    result = {
        "seeds": list(SEEDS),
        "resamples": RESAMPLES,
        "map_by_seed": [round(float(m), 4) for m in maps],
        "map_seed_sd": float(maps.std(ddof=1)),
        "aa": {name: summary(found) for name, found in rows.items()},
        "power": power,
        "seconds": round(time.perf_counter() - started, 1),
    }
    before_rate = result["aa"]["before, 1 vs 1"]
    for name, found in result["aa"].items():
        print(
            f"{name:30s} pairs {found['pairs']:4d}  NO-GO {found['no_go']:6.1%}"
            f"  insufficient {found['insufficient']:6.1%}"
            f"  any warning {found['any_warning']:6.1%}  Holm slices {found['holm_slices_mean']:5.2f}/{found['slices']}"
            f" (any {found['any_holm_slice']:6.1%})  bias flags {found['bias_flags_mean']:5.2f}/40"
            f"  flags ratio to before {found['bias_flags_mean'] / max(before_rate['bias_flags_mean'], 1e-9):.2f}"
        )
    print("power:", power)
    print(f"MAP by seed {result['map_by_seed']}, SD {result['map_seed_sd']:.4f}; {result['seconds']} s")
    out = ROOT / "bench" / "out" / "seed_noise.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
