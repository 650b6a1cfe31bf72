"""The embedded sample and its three checkpoints: what a new user opens first."""

from __future__ import annotations

import dataclasses
import shutil

import numpy as np
import pytest

from chtn.checkpoint import load_checkpoint
from tests.conftest import CHECKPOINTS, PAIRS, SAMPLE

NAMES = ("chtn_fashion_source", "chtn_no_source", "chtn_cifar_source")


@pytest.fixture(scope="module")
def computed(pairs, cache):
    """Each shipped checkpoint's test-split embeddings computed by its tower now (features shared through the cache)."""
    from chtn.tower import create_tower

    test = pairs.split("test")
    return {
        name: create_tower(load_checkpoint(CHECKPOINTS / f"{name}.safetensors"), "cpu").embed_pairs(test, cache)
        for name in NAMES
    }


@pytest.fixture(scope="module")
def test_maps(pairs, computed):
    """MAP on the sample test split for each shipped checkpoint."""
    from chtn.evaluate import evaluate_embeddings

    test = pairs.split("test")
    maps = {}
    for name, (image, text) in computed.items():
        label_names = load_checkpoint(CHECKPOINTS / f"{name}.safetensors").label_names
        maps[name] = evaluate_embeddings(image, text, test.label_index, label_names).mean_map
    return maps


def test_sample_layout_and_provenance(pairs):
    assert len(pairs) == 700 and len(pairs.label_names) == 20
    assert {s: pairs.splits.count(s) for s in ("train", "val", "test")} == {"train": 200, "val": 100, "test": 400}
    readme = (SAMPLE / "README.md").read_text()
    assert "Fashion Product Images" in readme and "CIFAR-10" in readme
    size = sum(p.stat().st_size for p in SAMPLE.rglob("*") if p.is_file())
    # 19 MB of data, 6.3 MB of feature packs, 7 checkpoints of 3.9 MB (3, and 2 more seeds), the Chinese sample's 7 MB
    assert size < 64 * 2**20


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


