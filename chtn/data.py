"""Datasets and their formats: cross-modal pairs (manifest or Wikipedia layout) and single-modal source images.

Paths in a manifest are relative to the manifest's folder. Labels are kept as names; `label_names`
fixes their order (and so the index of each class in the model's outputs).
"""

from __future__ import annotations

import csv
import hashlib
import html
import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from chtn.errors import CHTNError
from chtn.files import require_regular
from chtn.hashing import file_digest

MANIFEST_SUFFIXES = (".csv", ".jsonl")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
PAIR_COLUMNS = ("id", "image", "text", "label", "split")


@dataclass
class PairDataset:
    """Image/text pairs with a category label and a split (train / val / test) per row."""

    ids: list[str]
    image_paths: list[Path]
    texts: list[str]
    labels: list[str]
    splits: list[str]
    label_names: list[str]
    source: str = ""  # where it was read from, for messages and the model card
    _fingerprint: str | None = field(default=None, init=False, repr=False, compare=False)  # see fingerprint()

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def label_index(self) -> np.ndarray:
        """Integer class of each row (position of its label in `label_names`)."""
        lookup = {name: i for i, name in enumerate(self.label_names)}
        return np.array([lookup[label] for label in self.labels], dtype=np.int64)

    def select(self, rows: Sequence[int] | np.ndarray) -> PairDataset:
        """The rows given (in that order); `label_names` are kept so class indices stay stable."""
        rows = [int(r) for r in rows]
        return replace(
            self,
            ids=[self.ids[r] for r in rows],
            image_paths=[self.image_paths[r] for r in rows],
            texts=[self.texts[r] for r in rows],
            labels=[self.labels[r] for r in rows],
            splits=[self.splits[r] for r in rows],
        )

    def split(self, name: str) -> PairDataset:
        return self.select([i for i, s in enumerate(self.splits) if s == name])

    def fingerprint(self) -> str:
        """Content hash of rows and image bytes: identifies the data a checkpoint or cache entry was made from.

        Computed once per object: it hashes every row and stats every image (0.1 s for 20,000 rows, 0.5 s for
        100,000), and a dashboard page asks for it up to 50 times in its first run (once per cache key). The rows are
        never changed after a dataset is made (`select`, `split` and `dataclasses.replace` make a new object, hashed
        afresh); its images count as they were when first hashed, as validation decoded them then, and a file
        replaced later is seen by the next dataset read."""
        if self._fingerprint is None:
            digest = hashlib.sha256()
            for row in zip(self.ids, self.texts, self.labels, self.splits):
                digest.update(json.dumps(row).encode())
            for path in self.image_paths:
                digest.update(file_digest(path).encode())
            self._fingerprint = digest.hexdigest()[:16]  # the same string whichever thread stores it first
        return self._fingerprint


@dataclass
class SourceDataset:
    """Labelled images without texts: the single-modal source domain."""

    image_paths: list[Path]
    labels: list[str]
    label_names: list[str]
    source: str = ""
    _fingerprint: str | None = field(default=None, init=False, repr=False, compare=False)  # see fingerprint()

    def __len__(self) -> int:
        return len(self.image_paths)

    @property
    def label_index(self) -> np.ndarray:
        lookup = {name: i for i, name in enumerate(self.label_names)}
        return np.array([lookup[label] for label in self.labels], dtype=np.int64)

    def select(self, rows: Sequence[int] | np.ndarray) -> SourceDataset:
        rows = [int(r) for r in rows]
        return replace(self, image_paths=[self.image_paths[r] for r in rows], labels=[self.labels[r] for r in rows])

    def fingerprint(self) -> str:
        """Content hash of the images' bytes and labels, computed once per object (as `PairDataset.fingerprint`)."""
        if self._fingerprint is None:
            digest = hashlib.sha256()
            for path, label in zip(self.image_paths, self.labels):
                digest.update(f"{file_digest(path)}|{label}".encode())
            self._fingerprint = digest.hexdigest()[:16]
        return self._fingerprint


