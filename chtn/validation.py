"""Dataset validation: every problem a row has, what to do about it, and the choice to stop or skip the rows.

Two severities, so that real catalogues open without hiding what is wrong with them:

- **Row problems** make a row invalid; every command stops on them, or drops those rows with `--skip-invalid`
  (the dashboard: "Skip invalid rows"). A row is invalid when it cannot be read as the model reads it (missing,
  folder, unreadable, truncated or oversized image; empty, over-long, undecodable or NUL-holding text) or cannot
  be used correctly (empty or unknown label, unknown split, repeated id, the same image bytes under two labels,
  a test or validation image whose bytes are also a train image: only the test/val rows are flagged, so skipping
  keeps the training data and removes the leak).
- **Warnings** are facts about the dataset that do not block: identical texts with different labels, identical
  texts in train and test, the same image bytes listed twice under one label. Product titles repeat in real
  catalogues (the fashion data: 9,583 images, 7,109 titles), so these are counted and shown, never dropped.

Commands judge only the rows they use (`load_checked_pairs`): a split for evaluate/embed/search/project/review/
compare and the dashboard, every row for train, validate and bias. A split's rows get the verdict the whole dataset's
validation gives them: the other rows' images are hashed (never decoded) for the cross-row checks, so a test row
whose image is a training image is invalid for `chtn evaluate` as for `chtn train`. One test set per dataset:
with `--skip-invalid` every command and page drops the same rows and scores the same ones.
"""

from __future__ import annotations

import os
import unicodedata
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from stat import S_ISDIR, S_ISREG
from typing import TypeVar

import pandas as pd

from chtn.data import IMAGE_SUFFIXES, PairDataset, SourceDataset, load_pairs, wikipedia_categories
from chtn.errors import CHTNError, DataValidationError
from chtn.hashing import file_digest
from chtn.image_checks import decode_problem, decode_problems
from chtn.images import MAX_PIXELS

CLI_HINT = "pass --skip-invalid to drop them"
_Data = TypeVar("_Data", PairDataset, SourceDataset)  # ensure_valid gives back the kind of dataset it was given

FIXES = {
    "missing image file": "restore the file, or correct the row's image path (relative to the manifest's folder)",
    "image path is a folder": "point the row at an image file inside that folder",
    "image path is not a regular file": "point the row at a JPEG or PNG file (not a named pipe or a device)",
    "unreadable image file": "re-export or download the image again as a complete JPEG or PNG",
    "image too large": f"resize it to at most {MAX_PIXELS:,} pixels (e.g. 7000x7000), the limit for every image",
    "empty text": "give the pair its text (Wikipedia layout: texts/<id>.txt)",
    "text too long": "shorten the text; a caption or article, not a whole document",
    "text not UTF-8": "save the text (Wikipedia layout: texts/<id>.txt) as UTF-8; undecodable bytes read as U+FFFD",
    "text holds NUL bytes": "remove the NUL (\\x00) characters; the file was probably binary or UTF-16",
    "empty label": "give the row its category",
    "unknown label": "use one of the known labels (the checkpoint's, when one is given)",
    "unknown split": "use train, val or test",
    "duplicate id": "give every row its own id",
    "same image, different labels": "keep one label for the image: correct or drop the wrong row",
    "pair split across train/test": "drop the test row or move it to train: its image is also a training image",
    "pair split across train/val": "drop the validation row or move it to train: its image is also a training image, "
    "so validation scores (early stopping, presets, text features) would be inflated",
    "same image twice": "keep one row per image: a duplicate counts twice in training and in every score",
    "same text, different labels": "check the labels; identical texts cannot be told apart by a text query",
    "same text in train and test": "expected for repeated titles; rewrite or move them if they should be unique",
    "image in two category folders": "keep the copy in the right category's folder and delete the other; if the list "
    "file's category is the wrong one, correct it there (each finding says which files and which line)",
}


@dataclass(frozen=True)
class Finding:
    """One offender: dataset row (0-based), its id, what is wrong with it, and how to fix it."""

    row: int
    item_id: str
    detail: str
    fix: str


