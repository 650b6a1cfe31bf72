"""Dataset validation: every problem a row has, by kind, and what to do about it (stop, or skip the rows)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from chtn.data import PairDataset, SourceDataset
from chtn.errors import DataValidationError


@dataclass
class ValidationReport:
    """Problems found in a dataset: problem name -> list of (row, description)."""

    n_rows: int
    problems: dict[str, list[tuple[int, str]]] = field(default_factory=dict)

    def add(self, problem: str, row: int, detail: str) -> None:
        self.problems.setdefault(problem, []).append((row, detail))

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def bad_rows(self) -> set[int]:
        return {row for entries in self.problems.values() for row, _ in entries if row >= 0}

    def summary(self, first: int = 5) -> str:
        if self.ok:
            return f"{self.n_rows} rows, no problems found."
        lines = [f"{self.n_rows} rows; {len(self.bad_rows)} invalid:"]
        for problem, entries in self.problems.items():
            shown = "; ".join(detail for _, detail in entries[:first])
            more = f" (+{len(entries) - first} more)" if len(entries) > first else ""
            lines.append(f"  - {problem}: {len(entries)} — {shown}{more}")
        return "\n".join(lines)


def _check_image(report: ValidationReport, row: int, path: Path) -> None:
    from PIL import Image, UnidentifiedImageError

    try:
        exists = path.is_file()
    except OSError:  # a name too long for the file system
        exists = False
    if not exists:
        report.add("missing image file", row, str(path))
        return
    try:
        with Image.open(path) as image:
            image.verify()
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        report.add("unreadable image file", row, f"{path} ({type(exc).__name__})")


def validate_pairs(
    data: PairDataset,
    known_labels: Sequence[str] | None = None,
    check_images: bool = True,
    max_text_chars: int = 100_000,
) -> ValidationReport:
    """Missing/unreadable images, empty or huge texts, unknown labels and splits, duplicate ids, leakage."""
    report = ValidationReport(len(data))
    known = set(known_labels if known_labels is not None else data.label_names)
    seen_ids: dict[str, int] = {}
    image_splits: dict[Path, set[str]] = {}
    for row, (item_id, path, text, label, split) in enumerate(
        zip(data.ids, data.image_paths, data.texts, data.labels, data.splits)
    ):
        if check_images:
            _check_image(report, row, path)
        if not text.strip():
            report.add("empty text", row, f"id {item_id}")
        elif len(text) > max_text_chars:
            report.add("text too long", row, f"id {item_id} ({len(text):,} chars > {max_text_chars:,})")
        if not label:
            report.add("empty label", row, f"id {item_id}")
        elif label not in known:
            report.add("unknown label", row, f"id {item_id}: {label!r}")
        if split not in ("train", "val", "test"):
            report.add("unknown split", row, f"id {item_id}: {split!r} (use train, val or test)")
        if item_id in seen_ids:
            report.add("duplicate id", row, f"{item_id!r} (rows {seen_ids[item_id] + 1} and {row + 1})")
        seen_ids.setdefault(item_id, row)
        image_splits.setdefault(path, set()).add(split)
    for row, path in enumerate(data.image_paths):
        if {"train", "test"} <= image_splits[path]:
            report.add("pair split across train/test", row, f"{path.name} is in both")
    return report


def validate_source(data: SourceDataset, check_images: bool = True) -> ValidationReport:
    """Missing or unreadable source images and empty labels."""
    report = ValidationReport(len(data))
    for row, (path, label) in enumerate(zip(data.image_paths, data.labels)):
        if check_images:
            _check_image(report, row, path)
        if not label:
            report.add("empty label", row, str(path))
    return report


def ensure_valid(
    data: PairDataset | SourceDataset, report: ValidationReport, skip_invalid: bool, what: str = "dataset"
) -> PairDataset | SourceDataset:
    """Stop with the report unless it is clean; with `skip_invalid`, drop bad rows and say how many."""
    if report.ok:
        return data
    if not skip_invalid:
        raise DataValidationError(
            f"The {what} ({data.source}) failed validation.\n{report.summary()}\n"
            "Fix the rows above, or pass --skip-invalid to drop them.",
            report,
        )
    keep = [i for i in range(len(data)) if i not in report.bad_rows]
    print(f"--skip-invalid: dropped {len(data) - len(keep)} of {len(data)} rows from the {what}.\n{report.summary()}")
    if not keep:
        raise DataValidationError(f"No valid rows left in the {what} ({data.source}).", report)
    return data.select(keep)
