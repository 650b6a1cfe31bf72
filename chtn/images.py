"""Opening images safely: one place that turns a bad file into a clear message."""

from __future__ import annotations

from pathlib import Path
from typing import BinaryIO

from PIL import Image, UnidentifiedImageError

from chtn.errors import CHTNError

MAX_PIXELS = 50_000_000  # larger uploads are refused rather than risking memory exhaustion


def open_rgb(source: str | Path | BinaryIO, name: str | None = None) -> Image.Image:
    """Decode an image file or upload to RGB, or raise `CHTNError` naming the file and the problem."""
    label = name or str(source)
    try:
        with Image.open(source) as image:
            if image.width * image.height > MAX_PIXELS:
                raise CHTNError(
                    f"{label} is {image.width}x{image.height} pixels; images over "
                    f"{MAX_PIXELS:,} pixels are refused. Resize it first."
                )
            return image.convert("RGB")
    except FileNotFoundError:
        raise CHTNError(f"Image not found: {label}.") from None
    except (UnidentifiedImageError, OSError, SyntaxError, Image.DecompressionBombError) as exc:
        raise CHTNError(f"{label} is not a readable image ({type(exc).__name__}); use a JPEG or PNG file.") from None
