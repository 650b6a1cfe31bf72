"""The embedded sample and its three checkpoints: what a new user opens first."""

from __future__ import annotations

import pytest

from chtn.checkpoint import load_checkpoint
from tests.conftest import CHECKPOINTS, PAIRS, SAMPLE

NAMES = ("chtn_fashion_source", "chtn_no_source", "chtn_cifar_source")


@pytest.fixture(scope="module")
def test_maps(pairs, cache):
    """MAP on the sample test split for each shipped checkpoint (features shared through the cache)."""
    from chtn.evaluate import evaluate_embeddings
    from chtn.tower import create_tower

    test = pairs.split("test")
    maps = {}
    for name in NAMES:
        checkpoint = load_checkpoint(CHECKPOINTS / f"{name}.safetensors")
        image, text = create_tower(checkpoint, "cpu").embed_pairs(test, cache)
        maps[name] = evaluate_embeddings(image, text, test.label_index, checkpoint.label_names).mean_map
    return maps


def test_sample_layout_and_provenance(pairs):
    assert len(pairs) == 700 and len(pairs.label_names) == 20
    assert {s: pairs.splits.count(s) for s in ("train", "val", "test")} == {"train": 200, "val": 100, "test": 400}
    readme = (SAMPLE / "README.md").read_text()
    assert "Fashion Product Images" in readme and "CIFAR-10" in readme
    size = sum(p.stat().st_size for p in SAMPLE.rglob("*") if p.is_file())
    assert size < 30 * 2**20


@pytest.mark.parametrize("name", NAMES)
def test_checkpoint_metadata_describes_its_training(name):
    checkpoint = load_checkpoint(CHECKPOINTS / f"{name}.safetensors")
    meta = checkpoint.meta
    assert checkpoint.label_names == sorted(checkpoint.label_names) and len(checkpoint.label_names) == 20
    assert meta["dataset"]["n_train"] == 200 and meta["dataset"]["fingerprint"]
    assert meta["encoders"]["image"].startswith("tf_efficientnet_lite0@")
    assert {"code_version", "created_at", "metrics", "preset"} <= set(meta)
    assert (CHECKPOINTS / f"{name}.safetensors").stat().st_size < 10 * 2**20
    source = meta["source"]
    if name == "chtn_no_source":
        assert source is None and not checkpoint.model.has_source
    else:
        assert checkpoint.model.has_source
        assert ("cifar10" in source["path"]) == (name == "chtn_cifar_source")


def test_checkpoints_retrieve_far_above_chance_and_transfer_helps(test_maps):
    assert all(value > 0.7 for value in test_maps.values())  # chance on this split is ~0.06
    # the catalogue source (same kind of images, labelled) must beat no source on the sample
    assert test_maps["chtn_fashion_source"] > test_maps["chtn_no_source"]


def test_readme_commands_reproduce_the_sample_checkpoints():
    """The README lists the exact CLI commands that made the shipped checkpoints."""
    readme = (SAMPLE.parent / "README.md").read_text()
    from scripts.build_sample import CHECKPOINTS as RECIPES

    for name, source in RECIPES.items():
        assert f"--source {source} --preset small --out runs/{name}" in readme
    assert f"--data {PAIRS.relative_to(SAMPLE.parent)}" in readme