@dataclass
class ValidationReport:
    """Row problems (make rows invalid) and warnings (do not block), by kind, over the `n_rows` rows checked."""

    n_rows: int
    problems: dict[str, list[Finding]] = field(default_factory=dict)
    warnings: dict[str, list[Finding]] = field(default_factory=dict)

    def add(self, problem: str, row: int, item_id: str, detail: str, fix: str | None = None) -> None:
        self.problems.setdefault(problem, []).append(Finding(row, item_id, detail, fix or FIXES[problem]))

    def warn(self, warning: str, row: int, item_id: str, detail: str, fix: str | None = None) -> None:
        self.warnings.setdefault(warning, []).append(Finding(row, item_id, detail, fix or FIXES[warning]))

    @property
    def ok(self) -> bool:
        """No invalid rows (warnings allowed)."""
        return not self.problems

    @property
    def bad_rows(self) -> set[int]:
        return {f.row for findings in self.problems.values() for f in findings}

    def summary(self, show: int | None = 5) -> str:
        """Counts per kind with the first `show` offenders (None: all) and the fix, then each shown offender's own fix
        where it has one (the file to rename, the list line to correct); warnings last."""
        head = (
            f"{self.n_rows} rows, no problems found."
            if self.ok
            else f"{self.n_rows} rows; {len(self.bad_rows)} invalid:"
        )
        lines = [head, *self._lines(self.problems, show)]
        if self.warnings:
            lines += ["warnings (do not block):", *self._lines(self.warnings, show)]
        return "\n".join(lines)

    @staticmethod
    def _lines(kinds: dict[str, list[Finding]], show: int | None) -> list[str]:
        lines = []
        for kind, findings in kinds.items():
            shown = findings if show is None else findings[:show]
            more = f" (+{len(findings) - len(shown)} more)" if len(findings) > len(shown) else ""
            lines.append(f"  - {kind}: {len(findings)} — {'; '.join(f.detail for f in shown)}{more}")
            own = list(dict.fromkeys(f.fix for f in shown if f.fix != FIXES[kind]))  # a finding's own fix, in order
            if len(own) == 1 and all(f.fix == own[0] for f in shown):  # one fix for all (e.g. the known labels)
                lines.append(f"    fix: {own[0]}")
                continue
            lines.append(f"    fix: {FIXES[kind]}")
            lines += [f"      - id {f.item_id}: {f.fix}" for f in shown if f.fix != FIXES[kind]]
        return lines

    def skipped_note(self, what: str) -> str:
        """What `--skip-invalid` / "Skip invalid rows" dropped, and why."""
        return f"Skipped {len(self.bad_rows)} invalid of {self.n_rows} rows of the {what}.\n{self.summary()}"

    def table(self) -> pd.DataFrame:
        """Every offender, one line each: problem, row (1-based), id, detail, fix, severity (invalid/warning)."""
        records = [
            (kind, f.row + 1, f.item_id, f.detail, f.fix, severity)
            for severity, kinds in (("invalid", self.problems), ("warning", self.warnings))
            for kind, findings in kinds.items()
            for f in findings
        ]
        return pd.DataFrame(records, columns=["problem", "row", "id", "detail", "fix", "severity"])


class _NearNames:
    """Finds the file a missing path meant, in the same folder: a name that differs from it only by case, Unicode
    normalisation, spaces around the name or its stem, or the image extension. Never a name that differs in any
    other character: '1829.jpg' is another item's image, not a spelling of '1729.jpg', and a row pointed at it would
    pair its text with that item's picture. Each folder is listed and indexed once."""

    def __init__(self) -> None:
        self.folders: dict[Path, tuple[dict[str, str], dict[str, str]]] = {}

    def find(self, path: Path) -> str | None:
        """The folder's file with the same normalised name, else with the same normalised stem and an image
        extension; None when there is none."""
        if path.parent not in self.folders:
            try:
                names = sorted(os.listdir(path.parent))
            except OSError:  # no such folder, not a folder, or a name the file system refuses (too long)
                names = []
            by_name: dict[str, str] = {}
            by_stem: dict[str, str] = {}
            for name in names:  # sorted: the first of equally near files, the same on every run
                by_name.setdefault(_normalised(name), name)
                if Path(_normalised(name)).suffix in IMAGE_SUFFIXES:
                    by_stem.setdefault(_normalised(Path(name).stem), name)
            self.folders[path.parent] = by_name, by_stem
        by_name, by_stem = self.folders[path.parent]
        return by_name.get(_normalised(path.name)) or by_stem.get(_normalised(Path(path.name).stem))


