"""Checkpoint files: exact round trips, CPU loading, and a clear `CheckpointError` for every bad file.

Checkpoints are made here from small CHTN models; nothing is read from runs/ or sample_data/checkpoints/.
"""

from __future__ import annotations

import collections
import datetime as dt
import hashlib
import json
import shutil

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from chtn.checkpoint import FORMAT, Checkpoint, load_checkpoint, save_checkpoint
from chtn.config import CHTNConfig, EncoderConfig, ModelConfig
from chtn.encoders import TfidfTextEncoder
from chtn.errors import CheckpointError
from chtn.model import CHTN
from chtn.tower import TextEncoder, create_tower
from tests.conftest import PAIRS, ROOT

LABELS = ["Belts", "Heels", "Jeans", "Watches"]
N_LABELS = len(LABELS)


def small_config(text_dim=24, num_classes=N_LABELS, text="minilm", image_dim=16, source=0):
    model = ModelConfig(
        image_dim=image_dim,
        text_dim=text_dim,
        num_classes=num_classes,
        num_source_classes=source,
        hidden_dim=12,
        shared_dim=10,
        dropout=0.2,
    )
    return CHTNConfig(model=model, encoder=EncoderConfig(text=text, tfidf_analyzer="char_wb", tfidf_ngram=(2, 3)))


def trained_like_model(config, seed=0):
    """A CHTN whose BatchNorm running statistics have moved off their defaults (as after training)."""
    torch.manual_seed(seed)
    model = CHTN(config.model)
    m = config.model
    model.train()
    with torch.no_grad():
        model(
            torch.randn(32, m.image_dim) * 3 + 1,
            torch.randn(32, m.text_dim) * 2 - 1,
            torch.randn(32, m.image_dim) if m.num_source_classes else None,
        )
    return model.eval()


@pytest.fixture(scope="module")
def tfidf(pairs):
    texts = [t for t, label in zip(pairs.split("train").texts, pairs.split("train").labels) if label in LABELS]
    return TfidfTextEncoder("char_wb", (2, 3), 300).fit(texts)


@pytest.fixture(scope="module")
def saved(tfidf, tmp_path_factory):
    """(path, model, config) of a small TF-IDF checkpoint with extra metadata."""
    config = small_config(text_dim=tfidf.feature_dim, text="tfidf")
    model = trained_like_model(config)
    path = tmp_path_factory.mktemp("ckpt") / "best.safetensors"
    save_checkpoint(
        path,
        model,
        config,
        {"label_names": LABELS, "dataset": {"n_train": 140, "fingerprint": "abc"}, "source": None},
        tfidf.state(),
    )
    return path, model, config


def _copy(path, tmp_path, name):
    target = tmp_path / name
    shutil.copyfile(path, target)
    return target


def _rewrite_header(source, target, edit):
    """Copy a safetensors checkpoint, passing its decoded header through `edit` (tensors unchanged)."""
    with safe_open(str(source), framework="pt") as handle:
        tensors = {k: handle.get_tensor(k) for k in handle.keys()}
        header = {k: json.loads(v) for k, v in handle.metadata().items()}
    edit(header)
    save_file(tensors, str(target), metadata={k: json.dumps(v) for k, v in header.items()})
    return target


# ---- 1. round trip ----


def test_round_trip_restores_weights_config_and_metadata(saved):
    path, model, config = saved
    checkpoint = load_checkpoint(path)
    assert isinstance(checkpoint, Checkpoint) and checkpoint.path == path
    original, loaded = model.state_dict(), checkpoint.model.state_dict()
    assert list(loaded) == list(original)
    assert all(torch.equal(loaded[k], original[k]) for k in original)
    assert not torch.equal(original["image.fc6.1.running_mean"], torch.zeros(12))  # buffers were worth checking
    assert checkpoint.config == config
    assert checkpoint.config.encoder.tfidf_ngram == (2, 3) and checkpoint.config.loss.mmd_kernels == (
        0.25,
        0.5,
        1.0,
        2.0,
        4.0,
    )
    assert checkpoint.label_names == LABELS
    assert checkpoint.meta["dataset"] == {"n_train": 140, "fingerprint": "abc"} and checkpoint.meta["source"] is None
    assert checkpoint.meta["format"] == FORMAT
    assert checkpoint.meta["code_version"]
    created = dt.datetime.fromisoformat(checkpoint.meta["created_at"])
    assert created.tzinfo is not None and abs(dt.datetime.now(dt.UTC) - created) < dt.timedelta(days=1)


