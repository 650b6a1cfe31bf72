"""CHTN model and losses, checked against straightforward reference computations."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from chtn.config import LossConfig, ModelConfig
from chtn.errors import CHTNError
from chtn.losses import chtn_loss, mmd_linear, mmd_quadratic, pair_l2
from chtn.model import CHTN

SMALL = dict(image_dim=12, text_dim=7, num_classes=4, hidden_dim=16, shared_dim=8, dropout=0.0)


def _gaussian(a: torch.Tensor, b: torch.Tensor, gamma: float) -> float:
    return math.exp(-gamma * float((a - b).pow(2).sum()))


def _release_gamma(x: torch.Tensor, y: torch.Tensor) -> float:
    z = torch.cat([x, y])
    n = len(z)
    total = sum(float((z[i] - z[j]).pow(2).sum()) for i in range(n) for j in range(n))
    return (n * n - n) / total


def test_forward_shapes_with_and_without_source():
    model = CHTN(ModelConfig(**SMALL, num_source_classes=3))
    out = model(torch.randn(5, 12), torch.randn(5, 7), torch.randn(6, 12))
    assert out["img6"].shape == out["txt7"].shape == (5, 16)
    assert out["img_logits"].shape == (5, 4) and out["src_logits"].shape == (6, 3)
    plain = CHTN(ModelConfig(**SMALL))
    assert not plain.has_source and not hasattr(plain, "source")
    assert "src_logits" not in plain(torch.randn(5, 12), torch.randn(5, 7), torch.randn(6, 12))


def test_common_representation_softmax_and_fc9():
    torch.manual_seed(0)
    model = CHTN(ModelConfig(**SMALL)).eval()
    emb = model.encode_image(torch.randn(6, 12))
    assert torch.allclose(emb.sum(-1), torch.ones(6), atol=1e-6) and (emb >= 0).all()
    normed = model.encode_text(torch.randn(6, 7), normalize=True)
    assert torch.allclose(normed.norm(dim=-1), torch.ones(6), atol=1e-6)
    fc9 = CHTN(ModelConfig(**{**SMALL, "common": "fc9"})).eval()
    assert fc9.encode_image(torch.randn(3, 12)).shape == (3, 8)


@pytest.mark.parametrize("common", ["softmax", "fc9"])
def test_an_image_and_a_text_with_the_same_fc7_get_the_same_common_representation(common):
    """Layer sharing: fc8-fc10 are one subnetwork, so equal fc7 activations give equal outputs, whichever modality."""
    torch.manual_seed(0)
    model = CHTN(ModelConfig(**SMALL, common=common)).eval()
    image = torch.randn(4, 12)
    image_fc7 = model.image(image)[1]
    model.text.fc7.register_forward_hook(lambda _module, _inputs, _output: image_fc7)  # the text's fc7 := the image's
    with torch.no_grad():
        text = torch.randn(4, 7)
        assert torch.equal(model.encode_text(text), model.encode_image(image))
        assert torch.equal(model.text_logits(text), model.image_logits(image))
        assert not torch.allclose(model.encode_image(image[:1]), model.encode_image(image[1:2]))  # not constant


def test_training_on_texts_alone_moves_the_images_common_representation():
    """The shared layers carry what the text loss teaches to the image side, whose own stream stays untouched."""
    torch.manual_seed(0)
    model = CHTN(ModelConfig(**SMALL))
    image, text, labels = torch.randn(8, 12), torch.randn(8, 7), torch.randint(0, 4, (8,))
    model.eval()
    before = model.encode_image(image).detach()
    image_stream = {k: v.clone() for k, v in model.image.state_dict().items()}
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    model.train()
    F.cross_entropy(model.text_logits(text), labels).backward()
    optimizer.step()
    model.eval()
    assert all(torch.equal(v, model.image.state_dict()[k]) for k, v in image_stream.items())
    assert (model.encode_image(image).detach() - before).abs().max() > 1e-3


def test_pair_l2_matches_formula():
    a, b = torch.tensor([[1.0, 2.0], [0.0, 0.0]]), torch.tensor([[1.0, 0.0], [3.0, 4.0]])
    assert pair_l2(a, b).item() == pytest.approx((4 + 25) / (2 * 2))


def test_mmd_linear_matches_the_release_formula():
    torch.manual_seed(1)
    x, y = torch.randn(8, 3), torch.randn(8, 3) + 1.0
    generator = torch.Generator().manual_seed(5)
    value = mmd_linear(x, y, generator).item()
    replay = torch.Generator().manual_seed(5)
    xi, yi = x[torch.randperm(8, generator=replay)], y[torch.randperm(8, generator=replay)]
    gamma = _release_gamma(x, y)
    terms = [
        _gaussian(xi[2 * i], xi[2 * i + 1], gamma)
        + _gaussian(yi[2 * i], yi[2 * i + 1], gamma)
        - _gaussian(xi[2 * i], yi[2 * i + 1], gamma)
        - _gaussian(xi[2 * i + 1], yi[2 * i], gamma)
        for i in range(4)
    ]
    assert value == pytest.approx(sum(terms) / 4, rel=1e-5)


def test_mmd_quadratic_matches_unbiased_reference():
    torch.manual_seed(2)
    x, y = torch.randn(5, 3), torch.randn(6, 3) * 2
    gamma = _release_gamma(x, y)
    expected = 0.0
    for mult in (0.5, 2.0):
        g = gamma / mult
        kxx = sum(_gaussian(x[i], x[j], g) for i in range(5) for j in range(5) if i != j) / 20
        kyy = sum(_gaussian(y[i], y[j], g) for i in range(6) for j in range(6) if i != j) / 30
        kxy = sum(_gaussian(x[i], y[j], g) for i in range(5) for j in range(6)) / 30
        expected += kxx + kyy - 2 * kxy
    assert mmd_quadratic(x, y, (0.5, 2.0)).item() == pytest.approx(expected, rel=1e-5)


def test_mmd_separates_shifted_distributions():
    torch.manual_seed(3)
    same = [mmd_quadratic(torch.randn(64, 8), torch.randn(64, 8), (1.0,)).item() for _ in range(5)]
    shifted = mmd_quadratic(torch.randn(64, 8), torch.randn(64, 8) + 2.0, (1.0,)).item()
    assert abs(sum(same) / 5) < 0.02 and shifted > 0.2
    assert mmd_linear(torch.randn(64, 8), torch.randn(64, 8) + 2.0).item() > 0.1


WEIGHTS = {
    "image_weight": "ce_img",
    "text_weight": "ce_txt",
    "pair_weight": "pair",
    "source_weight": "ce_src",
    "mmd_weight": "mmd",
}


@pytest.fixture
def batch():
    """One training batch (with source images) through a small CHTN, and its labels."""
    torch.manual_seed(4)
    model = CHTN(ModelConfig(**SMALL, num_source_classes=3))
    out = model(torch.randn(8, 12), torch.randn(8, 7), torch.randn(8, 12) + 1.0)
    return model, out, torch.randint(0, 4, (8,)), torch.randint(0, 3, (8,))


def _total(out, labels, source_labels, **weights) -> float:
    config = LossConfig(mmd_estimator="quadratic", **weights)  # deterministic: no random quad-tuples
    return chtn_loss(out, labels, config, source_labels)[0].item()


@pytest.mark.parametrize("weight", WEIGHTS)
def test_each_loss_weight_scales_its_own_term_of_the_total(batch, weight):
    """total = sum of weight x term (LossConfig): raising one weight adds that term's value once per unit."""
    _, out, labels, source_labels = batch
    zero = {name: 0.0 for name in WEIGHTS}
    unit_term = _total(out, labels, source_labels, **{**zero, weight: 1.0})
    reference = {
        "ce_img": F.cross_entropy(out["img_logits"], labels),
        "ce_txt": F.cross_entropy(out["txt_logits"], labels),
        "pair": ((out["img6"] - out["txt6"]).pow(2).sum() + (out["img7"] - out["txt7"]).pow(2).sum()) / (2 * 8),
        "ce_src": F.cross_entropy(out["src_logits"], source_labels),
        "mmd": mmd_quadratic(out["src6"], out["img6"], LossConfig().mmd_kernels)
        + mmd_quadratic(out["src7"], out["img7"], LossConfig().mmd_kernels),
    }[WEIGHTS[weight]].item()
    assert abs(reference) > 1e-3 and unit_term == pytest.approx(reference, rel=1e-5)
    base = _total(out, labels, source_labels)
    raised = _total(out, labels, source_labels, **{weight: getattr(LossConfig(), weight) + 2.0})
    assert raised - base == pytest.approx(2.0 * reference, rel=1e-4, abs=1e-6)
    assert _total(out, labels, source_labels, **zero) == 0.0