def _normalised(name: str) -> str:
    """A file name as the near-match rule compares it: NFC, stripped of surrounding spaces, case-folded."""
    return unicodedata.normalize("NFC", name).strip().casefold()


def _base(source: str) -> Path:
    """The folder a dataset's paths are written relative to (a manifest's folder, or the layout's folder)."""
    path = Path(source).resolve()
    return path.parent if path.is_file() else path


def _shown(path: Path, base: Path) -> str:
    """A path as the user wrote it: relative to the dataset's folder when it lies inside it."""
    try:
        return path.resolve().relative_to(base).as_posix()
    except ValueError:
        return str(path)


def _image_problem(
    path: Path, near: _NearNames, base: Path, decoded: dict[Path, tuple[str, str] | None]
) -> tuple[str, str, str | None] | None:
    """What keeps the image from opening exactly as training opens it (`open_rgb`: full decode to RGB), as
    (problem, detail, fix or None for the problem's usual fix); None when it opens. `decoded` holds the full
    decode's verdict of each regular file (`image_checks.decode_problems`)."""
    try:
        mode = path.stat().st_mode
        is_dir, is_file, exists = S_ISDIR(mode), S_ISREG(mode), True
    except (OSError, ValueError):  # missing, or a name no file system holds (too long, a lone surrogate): missing
        is_dir = is_file = exists = False
    if is_dir:
        return "image path is a folder", _shown(path, base), None
    if exists and not is_file:  # a named pipe, a device or a socket: never opened (a pipe would block)
        return "image path is not a regular file", _shown(path, base), None
    if not is_file:
        match = near.find(path)
        if match is None:
            return "missing image file", _shown(path, base), None
        fix = f"the folder holds {match!r}: rename it to {path.name!r}, or point the row at {match!r}"
        return "missing image file", f"{_shown(path.parent, base)}/{path.name!r} (near match: {match!r})", fix
    found = decoded[path] if path in decoded else decode_problem(path)  # a file that changed since: judged now
    return None if found is None else (*found, None)


def _check_text(report: ValidationReport, row: int, item_id: str, text: str, max_chars: int) -> None:
    if not text.strip():
        report.add("empty text", row, item_id, f"id {item_id}")
    elif len(text) > max_chars:
        report.add("text too long", row, item_id, f"id {item_id} ({len(text):,} chars > {max_chars:,})")
    elif "\ufffd" in text:
        report.add("text not UTF-8", row, item_id, f"id {item_id} ({text.count(chr(0xFFFD))} undecodable bytes)")
    elif "\x00" in text:
        report.add("text holds NUL bytes", row, item_id, f"id {item_id} ({text.count(chr(0))} NUL)")


def _check_content(report: ValidationReport, data: PairDataset, groups: dict[str, list[int]], judged: set[int]) -> None:
    """Rows sharing image bytes: conflicting labels (invalid); else test or validation rows whose image is also a
    training image (invalid, flagged on the test/val side); else the same picture listed twice (a warning). Only
    the `judged` rows' findings are reported."""
    for rows in groups.values():
        if len(rows) < 2:
            continue
        if len({data.labels[r] for r in rows}) > 1:
            for r in (r for r in rows if r in judged):
                others = ", ".join(f"id {data.ids[o]} ({data.labels[o]})" for o in rows if o != r)
                detail = f"id {data.ids[r]} ({data.labels[r]}): same image as {others}"
                report.add("same image, different labels", r, data.ids[r], detail)
            continue
        train = [r for r in rows if data.splits[r] == "train"]
        leaked = [r for r in rows if data.splits[r] in ("test", "val")] if train else []
        for r in (r for r in leaked if r in judged):
            split = data.splits[r]
            detail = f"{data.image_paths[r].name} is in both ({split} id {data.ids[r]}, train id {data.ids[train[0]]})"
            report.add(f"pair split across train/{split}", r, data.ids[r], detail)
        if not leaked:  # one label, one side of the split: the same picture listed more than once
            for r in (r for r in rows if r in judged):
                others = ", ".join(data.ids[o] for o in rows if o != r)
                detail = f"id {data.ids[r]} ({data.labels[r]}): also id {others}"
                report.warn("same image twice", r, data.ids[r], detail)


