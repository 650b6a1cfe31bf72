"""A selection on the shared-space map as a short URL value, so a link or the browser's Back reopens it.

The map's selection is a box or a lasso drawn in the projection's coordinates. Its point list can hold thousands
of items, too many for a URL, while the shape is a few numbers: the URL keeps the shape (a lasso thinned to at most
`MAX_VERTICES` corners, coordinates to 4 significant digits), and the page selects again the points inside it.
Projections are cached with a fixed seed, so the same link finds the same points under the same parameters; the
value names the projection it was drawn on (`on`), and a page showing another one ignores it.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np

from analysis.projection.project import ProjectionParams

MAX_VERTICES = 96  # a lasso's corners kept in the URL (about 1,400 characters)


@dataclass(frozen=True)
class Region:
    """A box (two corners) or a lasso (its corners, in order), in the map's coordinates."""

    kind: str  # "box" or "lasso"
    xs: tuple[float, ...]
    ys: tuple[float, ...]
    on: str = ""  # the projection drawn on (`projection_tag`)

    def param(self) -> str:
        """The URL value: compact JSON, e.g. {"box":[[x0,x1],[y0,y1]],"on":"umap-1a2b3c4d"}."""
        return json.dumps({self.kind: [list(self.xs), list(self.ys)], "on": self.on}, separators=(",", ":"))

    def contains(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Which points (x, y) lie inside the region (a boolean mask)."""
        if self.kind == "box":
            return (x >= min(self.xs)) & (x <= max(self.xs)) & (y >= min(self.ys)) & (y <= max(self.ys))
        from matplotlib.path import Path  # lazy: only a lasso needs it

        return Path(np.column_stack([self.xs, self.ys])).contains_points(np.column_stack([x, y]))


def _round(values: Sequence[float]) -> tuple[float, ...]:
    return tuple(float(f"{v:.4g}") for v in values)


def projection_tag(params: ProjectionParams) -> str:
    """A short name of a projection's parameters, e.g. "umap-1a2b3c4d"."""
    fields = json.dumps(asdict(params), sort_keys=True)
    return f"{params.method}-{hashlib.sha256(fields.encode()).hexdigest()[:8]}"


def from_selection(selection: Mapping, on: str = "") -> Region | None:
    """The region of a plotly selection event (`event.selection` of `st.plotly_chart`) drawn on projection `on`:
    its last box or lasso, None when it holds neither (a click, or a cleared selection)."""
    for kind in ("lasso", "box"):
        shapes = selection.get(kind) or []
        if shapes:
            xs, ys = list(shapes[-1]["x"]), list(shapes[-1]["y"])
            if kind == "lasso" and len(xs) > MAX_VERTICES:
                keep = np.linspace(0, len(xs) - 1, MAX_VERTICES).round().astype(int)
                xs, ys = [xs[i] for i in keep], [ys[i] for i in keep]
            return Region(kind, _round(xs), _round(ys), on)
    return None


def parse(text: str | None) -> Region | None:
    """The region a URL value describes; None for anything else (a link is never an error, it only selects
    nothing)."""
    if not text or len(text) > 8000:
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return None
    if not isinstance(value, dict) or not isinstance(on := value.pop("on", ""), str) or len(value) != 1:
        return None
    kind, shape = next(iter(value.items()))
    if kind not in ("box", "lasso") or not isinstance(shape, list) or len(shape) != 2:
        return None
    xs, ys = shape
    if not (isinstance(xs, list) and isinstance(ys, list) and len(xs) == len(ys)):
        return None
    if len(xs) < (2 if kind == "box" else 3) or len(xs) > MAX_VERTICES:
        return None
    numbers = [*xs, *ys]
    if not all(isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in numbers):
        return None
    return Region(kind, tuple(float(v) for v in xs), tuple(float(v) for v in ys), on)
