"""Datasets -> features -> `TrainInputs` and checkpoint metadata; shared by the CLI and the benchmarks."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from chtn.config import CHTNConfig
from chtn.data import PairDataset, SourceDataset
from chtn.encoders import cached_image_trunk, cached_text_encoder
from chtn.errors import CHTNError
from chtn.features import FeatureCache, image_features, pick_device, transformer_text_features, trunk_prefix_maps
from chtn.finetune import TrunkTail
from chtn.text_choice import choose_text_encoder
from chtn.tower import TextEncoder
from chtn.train import FeatureSet, TrainInputs


def _feature_set(data: PairDataset, text: TextEncoder, image_feats: np.ndarray, cache: FeatureCache) -> FeatureSet:
    return FeatureSet(image_feats, text.features(data.texts, cache), data.label_index)


def build_train_inputs(
    config: CHTNConfig, pairs: PairDataset, source: SourceDataset | None, cache: FeatureCache, device: str | None = None
) -> tuple[CHTNConfig, TrainInputs, dict[str, Any], tuple | None]:
    """Extract (cached) features and size the model to the data.

    Returns the config with data-dependent widths filled in, the inputs, the checkpoint metadata
    and the TF-IDF state (None for transformer text features).
    """
    train, val = pairs.split("train"), pairs.split("val")
    if len(train) == 0:
        raise CHTNError(f"{pairs.source} has no rows with split 'train'.")
    device = str(pick_device(device))
    trunk = cached_image_trunk(config.encoder.image_model, config.encoder.image_weights or None, device)
    workers = config.train.num_workers
    stages = config.encoder.finetune_stages
    tail = TrunkTail(trunk, stages) if stages else None

    def feats(paths):  # pooled features of the frozen trunk, or the maps entering the units to fine-tune
        if stages:
            return trunk_prefix_maps(paths, cache, trunk, stages, num_workers=workers)
        return image_features(paths, cache, trunk, num_workers=workers)[0]

    train_images = feats(train.image_paths)
    encoder_dir = config.encoder.text_model_dir
    encoder, text_choice = choose_text_encoder(
        config,
        train.texts,
        train_images if tail is None else tail.pool_maps(train_images),
        train.label_index,
        list(pairs.label_names),
        lambda: transformer_text_features(train.texts, cache, cached_text_encoder(encoder_dir, device)),
        device,
    )
    config = dataclasses.replace(config, encoder=encoder)
    featurizer = TextEncoder.fit(config.encoder, train.texts, device)
    train_set = _feature_set(train, featurizer, train_images, cache)
    val_set = _feature_set(val, featurizer, feats(val.image_paths), cache) if len(val) else None
    model = dataclasses.replace(
        config.model,
        image_dim=trunk.feature_dim,
        text_dim=train_set.text.shape[1],
        num_classes=len(pairs.label_names),
        num_source_classes=len(source.label_names) if source is not None else 0,
    )
    config = dataclasses.replace(config, model=model)
    inputs = TrainInputs(train_set, val_set, list(pairs.label_names), image_tail=tail)
    meta: dict[str, Any] = {
        "label_names": list(pairs.label_names),
        "encoders": {"image": trunk.identity, "text": featurizer.identity},
        "dataset": {
            "path": pairs.source,
            "fingerprint": pairs.fingerprint(),
            "n_train": len(train),
            "n_val": len(val),
            "n_test": len(pairs.split("test")),
        },
        "source": None,
        "text_choice": text_choice,
    }
    if source is not None:
        inputs.source_image = feats(source.image_paths)
        inputs.source_labels = source.label_index
        inputs.source_label_names = list(source.label_names)
        meta["source"] = {
            "path": source.source,
            "fingerprint": source.fingerprint(),
            "n_images": len(source),
            "label_names": list(source.label_names),
        }
    tfidf = featurizer.tfidf.state() if featurizer.tfidf is not None else None
    return config, inputs, meta, tfidf
