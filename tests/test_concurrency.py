"""Several reviewers at once: shared towers and explainers give each thread exactly its own result.

Before the tower, two threads sharing one explainer got 8 of 12 attributions wrong (the other pair's map,
or a shape error). Each round below uses a fresh cache folder, so every result is computed, never read back.
"""

from __future__ import annotations

import functools
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch

from analysis.attribution.explainer import PairExplainer, explainer_items
from analysis.attribution.types import Settings
from chtn.checkpoint import load_checkpoint
from chtn.features import FeatureCache
from chtn.tower import create_tower
from tests.conftest import CHECKPOINTS

ROWS = (0, 57, 123, 301)  # test pairs of four different categories
JOBS = [
    (row, side, settings)
    for row in ROWS
    for side, settings in (
        ("image", Settings(method="gradcam")),
        ("text", Settings(n_steps=8)),
    )
] + [
    (ROWS[0], "image", Settings(method="smoothgrad", n_steps=4, nt_samples=2, refine=False)),
    (ROWS[1], "image", Settings(method="smoothgrad", n_steps=4, nt_samples=2, refine=False, nt_seed=1)),
]


@pytest.fixture(scope="module")
def checkpoint():
    return load_checkpoint(CHECKPOINTS / "chtn_fashion_source.safetensors")


def _explain(explainer: PairExplainer, test, job) -> np.ndarray:
    row, side, settings = job
    image, text = explainer_items(test.ids, test.texts, test.image_paths, row)
    result = explainer.explain(image, text, settings) if side == "image" else explainer.explain(text, image, settings)
    return result.heatmap if side == "image" else np.array([w.score for w in result.words])


def test_concurrent_attributions_equal_the_sequential_ones(checkpoint, pairs, tmp_path):
    test = pairs.split("test")
    sequential = [_explain(PairExplainer(checkpoint, "cpu", tmp_path / "sequential"), test, job) for job in JOBS]
    for round_ in range(3):
        shared = PairExplainer(checkpoint, "cpu", tmp_path / f"round{round_}")  # one explainer, every thread
        order = JOBS[round_:] + JOBS[:round_]  # a different interleaving each round
        with ThreadPoolExecutor(max_workers=4) as pool:
            results = list(pool.map(functools.partial(_explain, shared, test), order))
        for job, result in zip(order, results):
            assert np.array_equal(result, sequential[JOBS.index(job)]), f"round {round_}: {job[:2]} differs"
    # the maps are pair-specific, so a swapped result could not pass the comparison above
    assert not np.allclose(sequential[0], sequential[2])


def test_concurrent_embedding_equals_the_sequential_one(checkpoint, pairs, tmp_path):
    test = pairs.split("test")
    tower = create_tower(checkpoint, "cpu")
    chunks = [test.select(range(start, start + 25)) for start in (0, 100, 200, 300)]
    expected = [tower.embed_pairs(chunk, FeatureCache(tmp_path / "sequential")) for chunk in chunks]
    with ThreadPoolExecutor(max_workers=4) as pool:  # texts of different lengths: the tokenizer is shared
        found = list(pool.map(lambda i: tower.embed_pairs(chunks[i], FeatureCache(tmp_path / f"t{i}")), range(4)))
    for (image, text), (image_again, text_again) in zip(expected, found):
        assert np.array_equal(image, image_again) and np.array_equal(text, text_again)


def test_a_tower_on_another_device_never_moves_the_shared_modules(checkpoint):
    """Towers are cached per device; another device gets copies ('meta' stands in for a GPU here)."""
    cpu = create_tower(checkpoint, "cpu")
    assert create_tower(load_checkpoint(checkpoint.path), "cpu") is cpu  # keyed by content, not by object
    other = create_tower(checkpoint, "meta")
    assert other is not cpu and other.head is not checkpoint.model
    for module in (cpu.trunk, cpu.head, checkpoint.model, cpu.text.minilm):
        assert {p.device.type for p in module.parameters()} == {"cpu"}
    assert {p.device.type for p in other.trunk.parameters()} == {"meta"}
    assert not any(p.requires_grad for p in cpu.head.parameters())  # shared read-only
    with torch.no_grad():
        assert cpu.encode_image(torch.zeros(1, 3, 224, 224)).shape == (1, len(checkpoint.label_names))
