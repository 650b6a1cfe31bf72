"""One training epoch of the sample with torch's CPU threads set three ways, on an idle and on a loaded machine.

Settings: the default (chtn/cpus.py: the cores this process may use), `--threads 1` and `--threads 2`. Loaded: one
busy Python process per core runs beside the training, as another job on a shared machine would. Each cell is a fresh
`python -m chtn train` process running the README's command on the sample (catalogue source, 4 epochs); its epoch
time is the median of epochs 2-4 read from the run's metrics.jsonl (the first epoch carries one-off set-up), next to
the first epoch's. With `--repeats N` each cell runs N fresh processes: the median over all their epochs 2+, and
the range of the runs' own medians. `--preset finetune2` trains the benchmark preset (three networks and the
trunk's last stages on the sample), whose epochs are seconds rather than a tenth of one. Writes the markdown table
to stdout.

    python -m bench.bench_threads
    python -m bench.bench_threads --preset finetune2 --repeats 3
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "sample_data" / "fashion"
SETTINGS = {"default": [], "--threads 1": ["--threads", "1"], "--threads 2": ["--threads", "2"]}


@contextlib.contextmanager
def busy(processes: int) -> Iterator[None]:
    """`processes` busy-looping Python processes for the duration (0: an idle machine)."""
    burners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(processes)]
    try:
        yield
    finally:
        for burner in burners:  # by PID: only the processes started here
            burner.kill()
            burner.wait()


def epoch_seconds(flags: list[str], epochs: int, preset: str) -> tuple[list[float], str]:
    """The per-epoch seconds of one fresh `chtn train` run on the sample, and its thread line."""
    env = {k: v for k, v in os.environ.items() if k not in ("CHTN_THREADS", "OMP_NUM_THREADS")}
    with tempfile.TemporaryDirectory(prefix="chtn-threads-") as out:
        command = [sys.executable, "-m", "chtn", "train", "--data", str(SAMPLE / "pairs.csv")]
        command += ["--source", str(SAMPLE / "source.csv"), "--out", out, "--set", f"train.epochs={epochs}", *flags]
        command += ["--preset", preset]
        done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT, check=True)
        records = [json.loads(line) for line in (Path(out) / "metrics.jsonl").read_text().splitlines()]
    said = next(line for line in done.stdout.splitlines() if line.startswith("torch uses"))
    return [r["seconds"] for r in records], said


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--preset", default="small", help="chtn train's preset (default small, the README's)")
    parser.add_argument("--repeats", type=int, default=1, help="fresh training processes per cell")
    args = parser.parse_args()
    cores = len(os.sched_getaffinity(0))
    rows = []
    for load in ("idle", "loaded"):
        with busy(cores if load == "loaded" else 0):
            for name, flags in SETTINGS.items():
                runs = [epoch_seconds(flags, args.epochs, args.preset) for _ in range(args.repeats)]
                later = [s for seconds, _ in runs for s in seconds[1:]]
                medians = [statistics.median(seconds[1:]) for seconds, _ in runs]
                first = statistics.median(seconds[0] for seconds, _ in runs)
                rows.append((load, name, statistics.median(later), first, min(medians), max(medians)))
                print(f"{load:6} {name:12} epoch {rows[-1][2]:.2f} s (first {first:.2f} s): {runs[0][1]}", flush=True)
    idle_default = next(r[2] for r in rows if r[:2] == ("idle", "default"))
    print(
        f"\nMeasured {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC on {platform.machine()}, {cores} cores in the "
        f"affinity, by `python -m bench.bench_threads --preset {args.preset} --repeats {args.repeats} --epochs "
        f"{args.epochs}` (loaded: {cores} busy processes beside the training).\n"
    )
    print("| machine | threads | epoch, median of 2+ (s) | runs' medians (s) | vs idle default | first epoch (s) |")
    print("|---|---|---:|---:|---:|---:|")
    for load, name, median, first, low, high in rows:
        print(f"| {load} | {name} | {median:.2f} | {low:.2f}–{high:.2f} | {median / idle_default:.2f}x | {first:.2f} |")


if __name__ == "__main__":
    main()
