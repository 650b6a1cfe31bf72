"""CHTN's training losses: source/target cross-entropies, MMD (two estimators) and the paired L2."""

from __future__ import annotations

import functools
import operator
from collections.abc import Sequence

import torch
from torch.nn import functional as F

from chtn.config import LossConfig


def _pooled_gamma(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Release bandwidth: g = (n^2 - n) / sum_ij ||z_i - z_j||^2 over source and target pooled (no gradient)."""
    z = torch.cat([x, y]).detach().float()
    n = z.shape[0]
    total = torch.cdist(z, z).pow(2).sum()
    return (n * n - n) / total.clamp(min=1e-12)


def mmd_linear(x: torch.Tensor, y: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """The release's linear-time MMD estimate over random quad-tuples with one Gaussian kernel.

    For (s1, s2, t1, t2): k(s1,s2) + k(t1,t2) - k(s1,t2) - k(s2,t1), averaged over n//2 tuples.
    """
    n = min(x.shape[0], y.shape[0]) // 2 * 2
    if n < 2:
        return x.new_zeros(())
    gamma = _pooled_gamma(x, y)
    xi = x[torch.randperm(x.shape[0], generator=generator, device="cpu")[:n].to(x.device)].float()
    yi = y[torch.randperm(y.shape[0], generator=generator, device="cpu")[:n].to(y.device)].float()
    s1, s2, t1, t2 = xi[0::2], xi[1::2], yi[0::2], yi[1::2]

    def k(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return torch.exp(-gamma * (a - b).pow(2).sum(-1))

    return (k(s1, s2) + k(t1, t2) - k(s1, t2) - k(s2, t1)).mean()


def mmd_quadratic(x: torch.Tensor, y: torch.Tensor, multipliers: Sequence[float]) -> torch.Tensor:
    """Unbiased quadratic-time MMD^2 with a sum of Gaussian kernels around the pooled bandwidth."""
    x, y = x.float(), y.float()
    gamma = _pooled_gamma(x, y)
    dxx, dyy, dxy = torch.cdist(x, x).pow(2), torch.cdist(y, y).pow(2), torch.cdist(x, y).pow(2)
    m, n = x.shape[0], y.shape[0]
    total = x.new_zeros(())
    for mult in multipliers:
        g = gamma / mult
        kxx = torch.exp(-g * dxx).sum() - m  # drop the diagonal (k(x, x) = 1)
        kyy = torch.exp(-g * dyy).sum() - n
        total = total + kxx / (m * (m - 1)) + kyy / (n * (n - 1)) - 2 * torch.exp(-g * dxy).mean()
    return total


def pair_l2(image: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
    """L_pair = 1/(2N) * sum_n ||f_img(n) - f_txt(n)||^2."""
    return (image.float() - text.float()).pow(2).sum() / (2 * image.shape[0])


def chtn_loss(
    out: dict[str, torch.Tensor],
    labels: torch.Tensor,
    config: LossConfig,
    source_labels: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    source_scale: float = 1.0,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Total loss and each term (as floats for logging); `source_scale` multiplies both source terms."""
    terms: dict[str, torch.Tensor] = {
        "ce_img": config.image_weight
        * F.cross_entropy(out["img_logits"].float(), labels, label_smoothing=config.label_smoothing),
        "ce_txt": config.text_weight
        * F.cross_entropy(out["txt_logits"].float(), labels, label_smoothing=config.label_smoothing),
        "pair": config.pair_weight * (pair_l2(out["img6"], out["txt6"]) + pair_l2(out["img7"], out["txt7"])),
    }
    if "src_logits" in out and source_labels is not None:
        terms["ce_src"] = (
            source_scale * config.source_weight * F.cross_entropy(out["src_logits"].float(), source_labels)
        )
        if config.mmd_estimator == "linear":
            mmd = mmd_linear(out["src6"], out["img6"], generator) + mmd_linear(out["src7"], out["img7"], generator)
        else:
            mmd = mmd_quadratic(out["src6"], out["img6"], config.mmd_kernels) + mmd_quadratic(
                out["src7"], out["img7"], config.mmd_kernels
            )
        terms["mmd"] = source_scale * config.mmd_weight * mmd
    total = functools.reduce(operator.add, terms.values())  # a Tensor (sum() would start from the int 0)
    return total, {name: float(value.detach()) for name, value in terms.items()}


def ensemble_loss(
    outputs: dict[str, torch.Tensor] | list[dict[str, torch.Tensor]],
    labels: torch.Tensor,
    config: LossConfig,
    source_labels: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    source_scale: float = 1.0,
) -> tuple[torch.Tensor, dict[str, float]]:
    """`chtn_loss` summed over ensemble members (one dict = a single CHTN); logged terms are member means."""
    members = outputs if isinstance(outputs, list) else [outputs]
    results = [chtn_loss(out, labels, config, source_labels, generator, source_scale) for out in members]
    terms = {name: sum(r[1][name] for r in results) / len(results) for name in results[0][1]}
    return functools.reduce(operator.add, (r[0] for r in results)), terms
