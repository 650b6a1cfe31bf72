"""The quantity an attribution explains: the similarity of one side of a pair to the other side.

f(x) = cos(encode(x), positive), or in contrastive mode cos(encode(x), wrong) - cos(encode(x), correct).
The anchors (the other side's common representations) go in as a forward argument, never as state, and
an objective is built per attribution: the only modules it owns are the identity layers that Captum's
layer methods hook, so no hook ever lands on the tower that every dashboard session shares.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from chtn.tower import Tower


def anchors(positive: torch.Tensor, negative: torch.Tensor | None = None) -> torch.Tensor:
    """(1, 1 or 2, d) unit anchors: one row per example, so Captum's expansion of forward args lines up."""
    rows = [positive] if negative is None else [positive, negative]
    return F.normalize(torch.stack([r.reshape(-1) for r in rows]), dim=-1)[None].detach()


def cosine_terms(z: torch.Tensor, anchor: torch.Tensor) -> torch.Tensor:
    """(batch, terms) cosines of each row of z with its anchors (anchor batch 1 broadcasts)."""
    return (F.normalize(z, dim=-1)[:, None, :] * anchor).sum(-1)


def combine(terms: torch.Tensor) -> torch.Tensor:
    """f from its cosines: the first, minus the second in contrastive mode."""
    return terms[:, 0] - terms[:, 1] if terms.shape[1] == 2 else terms[:, 0]


class ImageObjective(nn.Module):
    """Pixels -> tower -> common representation (or fc10 logits) -> f. `feature_map` is Grad-CAM's layer."""

    def __init__(self, tower: Tower, logits: bool = False) -> None:
        super().__init__()
        self.tower, self.logits = tower, logits  # a Tower is no nn.Module: not registered, never moved
        self.feature_map = nn.Identity()

    def terms(self, pixels: torch.Tensor, anchor: torch.Tensor) -> torch.Tensor:
        fmap = self.feature_map(self.tower.image_feature_map(pixels))
        return cosine_terms(self.tower.encode_feature_map(fmap, self.logits), anchor)

    def forward(self, pixels: torch.Tensor, anchor: torch.Tensor) -> torch.Tensor:
        return combine(self.terms(pixels, anchor))


class TextObjective(nn.Module):
    """Word pieces + TF-IDF vector -> tower -> common representation -> f.

    `words` and `tfidf` are identity layers on the word-piece embeddings and the TF-IDF vector, so that
    LayerIntegratedGradients interpolates both together (one path, one completeness check).
    """

    def __init__(self, tower: Tower) -> None:
        super().__init__()
        self.tower = tower
        self.words, self.tfidf = nn.Identity(), nn.Identity()

    def forward(
        self, input_ids: torch.Tensor, tfidf: torch.Tensor, attention_mask: torch.Tensor, anchor: torch.Tensor
    ) -> torch.Tensor:
        embeddings = self.words(self.tower.text.word_embeddings(input_ids))
        z = self.tower.encode_text(embeddings, attention_mask, self.tfidf(tfidf))
        return combine(cosine_terms(z, anchor))
