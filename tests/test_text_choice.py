"""Text features chosen per run: the CJK rule, the validation choice on pairs carved from the training pairs."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from chtn.config import load_config
from chtn.text_choice import CJK_SHARE, choose_text_encoder, cjk_candidates, cjk_share, text_candidates

# The Chinese sample: the sample's pairs, titles rendered in Chinese (scripts/zh_titles.py), the same images.
CHINESE = Path(__file__).resolve().parents[1] / "sample_data" / "fashion_zh" / "pairs.csv"


def _no_minilm() -> np.ndarray:
    raise AssertionError("MiniLM features were computed although no candidate needed them")


def test_english_titles_keep_the_configured_features(pairs):
    config = load_config("small")
    assert cjk_share(pairs.texts) == 0.0
    encoder, record = choose_text_encoder(config, pairs.texts, np.zeros((0, 1)), np.zeros(0), [], _no_minilm)
    assert encoder == config.encoder
    assert record == {
        "mode": "language",
        "cjk_share": 0.0,
        "threshold": CJK_SHARE,
        "chosen": "configured",
        "features": "MiniLM + TF-IDF char_wb 2-4-grams (1000)",
    }


def test_chinese_titles_choose_among_tfidf_candidates_on_carved_training_pairs(cache):
    """The Chinese sample's 200 training pairs: no MiniLM, and characters, jieba words and both scored on 40 pairs
    carved from them, by default ("language")."""
    from chtn.data import load_pairs
    from chtn.encoders import cached_image_trunk
    from chtn.features import image_features

    train = load_pairs(CHINESE).split("train")
    assert cjk_share(train.texts) > 0.5
    config = load_config("small", overrides={"encoder": {"text_choice_epochs": 3}, "train": FAST})
    assert config.encoder.text_choice == "language"
    image = image_features(train.image_paths, cache, cached_image_trunk())[0]
    messages: list[str] = []
    encoder, record = choose_text_encoder(
        config, train.texts, image, train.label_index, train.label_names, _no_minilm, log=messages.append
    )
    assert (record["mode"], record["n_fit"], record["n_val"]) == ("language", 160, 40)
    scores = {c["name"]: c["val_map"] for c in record["candidates"]}
    assert list(scores) == ["char1-3", "jieba1-2", "jieba+char1-3"]
    assert all(0.06 < s <= 1.0 for s in scores.values())  # chance on 20 balanced classes ~0.06
    assert record["chosen"] == max(scores, key=lambda name: scores[name])
    assert encoder == cjk_candidates(config.encoder)[record["chosen"]] and not encoder.uses_minilm
    assert "CJK" in messages[0] and f"in {record['seconds']:.0f} s" in messages[-1]
    fixed = load_config("small", overrides={"encoder": {"text_choice": "fixed"}})
    assert choose_text_encoder(fixed, train.texts, image, train.label_index, [], _no_minilm)[0] == fixed.encoder


def test_candidates_are_listed_once():
    small = load_config("small").encoder
    assert list(text_candidates(small)) == ["configured", "minilm+char1-3", "char1-3"]
    already = dataclasses.replace(small, text="tfidf", tfidf_analyzer="char", tfidf_ngram=(1, 3))
    already = dataclasses.replace(already, tfidf_max_features=3000)
    assert list(text_candidates(already)) == ["configured", "minilm+char1-3"]


def test_wrong_choice_settings_are_refused():
    from chtn.errors import CHTNError

    with pytest.raises(CHTNError, match="text_choice"):
        load_config("small", overrides={"encoder": {"text_choice": "auto"}})
    with pytest.raises(CHTNError, match="tfidf_analyzer"):
        load_config("small", overrides={"encoder": {"tfidf_analyzer": "chars"}})


def test_validation_choice_scores_every_candidate_on_pairs_carved_from_training(pairs, cache):
    """Only the 200 training pairs go in; 2 per category are carved out and score three short trainings."""
    from chtn.encoders import cached_image_trunk
    from chtn.features import image_features, transformer_text_features

    train = pairs.split("train")
    config = load_config(
        "small", overrides={"encoder": {"text_choice": "validation", "text_choice_epochs": 3}, "train": FAST}
    )
    image = image_features(train.image_paths, cache, cached_image_trunk())[0]
    calls: list[int] = []

    def minilm() -> np.ndarray:
        calls.append(1)
        return transformer_text_features(train.texts, cache)

    messages: list[str] = []
    encoder, record = choose_text_encoder(
        config, train.texts, image, train.label_index, pairs.label_names, minilm, log=messages.append
    )
    assert calls == [1]  # MiniLM features once, shared by the candidates that use them
    assert (record["n_fit"], record["n_val"], record["epochs"]) == (160, 40, 3)
    names = [c["name"] for c in record["candidates"]]
    scores = [c["val_map"] for c in record["candidates"]]
    assert names == ["configured", "minilm+char1-3", "char1-3"]
    assert all(isinstance(s, float) and 0.06 < s <= 1.0 for s in scores)  # chance on 20 balanced classes ~0.06
    assert record["chosen"] == names[int(np.argmax(scores))]
    assert encoder == text_candidates(config.encoder)[record["chosen"]]
    assert record["chosen"] in messages[-1]


FAST = {"min_steps_per_epoch": 10}
