"""How the image-only source relates to each target category: coverage, capture, domain discrepancy, ImageNet prior.

These are transferability proxies (indicative); the direct evidence of what the source did to a category is
its transfer gain (`analysis.bias.gain`). Inputs are arrays (trunk features, source-classifier probabilities,
ImageNet logits) so every function here is pure and testable on constructed cases.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from chtn.ranking import normalize_rows

TOP = 3  # source / ImageNet classes listed per target category
RECOGNISED_SHARE = 0.3  # the ImageNet prior "recognises" a category when one class takes at least this share


def _norm_name(name: str) -> str:
    """'T-shirts ' -> 'tshirts': label names compared without case, spaces or punctuation."""
    return re.sub(r"[^0-9a-z]", "", name.casefold())


def _entropy_bits(shares: np.ndarray) -> float:
    shares = shares[shares > 0]
    return float(max(0.0, -(shares * np.log2(shares)).sum()))  # max: no '-0.0' for a single class


def label_matches(target_names: Sequence[str], source_names: Sequence[str]) -> dict[int, int]:
    """Target class -> source class with the same name (case, spaces and punctuation ignored)."""
    source = {_norm_name(n): j for j, n in enumerate(source_names)}
    return {i: source[_norm_name(n)] for i, n in enumerate(target_names) if _norm_name(n) in source}


def coverage(
    target_features: np.ndarray,
    target_labels: np.ndarray,
    target_names: Sequence[str],
    source_features: np.ndarray,
    source_labels: np.ndarray,
    source_names: Sequence[str],
    top: int = TOP,
) -> pd.DataFrame:
    """Per target category, the source classes that support it: the same-named class where the label spaces
    share names, and the `top` nearest source-class centroids (cosine of L2-normalised trunk-feature means).

    One row per (target category, rank): match ("label" for a name match, else "centroid"), source class,
    its cosine similarity to the category's centroid and its number of images.
    """
    target_c = _centroids(target_features, target_labels, len(target_names))
    source_c = _centroids(source_features, source_labels, len(source_names))
    similarity = target_c @ source_c.T
    counts = np.bincount(source_labels, minlength=len(source_names))
    matches = label_matches(target_names, source_names)
    rows = []
    for i, name in enumerate(target_names):
        if not (target_labels == i).any():
            continue
        order = [j for j in np.argsort(-similarity[i], kind="stable") if counts[j] > 0]
        if i in matches:  # the same-named class first, then the nearest others
            order = [matches[i]] + [j for j in order if j != matches[i]]
        for rank, j in enumerate(order[:top], start=1):
            rows.append(
                {
                    "category": name,
                    "rank": rank,
                    "match": "label" if matches.get(i) == j else "centroid",
                    "source class": source_names[j],
                    "similarity": float(similarity[i, j]),
                    "source images": int(counts[j]),
                }
            )
    return pd.DataFrame(rows)


def _centroids(features: np.ndarray, labels: np.ndarray, n_classes: int) -> np.ndarray:
    """L2-normalised class means of L2-normalised features (a zero row for an empty class)."""
    unit = normalize_rows(np.asarray(features, dtype=np.float32)).astype(np.float64)
    sums = np.zeros((n_classes, unit.shape[1]))
    np.add.at(sums, labels, unit)
    norms = np.linalg.norm(sums, axis=1, keepdims=True)
    return np.divide(sums, norms, out=np.zeros_like(sums), where=norms > 0)


def capture(
    source_probs: np.ndarray,
    target_labels: np.ndarray,
    target_names: Sequence[str],
    source_names: Sequence[str],
) -> pd.DataFrame:
    """The source classes the checkpoint's own source classifier assigns to each category's target images.

    `source_probs` (n_target_images, n_source_classes) are its softmax outputs. The matrix (one row per target
    category, one column per source class) holds the share of the category's images whose top source class
    is that column; `top class`, `top share` and `entropy (bits)` summarise each row.
    """
    assigned = np.asarray(source_probs).argmax(axis=1)
    rows = {}
    for i, name in enumerate(target_names):
        mask = target_labels == i
        if mask.any():
            rows[name] = np.bincount(assigned[mask], minlength=len(source_names)) / mask.sum()
    return pd.DataFrame.from_dict(rows, orient="index", columns=list(source_names))


def capture_summary(matrix: pd.DataFrame) -> pd.DataFrame:
    """Per category of a `capture` matrix: its top source class, that class's share and the entropy in bits."""
    values = matrix.to_numpy()
    return pd.DataFrame(
        {
            "category": matrix.index,
            "top source class": matrix.columns[values.argmax(axis=1)],
            "top share": values.max(axis=1),
            "capture entropy (bits)": [_entropy_bits(row) for row in values],
        }
    )


