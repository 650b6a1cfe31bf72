"""Feature packs: the frozen image features a dataset ships (the sample's pairs and sources), read instead of
encoding.

Image budget: 6 CIFAR images go through the trunk once (the reference), 2 pair images, 2 in the refusal checks.
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from chtn.data import load_pairs, load_source
from chtn.encoders import cached_image_trunk
from chtn.errors import CHTNError
from chtn.features import PACK, FeatureCache, image_features, write_feature_pack
from chtn.hashing import file_digest
from tests.conftest import CIFAR, PAIRS, SOURCE


@pytest.fixture(scope="module")
def trunk():
    return cached_image_trunk()


@pytest.fixture(scope="module")
def cifar_copy(tmp_path_factory):
    """Six CIFAR images (two classes) copied into a dataset folder of their own, without a pack."""
    root = tmp_path_factory.mktemp("cifar")
    for name in ("airplane", "ship"):
        (root / name).mkdir()
        for image in sorted((CIFAR / name).iterdir())[:3]:
            shutil.copy(image, root / name / image.name)
    return root


@pytest.fixture(scope="module")
def encoded(cifar_copy, trunk, tmp_path_factory):
    """(paths, pooled features, ImageNet logits) of the copies, encoded by the trunk into a fresh cache."""
    paths = load_source(cifar_copy).image_paths
    pooled, logits = image_features(paths, FeatureCache(tmp_path_factory.mktemp("cache")), trunk)
    return paths, pooled, logits


def _steps(paths, trunk, cache_dir) -> list[str]:
    """The progress steps `image_features` reports for `paths` with an empty cache (encoding reports them)."""
    steps: list[str] = []
    image_features(paths, FeatureCache(cache_dir), trunk, progress=lambda _, step: steps.append(step))
    return steps


SHIPPED = {  # the sample's packs: the images each covers, and the precision it ships them at
    "pairs": (PAIRS.parent / "pairs.features.npz", lambda: load_pairs(PAIRS).image_paths, np.float32),
    "fashion-catalogue": (SOURCE.parent / "source.features.npz", lambda: load_source(SOURCE).image_paths, np.float16),
    "cifar10": (CIFAR / PACK, lambda: load_source(CIFAR).image_paths, np.float16),
}


@pytest.mark.parametrize("name", SHIPPED)
def test_the_sample_ships_a_pack_of_every_image_for_the_default_trunk(name, trunk):
    path, images, dtype = SHIPPED[name]
    with np.load(path, allow_pickle=False) as pack:
        assert str(pack["encoder"]) == trunk.identity
        keys = set(pack["keys"].tolist())
        assert pack["pooled"].dtype == dtype and pack["pooled"].shape == (len(keys), trunk.feature_dim)
    assert {file_digest(p) for p in images()} <= keys


def test_the_pairs_pack_holds_what_the_trunk_computes_now(trunk, tmp_path):
    """Exact (float32) features of the pairs, as the shipped checkpoints were trained on: two test images encoded
    here from copies (no pack beside them) agree with the pack up to CPU rounding."""
    paths = load_pairs(PAIRS).split("test").image_paths[:2]
    copies = [shutil.copy(p, tmp_path / p.name) for p in paths]
    encoded, _ = image_features(copies, FeatureCache(tmp_path / "cache"), trunk)
    packed, _ = image_features(paths, FeatureCache(tmp_path / "packed"), trunk)
    np.testing.assert_allclose(packed, encoded, rtol=1e-4, atol=1e-5)


def test_a_pack_serves_what_the_trunk_computes_without_encoding(encoded, trunk, tmp_path):
    paths, pooled, logits = encoded
    write_feature_pack(paths, FeatureCache(tmp_path / "writer"), paths[0].parent.parent / PACK, trunk)
    try:
        steps: list[str] = []
        from_pack, pack_logits = image_features(
            paths, FeatureCache(tmp_path / "reader"), trunk, progress=lambda _, step: steps.append(step)
        )
    finally:
        (paths[0].parent.parent / PACK).unlink()
    assert steps == []  # nothing was encoded
    np.testing.assert_allclose(from_pack, pooled, rtol=2e-3, atol=2e-3)  # float16 in the pack
    np.testing.assert_allclose(pack_logits, logits, atol=0.05)
    assert (pack_logits.argmax(1) == logits.argmax(1)).all()


def test_a_pack_of_another_trunk_or_of_other_bytes_is_not_used(encoded, trunk, tmp_path):
    paths, pooled, _ = encoded
    folder = tmp_path / "data" / "airplane"
    folder.mkdir(parents=True)
    image = shutil.copy(paths[0], folder / "a.jpg")
    np.savez(
        tmp_path / "data" / PACK,
        encoder=np.array("another-trunk@0"),
        keys=np.array([file_digest(paths[0])]),
        pooled=pooled[:1].astype(np.float16),
    )
    assert _steps([image], trunk, tmp_path / "cache-1") != []  # another trunk's vectors: encoded
    np.savez(
        tmp_path / "data" / PACK,
        encoder=np.array(trunk.identity),
        keys=np.array(["0" * 40]),
        pooled=pooled[:1].astype(np.float16),
    )
    assert _steps([image], trunk, tmp_path / "cache-2") != []  # no vector for these bytes: encoded


@pytest.mark.parametrize("content", ["garbage", "empty", "array", "pickle", "no-keys"])
def test_an_unreadable_pack_is_a_clear_error_naming_it(content, encoded, trunk, tmp_path):
    folder = tmp_path / "data" / "airplane"
    folder.mkdir(parents=True)
    image = shutil.copy(encoded[0][0], folder / "a.jpg")
    pack = tmp_path / "data" / PACK
    if content in ("garbage", "empty"):
        pack.write_bytes(b"not a zip" if content == "garbage" else b"")
    elif content == "array":  # a plain .npy under the pack's name
        np.save(pack.open("wb"), np.zeros(3))
    else:  # a pickled object array, or a pack without keys
        np.savez(pack.open("wb"), encoder=np.array(trunk.identity), keys=np.array([{"x": 1}], dtype=object))
        if content == "no-keys":
            np.savez(pack.open("wb"), encoder=np.array(trunk.identity), pooled=np.zeros((1, 3), np.float16))
    with pytest.raises(CHTNError, match=rf"{PACK} is not a readable feature pack.*Delete it"):
        image_features([image], FeatureCache(tmp_path / "cache"), trunk)