def test_round_trip_model_is_in_eval_mode_and_computes_the_same(saved):
    path, model, config = saved
    checkpoint = load_checkpoint(path)
    assert not checkpoint.model.training
    assert not any(module.training for module in checkpoint.model.modules())
    torch.manual_seed(1)
    image, text = torch.randn(7, config.model.image_dim), torch.randn(7, config.model.text_dim)
    with torch.no_grad():
        for normalize in (False, True):
            assert torch.equal(checkpoint.model.encode_image(image, normalize), model.encode_image(image, normalize))
            assert torch.equal(checkpoint.model.encode_text(text, normalize), model.encode_text(text, normalize))
        # a model accidentally left in training mode would apply dropout: two passes would differ
        assert torch.equal(checkpoint.model.encode_text(text), checkpoint.model.encode_text(text))


def test_round_trip_restores_the_tfidf_encoder_exactly(saved, tfidf, pairs):
    checkpoint = load_checkpoint(saved[0])
    vocabulary, idf = checkpoint.tfidf_state
    assert vocabulary == tfidf.vocabulary
    assert idf.dtype == np.float32 and np.array_equal(idf, tfidf.state()[1])
    restored = TextEncoder.from_checkpoint(checkpoint).tfidf
    titles = pairs.split("test").texts[:25]
    assert np.array_equal(restored.encode(titles), tfidf.encode(titles))
    assert restored.identity == tfidf.identity
    assert "text_encoder.idf" not in checkpoint.model.state_dict()


def test_checkpoint_without_tfidf_has_no_tfidf_state(tmp_path):
    config = small_config(text="minilm")
    path = save_checkpoint(tmp_path / "m.safetensors", trained_like_model(config), config, {"label_names": LABELS})
    checkpoint = load_checkpoint(path)
    assert checkpoint.tfidf_state is None and TextEncoder.from_checkpoint(checkpoint).tfidf is None


def test_digest_is_the_file_content_hash(saved, tfidf, tmp_path):
    path, model, config = saved
    first, second = load_checkpoint(path), load_checkpoint(_copy(path, tmp_path, "copy.safetensors"))
    assert first.digest == second.digest == hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    other = save_checkpoint(
        tmp_path / "other.safetensors",
        trained_like_model(config, seed=5),
        config,
        {"label_names": LABELS},
        tfidf.state(),
    )
    assert load_checkpoint(other).digest != first.digest


def test_a_loaded_checkpoint_can_be_saved_again(saved, tmp_path):
    checkpoint = load_checkpoint(saved[0])
    again = save_checkpoint(
        tmp_path / "again.safetensors", checkpoint.model, checkpoint.config, checkpoint.meta, checkpoint.tfidf_state
    )
    reloaded = load_checkpoint(again)
    assert reloaded.label_names == LABELS and reloaded.meta["dataset"] == checkpoint.meta["dataset"]
    assert np.array_equal(reloaded.tfidf_state[1], checkpoint.tfidf_state[1])
    assert all(torch.equal(v, checkpoint.model.state_dict()[k]) for k, v in reloaded.model.state_dict().items())


def test_update_header_adds_a_field_and_keeps_weights_and_the_rest(saved, tmp_path):
    from chtn.checkpoint import update_header

    original = load_checkpoint(saved[0])
    target = update_header(_copy(saved[0], tmp_path, "stamped.safetensors"), {"provenance": {"wall_seconds": 1.5}})
    stamped = load_checkpoint(target)
    assert stamped.meta["provenance"] == {"wall_seconds": 1.5} and "provenance" not in original.meta
    assert {k: v for k, v in stamped.meta.items() if k not in ("provenance", "_tfidf_idf")} == {
        k: v for k, v in original.meta.items() if k != "_tfidf_idf"
    }
    assert all(torch.equal(v, original.model.state_dict()[k]) for k, v in stamped.model.state_dict().items())
    assert list(tmp_path.iterdir()) == [target]  # atomic: no temporary file left


def test_metadata_cannot_overwrite_the_reserved_header_fields(tmp_path):
    config = small_config()
    path = save_checkpoint(
        tmp_path / "m.safetensors",
        trained_like_model(config),
        config,
        {"label_names": LABELS, "format": "something-else", "config": {"model": {}}},
    )
    checkpoint = load_checkpoint(path)
    assert checkpoint.meta["format"] == FORMAT and checkpoint.config == config


