"""A flawed copy of a small real subset of the sample: one or more rows for every flaw `validate` must name.

`python -m tests.flaws OUT` writes OUT/pairs.csv (real rows and images, then the flaws below) and OUT/wiki (a
Wikipedia-layout copy with a text file that is not UTF-8), and prints which ids carry which flaw. The tests
(tests/test_validation.py) import `build_flawed` and `build_flawed_wikipedia`.

Only the flaws are made up, cheaply: a truncated copy of a real JPEG, PNG headers claiming 8000x8000 and
20000x20000 pixels (a few bytes each), renamed copies, byte-identical copies, edited texts and labels.
"""

from __future__ import annotations

import csv
import shutil
import struct
import sys
import zlib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FASHION = ROOT / "sample_data" / "fashion"
LABELS = ("Watches", "Belts", "Tshirts", "Heels")
PER_SPLIT = {"train": 5, "val": 1, "test": 6}  # rows per label and split: 48 rows in all


def real_rows() -> list[dict[str, str]]:
    """The first rows of each label and split of the sample's pairs.csv, train rows first."""
    with (FASHION / "pairs.csv").open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    return [
        dict(r)
        for split, n in PER_SPLIT.items()
        for label in LABELS
        for r in [r for r in rows if r["label"] == label and r["split"] == split][:n]
    ]


