"""Words of a text, with their character spans: whitespace words, and jieba's words inside runs of CJK text.

Chinese and Japanese text has no spaces between words, so a whitespace split makes one "word" of a whole
sentence. jieba (PyPI; a dictionary of ~350k words plus an HMM for unseen ones) is the standard segmenter for
Chinese. One segmentation serves both the TF-IDF word features (`chtn.encoders`) and the text attribution
(`analysis.attribution.spans`), so each highlighted word is a unit the features saw.
"""

from __future__ import annotations

import logging
import re
import threading
from typing import Any

# Han ideographs (incl. extension A and compatibility), kana, Hangul syllables and jamo, CJK punctuation.
CJK = re.compile(
    r"[\u3000-\u303f\u3040-\u30ff\u3100-\u312f\u3130-\u318f\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff]"
)
WORDLIKE = re.compile(r"\w")  # a token needs a letter, digit or ideograph: punctuation alone is no feature
_LOCK = threading.Lock()
_TOKENIZER: list[Any] = []  # one jieba tokenizer per process, built on first use


def _jieba() -> Any:
    """jieba's tokenizer, its dictionary loaded once per process (~0.5 s; read-only, so thread-safe, after)."""
    with _LOCK:
        if not _TOKENIZER:
            import jieba

            jieba.setLogLevel(logging.WARNING)  # no "Building prefix dict..." lines on every start
            tokenizer = jieba.Tokenizer()
            tokenizer.initialize()
            _TOKENIZER.append(tokenizer)
        return _TOKENIZER[0]


def words(text: str) -> list[tuple[str, int, int]]:
    """(word, start, end) for each word: maximal runs of non-space characters, split by jieba where they
    contain CJK characters (Latin brand names inside stay whole: "Puma男士运动鞋" -> Puma, 男士, 运动鞋)."""
    found: list[tuple[str, int, int]] = []
    for run in re.finditer(r"\S+", text):
        if CJK.search(run.group()):
            offset = run.start()
            found += [(w, offset + s, offset + e) for w, s, e in _jieba().tokenize(run.group()) if not w.isspace()]
        else:
            found.append((run.group(), run.start(), run.end()))
    return found


def tokens(text: str) -> list[str]:
    """The word tokens of TF-IDF's "jieba" analyzers: `words`, lowercased after segmentation, less those made of
    punctuation alone."""
    return [w.lower() for w, _, _ in words(text) if WORDLIKE.search(w)]