def test_source_classifier_round_trips(tmp_path):
    config = small_config(source=3)
    model = trained_like_model(config)
    checkpoint = load_checkpoint(save_checkpoint(tmp_path / "s.safetensors", model, config, {"label_names": LABELS}))
    assert checkpoint.model.has_source
    assert torch.equal(checkpoint.model.source_classifier.weight, model.source_classifier.weight)


# ---- 2. devices ----


def test_loaded_tensors_are_on_cpu(saved):
    checkpoint = load_checkpoint(saved[0])
    tensors = list(checkpoint.model.state_dict().values())
    assert tensors and all(t.device.type == "cpu" for t in tensors)


def test_save_writes_contiguous_cpu_tensors(monkeypatch, tmp_path):
    import safetensors.torch

    written = {}
    real_save_file = safetensors.torch.save_file

    def spy(tensors, filename, metadata=None):
        written.update(tensors)
        return real_save_file(tensors, filename, metadata=metadata)

    monkeypatch.setattr(safetensors.torch, "save_file", spy)
    config = small_config()
    model = trained_like_model(config)
    fc10 = model.shared.fc10.weight
    fc10.data = fc10.data.t().contiguous().t()  # same values and shape, but a transposed (non-contiguous) layout
    assert not fc10.is_contiguous()
    path = save_checkpoint(tmp_path / "m.safetensors", model, config, {"label_names": LABELS})
    assert written and all(t.device.type == "cpu" and t.is_contiguous() for t in written.values())
    assert torch.equal(load_checkpoint(path).model.shared.fc10.weight, fc10)


def test_save_unwraps_a_data_parallel_model(tmp_path):
    config = small_config()
    model = trained_like_model(config)
    wrapped = torch.nn.DataParallel(model)  # state_dict keys of the wrapper start with "module."
    assert next(iter(wrapped.state_dict())).startswith("module.")
    checkpoint = load_checkpoint(save_checkpoint(tmp_path / "dp.safetensors", wrapped, config, {"label_names": LABELS}))
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in checkpoint.model.state_dict().items())


def test_save_is_atomic_and_leaves_no_temporary_file(saved):
    path = saved[0]
    assert path.is_file() and not list(path.parent.glob("*.tmp"))


# ---- 3. bad files ----


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match=r"Checkpoint not found: .*nothing\.safetensors"):
        load_checkpoint(tmp_path / "nothing.safetensors")


@pytest.mark.parametrize("name", ["best.ckpt", "best.bin", "best"])
def test_wrong_extension(saved, tmp_path, name):
    with pytest.raises(CheckpointError, match="unsupported checkpoint type; use a .safetensors"):
        load_checkpoint(_copy(saved[0], tmp_path, name))


def test_truncated_safetensors(saved, tmp_path):
    data = saved[0].read_bytes()
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(
        CheckpointError,
        match=r"truncated\.safetensors is not a readable safetensors file.*"
        r"truncated or corrupt",
    ):
        load_checkpoint(truncated)


def test_random_bytes_named_safetensors(tmp_path):
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    with pytest.raises(CheckpointError, match="junk.safetensors is not a readable safetensors file"):
        load_checkpoint(junk)


@pytest.mark.parametrize(
    "metadata",
    [None, {"format": "pt"}, {"framework": "keras", "format": '"tf"'}],
    ids=["no-header", "transformers-header", "other-json-header"],
)
def test_foreign_safetensors(tmp_path, metadata):
    foreign = tmp_path / "model.safetensors"
    save_file({"encoder.weight": torch.ones(4, 4), "encoder.bias": torch.zeros(4)}, str(foreign), metadata=metadata)
    with pytest.raises(CheckpointError, match="model.safetensors is not a CHTN checkpoint.*another model's weights"):
        load_checkpoint(foreign)


UNPICKLED = []


def _mark_unpickled(*args):
    UNPICKLED.append(args)
    return collections.OrderedDict()


class SneakyStateDict(collections.OrderedDict):
    """A state dict look-alike whose unpickling would run our code."""

    def __reduce__(self):
        return _mark_unpickled, ("reduce",)

    def __setstate__(self, state):
        UNPICKLED.append(("setstate",))


