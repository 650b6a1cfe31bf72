"""CHTN benchmark on the fixed fashion protocol (numbers comparable across turns).

    python -m bench.bench_core                     # everything; writes bench/out/core.json
    python -m bench.bench_core --only throughput   # feature-extraction throughput only

Protocol: ../shared/data/fashion, the 20 most frequent article types, per-class 70/30 split with
seed 0 (5,661 / 2,425), test split = query set = gallery, MAP over the full ranking. Regimes:
k = 5 and k = 20 training pairs per category (seeds 0, 1, 2) and the full training split.
Sources: catalogue (every training-split image not used as a pair, text withheld, plus all images
outside the 20 types), disjoint (only images outside the 20 types), CIFAR-10, none.

Choices (presets, epochs, features) are made with `--validation`: 20% of each category's training pairs
(seed 0) are carved out as the validation split, every cell draws its pairs (and the catalogue source)
from the remaining training pairs and is scored on the validation split; the test split is not read.
The chosen setting's test numbers then come from one run without `--validation`.

    python -m bench.bench_core --only map --validation --preset finetune --regimes 20,full \
        --sources none,catalogue --seeds 1

Each cell picks its text features as `chtn train` does (`encoder.text_choice`, chtn/text_choice.py): with
"validation" the candidates are scored on a part carved from the cell's own training pairs, never on the
split the cell is scored on.

Each cell also fits the built-in linear softmax baseline (chtn/baseline.py) on exactly its pairs and text
features, with the frozen trunk's pooled image features: its C is chosen by 5-fold cross-validation over the
cell's pairs (stratified by category; at k=5 a single carved split would hold one pair per category), then it is
refitted on all of them (as CHTN trains on all of them). The cell reports
CHTN - baseline per direction with `chtn compare`'s paired interval (whole categories resampled, 10,000 times).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from analysis.compare.margin import baseline_margin
from chtn.baseline import common_space, cross_validated_c, softmax_maps
from chtn.config import load_config
from chtn.data import load_source
from chtn.encoders import cached_image_trunk
from chtn.evaluate import EvaluationReport, evaluate_embeddings
from chtn.features import FeatureCache, image_features, transformer_text_features, trunk_prefix_maps
from chtn.finetune import TrunkTail
from chtn.splits import stratified_split
from chtn.text_choice import choose_text_encoder
from chtn.tower import TextEncoder, create_tower
from chtn.train import FeatureSet, TrainInputs, train

ROOT = Path(__file__).resolve().parents[1]

DATA = ROOT.parent / "shared" / "data"
SOURCES = ("none", "catalogue", "disjoint", "cifar10")


def load_protocol(cache: FeatureCache) -> dict:
    """Features and labels of the whole fashion set and of CIFAR-10, plus the fixed split."""
    meta = pd.read_csv(DATA / "fashion" / "metadata.csv")
    image, _ = image_features([DATA / "fashion" / p for p in meta.image], cache)
    text = transformer_text_features(meta.productDisplayName.tolist(), cache)
    counts = meta.articleType.value_counts()
    types = sorted(counts.index[:20], key=lambda t: (-counts[t], t))
    in_target = meta.articleType.isin(types).to_numpy()
    target_rows = np.flatnonzero(in_target)
    test = stratified_split(meta.articleType[in_target].tolist(), 0.3, seed=0)
    cifar = load_source(DATA / "cifar10_source")
    cifar_image, _ = image_features(cifar.image_paths, cache)
    return {
        "meta": meta,
        "image": image,
        "text": text,
        "types": types,
        "train_rows": target_rows[~test],
        "test_rows": target_rows[test],
        "outside_rows": np.flatnonzero(~in_target),
        "cifar_image": cifar_image,
        "cifar_labels": cifar.label_index,
        "cifar_names": cifar.label_names,
    }


def carve_validation(p: dict, fraction: float = 0.2, seed: int = 0) -> dict:
    """The protocol for making choices: a per-category share of the training pairs becomes the split that
    cells are scored on (under the key "test_rows", which the cells read), and the test rows are dropped."""
    labels = p["meta"].articleType.to_numpy()[p["train_rows"]]
    val = stratified_split(labels.tolist(), fraction, seed)
    return {**p, "train_rows": p["train_rows"][~val], "test_rows": p["train_rows"][val], "scored_on": "validation"}


def with_prefix_maps(p: dict, cache: FeatureCache, stages: int) -> dict:
    """The protocol with every image array replaced by the trunk's prefix maps (fine-tuning cells)."""
    trunk = cached_image_trunk()
    cifar = load_source(DATA / "cifar10_source")
    return {
        **p,
        "stages": stages,
        "feature_dim": p["image"].shape[1],
        "image": trunk_prefix_maps([DATA / "fashion" / i for i in p["meta"].image], cache, trunk, stages),
        "cifar_image": trunk_prefix_maps(cifar.image_paths, cache, trunk, stages),
    }


