"""Which text features a training run uses: as configured, by the texts' script, or chosen on validation pairs.

The `small` preset's text features (MiniLM + word-boundary character 2-4-gram TF-IDF, 1,000 terms) were tuned on
English product titles. On other languages they can be far from the best (a Chinese news set: 0.408 MAP against
0.476 with character 1-3-gram TF-IDF over 3,000 terms; MiniLM, an English model, alone 0.349), so
`encoder.text_choice` decides how the configured settings are applied:

- "fixed": as configured.
- "language": as configured when the texts are not mostly CJK (no training). When they are, MiniLM (an English
  model) is dropped and the TF-IDF features are chosen on validation (below) among character 1-3-grams, word
  n-grams over jieba's segmentation, and both together: no one of them wins on every CJK dataset.
- "validation": a few candidates are each trained on the training pairs minus a per-category 20% carved from
  them, scored by MAP on that carved part, and the best is kept. Only training pairs are read: never the
  test split, and not the dataset's own "val" split either (that one picks the best epoch afterwards).
  The candidates are the CJK ones above for CJK texts, otherwise the configured features and two variants.

Both the CLI (`chtn.train_inputs`) and the benchmark (`bench/bench_core.py`) call `choose_text_encoder`.
"""

from __future__ import annotations

import dataclasses
import tempfile
import time
from collections.abc import Callable, Sequence
from typing import Any, TypedDict

import numpy as np
import torch

from chtn.config import CHTNConfig, EncoderConfig
from chtn.encoders import TfidfTextEncoder
from chtn.segment import CJK
from chtn.splits import stratified_split
from chtn.train import FeatureSet, TrainInputs, train

CJK_SHARE = 0.3  # share of the non-space characters above which the "language" rule applies; Chinese or Japanese
# text is ~0.7-1.0 even with Latin brand names and digits mixed in, English text with a few CJK names ~0.0-0.1
VALIDATION_FRACTION = 0.2  # per-category share of the training pairs carved out to score the candidates


class TfidfSettings(TypedDict):
    """EncoderConfig's TF-IDF fields, to pass to `dataclasses.replace`."""

    tfidf_analyzer: str
    tfidf_ngram: tuple[int, int]
    tfidf_max_features: int


# Character 1-3-grams over 3,000 terms: the setting that won on the Chinese news set (issue 12). "char" (not
# "char_wb") because CJK text has no spaces to bound words, so every n-gram of the running text counts.
CHARACTER_TFIDF: TfidfSettings = {"tfidf_analyzer": "char", "tfidf_ngram": (1, 3), "tfidf_max_features": 3000}
# Words from jieba's segmentation, alone (1-2-grams) and beside the character n-grams (1-3-grams of each): words
# carry meaning that characters split ("运动鞋", sports shoes), characters survive jieba's segmentation mistakes.
JIEBA_WORDS: TfidfSettings = {"tfidf_analyzer": "jieba", "tfidf_ngram": (1, 2), "tfidf_max_features": 3000}
JIEBA_AND_CHARACTERS: TfidfSettings = {
    "tfidf_analyzer": "jieba+char",
    "tfidf_ngram": (1, 3),
    "tfidf_max_features": 5000,
}


def cjk_share(texts: Sequence[str]) -> float:
    """Share of non-space characters that are CJK (0.0 for no text)."""
    chars = sum(len(t) - sum(c.isspace() for c in t) for t in texts)
    return sum(len(CJK.findall(t)) for t in texts) / chars if chars else 0.0


def describe(encoder: EncoderConfig) -> str:
    """'MiniLM + TF-IDF char_wb 2-4-grams (1000)' and the like: the text settings in a few words."""
    parts = ["MiniLM"] if encoder.uses_minilm else []
    if encoder.uses_tfidf:
        low, high = encoder.tfidf_ngram
        parts.append(f"TF-IDF {encoder.tfidf_analyzer} {low}-{high}-grams ({encoder.tfidf_max_features})")
    return " + ".join(parts)


def text_candidates(encoder: EncoderConfig) -> dict[str, EncoderConfig]:
    """The configured text features, MiniLM + character 1-3-gram TF-IDF (3,000), and that TF-IDF alone.

    Duplicates (a configuration already equal to a candidate) are listed once, under "configured".
    """
    options = {
        "configured": encoder,
        "minilm+char1-3": dataclasses.replace(encoder, text="minilm+tfidf", **CHARACTER_TFIDF),
        "char1-3": dataclasses.replace(encoder, text="tfidf", **CHARACTER_TFIDF),
    }
    unique: dict[str, EncoderConfig] = {}
    for name, option in options.items():
        if all(_text_key(option) != _text_key(seen) for seen in unique.values()):
            unique[name] = option
    return unique


def cjk_candidates(encoder: EncoderConfig) -> dict[str, EncoderConfig]:
    """The TF-IDF candidates for CJK text, without MiniLM: character 1-3-grams, jieba words, and both."""
    options = {"char1-3": CHARACTER_TFIDF, "jieba1-2": JIEBA_WORDS, "jieba+char1-3": JIEBA_AND_CHARACTERS}
    return {name: dataclasses.replace(encoder, text="tfidf", **tfidf) for name, tfidf in options.items()}


def _text_key(encoder: EncoderConfig) -> tuple:
    tfidf = (encoder.tfidf_analyzer, tuple(encoder.tfidf_ngram), encoder.tfidf_max_features)
    return encoder.text, encoder.text_model_dir if encoder.uses_minilm else "", tfidf if encoder.uses_tfidf else ()


