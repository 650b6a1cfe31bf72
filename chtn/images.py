"""Opening images safely: one place that turns a bad file into a clear message."""

from __future__ import annotations

import base64
import io
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, UnidentifiedImageError

from chtn.errors import CHTNError
from chtn.files import require_regular

MAX_PIXELS = 50_000_000  # larger uploads are refused rather than risking memory exhaustion


def open_rgb(source: str | Path | BinaryIO, name: str | None = None) -> Image.Image:
    """Decode an image file or upload to RGB, or raise `CHTNError` naming the file and the problem."""
    label = name or str(source)
    if isinstance(source, str | Path):
        require_regular(source, "The image", "Give a JPEG or PNG file.")
    try:
        with warnings.catch_warnings():  # the size is checked below, with a message that says the limit
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(source)
        with image:
            if image.width * image.height > MAX_PIXELS:
                raise CHTNError(
                    f"{label} is {image.width}x{image.height} pixels; images over "
                    f"{MAX_PIXELS:,} pixels are refused. Resize it first."
                )
            return _to_rgb(image)
    except FileNotFoundError:
        raise CHTNError(f"Image not found: {label}.") from None
    except IsADirectoryError:
        raise CHTNError(f"{label} is a folder, not an image file; give a JPEG or PNG file.") from None
    except (UnidentifiedImageError, OSError, SyntaxError, Image.DecompressionBombError) as exc:
        detail = str(exc).splitlines()[0][:120] if str(exc) else ""
        raise CHTNError(
            f"{label} is not a readable image ({type(exc).__name__}{': ' + detail if detail else ''}); it may be "
            "truncated or corrupt: use a complete JPEG or PNG file."
        ) from None


def _to_rgb(image: Image.Image) -> Image.Image:
    """RGB of any mode; 16/32-bit grey (a 16-bit PNG opens as I;16 or I) is scaled to 8 bits, not clipped to white."""
    if image.mode.startswith("I;16") or image.mode == "I":
        values = np.asarray(image, dtype=np.float64)
        if image.mode.startswith("I;16") or values.max(initial=0) > 255:
            values = values / 257.0  # 65535 -> 255
        return Image.fromarray(np.clip(np.rint(values), 0, 255).astype(np.uint8), "L").convert("RGB")
    if image.mode == "F":  # float grey: assumed 0..1 when it fits, else 0..255
        values = np.asarray(image, dtype=np.float64)
        values = values * 255.0 if values.size and np.nanmax(values) <= 1.0 else values
        return Image.fromarray(np.clip(np.nan_to_num(values), 0, 255).astype(np.uint8), "L").convert("RGB")
    return image.convert("RGB")


def thumbnail_uris(paths: Sequence[Path | None], size: int = 64) -> list[str | None]:
    """Small JPEG data URIs of images (None stays None, an unreadable file gives None), for table image columns."""
    uris: list[str | None] = []
    for path in paths:
        if path is None:
            uris.append(None)
            continue
        try:
            with Image.open(path) as opened:
                image = opened.convert("RGB")
                image.thumbnail((size, size))
                buffer = io.BytesIO()
                image.save(buffer, format="JPEG", quality=80)
        except OSError:
            uris.append(None)
            continue
        uris.append("data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode())
    return uris