class Gadget:
    def __reduce__(self):
        return _mark_unpickled, ("gadget",)


@pytest.mark.parametrize("payload", ["state-dict-subclass", "object"])
def test_pickle_that_needs_code_is_refused_without_running_it(tmp_path, payload):
    path = tmp_path / "evil.pt"
    if payload == "object":
        torch.save(Gadget(), path)
    else:
        torch.save(
            {"state_dict": SneakyStateDict(weight=torch.ones(2)), "metadata": {"format": json.dumps(FORMAT)}}, path
        )
    with pytest.raises(CheckpointError, match="evil.pt cannot be loaded safely.*Only weights-only files"):
        load_checkpoint(path)
    assert UNPICKLED == []


def test_pt_without_state_dict(tmp_path):
    path = tmp_path / "plain.pt"
    torch.save({"weights": {"w": torch.ones(2)}, "epoch": 3}, path)
    with pytest.raises(CheckpointError, match="plain.pt is not a CHTN checkpoint"):
        load_checkpoint(path)
    torch.save([torch.ones(2)], path)
    with pytest.raises(CheckpointError, match="plain.pt is not a CHTN checkpoint"):
        load_checkpoint(path)


def test_pt_with_state_dict_but_no_header(tmp_path, saved):
    path = tmp_path / "bare.pth"
    torch.save({"state_dict": saved[1].state_dict()}, path)
    with pytest.raises(CheckpointError, match="bare.pth is not a CHTN checkpoint"):
        load_checkpoint(path)


def test_pt_with_the_same_two_parts_loads(saved, tmp_path):
    path, model, config = saved
    with safe_open(str(path), framework="pt") as handle:
        tensors = {k: handle.get_tensor(k) for k in handle.keys()}
        metadata = handle.metadata()
    torch.save({"state_dict": tensors, "metadata": metadata}, tmp_path / "same.pt")
    checkpoint = load_checkpoint(tmp_path / "same.pt")
    assert checkpoint.config == config and checkpoint.label_names == LABELS
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in checkpoint.model.state_dict().items())
    assert checkpoint.tfidf_state is not None


def test_pt_tensors_numpy_cannot_hold_are_named_and_parameters_load(saved, tmp_path):
    path, model, _ = saved
    with safe_open(str(path), framework="pt") as handle:
        tensors = {k: handle.get_tensor(k) for k in handle.keys()}
        tensors = {k: torch.nn.Parameter(v) if v.is_floating_point() else v for k, v in tensors.items()}  # with grad
        metadata = handle.metadata()
    torch.save({"state_dict": tensors, "metadata": metadata}, tmp_path / "params.pt")
    loaded = load_checkpoint(tmp_path / "params.pt").model
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in loaded.state_dict().items())
    tensors["shared.fc10.bias"] = tensors["shared.fc10.bias"].detach().to_sparse()
    torch.save({"state_dict": tensors, "metadata": metadata}, tmp_path / "sparse.pt")
    with pytest.raises(CheckpointError, match=r"sparse.pt: tensor 'shared.fc10.bias' is of a kind CHTN cannot read"):
        load_checkpoint(tmp_path / "sparse.pt")


def _set_hidden_dim(header):
    header["config"]["model"]["hidden_dim"] = 64


def _set_num_classes(header):
    header["config"]["model"]["num_classes"] = 5
    header["label_names"] = LABELS + ["Socks"]


@pytest.mark.parametrize("edit", [_set_hidden_dim, _set_num_classes], ids=["hidden_dim", "num_classes"])
def test_header_config_that_does_not_fit_the_tensors(saved, tmp_path, edit):
    edited = _rewrite_header(saved[0], tmp_path / "edited.safetensors", edit)
    with pytest.raises(
        CheckpointError,
        match=r"edited.safetensors: weights do not match its config \(size "
        r"mismatch for .*re-train",
    ):
        load_checkpoint(edited)


def test_a_checkpoint_opened_without_its_model_builds_it_once_on_first_use(saved):
    """The dashboard's way (`build_model=False`): sessions asking at once share one model, built from the file."""
    from concurrent.futures import ThreadPoolExecutor

    path, model, _ = saved
    checkpoint = load_checkpoint(path, build_model=False)
    assert not checkpoint._built  # nothing built by the load
    with ThreadPoolExecutor(4) as pool:
        models = list(pool.map(lambda _: checkpoint.model, range(8)))
    assert all(built is models[0] for built in models) and not models[0].training
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in models[0].state_dict().items())


