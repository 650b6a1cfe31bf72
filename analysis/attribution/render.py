"""Attributions as things to look at: a heatmap overlay (PNG) and highlighted text (HTML with a legend)."""

from __future__ import annotations

import html
import io

import numpy as np

from analysis.attribution.spans import Word
from analysis.attribution.types import Attribution


def map_scale(*attributions: Attribution) -> float:
    """The colour scale's end: the largest 99th percentile of |values| of the maps, so one hot pixel does not wash
    the rest out, and maps shown side by side share one scale (their colours compare)."""
    ends = [float(np.percentile(np.abs(a.heatmap), 99)) for a in attributions if a.heatmap is not None]
    return max(ends, default=0.0) or 1.0


def heatmap_rgba(heatmap: np.ndarray, signed: bool, scale: float | None = None) -> np.ndarray:
    """Colour a map: signed maps red (+) / blue (-) around 0, non-negative maps (Grad-CAM) with inferno, from 0 (or
    -scale) to `scale` (default: the map's own 99th percentile of |values|)."""
    from matplotlib import colormaps

    scale = scale or float(np.percentile(np.abs(heatmap), 99)) or 1.0
    if signed:
        return colormaps["RdBu_r"](np.clip(heatmap / scale, -1, 1) * 0.5 + 0.5)
    return colormaps["inferno"](np.clip(heatmap / scale, 0, 1))


def overlay(attribution: Attribution, alpha: float = 0.55, scale: float | None = None) -> np.ndarray:
    """(224, 224, 3) uint8: the map over a grey copy of the image (so the map's colours read unmixed; the page shows
    the colour image beside it); weak attributions stay see-through."""
    heat, image = attribution.heatmap, attribution.image
    if heat is None or image is None:
        raise ValueError("overlay needs an image attribution (a heatmap and the image the model saw)")
    signed = attribution.method != "gradcam"
    scale = scale or map_scale(attribution)
    colours = heatmap_rgba(heat, signed, scale)[..., :3]
    strength = np.clip(np.abs(heat) / scale, 0, 1)[..., None] * alpha
    grey = image.mean(-1, keepdims=True).repeat(3, -1) / 255.0
    return ((grey * (1 - strength) + colours * strength) * 255).round().astype(np.uint8)


def scale_html(method: str, scale: float) -> str:
    """The colour scale of a map as a bar with its end values: Grad-CAM's weight from 0 to `scale`, or a signed
    attribution from -scale (lowers the similarity) to +scale (raises it)."""
    from matplotlib import colormaps

    signed = method != "gradcam"
    cmap = colormaps["RdBu_r" if signed else "inferno"]
    stops = ", ".join("#{:02x}{:02x}{:02x}".format(*(int(round(c * 255)) for c in cmap(i / 10)[:3])) for i in range(11))
    low, middle, high = (f"{-scale:+.3g} lowers", "0", f"{scale:+.3g} raises") if signed else ("0", "", f"{scale:.3g}")
    what = "attribution to the similarity" if signed else "Grad-CAM weight (pre-softmax scores)"
    return (
        "<div style='font-size:0.8rem;max-width:420px'>"
        f"<div style='height:12px;border-radius:3px;background:linear-gradient(to right, {stops})'></div>"
        "<div style='display:flex;justify-content:space-between'>"
        f"<span>{html.escape(low)}</span><span>{html.escape(middle)}</span><span>{html.escape(high)}</span></div>"
        f"<div>Colour scale: {what}; the maps shown share it (ends at the 99th percentile of |value|).</div></div>"
    )


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