def test_source_weights_do_nothing_without_source_labels_and_the_gate_scales_only_them(batch):
    _, out, labels, source_labels = batch
    without = _total(out, labels, None)
    assert _total(out, labels, None, source_weight=5.0, mmd_weight=5.0) == without
    target_only = _total(out, labels, source_labels, source_weight=0.0, mmd_weight=0.0)
    assert target_only == pytest.approx(without)
    config = LossConfig(mmd_estimator="quadratic")
    gated = chtn_loss(out, labels, config, source_labels, source_scale=0.25)[0].item()
    full = _total(out, labels, source_labels)
    assert gated - target_only == pytest.approx(0.25 * (full - target_only), rel=1e-5)


def test_a_zero_weight_stops_that_terms_gradient(batch):
    """With the text CE and the paired L2 switched off nothing trains the text stream; either one alone does."""
    model, out, labels, source_labels = batch
    for text_weight, pair_weight, reaches_text in ((0.0, 0.0, False), (1.0, 0.0, True), (0.0, 0.001, True)):
        model.zero_grad()
        config = LossConfig(text_weight=text_weight, pair_weight=pair_weight, mmd_estimator="quadratic")
        chtn_loss(out, labels, config, source_labels)[0].backward(retain_graph=True)
        grad = model.text.fc6[0].weight.grad
        assert (grad is not None and grad.abs().max() > 0) == reaches_text, (text_weight, pair_weight)
        assert model.source.fc6[0].weight.grad.abs().max() > 0 and model.shared.fc10.weight.grad.abs().max() > 0


