"""A checkpoint's margin over the built-in baseline (`chtn baseline`) on the same test split, for its model card.

The same figure, interval and random stream as `chtn compare --baseline <that baseline> --candidate <checkpoint>`
(one checkpoint per side: whole categories resampled), so the card and a comparison's report never disagree.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from analysis import stats
from chtn.checkpoint import Checkpoint
from chtn.config import PRESETS
from chtn.data_commands import command_line
from chtn.directions import ARROWS, DIRECTIONS
from chtn.errors import CHTNError
from chtn.evaluate import EvaluationReport

PREFERRED = ("softmax", "fc9")  # the linear softmax classifiers first (the stronger floor), then CCA


def find_baseline(checkpoint: Checkpoint, candidates: Sequence[Checkpoint]) -> Checkpoint | None:
    """The built-in baseline fitted on this checkpoint's dataset (same fingerprint and labels): the softmax one when
    there is one, else CCA; None for a baseline itself or when there is none."""
    if checkpoint.config.model.architecture != "chtn":
        return None
    dataset = (checkpoint.meta.get("dataset") or {}).get("fingerprint")
    fitting = [
        candidate
        for candidate in candidates
        if candidate.config.model.architecture == "linear"
        and candidate.label_names == checkpoint.label_names
        and (candidate.meta.get("dataset") or {}).get("fingerprint") == dataset
    ]
    fitting.sort(key=lambda candidate: PREFERRED.index(candidate.config.model.common))
    return fitting[0] if fitting else None


def baseline_command(checkpoint: Checkpoint, data: str, skip_invalid: bool) -> str:
    """`chtn baseline` fitting the built-in baselines of `data` with this checkpoint's preset encoders, written beside
    the checkpoint (where `find_baseline` looks): the command the model card prints. Absolute paths: it works from
    any folder."""
    preset = checkpoint.meta.get("preset")
    return command_line(
        "baseline",
        *("--data", Path(data).resolve(), "--out", checkpoint.path.resolve().parent),
        *(("--preset", preset) if preset in PRESETS else ()),
        *(("--skip-invalid",) if skip_invalid else ()),
    )


def compare_command(baseline: Checkpoint, checkpoint: Checkpoint, data: str, skip_invalid: bool) -> str:
    """`chtn compare` of this checkpoint against its baseline on `data`'s test split, its report written to a new
    folder under the current one: the command the model card prints for a large split."""
    return command_line(
        "compare",
        *("--baseline", baseline.path.resolve(), "--candidate", checkpoint.path.resolve()),
        *("--data", Path(data).resolve(), "--out", f"compare_{checkpoint.path.stem}_vs_{baseline.path.stem}"),
        *(("--skip-invalid",) if skip_invalid else ()),
    )


def baseline_margin(
    report: EvaluationReport, baseline: EvaluationReport, resamples: int = stats.RESAMPLES, seed: int = 0
) -> dict[str, stats.PairedComparison]:
    """MAP of `report` minus the baseline's, per direction, with its interval over whole categories."""
    if not np.array_equal(report.i2t.query_labels, baseline.i2t.query_labels):
        raise CHTNError("The baseline's evaluation is of other test pairs: evaluate both on the same split.")
    categories = np.asarray(report.label_names)[report.i2t.query_labels]  # the clusters as chtn.compare names them
    margins: dict[str, stats.PairedComparison] = {}
    for direction in DIRECTIONS:
        ours, theirs = getattr(report, direction).ap, getattr(baseline, direction).ap
        stream = zlib.crc32(f"map_{direction}|overall".encode())  # `chtn compare`'s stream for this figure
        margins[direction] = stats.cluster_comparison(theirs, ours, categories, resamples, seed, stream=stream)
    return margins


def margin_text(margins: dict[str, stats.PairedComparison], baseline: Checkpoint) -> str:
    """One line for the model card: each direction's MAP margin with its interval, and what it was measured against."""
    kind = "linear softmax" if baseline.config.model.common == "softmax" else "CCA"
    parts = [f"{ARROWS[d]} {m.delta:+.3f} [{m.ci_low:+.3f}, {m.ci_high:+.3f}]" for d, m in margins.items()]
    n = next(iter(margins.values())).n
    return (
        f"MAP {', '.join(parts)} over the built-in {kind} baseline ({baseline.path.name}) on the same {n} test "
        "pairs; 95% intervals resample whole categories; one checkpoint each, so it compares these two checkpoints, "
        "not their recipes"
    )
