"""Source-fit diagnostics on constructed cases with known answers, and MMD against the training loss."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from analysis.bias.source_fit import (
    capture,
    capture_summary,
    coverage,
    imagenet_prior,
    label_matches,
    mmd_test,
)
from chtn.losses import mmd_quadratic


def test_mmd_equals_the_training_loss_estimate():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(30, 8)), rng.normal(0.3, 1.0, size=(40, 8))
    kernels = (0.25, 1.0, 4.0)
    reference = float(mmd_quadratic(torch.from_numpy(x), torch.from_numpy(y), kernels))
    assert mmd_test(x, y, kernels, permutations=10).mmd2 == pytest.approx(reference, rel=1e-5)


def test_mmd_is_null_for_two_halves_of_one_set_and_large_for_shifted_sets():
    rng = np.random.default_rng(1)
    pool = rng.normal(size=(200, 16))
    same = mmd_test(pool[:100], pool[100:], permutations=300)
    shifted = mmd_test(pool[:100], rng.normal(0.8, 1.0, size=(100, 16)), permutations=300)
    assert same.p_value > 0.05 and abs(same.mmd2) < 0.01
    assert shifted.p_value < 0.01 and shifted.mmd2 > 10 * abs(same.mmd2)
    assert mmd_test(pool[:100], pool[100:], permutations=300) == same  # seeded


def test_mmd_permutation_false_positive_rate_is_near_five_percent():
    rng = np.random.default_rng(2)
    p = [
        mmd_test(rng.normal(size=(15, 4)), rng.normal(size=(15, 4)), permutations=99, seed=s).p_value
        for s in range(100)
    ]
    assert 0.0 <= np.mean(np.array(p) <= 0.05) <= 0.12


def test_coverage_by_label_match_and_by_centroid():
    # Three target categories; source classes: "t shirts" (name match for "Tshirts", but far away),
    # "boots" (near "Heels"), "planes" (near nothing).
    rng = np.random.default_rng(3)
    axes = np.eye(6)
    target = np.vstack([axes[0] + 0.05 * rng.normal(size=(10, 6)), axes[1] + 0.05 * rng.normal(size=(10, 6))])
    target_labels = np.repeat([0, 1], 10)
    source = np.vstack(
        [
            axes[3] + 0.05 * rng.normal(size=(5, 6)),
            (axes[1] + 0.3 * axes[4]) + 0.05 * rng.normal(size=(7, 6)),
            axes[5] + 0.05 * rng.normal(size=(4, 6)),
        ]
    )
    source_labels = np.repeat([0, 1, 2], [5, 7, 4])
    table = coverage(
        target, target_labels, ["Tshirts", "Heels", "Empty"], source, source_labels, ["T-shirts", "boots", "planes"]
    )
    first = table[table["rank"] == 1].set_index("category")
    assert first.loc["Tshirts", "match"] == "label" and first.loc["Tshirts", "source class"] == "T-shirts"
    assert first.loc["Heels", "match"] == "centroid" and first.loc["Heels", "source class"] == "boots"
    assert first.loc["Heels", "similarity"] > 0.9 and first.loc["Heels", "source images"] == 7
    assert "Empty" not in set(table["category"])  # no target images, nothing to cover
    assert label_matches(["Tshirts", "Heels"], ["heels", "T-Shirts"]) == {0: 1, 1: 0}


def test_capture_shares_and_entropy():
    probs = np.array([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.6, 0.4], [0.1, 0.9]])
    labels = np.array([0, 0, 0, 0, 1])
    matrix = capture(probs, labels, ["Sandals", "Heels"], ["Flip Flops", "Boots"])
    assert matrix.loc["Sandals"].tolist() == [0.75, 0.25]
    summary = capture_summary(matrix).set_index("category")
    assert summary.loc["Sandals", "top source class"] == "Flip Flops"
    assert summary.loc["Sandals", "capture entropy (bits)"] == pytest.approx(0.8113, abs=1e-4)
    assert summary.loc["Heels", "capture entropy (bits)"] == 0.0


def test_imagenet_prior_marks_unrecognised_categories():
    logits = np.full((8, 5), -1.0)
    logits[[0, 1, 2, 3], 2] = 5.0  # category 0: all "sandal"
    for row, cls in zip(range(4, 8), (0, 1, 3, 4)):  # category 1: four different classes
        logits[row, cls] = 5.0
    table = imagenet_prior(logits, np.repeat([0, 1], 4), ["Sandals", "Misc"], ["a", "b", "sandal", "d", "e"]).set_index(
        "category"
    )
    assert table.loc["Sandals", "recognised by prior"] and table.loc["Sandals", "imagenet top share"] == 1.0
    assert table.loc["Sandals", "imagenet classes"] == "sandal 100%"
    assert not table.loc["Misc", "recognised by prior"]
    assert table.loc["Misc", "imagenet entropy (bits)"] == pytest.approx(2.0)