@pytest.mark.parametrize("name", NAMES)
def test_shipped_embeddings_equal_freshly_computed_ones(name, pairs, computed):
    """The embeddings shipped beside each checkpoint are exactly what its tower computes (regenerate them with
    `python -m scripts.build_sample --embeddings-only`), and the gallery serves them for the sample."""
    from chtn.gallery import embed_split, shipped_embeddings, shipped_embeddings_file

    checkpoint = load_checkpoint(CHECKPOINTS / f"{name}.safetensors")
    test = pairs.split("test")
    shipped = shipped_embeddings(checkpoint, test, "test")
    assert shipped is not None, f"{shipped_embeddings_file(checkpoint.path)} is missing or keyed for other content"
    image, text = computed[name]
    # MiniLM's features of a text move in the last bits with the batch it was padded in (the session's feature
    # cache may hold it from another test's batch), so equal to float32 precision, not bit for bit; a fresh
    # process with an empty cache reproduces the shipped files exactly (scripts/build_sample.py).
    np.testing.assert_allclose(shipped[0], image, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(shipped[1], text, rtol=1e-4, atol=1e-6)
    gallery = embed_split(checkpoint, pairs, "test")
    assert np.array_equal(gallery.image, shipped[0]) and np.array_equal(gallery.text, shipped[1])
    assert shipped_embeddings_file(checkpoint.path).stat().st_size < 100_000  # 400 x 2 x 20 float32 and a key


def test_shipped_embeddings_are_ignored_unless_checkpoint_data_and_split_match(tmp_path, pairs, cache):
    """A changed checkpoint, a changed dataset, another split or a damaged file: computed (and cached), never read."""
    from chtn.gallery import embed_split, embeddings_key, shipped_embeddings, split_is_embedded
    from chtn.tower import create_tower

    fashion = tmp_path / "fashion.safetensors"
    shutil.copy2(CHECKPOINTS / "chtn_fashion_source.safetensors", fashion)
    shipped_file = tmp_path / "fashion.embeddings.npz"
    shutil.copy2(CHECKPOINTS / "chtn_fashion_source.embeddings.npz", shipped_file)
    checkpoint = load_checkpoint(fashion)
    test = pairs.split("test")
    assert shipped_embeddings(checkpoint, test, "test") is not None  # same bytes beside it: trusted
    assert shipped_embeddings(checkpoint, test, "val") is None  # another split

    other = tmp_path / "other.safetensors"  # another checkpoint holding the fashion checkpoint's file
    shutil.copy2(CHECKPOINTS / "chtn_no_source.safetensors", other)
    shutil.copy2(shipped_file, tmp_path / "other.embeddings.npz")
    assert shipped_embeddings(load_checkpoint(other), test, "test") is None

    texts = list(pairs.texts)
    row = pairs.splits.index("test")
    texts[row] = "Completely different product text"
    changed = dataclasses.replace(pairs, texts=texts)  # one test text edited: another fingerprint
    assert shipped_embeddings(checkpoint, changed.split("test"), "test") is None
    assert not split_is_embedded(checkpoint, changed)
    before = shipped_file.read_bytes()
    gallery = embed_split(checkpoint, changed, "test")  # the session's feature cache: only the new text is encoded
    image, text = create_tower(checkpoint, "cpu").embed_pairs(changed.split("test"), cache)
    assert np.array_equal(gallery.image, image) and np.array_equal(gallery.text, text)
    cached = cache.root / "embeddings" / f"{embeddings_key(checkpoint, changed.split('test'))}.npz"
    assert cached.exists() and split_is_embedded(checkpoint, changed)  # computed into the cache
    assert shipped_file.read_bytes() == before  # the shipped file is only ever read

    shipped_file.write_bytes(before[: len(before) // 2])  # truncated: treated as absent, no exception
    assert shipped_embeddings(checkpoint, test, "test") is None
    with np.load(CHECKPOINTS / "chtn_fashion_source.embeddings.npz") as good:
        np.savez(shipped_file, key=good["key"], split=good["split"], image=good["image"][:-1], text=good["text"][:-1])
    assert shipped_embeddings(checkpoint, test, "test") is None  # right key, a row missing


def test_the_shipped_checkpoints_come_from_the_code_that_ships_them(pairs):
    """Retrained with today's code, a sample checkpoint must be the one shipped: the text vocabulary that `chtn train`
    fits on the sample's training texts now is the one every shipped checkpoint holds (a drift of 49 of 1,000 terms
    once went unnoticed). Rebuild with `python scripts/build_sample.py --checkpoints-only` when this fails."""
    from chtn.tower import TextEncoder
    from scripts.build_sample import shipped_checkpoints

    texts = pairs.split("train").texts
    fitted: dict[str, tuple[list[str], np.ndarray]] = {}
    for path in shipped_checkpoints():
        checkpoint = load_checkpoint(path)
        key = repr(checkpoint.config.encoder)
        if key not in fitted:  # one fit per text configuration (all the sample's share one)
            fitted[key] = TextEncoder.fit(checkpoint.config.encoder, texts, "cpu").tfidf.state()
        vocabulary, idf = fitted[key]
        shipped_vocabulary, shipped_idf = checkpoint.tfidf_state
        assert list(shipped_vocabulary) == list(vocabulary), path.name
        np.testing.assert_allclose(shipped_idf, idf, rtol=1e-6, err_msg=path.name)


def test_replicates_are_other_seeds_of_two_recipes_and_ship_their_embeddings(pairs):
    from analysis.workspace import recipe_key, recipe_runs
    from chtn.gallery import shipped_embeddings
    from scripts.build_sample import REPLICATE_SEEDS, REPLICATED, replicate_path

    test = pairs.split("test")
    every = [load_checkpoint(CHECKPOINTS / f"{name}.safetensors") for name in NAMES]
    every += [load_checkpoint(replicate_path(n, s)) for n in REPLICATED for s in REPLICATE_SEEDS]
    for name in REPLICATED:
        first = load_checkpoint(CHECKPOINTS / f"{name}.safetensors")
        runs = recipe_runs(first, every)
        assert sorted(run.path.name for run in runs) == [replicate_path(name, s).name for s in REPLICATE_SEEDS]
        assert {run.config.train.seed for run in [first, *runs]} == {0, *REPLICATE_SEEDS}
        assert all(recipe_key(run) == recipe_key(first) and run.digest != first.digest for run in runs)
        assert all(shipped_embeddings(run, test, "test") is not None for run in runs)
    assert recipe_key(every[0]) != recipe_key(every[1])  # with and without a source: two recipes
