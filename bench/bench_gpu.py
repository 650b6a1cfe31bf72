"""One prepared GPU check (run it on a lent H100 with the `device` tool; it also runs on CPU for a dry run).

    python -m bench.bench_gpu --out $OUT        # CUDA: throughput, CUDA+AMP training, CPU reload

1. Image-feature throughput with the project's pipeline (DataLoader decode workers + bf16 trunk), end to
   end on the sample's JPEGs (repeated to --images), next to the trunk alone on in-memory tensors: the
   compute ceiling measured in the same run. A large gap means the input pipeline is the bottleneck.
2. `python -m chtn train` on the sample with CUDA + bf16 autocast (small and paper presets, and small with
   the trunk's last two units fine-tuned), timed.
3. The GPU-trained checkpoint loaded on CPU and evaluated there, to prove portability; its recorded
   provenance (device, precision, versions, wall time) is copied into the report.
4. The three sample checkpoints trained on the device with the README's commands, into
   OUT/sample_checkpoints/<name>.safetensors, to ship next to (or instead of) the CPU-built ones.
5. The evaluation engine on the device (`chtn.evaluate.evaluate_embeddings(..., device)`, both directions, full
   ranking) on bench/bench_scale.py's synthetic splits of --eval-sizes items, timed, its per-query AP checked
   against the CPU engine on the first 500 queries of each direction.
Results are printed and written to OUT/gpu.json. Only sample_data/ is used: ../shared does not travel.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

from chtn.encoders import ImageTrunk
from chtn.features import _ImageFiles

ROOT = Path(__file__).resolve().parents[1]

PAIRS = ROOT / "sample_data" / "fashion" / "pairs.csv"
SOURCE = ROOT / "sample_data" / "fashion" / "source.csv"


def throughput(device: torch.device, n_images: int, batch: int, workers: int) -> dict:
    """img/s of decode+resize+trunk (the pipeline) and of the trunk alone, bf16 on CUDA."""
    files = sorted((ROOT / "sample_data" / "fashion" / "images").glob("*.jpg"))
    paths = (files * (n_images // len(files) + 1))[:n_images]
    trunk = ImageTrunk().to(device).to(memory_format=torch.channels_last)
    amp = dict(device_type=device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")
    loader = torch.utils.data.DataLoader(
        _ImageFiles(paths),
        batch_size=batch,
        num_workers=workers,
        pin_memory=device.type == "cuda",
        persistent_workers=workers > 0,
        prefetch_factor=4 if workers else None,
    )

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    with torch.inference_mode(), torch.autocast(**amp):
        trunk(torch.randn(batch, 3, 224, 224, device=device).to(memory_format=torch.channels_last))  # warm-up
        sync()
        started = time.perf_counter()
        for pixels in loader:
            trunk(pixels.to(device, non_blocking=True).to(memory_format=torch.channels_last))
        sync()
        pipeline = n_images / (time.perf_counter() - started)
        pixels = torch.randn(batch, 3, 224, 224, device=device).to(memory_format=torch.channels_last)
        rounds = max(n_images // batch, 1)
        started = time.perf_counter()
        for _ in range(rounds):
            trunk(pixels)
        sync()
        alone = rounds * batch / (time.perf_counter() - started)
    return {
        "images": n_images,
        "batch": batch,
        "workers": workers,
        "pipeline_img_s": round(pipeline, 1),
        "trunk_only_img_s": round(alone, 1),
        "pipeline_vs_trunk": round(pipeline / alone, 3),
    }


def train_and_reload(device: str, preset: str, out: Path, settings: tuple[str, ...] = ()) -> dict:
    """Train on the sample on `device` (timed, features cached first), then load and evaluate on CPU."""
    run = out / "_".join(["train", preset, *(s.split("=")[0].split(".")[-1] for s in settings)])
    command = [
        sys.executable,
        "-m",
        "chtn",
        "train",
        "--data",
        str(PAIRS),
        "--source",
        str(SOURCE),
        "--preset",
        preset,
        "--out",
        str(run),
        "--device",
        device,
    ]
    for setting in settings:
        command += ["--set", setting]
    subprocess.run(command + ["--set", "train.epochs=1"], cwd=ROOT, check=True, capture_output=True)  # warm cache
    started = time.perf_counter()
    subprocess.run(command, cwd=ROOT, check=True, capture_output=True)
    seconds = time.perf_counter() - started
    evaluation = subprocess.run(
        [
            sys.executable,
            "-m",
            "chtn",
            "evaluate",
            "--checkpoint",
            str(run / "best.safetensors"),
            "--data",
            str(PAIRS),
            "--device",
            "cpu",
        ],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
        env={**os.environ, "CUDA_VISIBLE_DEVICES": ""},
    )
    from chtn.checkpoint import load_checkpoint

    return {
        "preset": preset,
        "settings": list(settings),
        "device": device,
        "train_seconds_incl_startup": round(seconds, 1),
        "cpu_reload_evaluation": evaluation.stdout.strip(),
        "provenance": load_checkpoint(run / "best.safetensors").meta.get("provenance"),
    }


def sample_checkpoints(device: str, out: Path) -> list[str]:
    """The sample's three checkpoints trained on `device` with the README's commands (scripts/build_sample.py)."""
    from scripts.build_sample import CHECKPOINTS

    folder = out / "sample_checkpoints"
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, source in CHECKPOINTS.items():
        run = out / "sample_runs" / name
        command = ["--data", "sample_data/fashion/pairs.csv", "--source", source, "--preset", "small"]
        command += ["--out", str(run), "--device", device]
        subprocess.run([sys.executable, "-m", "chtn", "train", *command], cwd=ROOT, check=True, capture_output=True)
        (run / "best.safetensors").replace(folder / f"{name}.safetensors")
        written.append(str(folder / f"{name}.safetensors"))
    return written


def evaluation(device: torch.device, sizes: list[int]) -> list[dict]:
    """Seconds to evaluate n synthetic items on the device, and the largest AP gap to the CPU engine."""
    from bench.bench_scale import synthetic
    from chtn.evaluate import evaluate_direction, evaluate_embeddings

    rows = []
    for n in sizes:
        image, text, labels = synthetic(n)
        names = [str(c) for c in range(int(labels.max()) + 1)]
        start = time.perf_counter()
        report = evaluate_embeddings(image, text, labels, names, device=device)
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
        gap = 0.0
        for found, (query, gallery) in ((report.i2t, (image, text)), (report.t2i, (text, image))):
            cpu = evaluate_direction(query[:500], gallery, labels[:500], labels, found.direction)
            gap = max(gap, float(abs(cpu.ap - found.ap[:500]).max()))
        rows.append({"items": n, "seconds": seconds, "map": report.mean_map, "max_ap_gap_to_cpu": gap})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=str(ROOT / "bench" / "out"))
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--images", type=int, default=20000)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--workers", type=int, default=min(16, os.cpu_count() or 1))
    parser.add_argument("--eval-sizes", type=int, nargs="*", default=[100_000, 300_000])
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("CHTN_CACHE_DIR", str(out / "cache"))
    device = torch.device(args.device)
    report = {
        "device": torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "throughput": throughput(device, args.images, args.batch, args.workers),
    }
    print(json.dumps(report["throughput"]), flush=True)
    runs = [("small", ()), ("paper", ()), ("small", ("encoder.finetune_stages=2",))]
    report["training"] = [train_and_reload(args.device, preset, out, settings) for preset, settings in runs]
    for item in report["training"]:
        print(json.dumps(item), flush=True)
    report["sample_checkpoints"] = sample_checkpoints(args.device, out)
    print(json.dumps(report["sample_checkpoints"]), flush=True)
    report["evaluation"] = evaluation(device, args.eval_sizes)
    (out / "gpu.json").write_text(json.dumps(report, indent=2))
    print(f"wrote {out / 'gpu.json'}")


if __name__ == "__main__":
    main()
