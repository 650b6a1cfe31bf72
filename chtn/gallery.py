"""A split's pairs with their common-space embeddings, embedded once per (checkpoint, dataset) and kept on disk.

Embeddings are stored as `.npz` under the cache folder, keyed by the checkpoint's content hash and the
split's fingerprint, so a second open of the same checkpoint, even after a restart, recomputes nothing.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from chtn.checkpoint import Checkpoint
from chtn.data import PairDataset
from chtn.errors import CHTNError
from chtn.evaluate import EvaluationReport, evaluate_embeddings
from chtn.features import FeatureCache, default_cache_dir
from chtn.tower import create_tower


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


def _embeddings_file(checkpoint: Checkpoint, part: PairDataset, cache_dir: Path | None) -> Path:
    return (cache_dir or default_cache_dir()) / "embeddings" / f"{checkpoint.digest}_{part.fingerprint()}.npz"


def split_is_embedded(
    checkpoint: Checkpoint, data: PairDataset, split: str = "test", cache_dir: Path | None = None
) -> bool:
    """Whether `embed_split` will read this split from the disk cache (no encoder work, no progress to show)."""
    return _embeddings_file(checkpoint, data.split(split), cache_dir).exists()


def embed_split(
    checkpoint: Checkpoint,
    data: PairDataset,
    split: str = "test",
    progress: Callable[[int, int], None] | None = None,
    cache_dir: Path | None = None,
    device: str | None = None,
) -> Gallery:
    """Embeddings of one split, read from the on-disk cache or computed once (on `device`) and stored there."""
    part = data.split(split)
    if len(part) == 0:
        raise CHTNError(f"The dataset has no '{split}' rows to explore.")
    path = _embeddings_file(checkpoint, part, cache_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        stored = np.load(path)
        return Gallery(part, stored["image"], stored["text"], part.label_index)
    image, text = create_tower(checkpoint, device).embed_pairs(part, FeatureCache(cache_dir), progress)
    handle, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp.npz")  # private: concurrent writers never mix
    with os.fdopen(handle, "wb") as file:
        np.savez(file, image=image, text=text)
    Path(tmp).replace(path)
    return Gallery(part, image, text, part.label_index)


def evaluate_gallery(gallery: Gallery, label_names: list[str]) -> EvaluationReport:
    return evaluate_embeddings(gallery.image, gallery.text, gallery.labels, label_names)
