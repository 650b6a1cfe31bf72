"""Chinese word segmentation (chtn/segment.py) and the TF-IDF analyzers and word attributions built on it, on real
Chinese strings: apt's own zh_CN messages, which every Debian machine with apt carries."""

from __future__ import annotations

import gettext
from pathlib import Path

import numpy as np
import pytest

from analysis.attribution.spans import tfidf_occurrences, word_scores
from chtn import segment
from chtn.config import load_config
from chtn.encoders import TfidfTextEncoder

APT_ZH = Path("/usr/share/locale/zh_CN/LC_MESSAGES/apt.mo")


@pytest.fixture(scope="module")
def messages() -> list[str]:
    if not APT_ZH.exists():
        pytest.skip(f"{APT_ZH} (apt's Chinese messages, the real CJK texts of this test) is not installed")
    with APT_ZH.open("rb") as handle:
        catalog = gettext.GNUTranslations(handle)._catalog
    return [v for k, v in catalog.items() if k and isinstance(v, str) and v.strip()]


def test_words_cover_the_text_and_split_chinese_into_words(messages):
    split_somewhere = 0
    for text in messages:
        found = segment.words(text)
        assert all(text[start:end] == word and word.strip() == word and word for word, start, end in found)
        assert [s for _, s, _ in found] == sorted(s for _, s, _ in found)
        assert "".join(w for w, _, _ in found) == "".join(text.split())  # every non-space character, once
        split_somewhere += any(len(run) > len(w) for run in text.split() for w, _, _ in found if w in run)
    assert split_somewhere > len(messages) // 2  # a whitespace split would leave whole sentences as one word


def test_latin_stays_whole_and_english_is_split_on_whitespace_only():
    assert segment.words("纯虚拟软件包：") == [("纯", 0, 1), ("虚拟", 1, 3), ("软件包", 3, 6), ("：", 6, 7)]
    assert [w for w, _, _ in segment.words("Puma男士运动鞋 T恤")] == ["Puma", "男士", "运动鞋", "T恤"]
    assert segment.words("U.S. Polo  Assn.") == [("U.S.", 0, 4), ("Polo", 5, 9), ("Assn.", 11, 16)]
    assert segment.tokens("Puma男士运动鞋，T恤！") == ["puma", "男士", "运动鞋", "t恤"]  # no punctuation token


@pytest.mark.parametrize("analyzer, ngram", [("jieba", (1, 2)), ("jieba+char", (1, 3))])
def test_jieba_features_restore_from_the_checkpoint_state_and_every_feature_is_located(messages, analyzer, ngram):
    fitted = TfidfTextEncoder(analyzer, ngram, 800).fit(messages[::2])
    restored = TfidfTextEncoder.from_state(*fitted.state(), analyzer, ngram)
    held_out = messages[1::2]
    assert np.array_equal(fitted.encode(held_out), restored.encode(held_out))
    assert restored.identity == fitted.identity and fitted.identity.startswith(f"tfidf-{analyzer}@")
    assert any(" " in term and segment.CJK.search(term) for term in fitted.vocabulary)  # word bigrams of Chinese
    for text in held_out[:60]:
        active = set(np.flatnonzero(restored.encode([text])[0]))
        assert {feature for feature, _ in tfidf_occurrences(text, restored)} == active, text


def test_word_attribution_gives_each_chinese_word_its_own_score_and_keeps_the_sum(messages):
    encoder = TfidfTextEncoder("jieba+char", (1, 3), 800).fit(messages)
    text = next(m for m in messages if len(segment.words(m)) >= 5 and " " not in m.strip())
    scores = np.arange(encoder.feature_dim, dtype=float) % 7 - 3  # signed, unequal scores on every feature
    words = word_scores(text, [], None, encoder, scores)
    assert [w.text for w in words] == [w for w, _, _ in segment.words(text)]
    active = np.flatnonzero(encoder.encode([text])[0])
    assert sum(w.score for w in words) == pytest.approx(scores[active].sum())
    assert len({round(w.score, 9) for w in words}) > 1  # not one block with one score


def test_config_accepts_the_jieba_analyzers_and_names_them_when_wrong():
    from chtn.errors import CHTNError

    for analyzer in ("jieba", "jieba+char"):
        assert load_config("small", overrides={"encoder": {"tfidf_analyzer": analyzer}}).encoder.tfidf_analyzer
    with pytest.raises(CHTNError, match="jieba\\+char"):
        load_config("small", overrides={"encoder": {"tfidf_analyzer": "jeiba"}})