def test_shared_image_stream_serves_source_and_target():
    model = CHTN(ModelConfig(**SMALL, num_source_classes=3, share_image_stream=True)).eval()
    assert not hasattr(model, "source")
    images = torch.randn(4, 12)
    out = model(images, torch.randn(4, 7), images)
    assert torch.equal(out["src6"], out["img6"]) and out["src_logits"].shape == (4, 3)


def test_source_images_do_not_move_the_shared_streams_running_statistics():
    """Evaluation sees target images only; source batches (another domain) must not shift BN statistics."""
    model = CHTN(ModelConfig(**SMALL, num_source_classes=3, share_image_stream=True, image_input_norm=True))
    target, far_away_source = torch.randn(8, 12), torch.randn(8, 12) * 10 + 50
    model(target, torch.randn(8, 7))
    expected = {k: v.clone() for k, v in model.image.state_dict().items() if "running" in k}
    model2 = CHTN(ModelConfig(**SMALL, num_source_classes=3, share_image_stream=True, image_input_norm=True))
    model2.load_state_dict(model.state_dict())
    torch.manual_seed(0)
    model(target, torch.randn(8, 7), far_away_source)
    torch.manual_seed(0)
    model2(target, torch.randn(8, 7))
    for key, value in model.image.state_dict().items():
        if "running" in key:
            assert torch.allclose(value, model2.image.state_dict()[key]), key
            assert not torch.allclose(value, expected[key]), key  # the target batch did update them
    assert all(m.momentum == 0.1 for m in model.modules() if isinstance(m, torch.nn.BatchNorm1d))


def test_source_terms_scale_with_the_gate():
    torch.manual_seed(0)
    model = CHTN(ModelConfig(**SMALL, num_source_classes=3)).train()
    out = model(torch.randn(8, 12), torch.randn(8, 7), torch.randn(8, 12))
    labels, source_labels = torch.randint(0, 4, (8,)), torch.randint(0, 3, (8,))
    _, full = chtn_loss(out, labels, LossConfig(), source_labels, torch.Generator().manual_seed(1))
    _, gated = chtn_loss(out, labels, LossConfig(), source_labels, torch.Generator().manual_seed(1), 0.25)
    assert gated["ce_src"] == pytest.approx(0.25 * full["ce_src"]) and gated["mmd"] == pytest.approx(0.25 * full["mmd"])
    assert gated["ce_img"] == full["ce_img"]


def test_ensemble_averages_members_trained_from_different_initialisations():
    from chtn.losses import ensemble_loss
    from chtn.model import CHTNEnsemble, build_model

    assert type(build_model(ModelConfig(**SMALL))) is CHTN
    torch.manual_seed(0)
    ensemble = build_model(ModelConfig(**SMALL, num_source_classes=3, ensemble=3))
    assert isinstance(ensemble, CHTNEnsemble) and len(ensemble.members) == 3
    first, second = (m.image.fc6[0].weight for m in ensemble.members[:2])
    assert not torch.equal(first, second)  # separate initialisations
    ensemble.eval()
    image, text = torch.randn(5, 12), torch.randn(5, 7)
    members = torch.stack([m.encode_image(image) for m in ensemble.members])
    assert torch.allclose(ensemble.encode_image(image), members.mean(0))
    assert torch.allclose(ensemble.encode_text(text, normalize=True).norm(dim=-1), torch.ones(5))
    ensemble.train()
    outputs = ensemble(torch.randn(8, 12), torch.randn(8, 7), torch.randn(8, 12))
    labels, source_labels = torch.randint(0, 4, (8,)), torch.randint(0, 3, (8,))
    total, terms = ensemble_loss(outputs, labels, LossConfig(), source_labels, torch.Generator().manual_seed(1))
    replay = torch.Generator().manual_seed(1)  # the members draw their MMD pairs from one generator in turn
    singles = [chtn_loss(o, labels, LossConfig(), source_labels, replay) for o in outputs]
    assert total.item() == pytest.approx(sum(s[0].item() for s in singles), rel=1e-5)
    assert terms["ce_img"] == pytest.approx(np.mean([s[1]["ce_img"] for s in singles]), rel=1e-5)
    with pytest.raises(CHTNError, match="ensemble"):
        ModelConfig(**SMALL, ensemble=0)
