"""Why did this query retrieve this result? Captum attributions of a pair's similarity in the common space.

The attributed quantity is f(x) = cos(encode(x), encode(other)) for the side x being explained, the other
side held fixed (detached). In contrastive mode f(x) = cos(x, wrong) - cos(x, correct): what pulled the
wrong item ahead of the right one. Both go through the whole differentiable path: pixels -> EfficientNet
trunk -> CHTN image stream -> common representation, or word-piece embeddings (MiniLM) and the TF-IDF
vector -> CHTN text stream -> common representation.

Results are cached on disk (`attributions/` in the feature-cache folder), keyed by the checkpoint's
content hash, the items' content hashes, the method and its parameters.
"""
from __future__ import annotations

import hashlib
import json
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from analysis.text_spans import Word, word_scores
from chtn.checkpoint import Checkpoint
from chtn.errors import CHTNError
from chtn.data import file_digest
from chtn.features import default_cache_dir, text_key

IMAGE_METHODS = {
    "gradcam": "Grad-CAM (last conv block, fast)",
    "ig": "Integrated Gradients",
    "smoothgrad": "Integrated Gradients + SmoothGrad (NoiseTunnel)",
    "occlusion": "Occlusion (model-agnostic check)",
}
BASELINES = {"black": "black image", "blurred": "blurred copy of the image"}
MAX_TEXT_CHARS = 5000  # attribution of a longer text is truncated (MiniLM reads 256 word-pieces anyway)


@dataclass(frozen=True)
class Item:
    """One side of a pair: an image file or a text, with what the page shows about it."""

    modality: str           # "image" or "text"
    value: str              # image path, or the text itself
    name: str = ""          # id or a short description for captions

    def content_key(self) -> str:
        return file_digest(Path(self.value)) if self.modality == "image" else text_key(self.value)


@dataclass(frozen=True)
class Settings:
    """Method and parameters; every field is part of the cache key."""

    method: str = "gradcam"          # image method, one of IMAGE_METHODS (texts always use (layer) IG)
    baseline: str = "black"          # IG / occlusion reference image, one of BASELINES
    n_steps: int = 32                # IG integration steps
    refine: bool = True              # IG: up to 3 x n_steps gradient evaluations to close completeness gaps;
                                     # False = n_steps evaluations (faster, larger gaps)
    nt_samples: int = 4              # SmoothGrad: noisy copies averaged
    nt_stdev: float = 0.1            # SmoothGrad: noise std in the [-1, 1] pixel scale
    window: int = 32                 # occlusion patch (pixels, square)
    stride: int = 16                 # occlusion stride
    internal_batch_size: int = 16    # bounds memory: at most this many interpolated inputs per pass

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
    value: float                     # f(input)
    baseline_value: float | None     # f(baseline) for path methods
    delta: float | None              # IG convergence delta: sum(attr) - (f(x) - f(baseline))
    n_steps: int | None
    seconds: float
    heatmap: np.ndarray | None = None   # image: (224, 224) float32, signed
    image: np.ndarray | None = None     # image: (224, 224, 3) uint8, what the model saw
    words: list[Word] = field(default_factory=list)  # text: words with their scores
    text: str = ""
    target: str = "common"           # what the gradients follow: "common" (= f) or "logits" (Grad-CAM, below)

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