def _read_rows(path: Path) -> list[dict[str, str]]:
    """Rows of a CSV (with header) or JSON-lines manifest as string dicts.

    "utf-8-sig" accepts the byte-order mark that spreadsheet programs write ("CSV UTF-8").
    """
    require_regular(path, "The manifest", "Give a .csv or .jsonl manifest file, or a Wikipedia-layout folder.")
    try:
        if path.suffix == ".csv":
            # csv refuses fields over 128 KiB by default; lift that while reading so that a huge text
            # reaches validate_pairs ("text too long", skippable) instead of failing the whole load.
            limit = csv.field_size_limit(2**31 - 1)
            try:
                with path.open(newline="", encoding="utf-8-sig") as handle:
                    reader = csv.DictReader(handle)
                    rows = []
                    for row in reader:
                        if None in row or None in row.values():
                            raise CHTNError(
                                f"{path}: line {reader.line_num} has {'more' if None in row else 'fewer'} "
                                f"fields than the header {reader.fieldnames}; quote texts that contain commas."
                            )
                        rows.append(dict(row))
                    return rows
            except csv.Error as exc:
                raise CHTNError(f"{path}: line {reader.line_num} is not valid CSV ({exc}).") from None
            finally:
                csv.field_size_limit(limit)
        rows = []
        for number, line in enumerate(path.read_text(encoding="utf-8-sig").splitlines(), start=1):
            if line.strip():
                try:
                    value = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise CHTNError(f"{path}: line {number} is not valid JSON ({exc.msg}).") from None
                except RecursionError:  # json's parser recurses once per nesting level
                    raise CHTNError(
                        f"{path}: line {number} is nested too deeply to read; a row is one flat JSON object."
                    ) from None
                if not isinstance(value, dict):
                    raise CHTNError(f'{path}: line {number} is not a JSON object ({{"column": value, ...}}).')
                rows.append({k: "" if v is None else str(v) for k, v in value.items()})
        return rows
    except UnicodeDecodeError:
        raise CHTNError(f"{path} is not UTF-8 text; save the manifest as UTF-8.") from None
    except OSError as exc:  # unreadable (permissions, a special file)
        raise CHTNError(f"{path} cannot be read ({exc.strerror or type(exc).__name__}).") from None


def _resolve(folder: Path, name: str) -> Path:
    """`folder / name` resolved; a name no file system can hold (too long, a NUL byte) stays as written, so that
    validation reports it as a missing file instead of the load failing."""
    try:
        return (folder / name).resolve()
    except (OSError, ValueError):
        return folder.absolute() / name


def _require_columns(rows: list[dict[str, str]], columns: Sequence[str], path: Path) -> None:
    if not rows:
        raise CHTNError(f"{path} has no rows.")
    for number, row in enumerate(rows, start=1):
        missing = [c for c in columns if c not in row]
        if missing:
            where = "" if number == 1 else f" in row {number}"
            raise CHTNError(f"{path} lacks column(s) {missing}{where}; a manifest needs {list(columns)}.")


def _ordered_labels(labels: Sequence[str], label_names: Sequence[str] | None) -> list[str]:
    return list(label_names) if label_names is not None else sorted(set(labels))


def load_pairs(path: str | Path, label_names: Sequence[str] | None = None) -> PairDataset:
    """Read pairs from a CSV/JSONL manifest or a Wikipedia-layout folder.

    `label_names` (e.g. from a checkpoint) fixes the class order; labels outside it are reported
    by `validate_pairs`, not dropped here.
    """
    path = Path(path)
    if not path.exists():
        raise CHTNError(f"Dataset not found: {path}. Give a manifest (.csv/.jsonl) or a Wikipedia-layout folder.")
    if path.is_dir():
        return load_wikipedia(path, label_names)
    if path.suffix not in MANIFEST_SUFFIXES:
        raise CHTNError(f"{path}: unsupported dataset file; use a .csv or .jsonl manifest with {list(PAIR_COLUMNS)}.")
    rows = _read_rows(path)
    _require_columns(rows, PAIR_COLUMNS, path)
    labels = [r["label"].strip() for r in rows]
    return PairDataset(
        ids=[r["id"].strip() for r in rows],
        image_paths=[_resolve(path.parent, r["image"]) for r in rows],
        texts=[r["text"] for r in rows],
        labels=labels,
        splits=[r["split"].strip().lower() for r in rows],
        label_names=_ordered_labels(labels, label_names),
        source=str(path),
    )


def _read_wikipedia_text(path: Path) -> str:
    """A text file, or the text content of an .xml one (the Wikipedia dataset wraps texts in <text>).

    Bytes that are not UTF-8 become U+FFFD, which `validate_pairs` reports as the row problem "text not UTF-8".
    """
    require_regular(path, "The text file", "Replace it with the item's text file.")
    try:
        raw = path.read_text(encoding="utf-8-sig", errors="replace")
    except OSError as exc:
        raise CHTNError(f"Text file {path} cannot be read ({exc.strerror}).") from None
    if path.suffix == ".xml":
        match = re.search(r"<text>(.*?)</text>", raw, flags=re.S)
        raw = html.unescape(re.sub(r"<[^>]+>", " ", match.group(1) if match else raw))  # &amp; -> &
    return " ".join(raw.split())