def png_header(width: int, height: int) -> bytes:
    """A PNG signature and IHDR chunk claiming `width` x `height` (RGB), with a one-byte IDAT: a bomb's header."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0")) + chunk(b"IEND", b"")


def _by(rows: list[dict[str, str]], label: str, split: str, k: int) -> dict[str, str]:
    return [r for r in rows if r["label"] == label and r["split"] == split][k]


def build_flawed(out: Path) -> dict[str, list[str]]:
    """Write OUT/pairs.csv and OUT/images/; return problem -> ids of the rows that carry it (row problems and
    warnings alike: "same text in train and test" and "same image twice" are the warnings planted)."""
    rows = real_rows()
    images = out / "images"
    images.mkdir(parents=True, exist_ok=True)
    for row in rows:
        shutil.copyfile(FASHION / row["image"], out / row["image"])
    flaws: dict[str, list[str]] = {}

    def flaw(problem: str, row: dict[str, str]) -> dict[str, str]:
        flaws.setdefault(problem, []).append(row["id"])
        return row

    for k in range(3):  # three gone files, so that "--show 2" has more to list
        flaw("missing image file", _by(rows, "Watches", "test", k))["image"] = f"images/gone-{k}.jpg"
    row = flaw("missing image file", _by(rows, "Belts", "test", 0))  # the file was saved as <ID>.JPG
    (images / row["image"].split("/")[1]).rename(images / f"{row['id']}.JPG")
    row = flaw("missing image file", _by(rows, "Belts", "test", 1))  # the manifest has a trailing space
    row["image"] += " "
    row = flaw("unreadable image file", _by(rows, "Tshirts", "test", 0))
    payload = (FASHION / row["image"]).read_bytes()
    (out / row["image"]).write_bytes(payload[: len(payload) // 2])  # truncated: only a full decode notices
    for k, side in ((1, 8000), (2, 20000)):
        row = flaw("image too large", _by(rows, "Tshirts", "test", k))
        row["image"] = f"images/huge-{side}.png"
        (out / row["image"]).write_bytes(png_header(side, side))
    row = flaw("image path is a folder", _by(rows, "Heels", "test", 0))
    row["image"] = "images/a-folder.jpg"
    (out / row["image"]).mkdir()
    train_watch, train_belt = _by(rows, "Watches", "train", 0), _by(rows, "Belts", "train", 0)
    row = _by(rows, "Heels", "train", 1)  # a byte copy of a train watch, filed under Heels: both rows conflict
    flaw("same image, different labels", train_watch), flaw("same image, different labels", row)
    shutil.copyfile(out / train_watch["image"], out / row["image"])
    row = flaw("pair split across train/test", _by(rows, "Belts", "test", 2))  # a test belt = a train belt's bytes
    shutil.copyfile(out / train_belt["image"], out / row["image"])
    flaw("same text in train and test", _by(rows, "Belts", "test", 3))["text"] = train_belt["text"]
    train_shirt = _by(rows, "Tshirts", "train", 0)
    row = flaw("pair split across train/val", _by(rows, "Tshirts", "val", 0))  # validation = a train image
    shutil.copyfile(out / train_shirt["image"], out / row["image"])
    first, second = _by(rows, "Tshirts", "train", 1), _by(rows, "Tshirts", "train", 2)  # one picture, two train rows
    flaw("same image twice", first), flaw("same image twice", second)
    shutil.copyfile(out / first["image"], out / second["image"])
    flaw("text holds NUL bytes", _by(rows, "Heels", "test", 2))["text"] += "\x00"
    flaw("unknown label", _by(rows, "Heels", "test", 3))["label"] = "Capes"  # no sample checkpoint knows it
    with (out / "pairs.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=["id", "image", "text", "label", "split"])
        writer.writeheader()
        writer.writerows(rows)
    return flaws


def build_flawed_sample(out: Path) -> dict[str, list[str]]:
    """Write OUT/pairs.csv and OUT/images/: the whole sample (700 pairs) with five flawed test rows whose flaw only
    the other splits reveal but one (the case where a check of the test split alone and one of the whole dataset
    disagreed); return problem -> ids of the rows that carry it."""
    with (FASHION / "pairs.csv").open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    (out / "images").mkdir(parents=True, exist_ok=True)
    for row in rows:
        shutil.copyfile(FASHION / row["image"], out / row["image"])
    flaws: dict[str, list[str]] = {}
    train = [r for r in rows if r["split"] == "train"]
    test = [r for r in rows if r["split"] == "test" and rows.index(r) > rows.index(train[0])]
    for k in range(2):  # a test image whose bytes are a training image of its label
        row = test[k]
        twin = next(r for r in train if r["label"] == row["label"])
        shutil.copyfile(out / twin["image"], out / row["image"])
        flaws.setdefault("pair split across train/test", []).append(row["id"])
    row = test[2]  # a test image whose bytes are a training image of another label: both rows conflict
    twin = next(r for r in train if r["label"] != row["label"])
    shutil.copyfile(out / twin["image"], out / row["image"])
    flaws["same image, different labels"] = [twin["id"], row["id"]]
    test[3]["id"] = train[0]["id"]  # the id of an earlier training row
    flaws["duplicate id"] = [train[0]["id"]]
    test[4]["image"] = "images/gone.jpg"
    flaws["missing image file"] = [test[4]["id"]]
    with (out / "pairs.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=["id", "image", "text", "label", "split"])
        writer.writeheader()
        writer.writerows(rows)
    return flaws


def build_flawed_wikipedia(out: Path) -> str:
    """A Wikipedia-layout copy of four real pairs whose test text file is Latin-1, not UTF-8; returns its id."""
    rows = [_by(real_rows(), label, split, 0) for label in ("Watches", "Belts") for split in ("train", "test")]
    (out / "texts").mkdir(parents=True, exist_ok=True)
    (out / "categories.list").write_text("Watches\nBelts\n", encoding="utf-8")
    for split in ("train", "test"):
        lines = [f"t{r['id']}\t{r['id']}\t{LABELS.index(r['label']) + 1}" for r in rows if r["split"] == split]
        (out / f"{split}set_txt_img_cat.list").write_text("\n".join(lines) + "\n", encoding="utf-8")
    for r in rows:
        (out / "images" / r["label"]).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(FASHION / r["image"], out / "images" / r["label"] / f"{r['id']}.jpg")
        (out / "texts" / f"t{r['id']}.txt").write_text(r["text"], encoding="utf-8")
    latin = rows[3]  # Belts, test
    (out / "texts" / f"t{latin['id']}.txt").write_bytes(f"{latin['text']} – café".encode("cp1252"))
    return f"t{latin['id']}"


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m tests.flaws OUT_FOLDER")
    target = Path(sys.argv[1])
    if target.exists() and any(target.iterdir()):
        sys.exit(f"{target} is not empty; give a new or empty folder.")
    for problem, ids in build_flawed(target).items():
        print(f"{problem}: {', '.join(ids)}")
    print(f"text not UTF-8: {build_flawed_wikipedia(target / 'wiki')} (in {target / 'wiki'})")
