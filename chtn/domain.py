"""Source-domain fit: can the target images be told apart from the source images?

CHTN transfers through the image stream. A source from another domain (CIFAR-10 objects for a
fashion catalogue) pulls that stream away from the target and costs MAP (negative transfer,
measured in docs/benchmarks.md). We train a domain classifier (source vs target) on the frozen
trunk features and score it out of fold, so a classifier that memorises its rows cannot fake a
separation. Its ROC AUC is 0.5 when the two sets look alike (an image-only catalogue of the same
products) and 1.0 when they are separable at a glance (CIFAR-10). The source's relevance is
2 * (1 - AUC) clipped to [0, 1]: 1 for an indistinguishable source, 0 for a separable one.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class DomainFit:
    """Out-of-fold P(target | image) for every source image, and the set-level verdict."""

    source_p_target: np.ndarray  # per source image: how target-like it looks (0..1, prior 1/2)
    auc: float  # how well a classifier separates the domains (0.5 = not at all)

    @property
    def relevance(self) -> float:
        return float(np.clip(2.0 * (1.0 - self.auc), 0.0, 1.0))


def _out_of_fold_p_target(source: np.ndarray, target: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """Out-of-fold P(target | image) for every row of source then target: a class-balanced, scaled logistic
    regression, each row scored by a classifier that never saw it."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x = np.vstack([source, target]).astype(np.float32)
    is_target = np.r_[np.zeros(len(source), int), np.ones(len(target), int)]
    folds = max(2, min(folds, len(target), len(source)))
    classifier = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, class_weight="balanced", max_iter=2000))
    split = StratifiedKFold(folds, shuffle=True, random_state=seed)
    return cross_val_predict(classifier, x, is_target, cv=split, method="predict_proba")[:, 1]


def source_domain_fit(source: np.ndarray, target: np.ndarray, folds: int = 5, seed: int = 0) -> DomainFit:
    """Domain fit of `source` rows relative to `target` rows (both frozen-trunk image features)."""
    from sklearn.metrics import roc_auc_score

    p_target = _out_of_fold_p_target(source, target, folds, seed)
    is_target = np.r_[np.zeros(len(source), int), np.ones(len(target), int)]
    return DomainFit(p_target[: len(source)].astype(np.float32), float(roc_auc_score(is_target, p_target)))


def proxy_a_distance(source: np.ndarray, target: np.ndarray, folds: int = 5, seed: int = 0) -> float:
    """Proxy A-distance 2 (1 - 2 err) of the same domain classifier (Ben-David et al., 2007), with err its
    out-of-fold balanced error rate: 0 when the domains cannot be told apart, 2 when they always can."""
    p_target = _out_of_fold_p_target(source, target, folds, seed)
    source_error = float((p_target[: len(source)] >= 0.5).mean())
    target_error = float((p_target[len(source) :] < 0.5).mean())
    return float(np.clip(2.0 * (1.0 - (source_error + target_error)), 0.0, 2.0))