def text_features(
    encoder: EncoderConfig, fit_texts: Sequence[str], texts: Sequence[str], minilm: np.ndarray | None
) -> tuple[np.ndarray, tuple[list[str], np.ndarray] | None]:
    """Features of `texts` as `encoder` asks (TF-IDF fitted on `fit_texts`; `minilm` = MiniLM rows of `texts`),
    and the TF-IDF state a checkpoint stores."""

    parts: list[np.ndarray] = []
    if encoder.uses_minilm:
        if minilm is None:
            raise ValueError("text_features: the encoder uses MiniLM, so the MiniLM rows of `texts` must be given")
        parts.append(minilm)
    state = None
    if encoder.uses_tfidf:
        tfidf = TfidfTextEncoder(encoder.tfidf_analyzer, encoder.tfidf_ngram, encoder.tfidf_max_features)
        parts.append(tfidf.fit(fit_texts).encode(texts))
        state = tfidf.state()
    return np.hstack(parts).astype(np.float32), state


def choose_text_encoder(
    config: CHTNConfig,
    texts: Sequence[str],
    image: np.ndarray,
    labels: np.ndarray,
    label_names: list[str],
    minilm: Callable[[], np.ndarray],
    device: str | None = None,
    log: Callable[[str], None] = print,
) -> tuple[EncoderConfig, dict[str, Any]]:
    """The encoder settings to train with, and the record of how they were chosen (checkpoint metadata).

    `texts`, `image` (pooled trunk features) and `labels` are the training pairs only; `minilm()` returns
    MiniLM features of `texts` and is called only if a candidate uses MiniLM.
    """
    encoder = config.encoder
    mode = encoder.text_choice
    if mode == "fixed":
        return encoder, {"mode": "fixed", "chosen": "configured", "features": describe(encoder)}
    share = cjk_share(texts)
    cjk = share >= CJK_SHARE
    record = {"mode": mode, "cjk_share": round(share, 4), "threshold": CJK_SHARE}
    if mode == "language" and not cjk:  # the configured features, no training
        return encoder, {**record, "chosen": "configured", "features": describe(encoder)}
    if cjk:
        # An English sentence model (MiniLM) cannot read CJK text well: the candidates are TF-IDF alone.
        log(f"text features: {share:.0%} of the characters are CJK -> TF-IDF, chosen on validation")
    candidates = cjk_candidates(encoder) if cjk else text_candidates(encoder)
    chosen, scores = _choose_on_validation(config, candidates, texts, image, labels, label_names, minilm, device, log)
    return candidates[chosen], {**record, **scores}


def _choose_on_validation(
    config: CHTNConfig,
    candidates: dict[str, EncoderConfig],
    texts: Sequence[str],
    image: np.ndarray,
    labels: np.ndarray,
    label_names: list[str],
    minilm: Callable[[], np.ndarray],
    device: str | None,
    log: Callable[[str], None],
) -> tuple[str, dict[str, Any]]:
    """The name of the best candidate on pairs carved from the training pairs, and the record of every score
    (the first candidate when too few pairs can be carved)."""
    started = time.perf_counter()
    first = next(iter(candidates))
    val = stratified_split(np.asarray(labels).tolist(), VALIDATION_FRACTION, config.train.seed)
    fit = ~val
    epochs = config.encoder.text_choice_epochs or config.train.epochs
    record: dict[str, Any] = {
        "n_fit": int(fit.sum()),
        "n_val": int(val.sum()),
        "epochs": epochs,
        "candidates": [],
    }
    if val.sum() == 0 or len(set(np.asarray(labels)[val].tolist())) < 2:
        log(f"text features: too few training pairs to carve a validation part; using {first}")
        return first, {**record, "chosen": first, "features": describe(candidates[first])}
    minilm_rows = minilm() if any(c.uses_minilm for c in candidates.values()) else None
    fit_texts = [t for t, f in zip(texts, fit) if f]
    for name, candidate in candidates.items():
        text, _ = text_features(candidate, fit_texts, texts, minilm_rows)
        trial = dataclasses.replace(
            config,
            # the candidates differ in text only: the frozen trunk's pooled features and no source keep them cheap
            encoder=dataclasses.replace(candidate, finetune_stages=0),
            model=dataclasses.replace(
                config.model, image_dim=image.shape[1], text_dim=text.shape[1], num_source_classes=0
            ),
            train=dataclasses.replace(config.train, epochs=epochs),
        )
        inputs = TrainInputs(
            FeatureSet(image[fit], text[fit], labels[fit]), FeatureSet(image[val], text[val], labels[val]), label_names
        )
        with tempfile.TemporaryDirectory() as out:
            history = train(trial, inputs, out, {"label_names": label_names}, device=device, log=lambda _: None).history
        score = history[-1]["val_map_mean"] if history else None  # the last epoch: no epoch picked on these pairs
        record["candidates"].append(
            {"name": name, "features": describe(candidate), "val_map": None if score is None else round(score, 4)}
        )
    scored = [c for c in record["candidates"] if c["val_map"] is not None]
    chosen = max(scored, key=lambda c: c["val_map"])["name"] if scored else first  # the first wins a tie
    if torch.distributed.is_available() and torch.distributed.is_initialized():  # only rank 0 validates
        box = [chosen, record["candidates"]]
        torch.distributed.broadcast_object_list(box, src=0)
        chosen, record["candidates"] = box
    record.update(chosen=chosen, features=describe(candidates[chosen]), seconds=round(time.perf_counter() - started, 1))
    shown = ", ".join(f"{c['name']} {c['val_map']}" for c in record["candidates"])
    log(
        f"text features chosen on {record['n_val']} pairs carved from the training pairs in {record['seconds']:.0f} s:"
        f" {chosen} ({shown})"
    )
    return chosen, record