def _segmented_ig_class():
    """Built lazily so that importing this module does not import Captum."""
    from captum.attr import IntegratedGradients

    class SegmentedIntegratedGradients(IntegratedGradients):
        """Captum IntegratedGradients with the step budget spent where the function changes.

        Why by hand: cos-of-softmax saturates, so along the straight path from a black image f rises
        from ~0.2 to ~1.0 within the first few percent of the path and stays flat after. Evenly spaced
        steps (any Captum `method`) miss that jump, and the completeness gap stays at 0.3-0.9 even at
        128 steps. A forward-only probe of f along the path (refined once around the largest jump)
        finds where it changes. The path is then cut into segments, and each segment gets steps in
        proportion to its change in f. IG is additive over segments of one straight path, so the sum of
        Captum's per-segment attributions is IG on the whole path. Each segment's own completeness gap is
        known for free (f at its ends comes from the probe), so the worst segments are then halved and
        redone within a budget (adaptive quadrature): near the black baseline f can dip and recover
        between probe points. Result: gaps of 1-3% of f(x) - f(b) at 32 steps where evenly spaced steps
        leave 30-90% (bench/bench_attribution.py). Captum's NoiseTunnel wraps it unchanged.
        """

        probe = 16         # forward-only probe points along the path
        tolerance = 0.01   # refine while a segment's completeness gap exceeds this share of the term's variation
        budget = 3         # at most budget x n_steps gradient evaluations per term
        steps_used = 0     # gradient evaluations spent (all rows, terms and refinements) since construction

        @staticmethod
        @torch.no_grad()
        def _values(func, x: torch.Tensor, base: torch.Tensor, alphas: torch.Tensor, batch: int) -> torch.Tensor:
            return torch.cat([func(torch.cat([base + a * (x - base) for a in chunk])) for chunk in alphas.split(batch)])

        def segments(self, func, x: torch.Tensor, base: torch.Tensor, n_steps: int, batch: int
                     ) -> tuple[list[tuple[float, float, int, float, float]], float]:
            """[(start alpha, end alpha, steps, f(start), f(end))] covering [0, 1] (flat stretches merged into
            one segment), and the total variation of f seen by the probe."""
            bounds = torch.linspace(0, 1, self.probe + 1)
            values = self._values(func, x, base, bounds, batch)
            jumps = values.diff().abs()
            worst = int(jumps.argmax())
            if jumps[worst] > 0.5 * jumps.sum():  # one dominant jump: look inside it once more
                fine = torch.linspace(float(bounds[worst]), float(bounds[worst + 1]), self.probe + 1)
                fine_values = self._values(func, x, base, fine[1:-1], batch)
                bounds = torch.cat([bounds[:worst + 1], fine[1:-1], bounds[worst + 1:]])
                values = torch.cat([values[:worst + 1], fine_values, values[worst + 1:]])
                jumps = values.diff().abs()
            share = (jumps / jumps.sum().clamp(min=1e-12)).tolist()
            merged: list[list[float]] = []
            for i, part in enumerate(share):
                if merged and part * n_steps < 1 and merged[-1][2] * n_steps < 1:
                    merged[-1][1], merged[-1][2], merged[-1][4] = float(bounds[i + 1]), merged[-1][2] + part, i + 1
                else:
                    merged.append([float(bounds[i]), float(bounds[i + 1]), part, i, i + 1])
            return ([(start, end, max(1, round(part * n_steps)), float(values[i]), float(values[j]))
                     for start, end, part, i, j in merged], float(jumps.sum()))

        def _term_functions(self, x: torch.Tensor) -> list:
            """The saturating cosines f is made of, signed so that they sum to f.

            A contrastive f = cos(x, wrong) - cos(x, correct) is a difference of two cosines whose jumps
            partly cancel in f, so probing f alone misses where each of them changes (measured: gaps of
            10-30% of f at 32 steps). IG is linear in f, so each cosine is integrated along the same path
            with its own segments and the attributions are added.
            """
            terms = getattr(self.forward_func, "terms", None)
            if terms is None:
                return [self.forward_func]
            with torch.no_grad():
                count = terms(x).shape[1]
            if count == 1:
                return [self.forward_func]
            return [lambda z, j=j: (1.0 if j == 0 else -1.0) * terms(z)[:, j] for j in range(count)]

        def _integrate(self, func, x: torch.Tensor, base: torch.Tensor, n_steps: int, batch: int) -> torch.Tensor:
            """IG of one term over [0, 1]. Segments come from the probe; then, while the budget lasts, the
            segment with the largest own completeness gap (its attributions' sum against f(end) - f(start),
            both known) is halved and redone: adaptive quadrature. Counts the gradient evaluations."""
            point = lambda a: base + a * (x - base)  # noqa: E731

            def piece(start: float, end: float, steps: int, f_start: float, f_end: float) -> tuple:
                part = IntegratedGradients(func).attribute(point(end), baselines=point(start), n_steps=steps,
                                                           method="gausslegendre", internal_batch_size=batch)
                return abs(float(part.sum()) - (f_end - f_start)), start, end, steps, f_start, f_end, part

            plan, variation = self.segments(func, x, base, n_steps, batch)
            pieces = [piece(*segment) for segment in plan]
            spent = sum(p[3] for p in pieces)
            while True:
                worst = max(range(len(pieces)), key=lambda i: pieces[i][0])
                gap, start, end, steps, f_start, f_end, _ = pieces[worst]
                steps = max(steps, 2)
                if gap <= self.tolerance * variation or spent + 2 * steps > self.budget * n_steps:
                    break
                middle = (start + end) / 2
                with torch.no_grad():
                    f_middle = float(func(point(middle)))
                pieces[worst:worst + 1] = [piece(start, middle, steps, f_start, f_middle),
                                           piece(middle, end, steps, f_middle, f_end)]
                spent += 2 * steps
            self.steps_used += spent
            return sum(p[-1] for p in pieces)

        def _segmented(self, inputs: torch.Tensor, baselines: torch.Tensor, n_steps: int = 32,
                       internal_batch_size: int = 16, return_convergence_delta: bool = False, **_: object):
            inputs = inputs[0] if isinstance(inputs, tuple) else inputs  # NoiseTunnel passes tuples
            baselines = baselines[0] if isinstance(baselines, tuple) else baselines
            total = torch.zeros_like(inputs)
            for row in range(inputs.shape[0]):
                x, base = inputs[row:row + 1], baselines[row:row + 1] if baselines.shape[0] > 1 else baselines
                for func in self._term_functions(x):
                    total[row:row + 1] += self._integrate(func, x, base, n_steps, internal_batch_size)
            if not return_convergence_delta:
                return total
            with torch.no_grad():
                expected = self.forward_func(inputs) - self.forward_func(baselines.expand_as(inputs))
            return total, total.flatten(1).sum(1) - expected

        def attribute(self, inputs, baselines=None, **kwargs):  # same contract as Captum's IG.attribute
            return self._segmented(inputs, baselines, **kwargs)

        attribute.__wrapped__ = _segmented  # NoiseTunnel calls the undecorated function

    return SegmentedIntegratedGradients