def _read_list(path: Path) -> str:
    """A Wikipedia-layout list file as text, or a `CHTNError` saying how to fix its encoding."""
    require_regular(path, "The list file", "Replace it with the dataset's text file of that name.")
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise CHTNError(
            f"{path} is not UTF-8 text (byte {exc.start}); save it as UTF-8 "
            "(e.g. iconv -f GBK -t UTF-8 old.list > new.list)."
        ) from None
    except OSError as exc:
        raise CHTNError(f"{path} cannot be read ({exc.strerror}).") from None


def wikipedia_categories(folder: Path) -> list[str]:
    """A Wikipedia-layout folder's `categories.list`: the names its list files' 1-based indices point at."""
    categories_file = folder / "categories.list"
    if not categories_file.exists():
        raise CHTNError(f"{folder} is not a Wikipedia-layout folder: categories.list is missing.")
    return [line.strip() for line in _read_list(categories_file).splitlines() if line.strip()]


def load_wikipedia(folder: Path, label_names: Sequence[str] | None = None) -> PairDataset:
    """CHTN's Wikipedia layout: `{train,test}set_txt_img_cat.list`, `categories.list`, texts/, images/<cat>/."""
    categories = wikipedia_categories(folder)
    ids, images, texts, labels, splits = [], [], [], [], []
    for split in ("train", "test"):
        list_file = folder / f"{split}set_txt_img_cat.list"
        if not list_file.exists():
            raise CHTNError(f"{folder}: {list_file.name} is missing.")
        for number, line in enumerate(_read_list(list_file).splitlines(), start=1):
            if not line.strip():
                continue
            parts = line.split("\t") if "\t" in line else line.split()
            if len(parts) != 3 or not parts[2].strip().isdigit():
                raise CHTNError(f"{list_file}: line {number} should be 'text_id<TAB>image_id<TAB>category_index'.")
            text_id, image_id, category = parts[0].strip(), parts[1].strip(), int(parts[2])
            if not 1 <= category <= len(categories):
                raise CHTNError(
                    f"{list_file}: line {number} has category {category}; categories.list has "
                    f"{len(categories)} (indices are 1-based)."
                )
            name = categories[category - 1]
            text_path = next(
                (p for p in (folder / "texts" / f"{text_id}.txt", folder / "texts" / f"{text_id}.xml") if p.is_file()),
                None,
            )
            ids.append(text_id)
            images.append(folder / "images" / name / f"{image_id}.jpg")
            texts.append(_read_wikipedia_text(text_path) if text_path else "")
            labels.append(name)
            splits.append(split)
    return PairDataset(
        ids,
        images,
        texts,
        labels,
        splits,
        list(label_names) if label_names is not None else categories,
        source=str(folder),
    )


def load_source(path: str | Path, label_names: Sequence[str] | None = None) -> SourceDataset:
    """Source images from a manifest (`image,label`) or a folder-per-class tree (`<label>/<file>`)."""
    path = Path(path)
    if not path.exists():
        raise CHTNError(f"Source dataset not found: {path}. Give a manifest (.csv/.jsonl) or a folder per class.")
    if path.is_dir():
        files = sorted(p for p in path.glob("*/*") if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise CHTNError(f"{path} holds no images in class folders (<label>/<image>.jpg).")
        images, labels = files, [p.parent.name for p in files]
    else:
        rows = _read_rows(path)
        _require_columns(rows, ("image", "label"), path)
        images = [_resolve(path.parent, r["image"]) for r in rows]
        labels = [r["label"].strip() for r in rows]
    return SourceDataset(images, labels, _ordered_labels(labels, label_names), source=str(path))


def save_pairs(data: PairDataset, path: str | Path) -> Path:
    """Write `data` as a CSV or JSON-lines manifest whose image paths resolve from the manifest's own folder."""
    path = Path(path)
    if path.suffix not in MANIFEST_SUFFIXES:
        raise CHTNError(f"{path}: a manifest is written as .csv or .jsonl; give one of those suffixes.")
    folder = path.resolve().parent
    rows = [
        {"id": i, "image": Path(os.path.relpath(image, folder)).as_posix(), "text": t, "label": lab, "split": s}
        for i, image, t, lab, s in zip(data.ids, data.image_paths, data.texts, data.labels, data.splits)
    ]
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", newline="", encoding="utf-8") as handle:
            if path.suffix == ".csv":
                writer = csv.DictWriter(handle, fieldnames=PAIR_COLUMNS)
                writer.writeheader()
                writer.writerows(rows)
            else:
                handle.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    except OSError as exc:
        raise CHTNError(f"Cannot write {path} ({exc.strerror}); choose a folder you can write to.") from None
    return path
