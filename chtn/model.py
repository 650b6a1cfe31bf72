"""CHTN (Huang, Peng & Yuan, IJCAI 2017) on top of frozen encoder features.

    source image feats -> fc6_s -> fc7_s -> fc8_src (source classes)          [single-modal source]
    target image feats -> fc6_i -> fc7_i --\\                                  [modal-sharing transfer]
    text feats -> BN -> fc6_t -> fc7_t -----+-> fc8 -> fc9 -> fc10 (shared)    [layer-sharing correlation]

MMD ties source and target image activations at fc6 and fc7; a paired L2 ties each image to its
text at fc6 and fc7. The common representation is softmax(fc10) (release) or fc9 (deviation).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from contextlib import contextmanager
from typing import cast

import torch
from torch import nn
from torch.nn import functional as F

from chtn.config import ModelConfig


class FCBlock(nn.Sequential):
    """Linear -> BatchNorm -> ReLU -> Dropout: one of the release's fc6/fc7 layers."""

    def __init__(self, in_dim: int, out_dim: int, dropout: float) -> None:
        super().__init__(
            nn.Linear(in_dim, out_dim), nn.BatchNorm1d(out_dim), nn.ReLU(inplace=True), nn.Dropout(dropout)
        )


class Stream(nn.Module):
    """Two FC blocks (fc6, fc7) returning both activations, since the losses use both."""

    def __init__(self, in_dim: int, hidden: int, dropout: float, input_norm: bool = False) -> None:
        super().__init__()
        self.input_norm = nn.BatchNorm1d(in_dim) if input_norm else nn.Identity()
        self.fc6 = FCBlock(in_dim, hidden, dropout)
        self.fc7 = FCBlock(hidden, hidden, dropout)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h6 = self.fc6(self.input_norm(x))
        return h6, self.fc7(h6)