class _Similarity(nn.Module):
    """cos(z, positive) - cos(z, negative) for a batch of common representations z."""

    def __init__(self, positive: torch.Tensor, negative: torch.Tensor | None) -> None:
        super().__init__()
        self.register_buffer("positive", F.normalize(positive.detach(), dim=-1))
        self.register_buffer("negative", None if negative is None else F.normalize(negative.detach(), dim=-1))

    def terms(self, z: torch.Tensor) -> torch.Tensor:
        """(batch, 1 or 2): cos(z, positive) and, in contrastive mode, cos(z, negative)."""
        z = F.normalize(z, dim=-1)
        anchors = self.positive[None] if self.negative is None else torch.stack([self.positive, self.negative])
        return z @ anchors.T

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        terms = self.terms(z)
        return terms[:, 0] - terms[:, 1] if terms.shape[1] == 2 else terms[:, 0]


class ImagePath(nn.Module):
    """Pixels -> trunk -> CHTN image stream -> common representation (or fc10 logits) -> similarity."""

    def __init__(self, trunk: nn.Module, model: nn.Module) -> None:
        super().__init__()
        self.trunk, self.model = trunk, model
        self.similarity: _Similarity | None = None
        self.logits = False

    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        features = self.trunk(pixels)[0]
        return self.model.image_logits(features) if self.logits else self.model.encode_image(features)

    def terms(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.similarity.terms(self.encode(pixels))

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.similarity(self.encode(pixels))


class TextPath(nn.Module):
    """Word-piece ids (MiniLM) and/or a TF-IDF vector -> CHTN text stream -> common representation -> similarity.

    `tfidf_input` is an identity layer so that LayerIntegratedGradients can interpolate the TF-IDF vector
    together with the word embeddings (one path, one completeness check).
    """

    def __init__(self, minilm: nn.Module | None, model: nn.Module) -> None:
        super().__init__()
        self.minilm, self.model = minilm, model
        self.tfidf_input = nn.Identity()
        self.similarity: _Similarity | None = None
        self.logits = False

    def encode(self, input_ids: torch.Tensor, tfidf: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        parts = [self.minilm(input_ids, attention_mask)] if self.minilm is not None else []
        if tfidf.shape[-1]:
            parts.append(self.tfidf_input(tfidf))
        features = torch.cat(parts, dim=-1)
        return self.model.text_logits(features) if self.logits else self.model.encode_text(features)

    def forward(self, input_ids: torch.Tensor, tfidf: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.similarity(self.encode(input_ids, tfidf, attention_mask))


class PairExplainer:
    """Attributions of pair similarities for one checkpoint (CPU by default; CUDA when given)."""

    def __init__(self, checkpoint: Checkpoint, device: str = "cpu", cache_dir: Path | None = None) -> None:
        from chtn.encoders import cached_text_encoder, image_transform
        from chtn.pipeline import checkpoint_image_trunk, checkpoint_text_featurizer

        self.checkpoint, self.device = checkpoint, torch.device(device)
        encoder = checkpoint.config.encoder
        self.model = checkpoint.model.to(self.device).eval()
        trunk = checkpoint_image_trunk(checkpoint).to(self.device).eval()
        self.image_path = ImagePath(trunk, self.model)
        self.featurizer = checkpoint_text_featurizer(checkpoint)
        minilm = cached_text_encoder(encoder.text_model_dir).to(self.device).eval() if encoder.uses_minilm else None
        self.text_path = TextPath(minilm, self.model)
        self.transform = image_transform()
        self.cache_dir = (cache_dir or default_cache_dir()) / "attributions"

    # ---- inputs -------------------------------------------------------------------------------------
    def pixels(self, item: Item) -> torch.Tensor:
        from chtn.images import open_rgb

        return self.transform(open_rgb(item.value, name=item.name or None))[None].to(self.device)

    def text_inputs(self, text: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list]:
        """(input_ids, tfidf vector, attention mask, word-piece character offsets) of one text."""
        text = text[:MAX_TEXT_CHARS]
        if not text.strip():
            raise CHTNError("The text is empty: there is nothing to attribute.")
        minilm = self.text_path.minilm
        if minilm is not None:
            encoded = minilm.tokenizer([text], truncation=True, max_length=minilm.max_length,
                                       return_offsets_mapping=True, return_tensors="pt")
            ids, mask = encoded["input_ids"], encoded["attention_mask"]
            offsets = [tuple(o) for o in encoded["offset_mapping"][0].tolist()]
        else:
            ids, mask, offsets = torch.zeros(1, 1, dtype=torch.long), torch.ones(1, 1, dtype=torch.long), []
        tfidf = self.featurizer.tfidf.encode([text]) if self.featurizer.tfidf is not None else np.zeros((1, 0))
        return (ids.to(self.device), torch.from_numpy(tfidf).float().to(self.device), mask.to(self.device), offsets)

    @torch.no_grad()
    def embed(self, item: Item, logits: bool = False) -> torch.Tensor:
        """Common representation (or fc10 logits) (1, d) of an item through the path the attributions use."""
        path = self.image_path if item.modality == "image" else self.text_path
        path.logits = logits
        try:
            if item.modality == "image":
                return path.encode(self.pixels(item))
            ids, tfidf, mask, _ = self.text_inputs(item.value)
            return path.encode(ids, tfidf, mask)
        finally:
            path.logits = False

    def similarity(self, a: Item, b: Item) -> float:
        return float(F.cosine_similarity(self.embed(a), self.embed(b)).item())

    # ---- attribution --------------------------------------------------------------------------------
    def explain(self, item: Item, other: Item, settings: Settings = Settings(),
                contrast: Item | None = None) -> Attribution:
        """Attribution of cos(item, other) [- cos(item, contrast)] to `item`'s input; cached on disk."""
        if contrast is not None and contrast.modality != other.modality:
            raise CHTNError("The contrast item must be of the same modality as the item it is compared with.")
        key = self._cache_key(item, other, settings, contrast)
        cached = self._read(key)
        if cached is not None:
            return cached
        started = time.perf_counter()
        if item.modality == "image":
            result = self._explain_image(item, other, contrast, settings)
        else:
            result = self._explain_text(item.value, self._similarity(other, contrast), settings)
        result.seconds = round(time.perf_counter() - started, 4)
        self._write(key, result)
        return result

    def _similarity(self, other: Item, contrast: Item | None, logits: bool = False) -> _Similarity:
        negative = self.embed(contrast, logits)[0] if contrast is not None else None
        return _Similarity(self.embed(other, logits)[0], negative).to(self.device)

    def _image_baseline(self, pixels: torch.Tensor, kind: str) -> torch.Tensor:
        if kind == "black":
            return torch.full_like(pixels, -1.0)  # black in Lite0's [-1, 1] input scale
        from torchvision.transforms.functional import gaussian_blur

        return gaussian_blur(pixels, kernel_size=[51, 51], sigma=[20.0, 20.0])

    def _explain_image(self, item: Item, other: Item, contrast: Item | None, s: Settings) -> Attribution:
        from captum.attr import NoiseTunnel, Occlusion

        path = self.image_path
        path.similarity = self._similarity(other, contrast)
        pixels = self.pixels(item)
        with torch.no_grad():
            value = float(path(pixels))
        delta, steps, base_value, target = None, None, None, "common"
        if s.method == "gradcam":
            heat, target = self._gradcam(pixels, other, contrast), "logits"
        elif s.method == "occlusion":
            attr = Occlusion(path).attribute(pixels, sliding_window_shapes=(3, s.window, s.window),
                                             strides=(3, s.stride, s.stride),
                                             baselines=self._image_baseline(pixels, s.baseline),
                                             perturbations_per_eval=s.internal_batch_size)
            heat = attr[0].mean(0)
        else:
            baseline = self._image_baseline(pixels, s.baseline)
            with torch.no_grad():
                base_value = float(path(baseline))
            ig = _segmented_ig_class()(path)
            ig.budget = 3 if s.refine else 1
            if s.method == "ig":
                attr, d = ig.attribute(pixels, baselines=baseline, n_steps=s.n_steps,
                                       internal_batch_size=s.internal_batch_size, return_convergence_delta=True)
            else:
                torch.manual_seed(0)  # NoiseTunnel draws its noise from the global generator
                attr, d = NoiseTunnel(ig).attribute(
                    pixels, nt_type="smoothgrad", nt_samples=s.nt_samples, nt_samples_batch_size=1,
                    stdevs=s.nt_stdev, baselines=baseline, n_steps=s.n_steps,
                    internal_batch_size=s.internal_batch_size, return_convergence_delta=True)
            heat, delta = attr[0].sum(0), float(d.abs().max())
            steps = ig.steps_used // (s.nt_samples if s.method == "smoothgrad" else 1)  # incl. refinements
        return Attribution("image", s.method, value, base_value, delta, steps, 0.0,
                           heatmap=heat.detach().float().cpu().numpy(), image=_display_image(pixels), target=target)

    def _gradcam(self, pixels: torch.Tensor, other: Item, contrast: Item | None) -> torch.Tensor:
        """Grad-CAM on `bn2` of the same similarity taken between fc10 logits instead of softmax outputs.

        Grad-CAM weighs channels by the local gradient. For a confident pair (cos of the softmax outputs
        near 1) the softmax is saturated, its gradient vanishes and the map comes out blank or on the
        background. The logits carry the same ranking signal without saturating (measured on the sample:
        no blank maps, product/background mass up to 3x where the softmax target gave blanks).
        """
        from captum.attr import LayerAttribution, LayerGradCam

        path, saved = self.image_path, self.image_path.similarity
        path.similarity = self._similarity(other, contrast, logits=True)
        path.logits = True
        try:
            cam = LayerGradCam(path, path.trunk.net.bn2).attribute(pixels, relu_attributions=True)
        finally:
            path.logits, path.similarity = False, saved
        return LayerAttribution.interpolate(cam, pixels.shape[-2:], interpolate_mode="bilinear")[0, 0]

    def _explain_text(self, text: str, similarity: _Similarity, s: Settings) -> Attribution:
        from captum.attr import LayerIntegratedGradients

        path = self.text_path
        path.similarity = similarity
        text = text[:MAX_TEXT_CHARS]
        ids, tfidf, mask, offsets = self.text_inputs(text)
        base_ids = ids.clone()
        if path.minilm is not None:  # [CLS] PAD ... PAD [SEP]: same length and positions, no word content
            base_ids[:, 1:-1] = path.minilm.tokenizer.pad_token_id
        base_tfidf = torch.zeros_like(tfidf)
        layers = ([path.minilm.net.embeddings.word_embeddings] if path.minilm is not None else []) + \
            ([path.tfidf_input] if tfidf.shape[-1] else [])
        with warnings.catch_warnings():  # Captum warns about any layer list; these two are independent inputs
            warnings.simplefilter("ignore", UserWarning)
            lig = LayerIntegratedGradients(path, layers if len(layers) > 1 else layers[0])
        attrs, d = lig.attribute((ids, tfidf), baselines=(base_ids, base_tfidf), additional_forward_args=(mask,),
                                 n_steps=s.n_steps, method="gausslegendre",
                                 internal_batch_size=s.internal_batch_size, return_convergence_delta=True)
        attrs = attrs if isinstance(attrs, list) else [attrs]
        piece_scores = attrs[0][0].sum(-1).detach().cpu().numpy() if path.minilm is not None else None
        tfidf_scores = attrs[-1][0].detach().cpu().numpy() if tfidf.shape[-1] else None
        with torch.no_grad():
            value, base_value = float(path(ids, tfidf, mask)), float(path(base_ids, base_tfidf, mask))
        words = word_scores(text, offsets, piece_scores, self.featurizer.tfidf, tfidf_scores)
        return Attribution("text", "layer_ig", value, base_value, float(d.abs().max()), s.n_steps, 0.0,
                           words=words, text=text)

    # ---- disk cache ---------------------------------------------------------------------------------
    def _cache_key(self, item: Item, other: Item, settings: Settings, contrast: Item | None) -> str:
        parts = {"checkpoint": self.checkpoint.digest, "item": [item.modality, item.content_key()],
                 "other": [other.modality, other.content_key()],
                 "contrast": [contrast.modality, contrast.content_key()] if contrast else None,
                 "settings": asdict(settings) if item.modality == "image" else
                 {"n_steps": settings.n_steps, "internal_batch_size": settings.internal_batch_size}, "version": 2}
        return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:32]

    def _read(self, key: str) -> Attribution | None:
        path = self.cache_dir / f"{key}.npz"
        if not path.exists():
            return None
        with np.load(path, allow_pickle=False) as stored:
            meta = json.loads(str(stored["meta"]))
            words = [Word(**w) for w in meta.pop("words")]
            return Attribution(**meta, words=words, heatmap=stored["heatmap"] if "heatmap" in stored else None,
                               image=stored["image"] if "image" in stored else None)

    def _write(self, key: str, result: Attribution) -> None:
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        meta = {k: v for k, v in asdict(result).items() if k not in ("heatmap", "image")}
        arrays = {name: value for name, value in (("heatmap", result.heatmap), ("image", result.image))
                  if value is not None}
        tmp = self.cache_dir / f"{key}.tmp.npz"
        np.savez(tmp, meta=json.dumps(meta), **arrays)
        tmp.replace(self.cache_dir / f"{key}.npz")


def _display_image(pixels: torch.Tensor) -> np.ndarray:
    """The 224x224 RGB image the model saw (from Lite0's [-1, 1] scale back to uint8)."""
    return ((pixels[0].detach().cpu().permute(1, 2, 0).numpy() + 1.0) * 127.5).clip(0, 255).astype(np.uint8)


def rank_correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation of two attribution maps (used by the randomisation sanity check)."""
    from scipy.stats import spearmanr

    return float(spearmanr(np.ravel(a), np.ravel(b)).statistic)


def explainer_items(ids: Sequence[str], texts: Sequence[str], paths: Sequence[Path], row: int) -> tuple[Item, Item]:
    """(image item, text item) of one dataset row."""
    return Item("image", str(paths[row]), ids[row]), Item("text", texts[row], ids[row])
