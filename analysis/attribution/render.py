"""Attributions as things to look at: a heatmap overlay (PNG) and highlighted text (HTML with a legend)."""

from __future__ import annotations

import html
import io

import numpy as np

from analysis.attribution.spans import Word
from analysis.attribution.types import Attribution


def heatmap_rgba(heatmap: np.ndarray, signed: bool) -> np.ndarray:
    """Colour a map: signed maps red (+) / blue (-) around 0, non-negative maps (Grad-CAM) with inferno.

    Scaled by the 99th percentile of |values| so one hot pixel does not wash the rest out.
    """
    from matplotlib import colormaps

    scale = float(np.percentile(np.abs(heatmap), 99)) or 1.0
    if signed:
        return colormaps["RdBu_r"](np.clip(heatmap / scale, -1, 1) * 0.5 + 0.5)
    return colormaps["inferno"](np.clip(heatmap / scale, 0, 1))


def overlay(attribution: Attribution, alpha: float = 0.55) -> np.ndarray:
    """(224, 224, 3) uint8: the grey image under the coloured map; weak attributions stay see-through."""
    heat, image = attribution.heatmap, attribution.image
    if heat is None or image is None:
        raise ValueError("overlay needs an image attribution (a heatmap and the image the model saw)")
    signed = attribution.method != "gradcam"
    colours = heatmap_rgba(heat, signed)[..., :3]
    scale = float(np.percentile(np.abs(heat), 99)) or 1.0
    strength = np.clip(np.abs(heat) / scale, 0, 1)[..., None] * alpha
    grey = image.mean(-1, keepdims=True).repeat(3, -1) / 255.0
    return ((grey * (1 - strength) + colours * strength) * 255).round().astype(np.uint8)


def png_bytes(pixels: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def _colour(score: float, scale: float) -> str:
    """Background for a word: green for positive, red for negative, stronger with |score|."""
    strength = min(abs(score) / scale, 1.0) if scale else 0.0
    rgb = (22, 163, 74) if score >= 0 else (220, 38, 38)
    return f"rgba({rgb[0]}, {rgb[1]}, {rgb[2]}, {0.08 + 0.6 * strength:.2f})"


def highlighted_html(words: list[Word], text: str) -> str:
    """The text with each word's background showing its attribution; hover shows the numbers."""
    scale = max((abs(w.score) for w in words), default=0.0)
    parts, cursor = [], 0
    for word in words:
        parts.append(html.escape(text[cursor : word.start]))
        title = f"{word.score:+.4f} (MiniLM {word.minilm:+.4f}, TF-IDF {word.tfidf:+.4f})"
        parts.append(
            f'<span title="{html.escape(title)}" style="background:{_colour(word.score, scale)};'
            f'padding:1px 3px;border-radius:3px">{html.escape(word.text)}</span>'
        )
        cursor = word.end
    parts.append(html.escape(text[cursor:]))
    return f'<div style="line-height:2;font-size:1.05rem">{"".join(parts)}</div>'


def legend_html() -> str:
    swatch = '<span style="background:{};padding:1px 6px;border-radius:3px;margin:0 4px">{}</span>'
    return (
        "<div style='font-size:0.85rem'>"
        + swatch.format(_colour(1, 1), "raises the similarity")
        + swatch.format(_colour(-1, 1), "lowers it")
        + swatch.format(_colour(0, 1), "no effect")
        + " · hover a word for its score</div>"
    )


def top_words(words: list[Word], n: int = 5) -> list[tuple[str, float]]:
    """The n words with the largest positive attribution, strongest first."""
    ranked = sorted(words, key=lambda w: w.score, reverse=True)
    return [(w.text, w.score) for w in ranked[:n]]
