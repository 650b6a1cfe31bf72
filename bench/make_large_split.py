"""Write a dataset with a large test split from the sample, to try every page at a real team's scale:

    python -m bench.make_large_split --items 20000 --out /tmp/chtn-20k [--synthetic-embeddings chtn_fashion_source]
    streamlit run app.py    # sidebar: Dataset -> "Manifest or Wikipedia folder (path)…" -> /tmp/chtn-20k/pairs.csv

The training and validation rows are the sample's own (so the sample's checkpoints apply: same labels, same
training texts). The test split holds `--items` rows drawn in turn from the sample's 400 test pairs: the images
repeat (each real image about items / 400 times, under a new id), and each text gets a variant word appended, so
no two test texts are identical. Evaluation cost depends on the number of items, not on how many images are
distinct; the images' features come from the sample's feature pack, so embedding encodes no image, but the text
encoder runs once per text (about 4 minutes for 20,000 on 2 cores).

`--synthetic-embeddings CHECKPOINT` skips that: it puts clustered synthetic embeddings (one centre per category,
pairs near each other) into the embedding cache for that checkpoint, so the pages open straight to the
evaluation, the step whose cost grows with the square of the split. The figures are then those of the synthetic
embeddings, not of the model.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np

from analysis.workspace import open_checkpoint, open_dataset
from chtn.data import load_pairs
from chtn.gallery import store_embeddings

SAMPLE = Path(__file__).resolve().parents[1] / "sample_data" / "fashion" / "pairs.csv"
VARIANTS = ("classic", "new", "slim", "regular", "premium", "basic", "everyday", "urban", "smart", "soft")


def write_large_split(items: int, out: Path) -> Path:
    """Write `out/pairs.csv` (absolute image paths: the file can live anywhere) and return its path."""
    sample = load_pairs(SAMPLE)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "pairs.csv"
    rows = list(zip(sample.ids, sample.image_paths, sample.texts, sample.labels, sample.splits))
    kept = [row for row in rows if row[4] != "test"]
    test = [row for row in rows if row[4] == "test"]
    with path.open("w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file)
        writer.writerow(["id", "image", "text", "label", "split"])
        for id_, image, text, label, split in kept:
            writer.writerow([id_, Path(image).resolve(), text, label, split])
        for i in range(items):
            id_, image, text, label, _ = test[i % len(test)]
            variant = f"{VARIANTS[(i // len(test)) % len(VARIANTS)]} {i // (len(test) * len(VARIANTS)) + 1}"
            writer.writerow([f"{id_}-{i}", Path(image).resolve(), f"{text} {variant}", label, "test"])
    return path


def store_synthetic_embeddings(pairs: Path, checkpoint_ref: str, seed: int = 0) -> Path:
    """Synthetic embeddings of the test split of `pairs`, in the embedding cache for the checkpoint (a sample name
    or a path), shaped like the checkpoint's common space: class probabilities (softmax of noisy logits that
    favour the item's category; an item's image and text share part of the noise) or, for an fc9 space,
    Gaussian clusters around one centre per category."""
    checkpoint = open_checkpoint(checkpoint_ref)
    data, _ = open_dataset(str(pairs), checkpoint)
    test = data.split("test")
    rng = np.random.default_rng(seed)
    model = checkpoint.config.model
    classes = len(checkpoint.label_names)
    if model.common == "softmax":
        shared = 2.5 * np.eye(classes)[test.label_index] + rng.standard_normal((len(test), classes))

        def side() -> np.ndarray:
            logits = shared + rng.standard_normal(shared.shape)
            weights = np.exp(logits - logits.max(axis=1, keepdims=True))
            return (weights / weights.sum(axis=1, keepdims=True)).astype(np.float32)
    else:
        shared = rng.standard_normal((classes, model.shared_dim))[test.label_index]

        def side() -> np.ndarray:
            return (shared + rng.standard_normal(shared.shape)).astype(np.float32)

    return store_embeddings(checkpoint, data, "test", side(), side())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=20_000, help="test items to write (default 20,000)")
    parser.add_argument("--out", type=Path, required=True, help="folder for pairs.csv")
    parser.add_argument("--synthetic-embeddings", metavar="CHECKPOINT", help="cache synthetic embeddings for it")
    args = parser.parse_args()
    path = write_large_split(args.items, args.out)
    print(path)
    if args.synthetic_embeddings:
        print(store_synthetic_embeddings(path, args.synthetic_embeddings))


if __name__ == "__main__":
    main()
