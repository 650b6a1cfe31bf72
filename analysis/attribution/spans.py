"""Map token-level attributions back onto the words of the original text.

Two kinds of token carry attribution: MiniLM word-pieces (character offsets come from the fast
tokenizer) and TF-IDF features (word or character n-grams, which a fitted vectorizer does not
locate in the text). No library maps either back to words, so it is done here: every piece or
n-gram occurrence is assigned to the word(s) it lies in, and a feature's attribution is split evenly
over its occurrences. Sums are preserved, so the word scores add up to the total attribution (IG's
completeness carries over to words). Words are `chtn.segment`'s: whitespace words, and jieba's words
inside CJK text (the segmentation of the "jieba" TF-IDF features), so a Chinese sentence is not one word.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from chtn import segment

if TYPE_CHECKING:  # named in annotations only: chtn.encoders imports PyTorch, which the page's numbers skip
    from chtn.encoders import TfidfTextEncoder


@dataclass
class Word:
    text: str
    start: int  # character span in the original text
    end: int
    score: float  # attribution summed over the word's pieces and n-grams
    minilm: float = 0.0  # part from MiniLM word-pieces
    tfidf: float = 0.0  # part from TF-IDF features


def split_words(text: str) -> list[Word]:
    return [Word(word, start, end, 0.0) for word, start, end in segment.words(text)]


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


def tfidf_occurrences(text: str, encoder: TfidfTextEncoder) -> list[tuple[int, list[int]]]:
    """(feature index, word indices) for every occurrence of a vocabulary n-gram in `text`."""
    vectorizer, words = encoder.vectorizer, split_words(text)
    vocabulary, ngram = vectorizer.vocabulary_, encoder.ngram
    lowered = text.lower()  # the vectorizers' preprocessing (lowercase=True, no accent stripping)
    if encoder.analyzer == "char_wb":  # sklearn builds these n-grams inside each whitespace word
        analyze = vectorizer.build_analyzer()
        return [(vocabulary[g], [i]) for i, word in enumerate(words) for g in analyze(word.text) if g in vocabulary]
    if encoder.analyzer == "char":
        return _char_occurrences(lowered, words, vocabulary, ngram)
    if encoder.analyzer == "word":
        pattern = re.compile(vectorizer.token_pattern)
        tokens = [(m.group(), _word_at(words, m.start())) for m in pattern.finditer(lowered)]
        return _token_occurrences(tokens, vocabulary, ngram)
    # "jieba" and "jieba+char": the segmented words are the tokens (punctuation alone is none)
    tokens = [(w.text.lower(), i) for i, w in enumerate(words) if segment.WORDLIKE.search(w.text)]
    found = _token_occurrences(tokens, vocabulary, ngram)
    return found + (_char_occurrences(lowered, words, vocabulary, ngram) if encoder.analyzer == "jieba+char" else [])


def _char_occurrences(
    lowered: str, words: Sequence[Word], vocabulary: dict[str, int], ngram: tuple[int, int]
) -> list[tuple[int, list[int]]]:
    """Character n-grams, which may cross words: each credits every word it touches, and one of spaces alone the
    words on either side. Built on the text as scikit-learn's "char" analyzer sees it: runs of 2+ whitespace
    characters collapsed into one space, with each kept character's position in the original text."""
    kept = [m.start() for m in re.finditer(r"\s\s+|.", lowered, re.DOTALL)]  # a run counts as its first character
    text = re.sub(r"\s\s+", " ", lowered)
    found: list[tuple[int, list[int]]] = []
    for n in range(ngram[0], ngram[1] + 1):
        for start in range(len(text) - n + 1):
            gram = text[start : start + n]
            if gram not in vocabulary:
                continue
            first, last = kept[start], kept[start + n - 1]
            touched = {j for j in (_word_at(words, p) for p in range(first, last + 1)) if j is not None}
            if not touched:  # spaces only: the words before and after
                before = [i for i, w in enumerate(words) if w.end <= first]
                after = [i for i, w in enumerate(words) if w.start > last]
                touched = set(before[-1:] + after[:1])
            if touched:
                found.append((vocabulary[gram], sorted(touched)))
    return found


def _token_occurrences(
    tokens: Sequence[tuple[str, int | None]], vocabulary: dict[str, int], ngram: tuple[int, int]
) -> list[tuple[int, list[int]]]:
    """Word n-grams (tokens joined by a space, as scikit-learn joins them) over (token, word index) pairs."""
    found: list[tuple[int, list[int]]] = []
    for n in range(ngram[0], ngram[1] + 1):
        for start in range(len(tokens) - n + 1):
            gram = " ".join(t for t, _ in tokens[start : start + n])
            if gram in vocabulary:
                found.append((vocabulary[gram], sorted({w for _, w in tokens[start : start + n] if w is not None})))
    return found


def add_tfidf_scores(words: list[Word], text: str, encoder: TfidfTextEncoder, scores: np.ndarray) -> None:
    """Split each feature's attribution evenly over its occurrences, and each occurrence over its words."""
    occurrences = tfidf_occurrences(text, encoder)
    counts = np.bincount([f for f, _ in occurrences], minlength=len(scores))
    for feature, indices in occurrences:
        share = float(scores[feature]) / float(counts[feature]) / len(indices)
        for i in indices:
            words[i].tfidf += share


def word_scores(
    text: str,
    offsets: Sequence[tuple[int, int]],
    piece_scores: np.ndarray | None,
    tfidf_encoder: TfidfTextEncoder | None,
    tfidf_scores: np.ndarray | None,
) -> list[Word]:
    """Words of `text` with MiniLM and TF-IDF attributions merged onto them."""
    words = split_words(text)
    if piece_scores is not None:
        add_piece_scores(words, offsets, piece_scores)
    if tfidf_scores is not None and tfidf_encoder is not None:
        add_tfidf_scores(words, text, tfidf_encoder, tfidf_scores)
    for word in words:
        word.score = word.minilm + word.tfidf
    return words