def _check_texts(report: ValidationReport, data: PairDataset, judged: set[int]) -> None:
    """Identical texts (whitespace aside) under different labels, or in train and test: warnings (on the `judged`
    rows)."""
    groups: dict[str, list[int]] = defaultdict(list)
    for r in range(len(data)):
        if data.texts[r].strip():
            groups[" ".join(data.texts[r].split())].append(r)
    for text, members in groups.items():
        if len(members) < 2:
            continue
        quoted = repr(text if len(text) <= 60 else text[:57] + "...")
        labels = sorted({data.labels[r] for r in members})
        if len(labels) > 1:
            for r in (r for r in members if r in judged):
                report.warn("same text, different labels", r, data.ids[r], f"id {data.ids[r]}: {quoted} is {labels}")
        train = [r for r in members if data.splits[r] == "train"]
        if train:
            for r in (r for r in members if data.splits[r] == "test" and r in judged):
                detail = f"test id {data.ids[r]}: {quoted} (train id {data.ids[train[0]]})"
                report.warn("same text in train and test", r, data.ids[r], detail)


def validate_pairs(
    data: PairDataset,
    known_labels: Sequence[str] | None = None,
    check_images: bool = True,
    max_text_chars: int = 100_000,
    rows: Sequence[int] | None = None,
) -> ValidationReport:
    """Every row problem and warning of `rows` (default: all), as validating the whole dataset would find them.

    The other rows take part in the cross-row checks (ids, image bytes, texts), so a split's rows get the verdict
    that `chtn validate` and `chtn train` give them: every command then drops the same rows (`--skip-invalid`) and
    scores the same test split. Those rows' images are only hashed, never decoded or judged, and their own
    findings are not reported.
    """
    mine = range(len(data)) if rows is None else rows
    report = ValidationReport(len(mine))
    known = set(known_labels if known_labels is not None else data.label_names)
    near, base = _NearNames(), _base(data.source)
    judged = set(mine)
    seen_ids: dict[str, int] = {}
    content: dict[str, list[int]] = defaultdict(list)  # image bytes (or the path, if unreadable) -> rows
    images: dict[Path, tuple[str, str, str | None] | None] = {}  # one verdict per file, named by however many rows
    decoded = decode_problems(data.image_paths[r] for r in judged) if check_images else {}
    for row in range(len(data)):
        item_id, path, label, split = data.ids[row], data.image_paths[row], data.labels[row], data.splits[row]
        if item_id in seen_ids and row in judged:
            report.add("duplicate id", row, item_id, f"{item_id!r} (rows {seen_ids[item_id] + 1} and {row + 1})")
        seen_ids.setdefault(item_id, row)
        if row not in judged:  # another split's row: its bytes only, for the leaks and label conflicts
            if (key := file_digest(path) if check_images else str(path)) != "missing":
                content[key].append(row)
            continue
        readable = False
        if check_images:
            if path not in images:
                images[path] = _image_problem(path, near, base, decoded)
            if (found := images[path]) is not None:
                report.add(found[0], row, item_id, found[1], found[2])
            readable = found is None
        content[file_digest(path) if readable else str(path)].append(row)
        _check_text(report, row, item_id, data.texts[row], max_text_chars)
        if not label:
            report.add("empty label", row, item_id, f"id {item_id}")
        elif label not in known:
            fix = f"use one of the known labels: {sorted(known)}" if len(known) <= 30 else None
            report.add("unknown label", row, item_id, f"id {item_id}: {label!r}", fix)
        if split not in ("train", "val", "test"):
            report.add("unknown split", row, item_id, f"id {item_id}: {split!r} (use train, val or test)")
    _check_content(report, data, content, judged)
    _check_texts(report, data, judged)
    if check_images:
        _check_category_folders(report, data, judged)
    return report