def pick_pairs(p: dict, k: int | None, seed: int) -> np.ndarray:
    """k training pairs per category (seeded), or the whole training split."""
    if k is None:
        return p["train_rows"]
    rng = np.random.default_rng(seed)
    labels = p["meta"].articleType.to_numpy()
    return np.concatenate([rng.permutation(p["train_rows"][labels[p["train_rows"]] == t])[:k] for t in p["types"]])


def source_for(p: dict, name: str, pair_rows: np.ndarray):
    """(features, integer labels, label names) of a source domain, or None."""
    if name == "none":
        return None
    if name == "cifar10":
        return p["cifar_image"], p["cifar_labels"], p["cifar_names"]
    rows = p["outside_rows"]
    if name == "catalogue":
        rows = np.concatenate([np.setdiff1d(p["train_rows"], pair_rows), rows])
    labels = p["meta"].articleType.to_numpy()[rows]
    names = sorted(set(labels))
    return p["image"][rows], np.searchsorted(names, labels), names


def feature_set(p: dict, rows: np.ndarray, text: np.ndarray | None = None) -> FeatureSet:
    """Features of fashion rows; `text` overrides the MiniLM features (e.g. with TF-IDF appended)."""
    labels = np.array([p["types"].index(t) for t in p["meta"].articleType.to_numpy()[rows]])
    return FeatureSet(p["image"][rows], (p["text"] if text is None else text)[rows], labels)


def cell_text_features(p: dict, config, pair_rows: np.ndarray) -> tuple[np.ndarray, tuple | None]:
    """Text features of every fashion row as the config asks, with TF-IDF fitted on the cell's pairs only."""
    texts = p["meta"].productDisplayName.tolist()
    featurizer = TextEncoder.fit(config.encoder, [texts[i] for i in pair_rows])
    parts = [p["text"]] if config.encoder.uses_minilm else []
    if featurizer.tfidf is None:
        return np.hstack(parts), None
    return np.hstack(parts + [featurizer.tfidf.encode(texts)]), featurizer.tfidf.state()


def run_cell(p: dict, k: int | None, seed: int, source: str, preset: str, overrides: dict, out: Path) -> dict:
    import dataclasses

    pair_rows = pick_pairs(p, k, seed)
    src = source_for(p, source, pair_rows)
    config = load_config(preset, overrides={**overrides, "train": {**overrides.get("train", {}), "seed": seed}})
    stages = config.encoder.finetune_stages
    pooled = p["image"][pair_rows]
    if stages:  # the text choice trains on the frozen trunk's pooled features (chtn/text_choice.py)
        pooled = TrunkTail(cached_image_trunk(), stages).pool_maps(pooled)
    texts = p["meta"].productDisplayName.tolist()
    encoder, choice = choose_text_encoder(
        config,
        [texts[i] for i in pair_rows],
        pooled,
        feature_set(p, pair_rows).labels,
        p["types"],
        lambda: p["text"][pair_rows],
        device="cpu",
        log=lambda _: None,
    )
    config = dataclasses.replace(config, encoder=encoder)
    text, tfidf = cell_text_features(p, config, pair_rows)
    image_dim = p.get("feature_dim", p["image"].shape[1])  # prefix-map protocols keep the pooled width
    model = dataclasses.replace(
        config.model,
        image_dim=image_dim,
        text_dim=text.shape[1],
        num_classes=20,
        num_source_classes=len(src[2]) if src else 0,
    )
    config = dataclasses.replace(config, model=model)
    inputs = TrainInputs(feature_set(p, pair_rows, text), None, p["types"])
    if stages:
        if p.get("stages") != stages:
            raise SystemExit(f"fine-tuning cells need the protocol's prefix maps for {stages} stage(s)")
        inputs.image_tail = TrunkTail(cached_image_trunk(), stages)
    if src:
        inputs.source_image, inputs.source_labels, inputs.source_label_names = src
    started = time.perf_counter()
    result = train(config, inputs, out, {"label_names": p["types"]}, tfidf, log=lambda _: None)
    seconds = time.perf_counter() - started
    from chtn.checkpoint import load_checkpoint

    tower = create_tower(load_checkpoint(result.best_path), "cpu")
    test = feature_set(p, p["test_rows"], text)
    if stages:  # the test images' features through the checkpoint's own fine-tuned trunk units
        test.image = TrunkTail(tower.trunk, stages).pool_maps(test.image)
    img, txt = tower.embed_image_features(test.image), tower.embed_text_features(test.text)
    report = evaluate_embeddings(img, txt, test.labels, p["types"])
    summary = report.summary()
    frozen = base_image(p, stages)
    pairs, scored = feature_set(p, pair_rows, text), feature_set(p, p["test_rows"], text)
    pairs.image, scored.image = pooled, frozen(p["test_rows"])  # `pooled`: the pairs' frozen features, from above
    baseline = softmax_baseline(pairs, scored, p["types"], seed)
    return {
        "k": k or "full",
        "seed": seed,
        "source": source,
        "train_seconds": round(seconds, 2),
        "text": choice["chosen"],
        **({"text_choice_val_maps": {c["name"]: c["val_map"] for c in choice.get("candidates", [])}}),
        **({"text_choice_seconds": choice["seconds"]} if "seconds" in choice else {}),
        **{key: round(summary[key], 4) for key in ("map_i2t", "map_t2i", "map_mean")},
        **baseline_figures(report, baseline),
    }


