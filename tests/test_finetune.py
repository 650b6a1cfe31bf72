"""Fine-tuning the trunk's last units (`encoder.finetune_stages`): the split is exact, training moves only
the tail's weights, and every consumer of the checkpoint (embedder, attribution, model card) uses them."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from chtn.checkpoint import load_checkpoint, save_checkpoint
from chtn.config import load_config
from chtn.errors import CheckpointError, CHTNError
from tests.conftest import SOURCE

# One worker runs the module, so its fixtures (prefix maps, a 3-epoch fine-tune) are built once, not once per worker.
pytestmark = pytest.mark.xdist_group("finetune")

FINETUNE = {"train": {"epochs": 3, "min_steps_per_epoch": 20}, "encoder": {"finetune_stages": 1}}


@pytest.fixture(scope="module")
def trunk():
    from chtn.encoders import cached_image_trunk

    return cached_image_trunk()


@pytest.fixture(scope="module")
def pixels(pairs):
    from chtn.encoders import image_transform
    from chtn.images import open_rgb

    return torch.stack([image_transform()(open_rgb(p)) for p in pairs.image_paths[:4]])


@pytest.fixture(scope="module")
def inputs(pairs, cache):
    """Every other training and validation pair of the sample (5 and 2-3 per category) and 3 source images per
    type, as prefix maps for a 1-unit fine-tune: each map costs the trunk's first stages, so the fixture is small."""
    from chtn.data import load_source
    from chtn.train_inputs import build_train_inputs

    source = load_source(SOURCE)
    per_type = [i for name in source.label_names for i in np.flatnonzero(np.array(source.labels) == name)[:3]]
    rows = np.flatnonzero(np.array(pairs.splits) != "test")[::2]
    config = load_config("small", overrides=FINETUNE)
    return build_train_inputs(config, pairs.select(rows), source.select(per_type), cache)


@pytest.fixture(scope="module")
def tuned(inputs, tmp_path_factory):
    from chtn.train import train

    config, data, meta, tfidf = inputs
    result = train(config, data, tmp_path_factory.mktemp("tuned"), meta, tfidf, log=lambda _: None)
    return load_checkpoint(result.best_path), result.history


@pytest.mark.parametrize("stages", [1, 2, 3])
def test_prefix_then_tail_is_the_frozen_trunk(trunk, pixels, stages):
    """The reference: splitting the trunk changes nothing before training."""
    from chtn.finetune import TrunkTail

    with torch.inference_mode():
        whole = trunk(pixels)[0]
        split = TrunkTail(trunk, stages)(trunk.forward_prefix(pixels, stages))
    torch.testing.assert_close(split, whole, rtol=1e-4, atol=1e-5)


def test_tail_units_are_named_and_bounded(trunk):
    assert trunk.tail_units(1) == ["conv_head", "bn2"]
    assert trunk.tail_units(2) == ["blocks.6", "conv_head", "bn2"]
    with pytest.raises(CHTNError, match="between 0 and 8"):
        trunk.tail_units(9)


def test_a_trunk_without_efficientnet_stages_is_refused(tmp_path):
    import timm
    from safetensors.torch import save_file

    from chtn.encoders import ImageTrunk

    weights = tmp_path / "resnet18.safetensors"
    save_file(timm.create_model("resnet18", pretrained=False).state_dict(), str(weights))
    with pytest.raises(CHTNError, match="EfficientNet/MobileNet-style"):
        ImageTrunk("resnet18", weights).tail_units(1)


def test_prefix_maps_are_float16_and_cached(inputs, trunk, pixels, cache):
    _, data, _, _ = inputs
    assert data.train.image.shape == (100, 320, 7, 7) and data.train.image.dtype == np.float16
    assert data.source_image.shape == (60, 320, 7, 7)
    with cache._connect() as db:
        rows = db.execute("SELECT COUNT(*) FROM features WHERE encoder=?", (f"{trunk.identity}/prefix1",)).fetchone()
    assert rows[0] >= 210  # train + val + source maps, each stored once
    with torch.inference_mode():
        first = trunk.forward_prefix(pixels[:1], 1)[0].numpy()
    np.testing.assert_allclose(data.train.image[0].astype(np.float32), first, rtol=1e-2, atol=1e-2)


def test_fine_tuning_trains_the_tail_keeps_bn_statistics_and_learns(tuned, trunk):
    checkpoint, history = tuned
    state = checkpoint.trunk_state
    assert sorted({k.split(".")[0] for k in state}) == ["bn2", "conv_head"]
    pretrained = trunk.net.state_dict()
    assert not torch.equal(state["conv_head.weight"], pretrained["conv_head.weight"])
    assert not torch.equal(state["bn2.weight"], pretrained["bn2.weight"])
    assert torch.equal(state["bn2.running_mean"], pretrained["bn2.running_mean"])
    assert history[-1]["val_map_mean"] > 0.3  # random ranking on 20 balanced classes is ~0.06
    assert "source_fit" in checkpoint.meta


