"""Source-domain fit on real sample features: the fashion catalogue fits the target, CIFAR-10 does not."""

from __future__ import annotations

import numpy as np
import pytest

from chtn.domain import DomainFit, source_domain_fit
from tests.conftest import CIFAR, SOURCE


@pytest.fixture(scope="module")
def features(pairs, cache):
    from chtn.data import load_source
    from chtn.features import image_features

    def feats(paths):
        return image_features(paths, cache, progress=lambda *_: None)[0]

    train = pairs.split("train")
    catalogue, cifar = load_source(SOURCE), load_source(CIFAR)
    pick = np.random.default_rng(0).choice(len(catalogue), 300, replace=False)
    return (feats(train.image_paths), feats([catalogue.image_paths[i] for i in pick]), feats(cifar.image_paths[:300]))


def test_catalogue_is_relevant_and_cifar_is_not(features):
    target, catalogue, cifar = features
    fashion, objects = source_domain_fit(catalogue, target), source_domain_fit(cifar, target)
    assert objects.auc > 0.97 and objects.relevance < 0.06
    assert fashion.auc < 0.75 and fashion.relevance > 0.5
    assert fashion.source_p_target.mean() > 5 * objects.source_p_target.mean()
    assert fashion.source_p_target.shape == (300,)


def test_identical_sets_are_fully_relevant(features):
    target = features[0]
    fit = source_domain_fit(target, target.copy())
    assert fit.auc < 0.6 and fit.relevance > 0.8


def test_relevance_is_clipped_to_unit_interval():
    assert DomainFit(np.zeros(1, np.float32), auc=0.3).relevance == 1.0
    assert DomainFit(np.zeros(1, np.float32), auc=1.0).relevance == 0.0


def test_proxy_a_distance_separates_cifar_from_the_catalogue(features):
    from chtn.domain import proxy_a_distance

    target, catalogue, cifar = features
    assert proxy_a_distance(cifar, target) > 1.8
    assert proxy_a_distance(catalogue, target) < proxy_a_distance(cifar, target) - 0.5
    assert proxy_a_distance(target, target.copy()) < 0.4