def test_weights_that_do_not_fit_are_named_when_a_model_opened_later_is_built(saved, tmp_path):
    edited = load_checkpoint(_rewrite_header(saved[0], tmp_path / "edited.safetensors", _set_hidden_dim), False)
    assert edited.label_names == LABELS  # the rest of the file was read and checked
    for _ in range(2):  # a failed build is not kept: every caller hears it
        with pytest.raises(CheckpointError, match=r"edited.safetensors: weights do not match its config \(size"):
            edited.model  # noqa: B018 -- the property builds the model


def test_bfloat16_tensors_load_as_the_float32_model_holds_them(saved, tmp_path):
    """numpy has no bfloat16: such a file is read through PyTorch and widened, as loading into the model does."""
    with safe_open(str(saved[0]), framework="pt") as handle:
        tensors = {k: handle.get_tensor(k) for k in handle.keys()}
        metadata = handle.metadata()
    halved = {k: v.to(torch.bfloat16) if k.startswith("shared.") else v for k, v in tensors.items()}
    save_file(halved, str(tmp_path / "bf16.safetensors"), metadata=metadata)
    loaded = load_checkpoint(tmp_path / "bf16.safetensors").model.state_dict()
    assert loaded["shared.fc10.weight"].dtype == torch.float32
    assert all(torch.equal(loaded[k], v.float()) for k, v in halved.items() if k in loaded)
    assert not torch.equal(loaded["shared.fc10.weight"], tensors["shared.fc10.weight"])  # rounded, so really bf16


def test_header_with_missing_tensor(saved, tmp_path):
    with safe_open(str(saved[0]), framework="pt") as handle:
        tensors = {k: handle.get_tensor(k) for k in handle.keys() if k != "shared.fc10.bias"}
        metadata = handle.metadata()
    save_file(tensors, str(tmp_path / "partial.safetensors"), metadata=metadata)
    with pytest.raises(CheckpointError, match=r"weights do not match its config \(Missing key.*shared\.fc10\.bias"):
        load_checkpoint(tmp_path / "partial.safetensors")


@pytest.mark.parametrize(
    "edit, message",
    [
        (
            lambda h: h["config"]["model"].update(depth=3),
            r"config this version cannot read: Unknown field\(s\) \['depth'\]",
        ),
        (lambda h: h["config"]["model"].update(common="mean"), "config this version cannot read: model.common must be"),
        (lambda h: h.pop("config"), "config this version cannot read"),
        (lambda h: h.update(config=[1, 2]), "config this version cannot read"),
        (lambda h: h.update(config={"model": "wide"}), "config this version cannot read"),
    ],
    ids=["unknown-field", "bad-value", "no-config", "config-not-object", "section-not-object"],
)
def test_header_config_this_version_cannot_read(saved, tmp_path, edit, message):
    edited = _rewrite_header(saved[0], tmp_path / "edited.safetensors", edit)
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(edited)


@pytest.mark.parametrize(
    "edit", [lambda h: h.pop("label_names"), lambda h: h.update(label_names=LABELS[:3])], ids=["missing", "too-few"]
)
def test_header_label_names_must_match_the_classes(saved, tmp_path, edit):
    edited = _rewrite_header(saved[0], tmp_path / "edited.safetensors", edit)
    with pytest.raises(CheckpointError, match="'label_names' header does not list the model's 4 categories"):
        load_checkpoint(edited)


def _drop_idf(source, target):
    with safe_open(str(source), framework="pt") as handle:
        tensors = {k: handle.get_tensor(k) for k in handle.keys() if k != "text_encoder.idf"}
        metadata = handle.metadata()
    save_file(tensors, str(target), metadata=metadata)
    return target


@pytest.mark.parametrize("damage", ["no-vocabulary", "short-vocabulary", "no-idf"])
def test_tfidf_checkpoint_without_a_complete_text_encoder(saved, tmp_path, damage):
    target = tmp_path / "tfidf.safetensors"
    if damage == "no-vocabulary":
        _rewrite_header(saved[0], target, lambda h: h.pop("tfidf_vocabulary"))
    elif damage == "short-vocabulary":
        _rewrite_header(saved[0], target, lambda h: h.update(tfidf_vocabulary=h["tfidf_vocabulary"][:-1]))
    else:
        _drop_idf(saved[0], target)
    with pytest.raises(CheckpointError, match="tfidf.safetensors: its TF-IDF text encoder is incomplete"):
        load_checkpoint(target)


