"""Why did this query retrieve this result? Captum attributions of a pair's similarity in the common space.

The attributed quantity is f(x) = cos(encode(x), encode(other)) for the side x being explained, the other
side held fixed (detached). In contrastive mode f(x) = cos(x, wrong) - cos(x, correct): what pulled the
wrong item ahead of the right one. Both go through the checkpoint's tower (`chtn.tower`): pixels ->
EfficientNet trunk -> CHTN image stream -> common representation, or word-piece embeddings (MiniLM) and
the TF-IDF vector -> CHTN text stream -> common representation.

One explainer serves every dashboard session at once: it holds only the shared, frozen tower and a cache
folder; each attribution builds its own objective (`analysis.attribution.objective`) and its own noise generator.
Results are cached on disk (`analysis.attribution.cache`).
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path

import numpy as np
import torch

from analysis.attribution import cache as attribution_cache
from analysis.attribution.objective import ImageObjective, TextObjective, anchors
from analysis.attribution.spans import word_scores
from analysis.attribution.types import Attribution, Item, Settings
from chtn.checkpoint import Checkpoint
from chtn.errors import CHTNError
from chtn.hashing import default_cache_dir
from chtn.tower import create_tower

MAX_TEXT_CHARS = 5000  # attribution of a longer text is truncated (MiniLM reads 256 word-pieces anyway)


class PairExplainer:
    """Attributions of pair similarities for one checkpoint, on its tower's device. Safe to share."""

    def __init__(self, checkpoint: Checkpoint, device: str | None = None, cache_dir: Path | None = None) -> None:
        self.tower = create_tower(checkpoint, device)
        self.cache_dir = (cache_dir or default_cache_dir()) / "attributions"

    # ---- common representations through the attribution path ----------------------------------------
    @torch.no_grad()
    def embed(self, item: Item, logits: bool = False) -> torch.Tensor:
        """Common representation (or fc10 logits) (1, d) of an item through the path the attributions use."""
        if item.modality == "image":
            return self.tower.encode_image(self.tower.pixels(item.value, item.name or None), logits)
        inputs = self.tower.text.inputs(_truncated(item.value))
        return self.tower.encode_text(
            self.tower.text.word_embeddings(inputs.input_ids), inputs.attention_mask, inputs.tfidf, logits
        )

    def similarity(self, a: Item, b: Item) -> float:
        return float(torch.nn.functional.cosine_similarity(self.embed(a), self.embed(b)).item())

    def _anchors(self, other: Item, contrast: Item | None, logits: bool = False) -> torch.Tensor:
        return anchors(self.embed(other, logits)[0], None if contrast is None else self.embed(contrast, logits)[0])

    # ---- attribution ----------------------------------------------------------------------------------
    def explain(
        self, item: Item, other: Item, settings: Settings = Settings(), contrast: Item | None = None
    ) -> Attribution:
        """Attribution of cos(item, other) [- cos(item, contrast)] to `item`'s input; cached on disk."""
        if contrast is not None and contrast.modality != other.modality:
            raise CHTNError("The contrast item must be of the same modality as the item it is compared with.")
        key = attribution_cache.cache_key(self.tower.checkpoint.digest, item, other, settings, contrast)
        cached = attribution_cache.read(self.cache_dir, key)
        if cached is not None:
            return cached
        started = time.perf_counter()
        if item.modality == "image":
            result = self._explain_image(item, other, contrast, settings)
        else:
            result = self._explain_text(_truncated(item.value), self._anchors(other, contrast), settings)
        result.seconds = round(time.perf_counter() - started, 4)
        attribution_cache.write(self.cache_dir, key, result)
        return result

    def _image_baseline(self, pixels: torch.Tensor, kind: str) -> torch.Tensor:
        if kind == "black":
            return torch.full_like(pixels, -1.0)  # black in Lite0's [-1, 1] input scale
        from torchvision.transforms.functional import gaussian_blur

        return gaussian_blur(pixels, kernel_size=[51, 51], sigma=[20.0, 20.0])

    def _explain_image(self, item: Item, other: Item, contrast: Item | None, s: Settings) -> Attribution:
        pixels = self.tower.pixels(item.value, item.name or None)
        objective, anchor = ImageObjective(self.tower), self._anchors(other, contrast)
        with torch.no_grad():
            value = float(objective(pixels, anchor))
        delta, steps, base_value, target = None, None, None, "common"
        if s.method == "gradcam":
            heat, target = self._gradcam(pixels, other, contrast), "logits"
        elif s.method == "occlusion":
            from captum.attr import Occlusion

            attr = Occlusion(objective).attribute(
                pixels,
                sliding_window_shapes=(3, s.window, s.window),
                strides=(3, s.stride, s.stride),
                baselines=self._image_baseline(pixels, s.baseline),
                additional_forward_args=(anchor,),
                perturbations_per_eval=s.internal_batch_size,
            )
            heat = attr[0].mean(0)
        else:
            baseline = self._image_baseline(pixels, s.baseline)
            with torch.no_grad():
                base_value = float(objective(baseline, anchor))
            heat, delta, steps = self._integrated_gradients(objective, pixels, baseline, anchor, s)
        return Attribution(
            "image",
            s.method,
            value,
            base_value,
            delta,
            steps,
            0.0,
            heatmap=heat.detach().float().cpu().numpy(),
            image=_display_image(pixels),
            target=target,
        )

    def _integrated_gradients(
        self, objective: ImageObjective, pixels: torch.Tensor, baseline: torch.Tensor, anchor: torch.Tensor, s: Settings
    ) -> tuple[torch.Tensor, float, int]:
        """(pixel map summed over colour channels, |convergence delta|, gradient evaluations per input).

        SmoothGrad averages IG over noisy copies of the input. Written here rather than with Captum's
        NoiseTunnel, which draws its noise from torch's global generator (shared by every thread, so two
        sessions would perturb each other's noise); this noise comes from a private, seeded generator.
        """
        # Lazy: quadrature imports Captum (seconds), which only the IG and SmoothGrad methods need.
        from analysis.attribution.quadrature import SegmentedIntegratedGradients

        ig = SegmentedIntegratedGradients(objective, budget=3 if s.refine else 1)
        copies = [pixels]
        if s.method == "smoothgrad":
            generator = torch.Generator().manual_seed(s.nt_seed)
            copies = [
                pixels + s.nt_stdev * torch.randn(pixels.shape, generator=generator).to(pixels.device)
                for _ in range(s.nt_samples)
            ]
        total, delta = torch.zeros_like(pixels), 0.0
        for noisy in copies:
            attr, d = ig.attribute(
                noisy,
                baselines=baseline,
                additional_forward_args=(anchor,),
                n_steps=s.n_steps,
                internal_batch_size=s.internal_batch_size,
                return_convergence_delta=True,
            )
            total += attr / len(copies)
            delta = max(delta, float(d.abs().max()))
        return total[0].sum(0), delta, ig.steps_used // len(copies)  # steps include refinements

    def _gradcam(self, pixels: torch.Tensor, other: Item, contrast: Item | None) -> torch.Tensor:
        """Grad-CAM on the trunk's last conv block of the same similarity taken between fc10 logits.

        Grad-CAM weighs channels by the local gradient. For a confident pair (cos of the softmax outputs
        near 1) the softmax is saturated, its gradient vanishes and the map comes out blank or on the
        background. The logits carry the same ranking signal without saturating (measured on the sample:
        no blank maps, product/background mass up to 3x where the softmax target gave blanks).
        """
        from captum.attr import LayerAttribution, LayerGradCam

        objective = ImageObjective(self.tower, logits=True)
        cam = LayerGradCam(objective, objective.feature_map).attribute(
            pixels, additional_forward_args=(self._anchors(other, contrast, logits=True),), relu_attributions=True
        )
        return LayerAttribution.interpolate(cam, pixels.shape[-2:], interpolate_mode="bilinear")[0, 0]

    def _explain_text(self, text: str, anchor: torch.Tensor, s: Settings) -> Attribution:
        from captum.attr import LayerIntegratedGradients

        encoder = self.tower.text
        inputs = encoder.inputs(text)
        ids, tfidf, mask = inputs.input_ids, inputs.tfidf, inputs.attention_mask
        base_ids = ids.clone()
        if encoder.minilm is not None:  # [CLS] PAD ... PAD [SEP]: same length and positions, no word content
            base_ids[:, 1:-1] = encoder.minilm.tokenizer.pad_token_id
        base_tfidf = torch.zeros_like(tfidf)
        objective = TextObjective(self.tower)
        layers = ([objective.words] if encoder.minilm is not None else []) + (
            [objective.tfidf] if tfidf.shape[-1] else []
        )
        with warnings.catch_warnings():  # Captum warns about any layer list; these two are independent inputs
            warnings.simplefilter("ignore", UserWarning)
            lig = LayerIntegratedGradients(objective, layers if len(layers) > 1 else layers[0])
        attrs, d = lig.attribute(
            (ids, tfidf),
            baselines=(base_ids, base_tfidf),
            additional_forward_args=(mask, anchor),
            n_steps=s.n_steps,
            method="gausslegendre",
            internal_batch_size=s.internal_batch_size,
            return_convergence_delta=True,
        )
        attrs = attrs if isinstance(attrs, list) else [attrs]
        piece_scores = attrs[0][0].sum(-1).detach().cpu().numpy() if encoder.minilm is not None else None
        tfidf_scores = attrs[-1][0].detach().cpu().numpy() if tfidf.shape[-1] else None
        with torch.no_grad():
            value, base_value = (
                float(objective(ids, tfidf, mask, anchor)),
                float(objective(base_ids, base_tfidf, mask, anchor)),
            )
        words = word_scores(text, inputs.offsets, piece_scores, encoder.tfidf, tfidf_scores)
        return Attribution(
            "text", "layer_ig", value, base_value, float(d.abs().max()), s.n_steps, 0.0, words=words, text=text
        )


def _truncated(text: str) -> str:
    text = text[:MAX_TEXT_CHARS]
    if not text.strip():
        raise CHTNError("The text is empty: there is nothing to attribute.")
    return text


def _display_image(pixels: torch.Tensor) -> np.ndarray:
    """The 224x224 RGB image the model saw (from Lite0's [-1, 1] scale back to uint8)."""
    return ((pixels[0].detach().cpu().permute(1, 2, 0).numpy() + 1.0) * 127.5).clip(0, 255).astype(np.uint8)


def rank_correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation of two attribution maps (used by the randomisation sanity check)."""
    from scipy.stats import spearmanr

    return float(spearmanr(np.ravel(a), np.ravel(b)).statistic)
