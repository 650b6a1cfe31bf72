"""CHTN's forward against a reference written out with plain torch ops (in the manner of minGPT's tests).

A tiny frozen network (fixed seed, BatchNorm running statistics and affine parameters moved off their
defaults, eval mode) is run by `chtn.model` and by `reference_forward` below, which reads the state dict
and does the matmuls, BatchNorm in eval form, ReLUs and softmax by hand, in float64. Every activation is
compared: each stream's fc6/fc7, the shared fc8/fc9/fc10, the common representation in both `model.common`
settings, the source stream and classifier, and the ensemble's mean.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from chtn.config import ModelConfig
from chtn.model import build_model

TINY = ModelConfig(image_dim=6, text_dim=5, num_classes=4, hidden_dim=7, shared_dim=3, dropout=0.5)
BN_EPS = 1e-5  # torch.nn.BatchNorm1d's default, which FCBlock and the input norms use

Params = dict[str, torch.Tensor]


def linear(x: torch.Tensor, p: Params, name: str) -> torch.Tensor:
    return x @ p[f"{name}.weight"].T + p[f"{name}.bias"]


def batchnorm_eval(x: torch.Tensor, p: Params, name: str) -> torch.Tensor:
    """(x - running mean) / sqrt(running var + eps) * weight + bias: no batch statistics at test time."""
    scale = p[f"{name}.weight"] / torch.sqrt(p[f"{name}.running_var"] + BN_EPS)
    return (x - p[f"{name}.running_mean"]) * scale + p[f"{name}.bias"]


def relu(x: torch.Tensor) -> torch.Tensor:
    return torch.where(x > 0, x, torch.zeros_like(x))


def stream(x: torch.Tensor, p: Params, name: str, input_norm: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """fc6 and fc7 of one stream: [BN] -> (Linear -> BN -> ReLU) x 2; dropout is the identity in eval mode."""
    if input_norm:
        x = batchnorm_eval(x, p, f"{name}.input_norm")
    h6 = relu(batchnorm_eval(linear(x, p, f"{name}.fc6.0"), p, f"{name}.fc6.1"))
    h7 = relu(batchnorm_eval(linear(h6, p, f"{name}.fc7.0"), p, f"{name}.fc7.1"))
    return h6, h7


def shared_head(h7: torch.Tensor, p: Params) -> dict[str, torch.Tensor]:
    """The layer-sharing subnetwork: fc8 -> ReLU -> fc9 -> ReLU -> fc10 (pre-activation outputs kept)."""
    fc8 = linear(h7, p, "shared.fc8")
    fc9 = linear(relu(fc8), p, "shared.fc9")
    return {"fc8": fc8, "fc9": fc9, "fc10": linear(relu(fc9), p, "shared.fc10")}


def common(head: dict[str, torch.Tensor], kind: str, normalize: bool) -> torch.Tensor:
    """softmax(fc10) (release) or ReLU(fc9) (deviation), optionally scaled to unit length."""
    if kind == "softmax":
        e = torch.exp(head["fc10"] - head["fc10"].max(-1, keepdim=True).values)
        out = e / e.sum(-1, keepdim=True)
    else:
        out = relu(head["fc9"])
    return out / torch.sqrt((out * out).sum(-1, keepdim=True)) if normalize else out


def reference_forward(
    p: Params, config: ModelConfig, image: torch.Tensor, text: torch.Tensor, source: torch.Tensor
) -> dict[str, torch.Tensor]:
    """Every activation of one CHTN, from its state dict alone."""
    out: dict[str, torch.Tensor] = {}
    out["img6"], out["img7"] = stream(image, p, "image", config.image_input_norm)
    out["txt6"], out["txt7"] = stream(text, p, "text", True)
    for side in ("img", "txt"):
        head = shared_head(out[f"{side}7"], p)
        out.update({f"{side}_{layer}": value for layer, value in head.items()})
        out[f"{side}_logits"] = head["fc10"]
        for normalize in (False, True):
            out[f"{side}_common_{normalize}"] = common(head, config.common, normalize)
    if config.num_source_classes:
        src_stream = "image" if config.share_image_stream else "source"
        out["src6"], out["src7"] = stream(source, p, src_stream, config.image_input_norm)
        out["src_logits"] = linear(out["src7"], p, "source_classifier")
    return out


def frozen_model(config: ModelConfig, seed: int = 0) -> torch.nn.Module:
    """A seeded model in eval mode whose BatchNorm layers hold non-trivial statistics and affine parameters."""
    torch.manual_seed(seed)
    model = build_model(config)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm1d):
                module.running_mean.uniform_(-1.0, 1.0)
                module.running_var.uniform_(0.2, 3.0)
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.5, 0.5)
    return model.eval()


def model_activations(
    model: torch.nn.Module, image: torch.Tensor, text: torch.Tensor, source: torch.Tensor
) -> dict[str, torch.Tensor]:
    """The same activations from `chtn.model`: `forward`, `encode_*`, and hooks on the shared fc8/fc9/fc10."""
    captured: list[dict[str, torch.Tensor]] = []
    layers = {name: getattr(model.shared, name) for name in ("fc8", "fc9", "fc10")}
    hooks = [
        layer.register_forward_hook(lambda _m, _i, output, name=name: captured[-1].__setitem__(name, output))
        for name, layer in layers.items()
    ]
    out: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        for side, encode, features in (("img", model.encode_image, image), ("txt", model.encode_text, text)):
            captured.append({})
            out[f"{side}_common_False"] = encode(features)
            out.update({f"{side}_{layer}": value for layer, value in captured[-1].items()})
            out[f"{side}_common_True"] = encode(features, normalize=True)
        out["img_logits_api"], out["txt_logits_api"] = model.image_logits(image), model.text_logits(text)
        out.update(model(image, text, source))
    for hook in hooks:
        hook.remove()
    return out


def inputs(config: ModelConfig) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Image, text and source batches whose statistics are far from the running ones (a batch-statistics bug shows)."""
    generator = torch.Generator().manual_seed(1)
    image = torch.randn(5, config.image_dim, generator=generator) * 2 + 1
    text = torch.randn(5, config.text_dim, generator=generator).abs() * 3
    source = torch.randn(6, config.image_dim, generator=generator) * 0.5 - 2
    return image, text, source


