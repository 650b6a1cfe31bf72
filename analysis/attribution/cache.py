"""Attributions on disk: one `.npz` per (checkpoint, items, method, parameters), written atomically.

Stored as JSON metadata plus plain arrays and read with `allow_pickle=False`: a cache file never runs code.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import asdict
from pathlib import Path

import numpy as np

from analysis.attribution.spans import Word
from analysis.attribution.types import Attribution, Item, Settings

VERSION = 3  # bump when what an attribution means changes (3: SmoothGrad noise from a private generator)


def cache_key(checkpoint_digest: str, item: Item, other: Item, settings: Settings, contrast: Item | None) -> str:
    """Content hash of everything the result depends on (texts use only the IG parameters)."""
    parts = {
        "checkpoint": checkpoint_digest,
        "item": [item.modality, item.content_key()],
        "other": [other.modality, other.content_key()],
        "contrast": [contrast.modality, contrast.content_key()] if contrast else None,
        "settings": asdict(settings)
        if item.modality == "image"
        else {"n_steps": settings.n_steps, "internal_batch_size": settings.internal_batch_size},
        "version": VERSION,
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:32]


def read(folder: Path, key: str) -> Attribution | None:
    path = folder / f"{key}.npz"
    if not path.exists():
        return None
    with np.load(path, allow_pickle=False) as stored:
        meta = json.loads(str(stored["meta"]))
        words = [Word(**w) for w in meta.pop("words")]
        return Attribution(
            **meta,
            words=words,
            heatmap=stored["heatmap"] if "heatmap" in stored else None,
            image=stored["image"] if "image" in stored else None,
        )


def write(folder: Path, key: str, result: Attribution) -> None:
    """Write to a private temporary file, then rename: concurrent writers of one key never mix bytes."""
    folder.mkdir(parents=True, exist_ok=True)
    meta = {k: v for k, v in asdict(result).items() if k not in ("heatmap", "image")}
    arrays = {
        name: value for name, value in (("heatmap", result.heatmap), ("image", result.image)) if value is not None
    }
    handle, tmp = tempfile.mkstemp(dir=folder, prefix=f"{key}.", suffix=".tmp.npz")
    with os.fdopen(handle, "wb") as file:
        np.savez(file, allow_pickle=False, meta=json.dumps(meta), **arrays)  # plain arrays: read back without pickle
    Path(tmp).replace(folder / f"{key}.npz")