def base_image(p: dict, stages: int):
    """Rows -> the frozen trunk's pooled features (a fine-tuning protocol holds prefix maps: pooled through the
    frozen units)."""
    if not stages:
        return lambda rows: p["image"][rows]
    tail = TrunkTail(cached_image_trunk(), stages)
    return lambda rows: tail.pool_maps(p["image"][rows])


def softmax_baseline(
    pairs: FeatureSet, scored: FeatureSet, types: list[str], seed: int
) -> tuple[EvaluationReport, float]:
    """The linear softmax baseline of the cell's pairs, evaluated on the scored rows, and its C: cross-validated
    over the pairs, then refitted on all of them."""
    c = cross_validated_c(pairs, types, seed)[0]
    image, text = softmax_maps(pairs, len(types), c)
    rows = common_space(scored.image, image, True), common_space(scored.text, text, True)
    return evaluate_embeddings(*rows, scored.labels, types), c


def baseline_figures(report: EvaluationReport, baseline: tuple[EvaluationReport, float]) -> dict:
    """The baseline's MAP and CHTN's margin over it with its 95% interval, per direction."""
    theirs, c = baseline
    figures: dict = {"baseline_C": c}
    for direction, margin in baseline_margin(report, theirs).items():
        figures[f"baseline_map_{direction}"] = round(margin.mean_a, 4)
        figures[f"margin_{direction}"] = [round(v, 4) for v in (margin.delta, margin.ci_low, margin.ci_high)]
    return figures


def cca_baseline(p: dict, components: int = 32) -> float:
    from sklearn.cross_decomposition import CCA

    train_set, test = feature_set(p, p["train_rows"]), feature_set(p, p["test_rows"])
    cca = CCA(n_components=components, max_iter=1000).fit(train_set.image, train_set.text)
    img, txt = cca.transform(test.image, test.text)
    return evaluate_embeddings(img, txt, test.labels, p["types"]).mean_map


def random_baseline(p: dict) -> float:
    test = feature_set(p, p["test_rows"])
    rng = np.random.default_rng(0)
    return evaluate_embeddings(
        rng.normal(size=(len(test.labels), 32)), rng.normal(size=(len(test.labels), 32)), test.labels, p["types"]
    ).mean_map


THROUGHPUT_CHILD = """
import sys, tempfile, time
from pathlib import Path
import torch
from chtn.encoders import cached_image_trunk, image_transform
from chtn.features import FeatureCache, image_features
from chtn.images import open_rgb
paths, how = [Path(p) for p in sys.argv[2:]], sys.argv[1]
trunk = cached_image_trunk()
started = time.perf_counter()
if how == "plain":  # one image at a time, as a plain timm loop does
    transform = image_transform()
    with torch.inference_mode():
        for path in paths:
            trunk(transform(open_rgb(path))[None])
else:
    settings = {} if how == "defaults" else dict(batch_size=64, num_workers=2)
    with tempfile.TemporaryDirectory() as tmp:
        image_features(paths, FeatureCache(tmp), trunk, progress=lambda *_: None, **settings)
print(len(paths) / (time.perf_counter() - started))
"""


def throughput(n: int = 384) -> dict:
    """Cold image-feature extraction in img/s, each way in a fresh process (imports and trunk excluded): a plain
    one-image-at-a-time timm loop, the pipeline's defaults (chtn.features.loader_settings, the allocator tuned by
    chtn.cpus.tune_allocator) and its former settings (batch 64, 2 decoding workers)."""
    meta = pd.read_csv(DATA / "fashion" / "metadata.csv")
    paths = [str(DATA / "fashion" / p) for p in meta.image[-n:]]
    results: dict = {"n_images": n}
    for how in ("plain", "defaults", "former"):
        child = subprocess.run(
            [sys.executable, "-c", THROUGHPUT_CHILD, how, *paths], capture_output=True, text=True, check=True, cwd=ROOT
        )
        results[f"{how}_img_s"] = round(float(child.stdout.strip().splitlines()[-1]), 1)
    for how in ("defaults", "former"):
        results[f"{how}_vs_plain"] = round(results[f"{how}_img_s"] / results["plain_img_s"], 2)
    return results


