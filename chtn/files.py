"""Opening user-named files safely: only regular files, and only up to a size, so that a named pipe, a device
(`/dev/zero`) or a huge file given by mistake is a clear error instead of a hang or an exhausted memory."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from chtn.errors import CHTNError


def require_regular(path: str | Path, what: str, fix: str) -> None:
    """Refuse `path` unless it is a regular file (or a link to one), checked with stat before anything opens it:
    opening a named pipe with no writer blocks forever. A missing file passes (the caller says "not found")."""
    try:
        mode = os.stat(path).st_mode
    except (OSError, ValueError):  # missing, unreachable, or a name no file system holds: the caller's open says so
        return
    if not stat.S_ISREG(mode):
        kind = "a folder" if stat.S_ISDIR(mode) else "a named pipe" if stat.S_ISFIFO(mode) else "a device or socket"
        raise CHTNError(f"{what} {path} is {kind}, not a regular file. {fix}")


def read_bounded(path: str | Path, max_bytes: int, what: str, fix: str) -> bytes:
    """The bytes of the regular file `path`, refusing it when it holds more than `max_bytes` (read at most one
    byte more, so a huge or endless file costs nothing). OSError (missing, unreadable) is left to the caller."""
    require_regular(path, what, fix)
    with open(path, "rb") as handle:
        data = handle.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise CHTNError(f"{what} {path} is larger than {max_bytes:,} bytes, the most accepted. {fix}")
    return data