def _check_category_folders(report: ValidationReport, data: PairDataset, judged: set[int]) -> None:
    """Wikipedia layout: a row's image with a byte-identical copy of the same name in another category's folder,
    named by no row. The folders disagree about the item's category: a warning whose fix names this item's files."""
    folder = Path(data.source)
    images = folder / "images"
    if not (folder / "categories.list").is_file() or not images.is_dir():
        return
    holders: dict[str, list[str]] = defaultdict(list)  # file name -> the category folders that hold one
    for category in sorted(os.scandir(images), key=lambda e: e.name):
        if category.is_dir():
            for entry in os.scandir(category.path):
                holders[entry.name].append(category.name)
    named = set(data.image_paths)
    categories = wikipedia_categories(folder)  # the list files' 1-based indices
    for r in sorted(judged):
        path, listed = data.image_paths[r], data.labels[r]
        digest = file_digest(path)
        for other in holders.get(path.name, []):
            copy = images / other / path.name
            if other == path.parent.name or copy in named or digest == "missing" or file_digest(copy) != digest:
                continue
            where = f"{data.splits[r]}set_txt_img_cat.list"
            index = f"{categories.index(other) + 1} ({other})" if other in categories else f"the index of {other}"
            detail = f"id {data.ids[r]}: {path.name} is in images/{listed}/ (listed: {listed}) and in images/{other}/"
            fix = (
                f"if {data.ids[r]} is {listed}, delete images/{other}/{path.name}; if it is {other}, set its "
                f"category to {index} in {where} and delete images/{listed}/{path.name}"
            )
            report.warn("image in two category folders", r, data.ids[r], detail, fix)


def validate_source(data: SourceDataset, check_images: bool = True) -> ValidationReport:
    """Missing, unreadable or oversized source images and empty labels."""
    report = ValidationReport(len(data))
    near, base = _NearNames(), _base(data.source)
    decoded = decode_problems(data.image_paths) if check_images else {}
    for row, (path, label) in enumerate(zip(data.image_paths, data.labels)):
        if check_images and (found := _image_problem(path, near, base, decoded)) is not None:
            report.add(found[0], row, path.name, found[1], found[2])
        if not label:
            report.add("empty label", row, path.name, str(path))
    return report


def ensure_valid(
    data: _Data,
    report: ValidationReport,
    skip_invalid: bool,
    what: str = "dataset",
    hint: str = CLI_HINT,
    rows: Sequence[int] | None = None,
) -> _Data:
    """`rows` (default: all) of `data`: stop with the report if some are invalid, or drop those with `skip_invalid`."""
    rows = range(len(data)) if rows is None else rows
    if report.ok:
        return data if len(rows) == len(data) else data.select(rows)
    if not skip_invalid:
        raise DataValidationError(
            f"The {what} ({data.source}) failed validation.\n{report.summary()}\n\nFix the rows above, or {hint}.",
            report,
        )
    bad = report.bad_rows
    keep = [r for r in rows if r not in bad]
    if not keep:
        raise DataValidationError(f"No valid rows left in the {what} ({data.source}).\n{report.summary()}", report)
    return data.select(keep)


def load_checked_pairs(
    path: str | Path,
    split: str | None,
    label_names: Sequence[str] | None = None,
    skip_invalid: bool = False,
    hint: str = CLI_HINT,
    admit: Callable[[PairDataset], None] | None = None,
) -> tuple[PairDataset, ValidationReport]:
    """The rows a command uses (`split`, or None for all), validated: every entry point opens data this way.

    Returns those rows (invalid ones dropped with `skip_invalid`, else `DataValidationError`) and the report,
    whose `bad_rows` are what was skipped. `admit` may refuse the data before any of its files is looked at
    (the dashboard's confinement to allowed folders).
    """
    data = load_pairs(path, label_names)
    if admit is not None:
        admit(data)
    rows = [r for r, s in enumerate(data.splits) if split is None or s == split]
    if not rows:
        raise CHTNError(f"{path} has no rows with split {split!r} (it has {sorted(set(data.splits))}).")
    report = validate_pairs(data, label_names, rows=rows)
    what = "dataset" if split is None else f"{split} split"
    return ensure_valid(data, report, skip_invalid, what, hint, rows), report