def test_optimizer_gives_the_tail_a_smaller_learning_rate(inputs, trunk):
    from chtn.finetune import FineTunedCHTN, TrunkTail
    from chtn.model import build_model
    from chtn.train import build_optimizer

    config = inputs[0]
    model = FineTunedCHTN(build_model(config.model), TrunkTail(trunk, 1))
    rates = sorted({group["lr"] for group in build_optimizer(model, config).param_groups})
    assert rates == [config.train.lr * config.train.trunk_lr_mult, config.train.lr]  # bias_lr_mult is 1 in small
    tail_params = sum(
        p.numel()
        for group in build_optimizer(model, config).param_groups
        if group["lr"] < config.train.lr
        for p in group["params"]
    )
    assert tail_params == sum(p.numel() for p in model.tail.parameters())


def test_embedder_and_attribution_use_the_fine_tuned_units(tuned, pairs, cache, trunk):
    from analysis.attribution.explainer import PairExplainer
    from analysis.attribution.types import Item
    from analysis.workspace import model_card
    from chtn.features import image_features
    from chtn.tower import create_tower

    checkpoint, _ = tuned
    paths = pairs.image_paths[:3]
    tower = create_tower(checkpoint, "cpu")
    assert "+tuned@" in tower.trunk.identity and tower is create_tower(checkpoint, "cpu")
    features = tower.image_features(paths, cache)[0]
    frozen = image_features(paths, cache, trunk)[0]
    assert np.abs(features - frozen).max() > 1e-2
    explainer = PairExplainer(checkpoint, "cpu")
    with torch.inference_mode():
        via_attribution = explainer.embed(Item("image", str(paths[0]))).numpy()[0]
        via_embedder = checkpoint.model.encode_image(torch.from_numpy(features[:1])).numpy()[0]
    np.testing.assert_allclose(via_attribution, via_embedder, rtol=1e-3, atol=1e-4)
    assert "fine-tuned" in model_card(checkpoint)["image trunk"]


def test_trunk_tensors_must_match_the_config(tuned, tmp_path):
    checkpoint, _ = tuned
    again = save_checkpoint(
        tmp_path / "again.safetensors",
        checkpoint.model,
        checkpoint.config,
        checkpoint.meta,
        checkpoint.tfidf_state,
        checkpoint.trunk_state,
    )
    reloaded = load_checkpoint(again)
    assert all(torch.equal(reloaded.trunk_state[k], v) for k, v in checkpoint.trunk_state.items())
    stripped = save_checkpoint(
        tmp_path / "stripped.safetensors", checkpoint.model, checkpoint.config, checkpoint.meta, checkpoint.tfidf_state
    )
    with pytest.raises(CheckpointError, match="fine-tuned trunk"):
        load_checkpoint(stripped)


def test_finetune_preset_trains_the_trunks_head_unit_and_otherwise_trains_like_ensemble(trunk, pixels, pairs, tmp_path):
    """One training step of each preset on the same four pairs: `finetune` moves the trunk's 1x1 head conv and its
    BatchNorm at the full learning rate, and its CHTN ends exactly where `ensemble`'s does (same network, same
    optimiser, same schedule), given the features the untrained head unit computes."""
    import dataclasses

    from chtn.encoders import TfidfTextEncoder
    from chtn.finetune import TrunkTail
    from chtn.train import FeatureSet, TrainInputs, train

    one_step = {"train": {"epochs": 1, "min_steps_per_epoch": 1, "batch_size": 4}}
    labels = pairs.label_index[:4]
    tfidf = TfidfTextEncoder("char_wb", (2, 4), 200).fit(pairs.texts[:4])  # text side: the same for both presets
    text = tfidf.encode(pairs.texts[:4])
    stages = load_config("finetune").encoder.finetune_stages
    with torch.inference_mode():
        maps = trunk.forward_prefix(pixels, stages).numpy()
    frozen = TrunkTail(trunk, stages).pool_maps(maps)  # what `ensemble` trains on: the same units, untrained
    runs = {}
    for preset, image, tail in (("finetune", maps, TrunkTail(trunk, stages)), ("ensemble", frozen, None)):
        config = load_config(preset, overrides=one_step)
        config = dataclasses.replace(
            config,
            model=dataclasses.replace(
                config.model, image_dim=trunk.feature_dim, text_dim=text.shape[1], num_classes=len(pairs.label_names)
            ),
        )
        inputs = TrainInputs(FeatureSet(image, text, labels), None, list(pairs.label_names), image_tail=tail)
        result = train(
            config,
            inputs,
            tmp_path / preset,
            {"label_names": list(pairs.label_names)},
            tfidf.state(),
            log=lambda _: None,
        )
        runs[preset] = (config, load_checkpoint(result.best_path))
    config, tuned = runs["finetune"]
    _, plain = runs["ensemble"]
    assert plain.trunk_state == {}
    assert sorted({k.split(".")[0] for k in tuned.trunk_state}) == ["bn2", "conv_head"]  # the head unit only
    pretrained = trunk.net.state_dict()
    for name in ("conv_head.weight", "bn2.weight", "bn2.bias"):
        step = (tuned.trunk_state[name] - pretrained[name]).abs().max().item()
        assert step == pytest.approx(config.train.lr, rel=0.2), name  # AdamW's first step: ~lr, not lr x 0.1
    head, reference = tuned.model.state_dict(), plain.model.state_dict()
    assert list(head) == list(reference) and len(tuned.model.members) == 3
    for name, value in reference.items():
        torch.testing.assert_close(head[name], value, rtol=1e-5, atol=1e-6, msg=name)
