"""What an attribution is about (items, settings) and what it returns, as plain immutable data."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from analysis.attribution.spans import Word
from chtn.errors import CHTNError
from chtn.hashing import file_digest, text_key

IMAGE_METHODS = {
    "gradcam": "Grad-CAM (last conv block, fast)",
    "ig": "Integrated Gradients",
    "smoothgrad": "Integrated Gradients + SmoothGrad",
    "occlusion": "Occlusion (model-agnostic check)",
}
BASELINES = {"black": "black image", "blurred": "blurred copy of the image"}


@dataclass(frozen=True)
class Item:
    """One side of a pair: an image file or a text, with what the page shows about it."""

    modality: str  # "image" or "text"
    value: str  # image path, or the text itself
    name: str = ""  # id or a short description for captions

    def content_key(self) -> str:
        return file_digest(Path(self.value)) if self.modality == "image" else text_key(self.value)


def explainer_items(ids: Sequence[str], texts: Sequence[str], paths: Sequence[Path], row: int) -> tuple[Item, Item]:
    """(image item, text item) of one dataset row."""
    return Item("image", str(paths[row]), ids[row]), Item("text", texts[row], ids[row])


@dataclass(frozen=True)
class Settings:
    """Method and parameters; every field is part of the cache key."""

    method: str = "gradcam"  # image method, one of IMAGE_METHODS (texts always use (layer) IG)
    baseline: str = "black"  # IG / occlusion reference image, one of BASELINES
    n_steps: int = 32  # IG integration steps
    refine: bool = True  # IG: up to 3 x n_steps gradient evaluations to close completeness gaps;
    # False = n_steps evaluations (faster, larger gaps)
    nt_samples: int = 4  # SmoothGrad: noisy copies averaged
    nt_stdev: float = 0.1  # SmoothGrad: noise std in the [-1, 1] pixel scale
    nt_seed: int = 0  # SmoothGrad: seed of the noise (a private generator per attribution)
    window: int = 32  # occlusion patch (pixels, square)
    stride: int = 16  # occlusion stride
    internal_batch_size: int = 16  # bounds memory: at most this many interpolated inputs per pass

    def __post_init__(self) -> None:
        if self.method not in IMAGE_METHODS:
            raise CHTNError(f"Unknown attribution method {self.method!r}; choose one of {sorted(IMAGE_METHODS)}.")
        if self.baseline not in BASELINES:
            raise CHTNError(f"Unknown baseline {self.baseline!r}; choose one of {sorted(BASELINES)}.")
        if not (1 <= self.n_steps <= 512 and 1 <= self.internal_batch_size <= 512):
            raise CHTNError("n_steps and internal_batch_size must be between 1 and 512.")


@dataclass
class Attribution:
    """Attribution of f on one side of a pair, with the numbers that say how far to trust it."""

    modality: str
    method: str
    value: float  # f(input)
    baseline_value: float | None  # f(baseline) for path methods
    delta: float | None  # IG convergence delta: sum(attr) - (f(x) - f(baseline))
    n_steps: int | None
    seconds: float
    heatmap: np.ndarray | None = None  # image: (224, 224) float32, signed
    image: np.ndarray | None = None  # image: (224, 224, 3) uint8, what the model saw
    words: list[Word] = field(default_factory=list)  # text: words with their scores
    text: str = ""
    target: str = "common"  # what the gradients follow: "common" (= f) or "logits" (Grad-CAM)

    @property
    def total(self) -> float:
        """Sum of the attributions (for IG equal to f(x) - f(baseline) up to delta)."""
        if self.heatmap is not None:
            return float(self.heatmap.sum())
        return float(sum(w.score for w in self.words))

    def delta_is_large(self, tolerance: float = 0.05) -> bool:
        """True when IG's completeness gap exceeds `tolerance` of |f(x) - f(baseline)| (floor 1e-3)."""
        if self.delta is None or self.baseline_value is None:
            return False
        return abs(self.delta) > tolerance * max(abs(self.value - self.baseline_value), 1e-3)
