"""Fine-tuning the last stages of the image trunk together with CHTN (`encoder.finetune_stages`).

The release freezes its conv layers; this option trains the trunk's last units as well. The frozen
prefix of the trunk runs once per image and its output feature maps are cached on disk
(`chtn.features.trunk_prefix_maps`), so training costs the tail's forward/backward only: minutes on a
CPU instead of hours of pixel-level training. The price is no pixel augmentation, which the release
does not use either.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn

from chtn.encoders import ImageTrunk, module_device
from chtn.model import CHTN, CHTNEnsemble


class TrunkTail(nn.Module):
    """Trainable copy of a trunk's last units: prefix feature map (B, C, h, w) -> pooled features (B, d).

    BatchNorm statistics stay frozen (the module never leaves eval mode): batches of 64 pairs give
    noisy statistics, and the trunk's ImageNet statistics then still describe the prefix maps. The
    BN scales and shifts are trained like every other weight.
    """

    def __init__(self, trunk: ImageTrunk, stages: int) -> None:
        super().__init__()
        self.names = trunk.tail_units(stages)
        self.units = nn.ModuleList(copy.deepcopy(trunk.net.get_submodule(name)) for name in self.names)
        self.pool = copy.deepcopy(trunk.net.global_pool)
        self.requires_grad_(True)
        self.eval()

    def train(self, mode: bool = True) -> TrunkTail:
        return super().train(False)

    def forward(self, maps: torch.Tensor) -> torch.Tensor:
        x = maps.float()
        for unit in self.units:
            x = unit(x)
        return self.pool(x)

    @torch.no_grad()
    def pool_maps(self, maps: np.ndarray, batch: int = 512) -> np.ndarray:
        """Pooled features (n, d) of cached prefix maps, in batches (the units' activations are large)."""
        device = module_device(self)
        return np.concatenate(
            [self(torch.from_numpy(maps[i : i + batch]).to(device)).cpu().numpy() for i in range(0, len(maps), batch)]
        )

    def trunk_state(self) -> dict[str, torch.Tensor]:
        """The tail's weights under the trunk's own names (what `ImageTrunk.load_tail` takes)."""
        return {
            f"{name}.{key}": value
            for name, unit in zip(self.names, self.units)
            for key, value in unit.state_dict().items()
        }


class FineTunedCHTN(nn.Module):
    """CHTN (or an ensemble) behind a trainable trunk tail: the same API, on prefix maps instead of features.

    Source and target images go through the same tail, as they share the trunk in the release.
    """

    def __init__(self, head: CHTN | CHTNEnsemble, tail: TrunkTail) -> None:
        super().__init__()
        self.head, self.tail = head, tail

    def encode_image(self, maps: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        return self.head.encode_image(self.tail(maps), normalize)

    def encode_text(self, text_features: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        return self.head.encode_text(text_features, normalize)

    def forward(self, image: torch.Tensor, text: torch.Tensor, source: torch.Tensor | None = None):
        return self.head(self.tail(image), text, None if source is None else self.tail(source))
