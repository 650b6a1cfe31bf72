"""Whether each image file opens exactly as training opens it, judged once per file content and kept on disk.

Validation decodes every image in full (`open_rgb`): PIL's `verify()` passes truncated files that training then fails
on. That costs about a millisecond an image on 2 cores, minutes for a 100,000-image split, and every new process
paid it again: each dashboard server opening the split, each CLI command. So a verdict is kept in a small SQLite
table under the cache folder, keyed by the file's content hash (which the dataset's fingerprint computes anyway) and
the decoder it was judged with. Only the problem and what follows the file's name are stored: the detail shown
always names the file being judged, never another file with the same bytes. A cache that cannot be read or written
(a read-only home) is skipped: the images are then decoded, as before.
"""

from __future__ import annotations

import sqlite3
import warnings
from collections.abc import Iterable
from pathlib import Path

from PIL import Image
from PIL import __version__ as PILLOW_VERSION
from tqdm.auto import tqdm

from chtn.errors import CHTNError
from chtn.hashing import default_cache_dir, file_digest
from chtn.images import MAX_PIXELS, open_rgb

DECODER = f"Pillow {PILLOW_VERSION}, at most {MAX_PIXELS} pixels"  # a verdict holds for this decoder only
Problem = tuple[str, str]  # (problem, detail naming the file)


def decode_problems(paths: Iterable[Path], cache_dir: Path | None = None) -> dict[Path, Problem | None]:
    """Each regular file's problem (None: it opens), from the disk cache or by decoding it once per content (then
    stored there). Paths that are not regular files now are left out: what is wrong with them needs no decoding."""
    keys = {path: key for path in dict.fromkeys(paths) if (key := file_digest(path)) != "missing"}
    known = _read(cache_dir, set(keys.values()))
    judged: dict[str, tuple[str, str] | None] = {}
    todo = [path for path, key in keys.items() if key not in known]
    for path in tqdm(todo, desc="checking images", unit="img", disable=len(todo) < 1000):
        if (key := keys[path]) not in judged:  # else: the same bytes as a file judged a moment ago
            verdict = decode_problem(path)
            judged[key] = None if verdict is None else (verdict[0], verdict[1][len(path.name) :])
    _write(cache_dir, judged)
    known.update(judged)
    return {path: _named(known[key], path.name) for path, key in keys.items()}


def _named(verdict: tuple[str, str] | None, name: str) -> Problem | None:
    return None if verdict is None else (verdict[0], name + verdict[1])


def decode_problem(path: Path) -> Problem | None:
    """One file's verdict from a full decode, not cached; every detail starts with the file's name."""
    name = path.name
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # over MAX_PIXELS: reported below
            with Image.open(path) as image:  # the header only: no decoding yet
                width, height = image.size
    except Image.DecompressionBombError:
        limit = Image.MAX_IMAGE_PIXELS
        assert limit is not None  # Pillow raises the error only while its limit is set
        return "image too large", f"{name}: over {2 * limit:,} pixels, refused as a decompression bomb"
    except (OSError, SyntaxError, ValueError):  # not an image: the full decode below says so, as training would
        width = height = 0
    if width * height > MAX_PIXELS:
        return "image too large", f"{name}: {width}x{height} = {width * height:,} pixels"
    try:
        open_rgb(path)
    except CHTNError as exc:
        cause = exc.__context__  # PIL's own words ("image file is truncated ...") name the fault
        reason = f"{type(cause).__name__}: {cause}" if cause else str(exc)
        return "unreadable image file", f"{name} ({reason})"
    return None


def _connect(cache_dir: Path | None) -> sqlite3.Connection:
    root = cache_dir or default_cache_dir()
    root.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(root / "image_checks.sqlite", timeout=60)  # the CLI and a server may write at once
    db.execute(
        "CREATE TABLE IF NOT EXISTS checks "
        "(decoder TEXT, key TEXT, problem TEXT, rest TEXT, PRIMARY KEY (decoder, key))"
    )
    return db


def _read(cache_dir: Path | None, keys: set[str]) -> dict[str, tuple[str, str] | None]:
    found: dict[str, tuple[str, str] | None] = {}
    try:
        db = _connect(cache_dir)
        try:
            wanted = sorted(keys)
            for start in range(0, len(wanted), 500):  # SQLite caps the number of bound parameters
                chunk = wanted[start : start + 500]
                marks = ",".join("?" * len(chunk))
                query = f"SELECT key, problem, rest FROM checks WHERE decoder=? AND key IN ({marks})"
                for key, problem, rest in db.execute(query, [DECODER, *chunk]):
                    found[key] = None if problem is None else (problem, rest)
        finally:
            db.close()
    except (OSError, sqlite3.Error):  # no cache to read: every file is decoded
        return {}
    return found


def _write(cache_dir: Path | None, verdicts: dict[str, tuple[str, str] | None]) -> None:
    if not verdicts:
        return
    rows = [(DECODER, key, *(verdict or (None, None))) for key, verdict in verdicts.items()]
    try:
        db = _connect(cache_dir)
        try:
            with db:
                db.executemany("INSERT OR REPLACE INTO checks VALUES (?, ?, ?, ?)", rows)
        finally:
            db.close()
    except (OSError, sqlite3.Error):  # no cache to write: the next process decodes them again
        pass
