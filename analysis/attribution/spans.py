"""Map token-level attributions back onto the words of the original text.

Two kinds of token carry attribution: MiniLM word-pieces (character offsets come from the fast
tokenizer) and TF-IDF features (word or character n-grams, which a fitted vectorizer does not
locate in the text). No library maps either back to words, so it is done here: every piece or
n-gram occurrence is assigned to the whitespace-separated word(s) it lies in, and a feature's
attribution is split evenly over its occurrences. Sums are preserved, so the word scores add up
to the total attribution (IG's completeness carries over to words).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass
class Word:
    text: str
    start: int  # character span in the original text
    end: int
    score: float  # attribution summed over the word's pieces and n-grams
    minilm: float = 0.0  # part from MiniLM word-pieces
    tfidf: float = 0.0  # part from TF-IDF features


def split_words(text: str) -> list[Word]:
    return [Word(m.group(), m.start(), m.end(), 0.0) for m in re.finditer(r"\S+", text)]


def _word_at(words: Sequence[Word], position: int) -> int | None:
    for i, word in enumerate(words):
        if word.start <= position < word.end:
            return i
    return None


def add_piece_scores(words: list[Word], offsets: Sequence[tuple[int, int]], scores: np.ndarray) -> None:
    """Add word-piece attributions ([CLS]/[SEP] have empty offsets and stay out)."""
    for (start, end), score in zip(offsets, scores):
        if end > start:
            index = _word_at(words, start)
            if index is not None:
                words[index].minilm += float(score)


def tfidf_occurrences(text: str, vectorizer) -> list[tuple[int, list[int]]]:
    """(feature index, word indices) for every occurrence of a vocabulary n-gram in `text`."""
    vocabulary, words = vectorizer.vocabulary_, split_words(text)
    found: list[tuple[int, list[int]]] = []
    if vectorizer.analyzer == "char_wb":  # sklearn builds these n-grams inside each whitespace word
        analyze = vectorizer.build_analyzer()
        for i, word in enumerate(words):
            found += [(vocabulary[g], [i]) for g in analyze(word.text) if g in vocabulary]
        return found
    if vectorizer.analyzer == "char":  # n-grams may cross words: credit every word they touch
        low, high = vectorizer.ngram_range
        lowered = vectorizer.build_preprocessor()(text)
        for n in range(low, high + 1):
            for start in range(len(lowered) - n + 1):
                gram = lowered[start : start + n]
                touched = sorted({j for j in (_word_at(words, p) for p in range(start, start + n)) if j is not None})
                if gram in vocabulary and touched:
                    found.append((vocabulary[gram], touched))
        return found
    pattern = re.compile(vectorizer.token_pattern)
    preprocess = vectorizer.build_preprocessor()
    tokens = [(m.group(), _word_at(words, m.start())) for m in pattern.finditer(preprocess(text))]
    low, high = vectorizer.ngram_range
    for n in range(low, high + 1):
        for start in range(len(tokens) - n + 1):
            gram = " ".join(t for t, _ in tokens[start : start + n])
            if gram in vocabulary:
                found.append((vocabulary[gram], sorted({w for _, w in tokens[start : start + n] if w is not None})))
    return found


def add_tfidf_scores(words: list[Word], text: str, vectorizer, scores: np.ndarray) -> None:
    """Split each feature's attribution evenly over its occurrences, and each occurrence over its words."""
    occurrences = tfidf_occurrences(text, vectorizer)
    counts = np.bincount([f for f, _ in occurrences], minlength=len(scores))
    for feature, indices in occurrences:
        share = float(scores[feature]) / float(counts[feature]) / len(indices)
        for i in indices:
            words[i].tfidf += share


def word_scores(
    text: str,
    offsets: Sequence[tuple[int, int]],
    piece_scores: np.ndarray | None,
    tfidf_encoder,
    tfidf_scores: np.ndarray | None,
) -> list[Word]:
    """Words of `text` with MiniLM and TF-IDF attributions merged onto them."""
    words = split_words(text)
    if piece_scores is not None:
        add_piece_scores(words, offsets, piece_scores)
    if tfidf_scores is not None and tfidf_encoder is not None:
        add_tfidf_scores(words, text, tfidf_encoder.vectorizer, tfidf_scores)
    for word in words:
        word.score = word.minilm + word.tfidf
    return words