@pytest.mark.parametrize("command", ["evaluate", "embed", "search", "project"])
def test_the_cli_reports_a_bad_checkpoint_as_one_error_line_with_status_2(saved, tmp_path, capsys, command):
    """Every command that opens a checkpoint turns its `CheckpointError` into `error: ...` and exit status 2."""
    from chtn.cli import main

    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(saved[0].read_bytes()[:1000])
    extra = {"embed": ["--out", str(tmp_path / "e.npz")], "search": ["--text", "red shoes"]}.get(command, [])
    code = main([command, "--checkpoint", str(truncated), "--data", str(PAIRS), *extra])
    out, err = capsys.readouterr()
    assert code == 2 and out == ""
    assert err.startswith("error: truncated.safetensors is not a readable safetensors file") and "Traceback" not in err
    assert err.count("\n") == 1


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda h: h.update(format="other"), "is not a CHTN checkpoint"),
        (_set_hidden_dim, "weights do not match its config"),
        (lambda h: h.update(label_names=LABELS[:3]), "'label_names' header does not list"),
    ],
    ids=["foreign", "mismatched-weights", "short-labels"],
)
def test_the_cli_names_what_is_wrong_with_a_checkpoint(saved, tmp_path, capsys, damage, message):
    from chtn.cli import main

    edited = _rewrite_header(saved[0], tmp_path / "edited.safetensors", damage)
    assert main(["evaluate", "--checkpoint", str(edited), "--data", str(PAIRS)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: edited.safetensors") and message in err and "Traceback" not in err


# ---- 4. labels ----


def test_check_labels(saved):
    checkpoint = load_checkpoint(saved[0])
    checkpoint.check_labels(["Heels", "Watches", "Heels"])  # a subset is fine
    checkpoint.check_labels([])
    with pytest.raises(CheckpointError, match=r"1 category this checkpoint was not trained on: \['Socks'\]"):
        checkpoint.check_labels(["Heels", "Socks"])
    with pytest.raises(CheckpointError, match=r"2 categories .*\['Kurtas', 'Socks'\].*It knows 4"):
        checkpoint.check_labels(["Socks", "Kurtas", "Belts", "Socks"])


# ---- 5. The tower on real sample pairs ----


@pytest.fixture(scope="module")
def six_pairs(pairs):
    wanted = ["Casual Shoes", "Handbags", "Jeans", "Sunglasses", "Watches", "Tshirts"]
    rows = [pairs.labels.index(label) for label in wanted]
    return pairs.select(rows)


def _embedder_checkpoint(path, pairs, text, label_names):
    if text == "tfidf":
        encoder = TfidfTextEncoder("char_wb", (2, 3), 400).fit(pairs.split("train").texts)
        text_dim, state = encoder.feature_dim, encoder.state()
    else:
        text_dim, state = 384, None
    config = small_config(text_dim=text_dim, num_classes=len(label_names), text=text, image_dim=1280)
    save_checkpoint(path, trained_like_model(config), config, {"label_names": label_names}, state)
    return load_checkpoint(path)


@pytest.mark.parametrize("text", ["tfidf", "minilm"])
def test_tower_gives_softmax_rows_for_real_pairs(pairs, six_pairs, cache, tmp_path, text):
    checkpoint = _embedder_checkpoint(tmp_path / "e.safetensors", pairs, text, list(pairs.label_names))
    tower = create_tower(checkpoint, "cpu")
    image, txt = tower.embed_pairs(six_pairs, cache)
    for out in (image, txt):
        assert out.shape == (6, 20) and out.dtype == np.float32
        assert (out >= 0).all() and np.allclose(out.sum(1), 1.0, atol=1e-5)
    assert not np.allclose(image[0], image[1]) and not np.allclose(txt[0], txt[1])  # inputs matter
    # the same pipeline by hand: cached trunk features through the checkpoint's image stream
    features, logits = tower.image_features(six_pairs.image_paths, cache)
    assert features.shape == (6, 1280) and logits.shape == (6, 1000)
    with torch.no_grad():
        assert np.allclose(checkpoint.model.encode_image(torch.from_numpy(features)).numpy(), image, atol=1e-6)
    assert tower.embed_texts([], cache).shape == (0, 20)


def test_tower_refuses_pairs_with_unknown_labels(pairs, six_pairs, cache, tmp_path):
    known = [name for name in pairs.label_names if name != "Sunglasses"]
    checkpoint = _embedder_checkpoint(tmp_path / "e19.safetensors", pairs, "tfidf", known)
    with pytest.raises(CheckpointError, match=r"1 category this checkpoint was not trained on: \['Sunglasses'\]"):
        create_tower(checkpoint, "cpu").embed_pairs(six_pairs, cache)
    # the same checkpoint is fine for the rows whose labels it knows
    subset = six_pairs.select([i for i, label in enumerate(six_pairs.labels) if label != "Sunglasses"])
    image, _ = create_tower(checkpoint, "cpu").embed_pairs(subset, cache)
    assert image.shape == (5, 19)


def test_minilm_plus_tfidf_text_features_round_trip_through_a_checkpoint(tmp_path, cache):
    """`minilm+tfidf`: MiniLM (384) and TF-IDF columns side by side, the vocabulary stored in the file."""
    from chtn.checkpoint import load_checkpoint, save_checkpoint
    from chtn.config import CHTNConfig, EncoderConfig, ModelConfig
    from chtn.model import CHTN

    texts = ["Nike Men White Sports Shoes", "Titan Women Silver Watch", "Puma Men Black Tshirt"]
    encoder = EncoderConfig(text="minilm+tfidf", tfidf_analyzer="char_wb", tfidf_ngram=(2, 4))
    fitted = TextEncoder.fit(encoder, texts)
    features = fitted.features(texts, cache)
    vocabulary = len(fitted.tfidf.vocabulary)
    assert features.shape == (3, 384 + vocabulary) and "+" in fitted.identity
    config = CHTNConfig(
        model=ModelConfig(image_dim=8, text_dim=384 + vocabulary, num_classes=3, hidden_dim=8, shared_dim=8),
        encoder=encoder,
    )
    path = save_checkpoint(
        tmp_path / "c.safetensors", CHTN(config.model), config, {"label_names": ["a", "b", "c"]}, fitted.tfidf.state()
    )
    restored = TextEncoder.from_checkpoint(load_checkpoint(path))
    assert np.array_equal(restored.features(texts, cache), features)


# ---- 6. golden files: checkpoints written once in the current format still load and compute the same ----

GOLDEN = ROOT / "tests" / "golden"
EXPECTED = json.loads((GOLDEN / "expected.json").read_text())


def _subset_mismatches(stored: dict, loaded: dict, prefix: str = "") -> list[str]:
    """Fields of `stored` whose value differs in `loaded` (fields added since the file was written are fine)."""
    problems = []
    for key, value in stored.items():
        if isinstance(value, dict):
            problems += _subset_mismatches(value, loaded.get(key, {}), f"{prefix}{key}.")
        elif json.loads(json.dumps(loaded.get(key))) != value:  # tuples compare as the lists JSON stored
            problems.append(f"{prefix}{key}: stored {value!r}, loaded {loaded.get(key)!r}")
    return problems


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_golden_checkpoint_loads_and_computes_what_it_did_when_written(name):
    expected = EXPECTED[name]
    checkpoint = load_checkpoint(GOLDEN / f"{name}.safetensors")
    assert checkpoint.meta["format"] == FORMAT and checkpoint.label_names == expected["label_names"]
    assert _subset_mismatches(expected["config"], checkpoint.config.to_dict()) == []
    assert _subset_mismatches(expected["meta"], checkpoint.meta) == []
    assert checkpoint.tfidf_state[0] == expected["tfidf_vocabulary"]
    text = TextEncoder.from_checkpoint(checkpoint).tfidf.encode(expected["texts"])
    np.testing.assert_allclose(text, expected["text_features"], rtol=1e-6, atol=1e-7)
    image = torch.tensor(expected["image_features"])
    with torch.no_grad():
        outputs = {
            "image_common": checkpoint.model.encode_image(image),
            "text_common": checkpoint.model.encode_text(torch.from_numpy(text)),
            "image_logits": checkpoint.model.image_logits(image),
            "text_logits": checkpoint.model.text_logits(torch.from_numpy(text)),
        }
    for key, value in outputs.items():
        np.testing.assert_allclose(value.numpy(), expected[key], rtol=1e-5, atol=1e-6, err_msg=f"{name} {key}")
