"""Write the golden checkpoints and their expected outputs. Run ONCE, from the repository root:

    python -m tests.golden.make_golden

Never regenerate them to make a failing test pass: tests/test_checkpoint.py fails when a checkpoint written
in this format no longer loads or no longer computes the same outputs, which is the regression they catch.
Two tiny networks (a few KB each) with TF-IDF vocabularies: a single CHTN with its own source stream and
softmax common space, and a two-member ensemble sharing the image stream with the fc9 common space.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import torch

from chtn.checkpoint import save_checkpoint
from chtn.config import CHTNConfig, EncoderConfig, ModelConfig
from chtn.encoders import TfidfTextEncoder
from tests.test_reference import frozen_model

GOLDEN = Path(__file__).resolve().parent
LABELS = ["Handbags", "Shoes", "Watches"]
SOURCE_LABELS = ["bag", "shoe"]
TEXTS = [
    "Red leather handbag",
    "Black running shoes",
    "Silver analog watch",
    "Brown leather shoes",
    "Gold watch with leather strap",
    "Blue canvas tote bag",
]  # the TF-IDF corpus and the text inputs
MODELS = {
    "chtn_source": ModelConfig(
        num_classes=3, num_source_classes=2, hidden_dim=6, shared_dim=5, dropout=0.3, image_input_norm=True
    ),
    "ensemble_fc9": ModelConfig(
        num_classes=3,
        num_source_classes=2,
        hidden_dim=5,
        shared_dim=4,
        dropout=0.3,
        share_image_stream=True,
        common="fc9",
        ensemble=2,
    ),
}
IMAGE_DIM = 8


def main() -> None:
    tfidf = TfidfTextEncoder("word", (1, 1), 100).fit(TEXTS)
    text = torch.from_numpy(tfidf.encode(TEXTS))
    image = torch.from_numpy(np.random.default_rng(0).normal(size=(4, IMAGE_DIM)).astype(np.float32))
    expected = {}
    for seed, (name, model_config) in enumerate(MODELS.items()):
        model_config = dataclasses.replace(model_config, image_dim=IMAGE_DIM, text_dim=tfidf.feature_dim)
        config = CHTNConfig(
            model=model_config,
            encoder=EncoderConfig(text="tfidf", tfidf_analyzer="word", tfidf_ngram=(1, 1), tfidf_max_features=100),
        )
        model = frozen_model(config.model, seed)  # the reference test's seeded, non-trivial weights
        meta = {
            "label_names": LABELS,
            "dataset": {"path": "golden", "n_train": len(TEXTS)},
            "source": {"path": "golden-source", "label_names": SOURCE_LABELS},
        }
        save_checkpoint(GOLDEN / f"{name}.safetensors", model, config, meta, tfidf.state())
        with torch.no_grad():
            expected[name] = {
                "config": config.to_dict(),
                "label_names": LABELS,
                "meta": {k: meta[k] for k in ("dataset", "source")},
                "tfidf_vocabulary": tfidf.vocabulary,
                "texts": TEXTS,
                "text_features": text.tolist(),
                "image_features": image.tolist(),
                "image_common": model.encode_image(image).tolist(),
                "text_common": model.encode_text(text).tolist(),
                "image_logits": model.image_logits(image).tolist(),
                "text_logits": model.text_logits(text).tolist(),
            }
    (GOLDEN / "expected.json").write_text(json.dumps(expected, indent=1) + "\n")


if __name__ == "__main__":
    main()
