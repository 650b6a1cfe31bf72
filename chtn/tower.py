"""One inference tower per checkpoint: image files or pixels, texts or word pieces -> the common space.

As open_clip's `create_model_and_transforms`, one factory (`create_tower`) returns the whole path of a
checkpoint (image trunk, text encoder, CHTN head, image transform), and every caller uses it: the
embedder with its disk cache (dashboard, CLI), the attributions, the benchmarks.

A tower is frozen and immutable after construction, and its methods take every input as an argument,
so one tower serves several threads (dashboard sessions) at once. Towers are cached per (checkpoint
content, device): a module shared by callers is never moved between devices.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch

from chtn.checkpoint import Checkpoint
from chtn.config import EncoderConfig
from chtn.data import PairDataset
from chtn.encoders import (
    BUILD_LOCK,
    ImageTrunk,
    TfidfTextEncoder,
    TransformerTextEncoder,
    cached_image_trunk,
    cached_text_encoder,
    image_transform,
)
from chtn.features import FeatureCache, image_features, pick_device, transformer_text_features
from chtn.images import open_rgb
from chtn.offline import check_local_models
from chtn.progress import Progress


@dataclass(frozen=True)
class TextInputs:
    """One text as the text stream reads it."""

    input_ids: torch.Tensor  # (1, L) MiniLM word pieces ((1, 1) placeholder without MiniLM)
    attention_mask: torch.Tensor  # (1, L)
    tfidf: torch.Tensor  # (1, V) TF-IDF vector ((1, 0) without TF-IDF)
    offsets: list[tuple[int, int]]  # character span of each word piece (empty without MiniLM)


class TextEncoder:
    """Texts -> the features CHTN's text stream takes: MiniLM, TF-IDF, or both concatenated.

    The same object featurizes training texts (`fit`) and a checkpoint's texts (`from_checkpoint`).
    """

    def __init__(self, config: EncoderConfig, tfidf: TfidfTextEncoder | None = None, device: str = "cpu") -> None:
        self.config, self.tfidf, self.device = config, tfidf, torch.device(device)
        self.minilm: TransformerTextEncoder | None = (
            cached_text_encoder(config.text_model_dir, str(self.device)) if config.uses_minilm else None
        )

    @classmethod
    def fit(cls, config: EncoderConfig, train_texts: Sequence[str], device: str = "cpu") -> TextEncoder:
        """TF-IDF learns its vocabulary from the training texts; MiniLM needs nothing."""
        tfidf = None
        if config.uses_tfidf:
            tfidf = TfidfTextEncoder(config.tfidf_analyzer, config.tfidf_ngram, config.tfidf_max_features)
            tfidf.fit(train_texts)
        return cls(config, tfidf, device)

    @classmethod
    def from_checkpoint(cls, checkpoint: Checkpoint, device: str = "cpu") -> TextEncoder:
        config, state = checkpoint.config.encoder, checkpoint.tfidf_state
        tfidf = (
            None
            if state is None
            else TfidfTextEncoder.from_state(state[0], state[1], config.tfidf_analyzer, config.tfidf_ngram)
        )
        return cls(config, tfidf, device)

    @property
    def identity(self) -> str:
        parts = [self.minilm.identity] if self.minilm is not None else []
        return "+".join(parts + ([self.tfidf.identity] if self.tfidf is not None else []))

    def features(self, texts: Sequence[str], cache: FeatureCache, progress: Progress | None = None) -> np.ndarray:
        """(n, text_dim) features of a batch of texts (MiniLM's part from the disk cache when present)."""
        parts = []
        if self.minilm is not None:
            parts.append(transformer_text_features(texts, cache, self.minilm, progress=progress))
        if self.tfidf is not None:
            parts.append(self.tfidf.encode(texts))
        return np.hstack(parts)

    def inputs(self, text: str) -> TextInputs:
        """One text tokenized for the differentiable path (`forward`), with each word piece's span."""
        if self.minilm is not None:
            encoded = self.minilm.tokenize([text], offsets=True)
            ids, mask = encoded["input_ids"], encoded["attention_mask"]
            offsets = [tuple(o) for o in encoded["offset_mapping"][0].tolist()]
        else:
            ids, mask, offsets = torch.zeros(1, 1, dtype=torch.long), torch.ones(1, 1, dtype=torch.long), []
        tfidf = self.tfidf.encode([text]) if self.tfidf is not None else np.zeros((1, 0), np.float32)
        return TextInputs(
            ids.to(self.device), mask.to(self.device), torch.from_numpy(tfidf).float().to(self.device), offsets
        )

    def word_embeddings(self, input_ids: torch.Tensor) -> torch.Tensor:
        """MiniLM's word-piece embeddings of `input_ids` ((1, L, 0) without MiniLM)."""
        if self.minilm is None:
            return torch.zeros(*input_ids.shape, 0, device=input_ids.device)
        return self.minilm.word_embeddings(input_ids)

    def forward(self, word_embeddings: torch.Tensor, attention_mask: torch.Tensor, tfidf: torch.Tensor) -> torch.Tensor:
        """Differentiable text features from word-piece embeddings and a TF-IDF vector."""
        parts = [] if self.minilm is None else [self.minilm(None, attention_mask, inputs_embeds=word_embeddings)]
        if tfidf.shape[-1]:
            parts.append(tfidf)
        return torch.cat(parts, dim=-1)


def _image_trunk(checkpoint: Checkpoint, device: str) -> ImageTrunk:
    """The trunk a checkpoint's image stream expects: the shared frozen one, or a copy with its fine-tuned
    last units, whose features are cached under their own identity."""
    encoder = checkpoint.config.encoder
    if not checkpoint.trunk_weights:
        return cached_image_trunk(encoder.image_model, encoder.image_weights or None, device)
    trunk = ImageTrunk(encoder.image_model, encoder.image_weights or None).load_tail(
        checkpoint.trunk_state, checkpoint.digest
    )
    return trunk.to(device).to(memory_format=torch.channels_last)


class Tower:
    """Image trunk + text encoder + CHTN head of one checkpoint, on one device, frozen, in eval mode."""

    def __init__(self, checkpoint: Checkpoint, device: str = "cpu") -> None:
        encoder = checkpoint.config.encoder  # both models' references, refused before either one is built
        check_local_models(encoder.image_model, encoder.image_weights, encoder.text_model_dir, encoder.text)
        self.checkpoint, self.device = checkpoint, torch.device(device)
        self.trunk = _image_trunk(checkpoint, device)
        self.text = TextEncoder.from_checkpoint(checkpoint, device)
        # The checkpoint's own head is shared by every caller on the CPU; another device gets a copy.
        self.head = checkpoint.model if self.device.type == "cpu" else copy.deepcopy(checkpoint.model).to(device)
        self.transform = image_transform()

    # ---- differentiable paths (attributions); every input is an argument ----------------------------
    def pixels(self, image: str | Path | BinaryIO, name: str | None = None) -> torch.Tensor:
        """(1, 3, 224, 224) model input of an image file or upload, on the tower's device."""

        return self.transform(open_rgb(image, name=name))[None].to(self.device)

    def image_feature_map(self, pixels: torch.Tensor) -> torch.Tensor:
        """The trunk's last conv block (B, C, h, w): where Grad-CAM looks."""
        return self.trunk.forward_features(pixels)

    def encode_feature_map(self, feature_map: torch.Tensor, logits: bool = False) -> torch.Tensor:
        """Common representation (or, with `logits`, the pre-softmax fc10 scores) from a feature map."""
        pooled = self.trunk.pool(feature_map)
        return self.head.image_logits(pooled) if logits else self.head.encode_image(pooled)

    def encode_image(self, pixels: torch.Tensor, logits: bool = False) -> torch.Tensor:
        return self.encode_feature_map(self.image_feature_map(pixels), logits)

    def encode_text(
        self, word_embeddings: torch.Tensor, attention_mask: torch.Tensor, tfidf: torch.Tensor, logits: bool = False
    ) -> torch.Tensor:
        features = self.text.forward(word_embeddings, attention_mask, tfidf)
        return self.head.text_logits(features) if logits else self.head.encode_text(features)

    # ---- batches of files and texts, through the disk cache -----------------------------------------
    def image_features(
        self, paths: Sequence[Path], cache: FeatureCache | None = None, progress: Progress | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """(trunk features, ImageNet logits) of image files through this checkpoint's trunk."""
        return image_features(paths, cache or FeatureCache(), self.trunk, progress=progress)

    @torch.inference_mode()
    def _project(
        self, features: np.ndarray, encode: Callable[[torch.Tensor], torch.Tensor], batch: int = 4096
    ) -> np.ndarray:
        parts = [
            encode(torch.from_numpy(features[i : i + batch]).to(self.device)).float().cpu().numpy()
            for i in range(0, len(features), batch)
        ]
        return np.concatenate(parts) if parts else np.zeros((0, self.checkpoint.config.model.num_classes), np.float32)

    def embed_image_features(self, features: np.ndarray) -> np.ndarray:
        """Common representations (n, d) of trunk features (n, image_dim)."""
        return self._project(features, self.head.encode_image)

    def embed_text_features(self, features: np.ndarray) -> np.ndarray:
        """Common representations (n, d) of text features (n, text_dim)."""
        return self._project(features, self.head.encode_text)

    def image_activations(self, features: np.ndarray, source: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """fc6 and fc7 activations (n, hidden) for trunk features (n, image_dim): of the target image stream, or
        with `source` of the stream the source went through in training (where MMD compares the two)."""
        layers = self.head.source_activations if source else self.head.image_activations
        return self._project(features, lambda x: layers(x)[0]), self._project(features, lambda x: layers(x)[1])

    def source_probabilities(self, features: np.ndarray) -> np.ndarray:
        """The checkpoint's source classifier on trunk features (n, n_source_classes); needs a source."""
        return self._project(features, self.head.source_probabilities)

    def embed_images(
        self, paths: Sequence[Path], cache: FeatureCache | None = None, progress: Progress | None = None
    ) -> np.ndarray:
        return self.embed_image_features(self.image_features(paths, cache, progress)[0])

    def embed_texts(self, texts: Sequence[str], cache: FeatureCache | None = None) -> np.ndarray:
        return self.embed_text_features(self.text.features(texts, cache or FeatureCache()))

    def embed_pairs(
        self, data: PairDataset, cache: FeatureCache | None = None, progress: Progress | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """(image, text) common representations of every pair; refuses categories the model does not know."""
        self.checkpoint.check_labels(data.labels)
        return self.embed_images(data.image_paths, cache, progress), self.embed_texts(data.texts, cache)


def create_tower(checkpoint: Checkpoint, device: str | None = None) -> Tower:
    """The tower of a checkpoint on a device (default: CUDA when present), built once per process even when
    several sessions ask at the same moment (they wait for the one build)."""
    with BUILD_LOCK:
        return _cached_tower(checkpoint, str(pick_device(device)))


@functools.lru_cache(maxsize=8)  # a tower is ~30 MB; a review compares a few checkpoints at most
def _cached_tower(checkpoint: Checkpoint, device: str) -> Tower:
    return Tower(checkpoint, device)
