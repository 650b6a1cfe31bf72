"""Attributions of pair similarities on the real sample checkpoint and images."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from analysis.attribution.explainer import PairExplainer, rank_correlation
from analysis.attribution.render import highlighted_html, overlay, png_bytes, top_words
from analysis.attribution.spans import tfidf_occurrences, word_scores
from analysis.attribution.types import Item, Settings, explainer_items
from chtn.checkpoint import load_checkpoint
from chtn.errors import CHTNError
from tests.conftest import CHECKPOINTS

FAST = Settings(method="ig", n_steps=16, internal_batch_size=16)


@pytest.fixture(scope="module")
def checkpoint():
    return load_checkpoint(CHECKPOINTS / "chtn_fashion_source.safetensors")


@pytest.fixture(scope="module")
def explainer(checkpoint, tmp_path_factory):
    return PairExplainer(checkpoint, cache_dir=tmp_path_factory.mktemp("attr"))


@pytest.fixture(scope="module")
def test_split(pairs):
    return pairs.split("test")


def _pair(test_split, row):
    return explainer_items(test_split.ids, test_split.texts, test_split.image_paths, row)


def test_similarity_matches_the_cached_embeddings(explainer, test_split, checkpoint, cache):
    from chtn.tower import create_tower

    image, text = _pair(test_split, 3)
    tower = create_tower(checkpoint, "cpu")
    a = tower.embed_images([test_split.image_paths[3]], cache)[0]
    b = tower.embed_texts([test_split.texts[3]], cache)[0]
    expected = float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))
    assert explainer.similarity(image, text) == pytest.approx(expected, abs=1e-4)


def test_image_ig_is_complete_within_its_delta(explainer, test_split):
    image, text = _pair(test_split, 5)
    result = explainer.explain(image, text, FAST)
    assert result.heatmap.shape == (224, 224) and result.image.shape == (224, 224, 3)
    gap = result.value - result.baseline_value
    assert abs(result.total - gap) == pytest.approx(abs(result.delta), abs=1e-4)
    assert abs(result.delta) < 0.1 * abs(gap)  # the segmented path keeps the gap small at 16 steps


def test_segmented_ig_beats_plain_ig_on_the_saturated_path(explainer, test_split):
    from captum.attr import IntegratedGradients

    from analysis.attribution.objective import ImageObjective, anchors

    image, text = _pair(test_split, 5)
    pixels = explainer.tower.pixels(image.value)
    black = torch.full_like(pixels, -1.0)
    ours = explainer.explain(image, text, FAST)
    assert 16 <= ours.n_steps <= 3 * 16  # gradient evaluations, refinements included
    _, plain = IntegratedGradients(ImageObjective(explainer.tower)).attribute(
        pixels,
        baselines=black,
        additional_forward_args=(anchors(explainer.embed(text)[0]),),
        n_steps=ours.n_steps,
        internal_batch_size=16,
        return_convergence_delta=True,
    )
    assert abs(ours.delta) < abs(float(plain)) / 3  # same number of gradient evaluations
    quick = explainer.explain(image, text, Settings(method="ig", n_steps=16, refine=False))
    assert quick.n_steps <= 20  # refinement off: the steps asked for (segments round up to at least one each)


def test_text_attribution_is_complete_and_credits_the_category_word(explainer, test_split, checkpoint):
    """For correct matches, the article-type word in the title pulls the pair together."""
    credited = 0
    rows = [r for r in range(len(test_split)) if "Watches" in test_split.texts[r]][:3]
    assert rows, "the sample has watch titles containing the category word"
    for row in rows:
        image, text = _pair(test_split, row)
        result = explainer.explain(text, image, FAST)
        assert abs(result.total - (result.value - result.baseline_value)) == pytest.approx(abs(result.delta), abs=1e-4)
        assert abs(result.delta) < 0.1 * abs(result.value - result.baseline_value)
        scores = {w.text: w.score for w in result.words}
        credited += scores["Watches"] > 0 and scores["Watches"] == max(scores.values())
    assert credited == len(rows)


def test_randomised_chtn_weights_change_the_image_map(checkpoint, test_split, tmp_path):
    """Sanity check after Adebayo et al.: the map must depend on the trained weights."""
    import dataclasses

    from chtn.model import CHTN

    trained = PairExplainer(checkpoint, cache_dir=tmp_path / "a")
    torch.manual_seed(0)
    random_model = CHTN(checkpoint.config.model).eval().requires_grad_(False)
    # the same file's metadata with randomised weights: another digest, so its own tower and cache keys
    weights = {name: tensor.numpy() for name, tensor in random_model.state_dict().items()}
    randomised_checkpoint = dataclasses.replace(checkpoint, weights=weights, digest="randomised")
    randomised = PairExplainer(randomised_checkpoint, cache_dir=tmp_path / "b")
    correlations = []
    plain = dataclasses.replace(FAST, refine=False)  # the maps' dependence on the weights, not their completeness
    for row in (0, 40, 80):
        image, text = _pair(test_split, row)
        a = trained.explain(image, text, plain)
        b = randomised.explain(image, text, plain)  # its own reference embedding of the text, too
        correlations.append(rank_correlation(a.heatmap, b.heatmap))
    assert np.mean(correlations) < 0.5, correlations


def test_gradcam_sits_on_the_product_not_the_white_background(explainer, test_split):
    """Product photos are on white: most positive Grad-CAM mass must lie on non-white pixels, and no map is
    blank, saturated pairs (similarity ~1, where the softmax has no gradient) included."""
    inside, values = [], []
    for row in range(0, 400, 40):
        image, text = _pair(test_split, row)
        result = explainer.explain(image, text, Settings(method="gradcam"))
        product = result.image.min(-1) < 235
        heat = np.clip(result.heatmap, 0, None)
        assert heat.max() > 0, f"blank Grad-CAM for row {row} (similarity {result.value:.4f})"
        assert result.target == "logits"
        values.append(result.value)
        inside.append(heat[product].sum() / max(heat.sum(), 1e-12) / max(product.mean(), 1e-6))
    assert max(values) > 0.999  # the saturated case is among them
    assert np.median(inside) > 1.4, inside  # mass per product pixel clearly above mass per average pixel


def test_contrastive_mode_attributes_the_difference(explainer, test_split):
    image, text = _pair(test_split, 7)
    _, wrong_text = _pair(test_split, 300)
    contrast = explainer.explain(image, wrong_text, Settings(method="ig", n_steps=32), contrast=text)
    expected = explainer.similarity(image, wrong_text) - explainer.similarity(image, text)
    assert contrast.value == pytest.approx(expected, abs=1e-4)
    # each cosine is integrated on its own segments: the difference is complete within 5% (was 10-30%)
    assert abs(contrast.delta) < 0.05 * abs(contrast.value - contrast.baseline_value), contrast.delta
    assert contrast.heatmap.sum() == pytest.approx(
        contrast.value - contrast.baseline_value, abs=abs(contrast.delta) + 1e-4
    )
    with pytest.raises(CHTNError, match="same modality"):
        explainer.explain(image, wrong_text, FAST, contrast=image)


def test_occlusion_and_smoothgrad_run_and_cache(explainer, test_split, tmp_path):
    image, text = _pair(test_split, 9)
    occlusion = explainer.explain(image, text, Settings(method="occlusion", window=56, stride=56))
    assert occlusion.heatmap.shape == (224, 224) and occlusion.delta is None
    smooth = explainer.explain(image, text, Settings(method="smoothgrad", n_steps=8, nt_samples=2))
    assert smooth.delta is not None and 8 <= smooth.n_steps <= 3 * 8  # gradient evaluations per noisy sample
    again = explainer.explain(image, text, Settings(method="smoothgrad", n_steps=8, nt_samples=2))
    assert again.seconds == smooth.seconds and np.array_equal(again.heatmap, smooth.heatmap)  # read from disk


def test_bad_inputs_get_clear_errors(explainer, test_split, tmp_path):
    image, _ = _pair(test_split, 0)
    with pytest.raises(CHTNError, match="empty"):
        explainer.explain(Item("text", "   "), image, FAST)
    not_an_image = tmp_path / "notes.jpg"
    not_an_image.write_text("hello")
    with pytest.raises(CHTNError):
        explainer.explain(Item("image", str(not_an_image), "notes.jpg"), Item("text", "a watch"), FAST)
    with pytest.raises(CHTNError, match="Unknown attribution method"):
        Settings(method="lime")


def test_word_scores_preserve_the_sum_and_map_char_ngrams(checkpoint):
    from chtn.tower import TextEncoder

    tfidf = TextEncoder.from_checkpoint(checkpoint).tfidf
    text = "Titan Women Gold Watches"
    vector = tfidf.encode([text])[0]
    scores = np.where(vector > 0, 1.0, 0.0)
    occurrences = tfidf_occurrences(text, tfidf)
    assert {f for f, _ in occurrences} == set(np.flatnonzero(vector))  # every active feature located
    words = word_scores(
        text, [(0, 0), (0, 5), (6, 11), (12, 16), (17, 24), (0, 0)], np.array([9, 1, 2, 3, 4, 9.0]), tfidf, scores
    )
    assert [w.text for w in words] == ["Titan", "Women", "Gold", "Watches"]
    assert sum(w.score for w in words) == pytest.approx(10 + scores.sum())  # [CLS]/[SEP] stay out
    assert [w.minilm for w in words] == [1, 2, 3, 4]


def test_views_render(explainer, test_split):
    image, text = _pair(test_split, 5)
    picture = overlay(explainer.explain(image, text, Settings(method="gradcam")))
    assert picture.shape == (224, 224, 3) and png_bytes(picture).startswith(b"\x89PNG")
    words = explainer.explain(text, image, FAST).words
    page = highlighted_html(words, test_split.texts[5])
    assert all(w.text in page for w in words) and "rgba(" in page
    assert top_words(words, 2)[0][1] == max(w.score for w in words)
    assert "&lt;b&gt;" in highlighted_html(word_scores("<b>", [], None, None, None), "<b>")  # escaped