def render_table(cells: list[dict]) -> str:
    """Markdown table of mean MAP (avg of I->T and T->I) ± std over seeds, one row per regime."""
    frame = pd.DataFrame(cells)
    lines = ["| regime | " + " | ".join(SOURCES) + " |", "|---|" + "---|" * len(SOURCES)]
    for k in frame.k.unique():
        row = []
        for source in SOURCES:
            values = frame[(frame.k == k) & (frame.source == source)].map_mean
            row.append(
                "—"
                if values.empty
                else f"{values.mean():.3f} ± {values.std(ddof=0):.3f}"
                if len(values) > 1
                else f"{values.mean():.3f}"
            )
        lines.append(f"| k={k} | " + " | ".join(row) + " |")
    return "\n".join(lines)


def render_margins(cells: list[dict]) -> str:
    """Markdown table of each cell's CHTN MAP, its baseline's, and the margin with its 95% interval."""
    lines = [
        "| regime | seed | source | CHTN MAP I->T / T->I | baseline | CHTN − baseline I->T [95% CI] | T->I [95% CI] |",
        "|---|---|---|---|---|---:|---:|",
    ]
    for cell in cells:
        margins = ["{:+.3f} [{:+.3f}, {:+.3f}]".format(*cell[f"margin_{direction}"]) for direction in ("i2t", "t2i")]
        lines.append(
            f"| k={cell['k']} | {cell['seed']} | {cell['source']} | {cell['map_i2t']:.3f} / {cell['map_t2i']:.3f} | "
            f"{cell['baseline_map_i2t']:.3f} / {cell['baseline_map_t2i']:.3f} | {margins[0]} | {margins[1]} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=("throughput", "map"), default=None)
    parser.add_argument("--preset", default="small")
    parser.add_argument("--set", default="{}", help='JSON config overrides, e.g. \'{"train": {"epochs": 20}}\'')
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--first-seed", type=int, default=0, help="skip the seeds below this one (to finish a table)")
    parser.add_argument("--regimes", default="5,20,full", help="comma-separated: pairs per category, or full")
    parser.add_argument("--sources", default=",".join(SOURCES), help=f"comma-separated subset of {SOURCES}")
    parser.add_argument(
        "--validation",
        action="store_true",
        help="score cells on a validation split carved from the training pairs (for choices); "
        "the test split is not read",
    )
    parser.add_argument("--cache-dir", default=None)
    parser.add_argument("--out", default=str(ROOT / "bench" / "out" / "core.json"))
    args = parser.parse_args()
    report: dict = {
        "preset": args.preset,
        "overrides": json.loads(args.set),
        "device": "cpu",
        "torch": torch.__version__,
    }
    if args.only != "map":
        report["throughput"] = throughput()
        print(json.dumps(report["throughput"]))
    if args.only != "throughput":
        cache = FeatureCache(args.cache_dir)
        base = load_protocol(cache)
        stages = load_config(args.preset, overrides=report["overrides"]).encoder.finetune_stages
        p = with_prefix_maps(base, cache, stages) if stages else base
        p = carve_validation(p) if args.validation else p
        report["scored_on"] = p.get("scored_on", "test")
        print(
            f"protocol: {len(p['train_rows'])} train / {len(p['test_rows'])} {report['scored_on']} rows, "
            f"{len(p['outside_rows'])} outside the 20 types, {len(p['cifar_labels'])} CIFAR-10"
        )
        cells = []
        work = ROOT / "bench" / "out" / "runs"
        regimes = [None if r == "full" else int(r) for r in args.regimes.split(",")]
        sources = args.sources.split(",")
        for k in regimes:
            for seed in range(args.first_seed, args.seeds) if k else (0,):
                for source in sources if k else ("none",):
                    cell = run_cell(p, k, seed, source, args.preset, report["overrides"], work / f"{k}_{seed}_{source}")
                    print(json.dumps(cell), flush=True)
                    cells.append(cell)
                    report["cells"] = cells
                    _write(report, args.out)  # after every cell: a stopped run keeps what it measured
        report["cells"] = cells
        print(render_table(cells))
        print(render_margins(cells))
        if not args.validation:  # the reference baselines are test numbers
            report["cca_full_32"] = round(cca_baseline(base), 4)
            report["random"] = round(random_baseline(base), 4)
            print(f"CCA(32) {report['cca_full_32']}, random {report['random']}")
    _write(report, args.out)
    print(f"wrote {args.out}")


def _write(report: dict, out: str) -> None:
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
