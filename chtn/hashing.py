"""Content keys: what caches and fingerprints identify files and texts by (never by path or name), and the folder
the disk caches live in."""

from __future__ import annotations

import functools
import hashlib
import os
from pathlib import Path
from stat import S_ISREG


def default_cache_dir() -> Path:
    """$CHTN_CACHE_DIR, else ~/.cache/chtn: every disk cache (features, embeddings, projections, image checks)."""
    return Path(os.environ.get("CHTN_CACHE_DIR", Path.home() / ".cache" / "chtn"))


def file_digest(path: Path) -> str:
    """SHA-1 of a file's bytes (memoised on path, mtime and size); "missing" if it cannot be read or is not a
    regular file (reading a named pipe would block forever, a device never end)."""
    try:
        stat = path.stat()
        if not S_ISREG(stat.st_mode):
            return "missing"
        return _sha1_of_file(str(path), stat.st_mtime_ns, stat.st_size)
    except (OSError, ValueError):  # missing, unreadable, or a name no file system holds (a lone surrogate)
        return "missing"


@functools.lru_cache(maxsize=1 << 18)  # a 100,000-item split and its training images fit
def _sha1_of_file(path: str, mtime_ns: int, size: int) -> str:
    """Keyed by mtime and size too, so a changed file is read again (lru_cache is thread-safe)."""
    return hashlib.sha1(Path(path).read_bytes()).hexdigest()


def text_key(text: str) -> str:
    """SHA-1 of a text's UTF-8 bytes."""
    return hashlib.sha1(text.encode("utf-8")).hexdigest()
