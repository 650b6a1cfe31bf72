"""Opening a split of distinct images in a new process: validation with and without the image-check disk cache.

    python -m bench.bench_validation                  # 2,000 distinct test images as shipped (224x224), then
                                                      # re-encoded at 1024x1024 as catalogue photos are; writes
                                                      # its section of docs/scale_benchmark.md, prints the table
    python -m bench.bench_validation --images 500 --sides 224 --no-markdown   # quick run, table only

Every command and every dashboard server opens a split through `chtn.validation.load_checked_pairs`, which decodes
each test image in full (a truncated file passes PIL's `verify()` and then fails training). The split here holds
`--images` distinct files (the sample's test images, 224x224 as shipped, re-encoded at each of `--sides` pixels;
each copy made distinct by a few bytes after the JPEG's end, which decoders ignore) next to the sample's training
rows. Each figure is a fresh Python process:

- **cold**: an empty cache folder, as on a new machine: every image is decoded (what every process paid before the
  disk cache), then its verdict stored;
- **disk cache**: another fresh process on the same cache folder: the verdicts are read, no image decoded;
- **no cache**: the baseline in the same run, a fresh process with a cache folder it cannot create, so every image
  is decoded and nothing kept (what each process did before).
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import io
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

from PIL import Image

from bench.bench_app import write_sections
from chtn.data import load_pairs

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "sample_data" / "fashion" / "pairs.csv"
DOC = ROOT / "docs" / "scale_benchmark.md"
HEADING = "## Opening a split of distinct images: image checks kept on disk"
SHIPPED = 224  # the sample's images: 224x224 JPEGs
PROBE = """
import sys, time
from chtn.validation import load_checked_pairs
started = time.perf_counter()
data, report = load_checked_pairs(sys.argv[1], "test")
print(time.perf_counter() - started, len(data), report.ok)
"""


def write_distinct_split(images: int, out: Path, side: int = 224) -> Path:
    """`out/pairs.csv`: the sample's training rows and `images` test rows, each with its own image file (re-encoded
    at `side` x `side` pixels unless that is the sample's own size)."""
    sample = load_pairs(SAMPLE)
    rows = list(zip(sample.ids, sample.image_paths, sample.texts, sample.labels, sample.splits))
    test = [row for row in rows if row[4] == "test"]
    folder = out / "images"
    folder.mkdir(parents=True, exist_ok=True)
    path = out / "pairs.csv"
    with path.open("w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file)
        writer.writerow(["id", "image", "text", "label", "split"])
        for id_, image, text, label, split in rows:
            if split == "train":
                writer.writerow([id_, Path(image).resolve(), text, label, split])
        for i in range(images):
            id_, image, text, label, _ = test[i % len(test)]
            copy = folder / f"{i}.jpg"
            copy.write_bytes(_encoded(Path(image), side) + f"copy {i}".encode())  # after the JPEG's end: other bytes
            writer.writerow([f"{id_}-{i}", copy, f"{text} {i}", label, "test"])
    return path


def _encoded(image: Path, side: int) -> bytes:
    if side == SHIPPED:
        return image.read_bytes()
    buffer = io.BytesIO()
    with Image.open(image) as picture:
        picture.convert("RGB").resize((side, side)).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def timed_open(pairs: Path, cache: Path) -> float:
    """Seconds `load_checked_pairs` takes in a fresh process with CHTN_CACHE_DIR=`cache` (its own figure, not the
    interpreter's start-up)."""
    env = {**os.environ, "CHTN_CACHE_DIR": str(cache)}
    out = subprocess.run([sys.executable, "-c", PROBE, str(pairs)], env=env, cwd=ROOT, capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(out.stderr)
    seconds, rows, ok = out.stdout.split()
    assert ok == "True" and int(rows) > 0, out.stdout  # every copy must validate clean
    return float(seconds)


def run(images: int, side: int) -> dict:
    work = Path(tempfile.mkdtemp(prefix="bench-validation-"))
    pairs = write_distinct_split(images, work / "split", side)
    blocked = work / "a-file"
    blocked.write_text("")  # a cache folder under a file cannot be created: no cache
    cache = work / "cache"
    return {
        "images": images,
        "side": side,
        "baseline": timed_open(pairs, blocked / "cache"),
        "cold": timed_open(pairs, cache),
        "disk": timed_open(pairs, cache),
        "baseline_again": timed_open(pairs, blocked / "cache"),
    }


def table(results: list[dict]) -> str:
    rows = [
        "| distinct test images | pixels | no cache (baseline: first / last), s | cold: empty cache, s "
        "| disk cache, s | baseline / disk |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for res in results:
        baseline = (res["baseline"] + res["baseline_again"]) / 2
        rows.append(
            f"| {res['images']:,} | {res['side']}x{res['side']} | {res['baseline']:.2f} / {res['baseline_again']:.2f} "
            f"| {res['cold']:.2f} | {res['disk']:.2f} | {baseline / res['disk']:.1f}× |"
        )
    return "\n".join(rows)


def markdown(results: list[dict], when: str) -> str:
    return f"""{HEADING}

Generated by `python -m bench.bench_validation` on {when}; reproduce from the repository root with that command.
Machine: {os.cpu_count()} cores reported, {platform.machine()}, Python {platform.python_version()}. Each figure is
`chtn.validation.load_checked_pairs` of the test split in a fresh process (the sample's 300 training images are
hashed for the leak checks, the test images decoded in full unless their verdict is on disk). The baseline, a
process that can keep nothing, ran first and last.

{table(results)}
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=2000, help="distinct test images, default 2,000")
    parser.add_argument("--sides", default=f"{SHIPPED},1024", help="image sides to try, default the sample's, 1024")
    parser.add_argument("--no-markdown", action="store_true", help="only print the table")
    args = parser.parse_args()
    results = [run(args.images, int(side)) for side in args.sides.split(",")]
    print(table(results))
    if not args.no_markdown:
        write_sections(DOC, markdown(results, dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")))
        print(f"wrote {DOC}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