@dataclass(frozen=True)
class MMDTest:
    """Squared MMD of two samples with its permutation p-value."""

    mmd2: float  # unbiased quadratic-time estimate
    p_value: float  # share of label permutations with an MMD^2 at least as large (observed included)
    permutations: int
    seed: int


def mmd_test(
    x: np.ndarray,
    y: np.ndarray,
    multipliers: Sequence[float] = (1.0,),
    permutations: int = 500,
    seed: int = 0,
) -> MMDTest:
    """Unbiased MMD^2 between two samples with CHTN's kernel rule, and a permutation test of MMD = 0.

    The kernel is the training loss's (`chtn.losses`): a sum of Gaussian kernels exp(-g/m ||a-b||^2) with
    g = (N^2 - N) / sum of squared pooled distances and m over `multipliers` ((1,) for the release's linear
    estimator's single kernel). Pooled, the bandwidth does not change under permutation, so the kernel
    matrix is computed once and each permutation only re-sums it: written here because scipy's
    `permutation_test` would recompute the kernel for every resample.
    """
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    m, n = len(x), len(y)
    if m < 2 or n < 2:
        return MMDTest(float("nan"), float("nan"), 0, seed)
    z = np.vstack([x, y])
    squared = np.maximum((z * z).sum(1)[:, None] + (z * z).sum(1)[None, :] - 2 * z @ z.T, 0.0)
    np.fill_diagonal(squared, 0.0)
    gamma = (len(z) ** 2 - len(z)) / max(squared.sum(), 1e-12)
    kernel = sum(np.exp(-(gamma / mult) * squared) for mult in multipliers)
    np.fill_diagonal(kernel, 0.0)  # the unbiased estimate leaves out k(a, a)
    rng = np.random.default_rng(seed)
    assignments = np.zeros((permutations + 1, len(z)), dtype=bool)  # row 0: the observed split
    assignments[0, :m] = True
    for row in assignments[1:]:
        row[rng.permutation(len(z))[:m]] = True
    stats = _mmd2_of_assignments(kernel, assignments, m, n)
    return MMDTest(float(stats[0]), float((stats >= stats[0] - 1e-12).mean()), permutations, seed)


def _mmd2_of_assignments(kernel: np.ndarray, in_x: np.ndarray, m: int, n: int) -> np.ndarray:
    """Unbiased MMD^2 for each row of a boolean (P, N) matrix marking which pooled points form the first sample."""
    a, b = in_x.astype(np.float64), (~in_x).astype(np.float64)
    ka, kb = a @ kernel, b @ kernel
    kxx, kyy, kxy = (ka * a).sum(1), (kb * b).sum(1), (ka * b).sum(1)
    return kxx / (m * (m - 1)) + kyy / (n * (n - 1)) - 2 * kxy / (m * n)


def imagenet_prior(
    logits: np.ndarray,
    target_labels: np.ndarray,
    target_names: Sequence[str],
    class_names: Sequence[str],
    top: int = TOP,
) -> pd.DataFrame:
    """What the trunk's own ImageNet head calls each category's images: the top classes (argmax per image),
    their shares, the entropy in bits, and whether one class dominates (`RECOGNISED_SHARE`)."""
    predicted = np.asarray(logits).argmax(axis=1)
    rows = []
    for i, name in enumerate(target_names):
        mask = target_labels == i
        if not mask.any():
            continue
        shares = np.bincount(predicted[mask], minlength=len(class_names)) / mask.sum()
        order = np.argsort(-shares, kind="stable")[:top]
        rows.append(
            {
                "category": name,
                "imagenet classes": "; ".join(f"{class_names[j]} {shares[j]:.0%}" for j in order if shares[j] > 0),
                "imagenet top share": float(shares[order[0]]),
                "imagenet entropy (bits)": _entropy_bits(shares),
                "recognised by prior": bool(shares[order[0]] >= RECOGNISED_SHARE),
            }
        )
    return pd.DataFrame(rows)
