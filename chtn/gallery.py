"""A split's pairs with their common-space embeddings, embedded once per (checkpoint, dataset) and kept on disk.

Embeddings are stored as `.npz` under the cache folder, keyed by the checkpoint's content hash and the
split's fingerprint, so a second open of the same checkpoint, even after a restart, recomputes nothing.

A checkpoint may ship its embeddings beside it (`<name>.embeddings.npz`, e.g. the sample checkpoints, so a
new user's first open embeds nothing). That file carries the same key; it is read (never written) only when
the key, the split and the shapes match, and ignored otherwise: a changed checkpoint or dataset is computed.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from chtn import shards
from chtn.checkpoint import Checkpoint
from chtn.data import PairDataset
from chtn.errors import CHTNError
from chtn.evaluate import EVALUATION_FORMAT, EvaluationReport, report_arrays, report_from_arrays
from chtn.hashing import default_cache_dir
from chtn.progress import Progress


@dataclass(frozen=True)
class Gallery:
    """One split's pairs with their common-space embeddings (row i of image and text is pair i).

    Shared by every dashboard session, so its arrays are read-only.
    """

    data: PairDataset
    image: np.ndarray  # (n, d) common representation of images
    text: np.ndarray  # (n, d) common representation of texts
    labels: np.ndarray  # (n,) class index into the checkpoint's label names

    def __post_init__(self) -> None:
        for array in (self.image, self.text, self.labels):
            array.flags.writeable = False

    def __len__(self) -> int:
        return len(self.data)


def embeddings_key(checkpoint: Checkpoint, part: PairDataset) -> str:
    """What identifies a split's embeddings: the checkpoint's content hash and the split's content fingerprint."""
    return f"{checkpoint.digest}_{part.fingerprint()}"


def _embeddings_file(checkpoint: Checkpoint, part: PairDataset, cache_dir: Path | None) -> Path:
    return (cache_dir or default_cache_dir()) / "embeddings" / f"{embeddings_key(checkpoint, part)}.npz"


def shipped_embeddings_file(checkpoint_path: Path) -> Path:
    """Where a checkpoint's shipped embeddings live: beside it, `<name>.embeddings.npz`."""
    return checkpoint_path.with_suffix(".embeddings.npz")


def write_shipped_embeddings(checkpoint: Checkpoint, gallery: Gallery, split: str) -> Path:
    """Store a gallery's exact float32 embeddings beside its checkpoint, under the key they were computed for."""
    path = shipped_embeddings_file(checkpoint.path)
    with path.open("wb") as file:
        np.savez(
            file,
            key=np.array(embeddings_key(checkpoint, gallery.data)),
            split=np.array(split),
            image=np.asarray(gallery.image, np.float32),
            text=np.asarray(gallery.text, np.float32),
        )
    return path


def shipped_embeddings(checkpoint: Checkpoint, part: PairDataset, split: str) -> tuple[np.ndarray, np.ndarray] | None:
    """(image, text) shipped with the checkpoint for exactly this split's content, else None (then compute).

    Never trusted on a mismatch: the key (checkpoint content hash + split fingerprint), the split name, the
    dtype, the shapes (one row per pair) and finiteness must all agree; an unreadable file counts as absent.
    """
    path = shipped_embeddings_file(checkpoint.path)
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as stored:
            if str(stored["key"]) != embeddings_key(checkpoint, part) or str(stored["split"]) != split:
                return None
            image, text = stored["image"], stored["text"]
    except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile):
        return None
    for array in (image, text):
        if array.dtype != np.float32 or array.ndim != 2 or len(array) != len(part) or not np.isfinite(array).all():
            return None
    return (image, text) if image.shape == text.shape else None


def split_is_embedded(
    checkpoint: Checkpoint, data: PairDataset, split: str = "test", cache_dir: Path | None = None
) -> bool:
    """Whether `embed_split` will read this split from disk (shipped or cached: no encoder work, no progress)."""
    part = data.split(split)
    return (
        _embeddings_file(checkpoint, part, cache_dir).exists()
        or shipped_embeddings(checkpoint, part, split) is not None
    )