class SharedHead(nn.Module):
    """fc8 -> ReLU -> fc9 -> ReLU -> fc10, the same weights for both modalities."""

    def __init__(self, hidden: int, shared: int, num_classes: int) -> None:
        super().__init__()
        self.fc8 = nn.Linear(hidden, shared)
        self.fc9 = nn.Linear(shared, shared)
        self.fc10 = nn.Linear(shared, num_classes)

    def forward(self, h7: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h9 = F.relu(self.fc9(F.relu(self.fc8(h7))))
        return h9, self.fc10(h9)


@contextmanager
def frozen_running_stats(module: nn.Module) -> Iterator[None]:
    """BatchNorm layers normalise with batch statistics but leave their running statistics alone.

    Source images that share the target image stream must not move its running mean/variance:
    evaluation sees target images only, and statistics mixed with another domain (CIFAR-10 for a
    fashion target) shift every target activation at test time.
    """
    norms = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [m.momentum for m in norms]
    for m in norms:
        m.momentum = 0.0  # running = (1 - 0) * running + 0 * batch: unchanged
    try:
        yield
    finally:
        for m, momentum in zip(norms, saved):
            m.momentum = momentum


class CHTN(nn.Module):
    """The hybrid transfer network. `encode_image`/`encode_text` give the common representation."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        c = config
        self.image = Stream(c.image_dim, c.hidden_dim, c.dropout, c.image_input_norm)
        self.text = Stream(c.text_dim, c.hidden_dim, c.dropout, True)
        self.shared = SharedHead(c.hidden_dim, c.shared_dim, c.num_classes)
        if c.num_source_classes > 0:
            if not c.share_image_stream:
                self.source = Stream(c.image_dim, c.hidden_dim, c.dropout, c.image_input_norm)
            self.source_classifier = nn.Linear(c.hidden_dim, c.num_source_classes)

    @property
    def has_source(self) -> bool:
        return self.config.has_source

    def _common(self, h7: torch.Tensor, normalize: bool) -> torch.Tensor:
        h9, logits = self.shared(h7)
        out = logits.softmax(-1) if self.config.common == "softmax" else h9
        return F.normalize(out, dim=-1) if normalize else out

    def encode_image(self, image_features: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        """Common representation of images from their frozen-trunk features."""
        return self._common(self.image(image_features)[1], normalize)

    def encode_text(self, text_features: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        """Common representation of texts from their encoder features."""
        return self._common(self.text(text_features)[1], normalize)

    def image_logits(self, image_features: torch.Tensor) -> torch.Tensor:
        """fc10 scores of images before the softmax (used where the saturated softmax has no gradient)."""
        return self.shared(self.image(image_features)[1])[1]

    def text_logits(self, text_features: torch.Tensor) -> torch.Tensor:
        """fc10 scores of texts before the softmax."""
        return self.shared(self.text(text_features)[1])[1]

    def image_activations(self, image_features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """fc6 and fc7 of the target image stream: the layers MMD ties to the source."""
        return self.image(image_features)

    def source_activations(self, image_features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """fc6 and fc7 of the stream source images go through in training (the image stream when shared)."""
        return (self.image if self.config.share_image_stream or not self.has_source else self.source)(image_features)

    def source_probabilities(self, image_features: torch.Tensor) -> torch.Tensor:
        """What the source branch the model was trained with calls these images (softmax over source classes)."""
        if not self.has_source:
            raise ValueError("This CHTN was trained without a source: it has no source classifier.")
        return self.source_classifier(self.source_activations(image_features)[1]).softmax(-1)

    def forward(
        self, image: torch.Tensor, text: torch.Tensor, source: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        """Every activation the training losses need, for one batch of pairs (+ source images)."""
        out: dict[str, torch.Tensor] = {}
        out["img6"], out["img7"] = self.image(image)
        out["txt6"], out["txt7"] = self.text(text)
        out["img_logits"] = self.shared(out["img7"])[1]
        out["txt_logits"] = self.shared(out["txt7"])[1]
        if source is not None and self.has_source:
            if self.config.share_image_stream:
                with frozen_running_stats(self.image):
                    out["src6"], out["src7"] = self.image(source)
            else:
                out["src6"], out["src7"] = self.source(source)
            out["src_logits"] = self.source_classifier(out["src7"])
        return out


class CHTNEnsemble(nn.Module):
    """`config.ensemble` CHTNs trained side by side on the same batches from different initialisations.

    The common representation is the mean of the members' (softmax) outputs: a deep ensemble, which with
    few training pairs averages out the members' separate overfitting (measured in docs/benchmarks.md).
    Same API as CHTN; `forward` returns one activation dict per member, and the training loss is their sum.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        member = dataclasses.replace(config, ensemble=1)
        self.members = nn.ModuleList(CHTN(member) for _ in range(config.ensemble))

    @property
    def _chtns(self) -> list[CHTN]:
        """The members as CHTNs (an nn.ModuleList types its items as plain Modules)."""
        return cast(list[CHTN], list(self.members))

    @property
    def has_source(self) -> bool:
        return self._chtns[0].has_source

    def _mean(self, outputs: list[torch.Tensor], normalize: bool) -> torch.Tensor:
        out = torch.stack(outputs).mean(0)
        return F.normalize(out, dim=-1) if normalize else out

    def encode_image(self, image_features: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        return self._mean([m.encode_image(image_features) for m in self._chtns], normalize)

    def encode_text(self, text_features: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        return self._mean([m.encode_text(text_features) for m in self._chtns], normalize)

    def image_logits(self, image_features: torch.Tensor) -> torch.Tensor:
        return self._mean([m.image_logits(image_features) for m in self._chtns], False)

    def text_logits(self, text_features: torch.Tensor) -> torch.Tensor:
        return self._mean([m.text_logits(text_features) for m in self._chtns], False)

    def image_activations(self, image_features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """fc6 and fc7 of the first member (members' hidden units are not aligned, so they are not averaged)."""
        return self._chtns[0].image_activations(image_features)

    def source_activations(self, image_features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self._chtns[0].source_activations(image_features)

    def source_probabilities(self, image_features: torch.Tensor) -> torch.Tensor:
        return torch.stack([m.source_probabilities(image_features) for m in self._chtns]).mean(0)

    def forward(
        self, image: torch.Tensor, text: torch.Tensor, source: torch.Tensor | None = None
    ) -> list[dict[str, torch.Tensor]]:
        return [m(image, text, source) for m in self.members]


class LinearBaseline(nn.Module):
    """The built-in simple baseline (`chtn baseline`, fitted by chtn/baseline.py): one affine map per modality into a
    shared space, with CHTN's API so every page and command opens it. With `common` "softmax" each map gives the
    class scores of a linear softmax classifier and the common representation is their softmax; with "fc9" it is
    the maps' raw outputs (CCA's canonical variates). It has no hidden layers: its activations are its outputs."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        width = config.num_classes if config.common == "softmax" else config.shared_dim
        self.image = nn.Linear(config.image_dim, width)
        self.text = nn.Linear(config.text_dim, width)

    has_source = False

    def _common(self, scores: torch.Tensor, normalize: bool) -> torch.Tensor:
        out = scores.softmax(-1) if self.config.common == "softmax" else scores
        return F.normalize(out, dim=-1) if normalize else out

    def encode_image(self, image_features: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        return self._common(self.image(image_features), normalize)

    def encode_text(self, text_features: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        return self._common(self.text(text_features), normalize)

    def image_logits(self, image_features: torch.Tensor) -> torch.Tensor:
        return self.image(image_features)

    def text_logits(self, text_features: torch.Tensor) -> torch.Tensor:
        return self.text(text_features)

    def image_activations(self, image_features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Its outputs, twice (the pages that compare two layers of CHTN's image stream get the one it has)."""
        scores = self.image(image_features)
        return scores, scores

    source_activations = image_activations

    def source_probabilities(self, image_features: torch.Tensor) -> torch.Tensor:
        raise ValueError("The baseline is trained without a source: it has no source classifier.")

    def forward(
        self, image: torch.Tensor, text: torch.Tensor, source: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        return {"img_logits": self.image(image), "txt_logits": self.text(text)}


Head = CHTN | CHTNEnsemble | LinearBaseline  # what a checkpoint holds


def build_model(config: ModelConfig) -> Head:
    """A single CHTN (the release), an ensemble of them, or the linear baseline, as the config asks."""
    if config.architecture == "linear":
        return LinearBaseline(config)
    return CHTN(config) if config.ensemble == 1 else CHTNEnsemble(config)