def assert_matches(actual: torch.Tensor, expected: torch.Tensor, name: str) -> None:
    torch.testing.assert_close(actual, expected.float(), rtol=1e-5, atol=1e-6, msg=lambda m: f"{name}: {m}")


CONFIGS = {
    "release": {},
    "fc9-common": {"common": "fc9"},
    "image-input-norm": {"image_input_norm": True, "common": "fc9"},
    "source-stream": {"num_source_classes": 3},
    "shared-image-stream": {"num_source_classes": 3, "share_image_stream": True, "image_input_norm": True},
}


@pytest.mark.parametrize("overrides", CONFIGS.values(), ids=CONFIGS.keys())
def test_every_activation_matches_the_reference(overrides: dict) -> None:
    config = dataclasses.replace(TINY, **overrides)
    model = frozen_model(config)
    params = {k: v.double() for k, v in model.state_dict().items()}
    image, text, source = inputs(config)
    expected = reference_forward(params, config, image.double(), text.double(), source.double())
    actual = model_activations(model, image, text, source)
    expected["img_logits_api"], expected["txt_logits_api"] = expected["img_logits"], expected["txt_logits"]
    assert set(actual) == set(expected)
    for name, value in expected.items():
        assert_matches(actual[name], value, name)


def test_the_common_setting_picks_softmax_of_fc10_or_fc9() -> None:
    """The same weights under both settings: the two references, and softmax rows summing to one."""
    softmax_model = frozen_model(TINY)
    fc9_model = frozen_model(dataclasses.replace(TINY, common="fc9"))
    fc9_model.load_state_dict(softmax_model.state_dict())
    params = {k: v.double() for k, v in softmax_model.state_dict().items()}
    image, text, _ = inputs(TINY)
    with torch.no_grad():
        for features, encode_soft, encode_fc9, stream_name, norm in (
            (image, softmax_model.encode_image, fc9_model.encode_image, "image", TINY.image_input_norm),
            (text, softmax_model.encode_text, fc9_model.encode_text, "text", True),
        ):
            head = shared_head(stream(features.double(), params, stream_name, norm)[1], params)
            soft, fc9 = encode_soft(features), encode_fc9(features)
            assert soft.shape == (5, TINY.num_classes) and fc9.shape == (5, TINY.shared_dim)
            assert_matches(soft, common(head, "softmax", False), f"{stream_name} softmax")
            assert_matches(fc9, common(head, "fc9", False), f"{stream_name} fc9")
            assert_matches(soft.sum(-1), torch.ones(5, dtype=torch.float64), f"{stream_name} softmax rows")


@pytest.mark.parametrize("kind", ["softmax", "fc9"])
def test_ensemble_is_the_mean_of_its_members_references(kind: str) -> None:
    config = dataclasses.replace(TINY, ensemble=3, num_source_classes=2, common=kind)
    ensemble = frozen_model(config)
    member_config = dataclasses.replace(config, ensemble=1)
    image, text, source = inputs(config)
    state = {k: v.double() for k, v in ensemble.state_dict().items()}
    members = [
        reference_forward(
            {k.split(".", 2)[2]: v for k, v in state.items() if k.startswith(f"members.{i}.")},
            member_config,
            image.double(),
            text.double(),
            source.double(),
        )
        for i in range(3)
    ]
    assert len({k.split(".")[1] for k in state}) == 3  # three members, every tensor under one of them

    def mean(key: str) -> torch.Tensor:
        return torch.stack([m[key] for m in members]).mean(0)

    with torch.no_grad():
        for side, encode, logits, features in (
            ("img", ensemble.encode_image, ensemble.image_logits, image),
            ("txt", ensemble.encode_text, ensemble.text_logits, text),
        ):
            mean_common = mean(f"{side}_common_False")
            assert_matches(encode(features), mean_common, f"{side} mean")
            assert_matches(
                encode(features, normalize=True),
                mean_common / mean_common.norm(dim=-1, keepdim=True),
                f"{side} normalised mean",
            )
            assert_matches(logits(features), mean(f"{side}_logits"), f"{side} mean logits")
        outputs = ensemble(image, text, source)
    assert len(outputs) == 3
    for member, (actual, expected) in enumerate(zip(outputs, members)):
        assert set(actual) <= set(expected)
        for name, value in actual.items():
            assert_matches(value, expected[name], f"member {member} {name}")
    # members start from different initialisations, so the mean is not any single member's output
    assert not torch.allclose(members[0]["img_common_False"], members[1]["img_common_False"])