def embed_split(
    checkpoint: Checkpoint,
    data: PairDataset,
    split: str = "test",
    progress: Progress | None = None,
    cache_dir: Path | None = None,
    shipped: bool = True,
    device: str | None = None,
) -> Gallery:
    """Embeddings of one split: shipped with the checkpoint (when `shipped` and the key matches), read from
    the on-disk cache, or computed once (on `device`) and stored there."""
    part = data.split(split)
    if len(part) == 0:
        raise CHTNError(f"The dataset has no '{split}' rows to explore.")
    found = shipped_embeddings(checkpoint, part, split) if shipped else None
    if found is not None:
        return Gallery(part, *found, part.label_index)
    path = _embeddings_file(checkpoint, part, cache_dir)
    if path.exists():
        stored = np.load(path)
        return Gallery(part, stored["image"], stored["text"], part.label_index)
    # Here, not at the top: the encoders import PyTorch (seconds), which a page reading stored embeddings never needs.
    from chtn.features import FeatureCache
    from chtn.tower import create_tower

    image, text = create_tower(checkpoint, device).embed_pairs(part, FeatureCache(cache_dir), progress)
    store_embeddings(checkpoint, data, split, image, text, cache_dir)
    return Gallery(part, image, text, part.label_index)


def store_embeddings(
    checkpoint: Checkpoint,
    data: PairDataset,
    split: str,
    image: np.ndarray,
    text: np.ndarray,
    cache_dir: Path | None = None,
) -> Path:
    """Put a split's embeddings into the on-disk cache, where `embed_split` reads them (written atomically).
    Besides `embed_split` itself, benchmarks use it to stand synthetic embeddings in for a large split."""
    part = data.split(split)
    if image.shape != text.shape or len(image) != len(part):
        raise CHTNError(f"Embeddings of shape {image.shape} and {text.shape} do not fit {len(part):,} '{split}' rows.")
    path = _embeddings_file(checkpoint, part, cache_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp.npz")  # private: concurrent writers never mix
    with os.fdopen(handle, "wb") as file:
        np.savez(file, image=image, text=text)
    Path(tmp).replace(path)
    return path


def stored_evaluation(
    gallery: Gallery, label_names: list[str], cache_dir: Path | None = None
) -> EvaluationReport | None:
    """The split's evaluation when it is on disk (see `evaluate_gallery`), else None (also for a damaged file)."""
    path = _evaluation_file(gallery, label_names, cache_dir)
    try:
        with np.load(path, allow_pickle=False) as stored:
            return report_from_arrays(stored)
    except (OSError, ValueError, KeyError, zipfile.BadZipFile):
        return None  # absent, damaged or from an older layout


def _evaluation_file(gallery: Gallery, label_names: list[str], cache_dir: Path | None) -> Path:
    return (cache_dir or default_cache_dir()) / "evaluations" / f"{evaluation_key(gallery, label_names)}.npz"


def evaluate_gallery(
    gallery: Gallery, label_names: list[str], cache_dir: Path | None = None, progress: Progress | None = None
) -> EvaluationReport:
    """The split's evaluation, computed once per content and kept on disk: the key is a hash of the embeddings,
    the labels, the label names and the evaluation's format, so every page, command and session that evaluates
    the same embeddings reads the same file (a 100,000-item split costs minutes on a CPU once, then milliseconds).
    A damaged file is computed again; files load without pickle. Under torchrun the ranking is shared out across
    the launch's processes (:mod:`chtn.shards`)."""
    stored = stored_evaluation(gallery, label_names, cache_dir)
    if stored is not None:
        return stored
    path = _evaluation_file(gallery, label_names, cache_dir)
    report = shards.evaluate(gallery.image, gallery.text, gallery.labels, label_names, progress=progress)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp.npz")  # private: concurrent writers never mix
    with os.fdopen(handle, "wb") as file:
        arrays: dict[str, Any] = report_arrays(report)  # Any: numpy's stubs read **arrays as its bool options
        np.savez(file, **arrays)
    Path(tmp).replace(path)
    return report


def evaluation_key(gallery: Gallery, label_names: list[str]) -> str:
    """SHA-256 of what a split's evaluation depends on, and nothing else."""
    digest = hashlib.sha256(f"chtn-evaluation-{EVALUATION_FORMAT}".encode())
    for array in (gallery.image, gallery.text, gallery.labels):
        digest.update(str((array.dtype.str, array.shape)).encode())
        digest.update(np.ascontiguousarray(array).tobytes())
    digest.update("\x1f".join(label_names).encode())
    return digest.hexdigest()[:32]
