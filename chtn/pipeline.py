"""From files to common representations: frozen encoders (cached) + a CHTN checkpoint."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from chtn.checkpoint import Checkpoint
from chtn.config import EncoderConfig
from chtn.data import PairDataset
from chtn.encoders import ImageTrunk, TfidfTextEncoder, cached_image_trunk
from chtn.features import FeatureCache, Progress, image_features, transformer_text_features


class TextFeaturizer:
    """Texts -> the feature vectors CHTN's text stream takes: MiniLM, TF-IDF, or both concatenated."""

    def __init__(self, config: EncoderConfig, tfidf: TfidfTextEncoder | None = None) -> None:
        self.config, self.tfidf = config, tfidf

    @classmethod
    def fit(cls, config: EncoderConfig, train_texts: Sequence[str]) -> "TextFeaturizer":
        """TF-IDF learns its vocabulary from the training texts; MiniLM needs nothing."""
        if config.uses_tfidf:
            return cls(config, TfidfTextEncoder(config.tfidf_analyzer, config.tfidf_ngram,
                                                config.tfidf_max_features).fit(train_texts))
        return cls(config)

    def _minilm(self):
        from chtn.encoders import cached_text_encoder

        return cached_text_encoder(self.config.text_model_dir)

    @property
    def identity(self) -> str:
        parts = [self._minilm().identity] if self.config.uses_minilm else []
        return "+".join(parts + ([self.tfidf.identity] if self.tfidf is not None else []))

    def __call__(self, texts: Sequence[str], cache: FeatureCache, device: str | None = None,
                 progress: Progress | None = None) -> np.ndarray:
        parts = []
        if self.config.uses_minilm:
            parts.append(transformer_text_features(texts, cache, self._minilm(), device, progress=progress))
        if self.tfidf is not None:
            parts.append(self.tfidf.encode(texts))
        return np.hstack(parts)


def checkpoint_text_featurizer(checkpoint: Checkpoint) -> TextFeaturizer:
    config = checkpoint.config.encoder
    state = checkpoint.tfidf_state
    if state is None:
        return TextFeaturizer(config)
    return TextFeaturizer(config, TfidfTextEncoder.from_state(state[0], state[1], config.tfidf_analyzer,
                                                              config.tfidf_ngram))


_TUNED_TRUNKS: dict[str, ImageTrunk] = {}


def checkpoint_image_trunk(checkpoint: Checkpoint) -> ImageTrunk:
    """The image trunk a checkpoint's image stream expects: the shared frozen one, or (once per checkpoint)
    a copy with the checkpoint's fine-tuned last units, whose features are cached under their own identity."""
    encoder = checkpoint.config.encoder
    if not checkpoint.trunk_state:
        return cached_image_trunk(encoder.image_model, encoder.image_weights or None)
    if checkpoint.digest not in _TUNED_TRUNKS:
        if len(_TUNED_TRUNKS) >= 4:  # a trunk is ~20 MB; a review compares a few checkpoints at most
            _TUNED_TRUNKS.pop(next(iter(_TUNED_TRUNKS)))
        trunk = ImageTrunk(encoder.image_model, encoder.image_weights or None)
        _TUNED_TRUNKS[checkpoint.digest] = trunk.load_tail(checkpoint.trunk_state, checkpoint.digest)
    return _TUNED_TRUNKS[checkpoint.digest]


class Embedder:
    """Common-space embeddings of images and texts for one checkpoint."""

    def __init__(self, checkpoint: Checkpoint, cache: FeatureCache | None = None, device: str | None = None) -> None:
        self.checkpoint, self.cache, self.device = checkpoint, cache or FeatureCache(), device
        self.text_featurizer = checkpoint_text_featurizer(checkpoint)

    @torch.inference_mode()
    def _project(self, features: np.ndarray, encode, batch: int = 4096) -> np.ndarray:
        parts = [encode(torch.from_numpy(features[i:i + batch])).numpy() for i in range(0, len(features), batch)]
        return np.concatenate(parts) if parts else np.zeros((0, self.checkpoint.config.model.num_classes), np.float32)

    def image_features(self, paths: Sequence[Path], progress: Progress | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(trunk features, ImageNet logits) of image files, through the checkpoint's (possibly fine-tuned) trunk."""
        return image_features(paths, self.cache, checkpoint_image_trunk(self.checkpoint), self.device,
                              progress=progress)

    def embed_images(self, paths: Sequence[Path], progress: Progress | None = None) -> np.ndarray:
        return self._project(self.image_features(paths, progress)[0], self.checkpoint.model.encode_image)

    def embed_texts(self, texts: Sequence[str], progress: Progress | None = None) -> np.ndarray:
        features = self.text_featurizer(texts, self.cache, self.device, progress)
        return self._project(features, self.checkpoint.model.encode_text)

    def embed_pairs(self, data: PairDataset, progress: Progress | None = None) -> tuple[np.ndarray, np.ndarray]:
        self.checkpoint.check_labels(data.labels)
        return self.embed_images(data.image_paths, progress), self.embed_texts(data.texts)
