"""Training on real sample features: determinism, exact resume, best-epoch selection, DDP, CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from chtn.checkpoint import load_checkpoint
from chtn.config import load_config
from tests.conftest import PAIRS, ROOT, SOURCE

FAST = {"train": {"epochs": 3, "min_steps_per_epoch": 20}}


@pytest.fixture(scope="module")
def inputs(pairs, cache):
    """Real Lite0 + MiniLM features of the sample's train/val pairs and 5 source images per type."""
    from chtn.data import load_source
    from chtn.train_inputs import build_train_inputs

    source = load_source(SOURCE)
    per_type = [i for name in source.label_names for i in np.flatnonzero(np.array(source.labels) == name)[:5]]
    return build_train_inputs(load_config("small", overrides=FAST), pairs, source.select(per_type), cache)


def _weights(path):
    return {k: v.clone() for k, v in load_checkpoint(path).model.state_dict().items()}


def _lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_inputs_are_sized_from_the_data(inputs):
    config, data, meta, tfidf = inputs
    vocabulary = len(tfidf[0])  # small preset: MiniLM (384) + character n-gram TF-IDF fitted on train texts
    assert 100 < vocabulary <= 1000 and len(tfidf[1]) == vocabulary
    assert (config.model.image_dim, config.model.text_dim) == (1280, 384 + vocabulary)
    assert config.model.num_classes == 20 and config.model.num_source_classes == 20
    assert data.train.image.shape == (200, 1280) and data.val.text.shape == (100, 384 + vocabulary)
    assert data.source_image.shape == (100, 1280)
    assert meta["encoders"]["image"].startswith("tf_efficientnet_lite0@")


def test_training_is_deterministic_and_learns(inputs, tmp_path):
    from chtn.train import train

    config, data, meta, tfidf = inputs
    first = train(config, data, tmp_path / "a", meta, tfidf, log=lambda _: None)
    second = train(config, data, tmp_path / "b", meta, tfidf, log=lambda _: None)
    a, b = _weights(first.best_path), _weights(second.best_path)
    assert all(np.array_equal(a[k].numpy(), b[k].numpy()) for k in a)
    history = _lines(tmp_path / "a" / "metrics.jsonl")
    assert [h["epoch"] for h in history] == [1, 2, 3]
    assert {"loss_ce_src", "loss_mmd", "loss_pair", "val_map_mean"} <= set(history[0])
    assert history[-1]["val_map_mean"] > 0.3  # random ranking on 20 balanced classes is ~0.06


def test_best_checkpoint_is_the_best_validation_epoch(inputs, tmp_path):
    from chtn.train import train

    config, data, meta, tfidf = inputs
    result = train(config, data, tmp_path, meta, tfidf, log=lambda _: None)
    scores = [h["val_map_mean"] for h in result.history]
    saved = load_checkpoint(result.best_path).meta["metrics"]
    assert saved["best_epoch"] == int(np.argmax(scores)) + 1
    assert saved["val_map_mean"] == pytest.approx(max(scores))


def test_resume_continues_exactly(inputs, tmp_path):
    """3 epochs, then 3 more from last.pt == 6 epochs straight (same batches, dropout, optimizer state)."""
    import dataclasses

    from chtn.train import train

    config, data, meta, _ = inputs
    six = dataclasses.replace(config, train=dataclasses.replace(config.train, epochs=6))
    straight = train(six, data, tmp_path / "straight", meta, log=lambda _: None)
    train(config, data, tmp_path / "resumed", meta, log=lambda _: None)
    resumed = train(six, data, tmp_path / "resumed", meta, resume=True, log=lambda _: None)
    assert [h["epoch"] for h in resumed.history] == list(range(1, 7))
    for key in ("loss_ce_img", "val_map_mean"):
        assert [h[key] for h in resumed.history] == pytest.approx([h[key] for h in straight.history])

    def state(run: str) -> dict:
        return __import__("torch").load(tmp_path / run / "last.pt", weights_only=True)["model"]

    a, b = state("straight"), state("resumed")
    assert all(np.allclose(a[k].numpy(), b[k].numpy()) for k in a)


def test_cosine_schedule_resumes_exactly_and_decays(inputs, tmp_path):
    """A run interrupted after epoch 2 of 4 and resumed follows the uninterrupted run's schedule."""
    import dataclasses

    from chtn.train import train

    config, data, meta, _ = inputs
    four = dataclasses.replace(config, train=dataclasses.replace(config.train, lr_schedule="cosine", epochs=4))
    straight = train(four, data, tmp_path / "straight", meta, log=lambda _: None)

    class Interrupted(Exception):
        pass

    def stop_after_epoch_two(message: str) -> None:
        if message.startswith("epoch 2/4"):
            raise Interrupted

    with pytest.raises(Interrupted):
        train(four, data, tmp_path / "resumed", meta, log=stop_after_epoch_two)
    resumed = train(four, data, tmp_path / "resumed", meta, resume=True, log=lambda _: None)
    assert [h["loss_ce_img"] for h in resumed.history] == pytest.approx([h["loss_ce_img"] for h in straight.history])
    state = __import__("torch").load(tmp_path / "resumed" / "last.pt", weights_only=True)
    assert state["optimizer"]["param_groups"][0]["lr"] == pytest.approx(0.0, abs=1e-9)  # decayed to 0 at the end


def test_gated_source_records_its_domain_fit(inputs, tmp_path):
    import dataclasses

    from chtn.train import train

    config, data, meta, tfidf = inputs
    gated = dataclasses.replace(config, loss=dataclasses.replace(config.loss, source_fit="gated"))
    messages: list[str] = []
    result = train(gated, data, tmp_path, meta, tfidf, log=messages.append)
    fit = load_checkpoint(result.best_path).meta["source_fit"]
    assert 0.0 <= fit["relevance"] <= 1.0 and 0.0 <= fit["auc"] <= 1.0
    assert any("AUC" in m for m in messages)


def test_checkpoint_records_where_and_how_it_was_trained(inputs, tmp_path):
    """Provenance for a go/no-go: device, precision, processes, versions, wall time and seed, on the model card."""
    import dataclasses
    import platform
    import time

    import torch

    from analysis.workspace import model_card
    from chtn.train import train

    config, data, meta, tfidf = inputs
    seeded = dataclasses.replace(config, train=dataclasses.replace(config.train, seed=3))
    started = time.perf_counter()
    result = train(seeded, data, tmp_path, meta, tfidf, log=lambda _: None)
    elapsed = time.perf_counter() - started
    checkpoint = load_checkpoint(result.best_path)
    record = checkpoint.meta["provenance"]
    assert (record["device"], record["device_type"], record["precision"], record["processes"]) == (
        "CPU",
        "cpu",
        "float32",
        1,
    )
    assert record["seed"] == 3 and record["epochs_run"] == 3 and record["resumed_from_epoch"] == 0
    assert record["torch"] == torch.__version__ and record["python"] == platform.python_version()
    assert isinstance(record["platform"], str) and record["platform"]
    assert isinstance(record["cpu_count"], int) and record["cpu_count"] >= 1
    assert isinstance(record["torch_threads"], int)
    assert record["cuda"] is None or isinstance(record["cuda"], str)
    assert record["cudnn"] is None or isinstance(record["cudnn"], int)
    assert isinstance(record["wall_seconds"], float) and 0 < record["wall_seconds"] <= elapsed + 0.1
    assert checkpoint.meta["text_choice"] == {  # English titles: the language rule keeps the preset's features
        "mode": "language",
        "cjk_share": 0.0,
        "threshold": 0.3,
        "chosen": "configured",
        "features": "MiniLM + TF-IDF char_wb 2-4-grams (1000)",
    }
    card = model_card(checkpoint)
    cores = record["cpu_count"]
    assert card["trained on"].startswith(f"CPU ({cores} cores) · float32 · 1 process · torch {torch.__version__} · ")
    assert card["trained on"].endswith(f" · {record['wall_seconds']:.0f} s · seed 3")
    assert card["text features"] == (
        "MiniLM + TF-IDF char_wb 2-4-grams (1000) (language rule: 0% CJK characters, kept as configured)"
    )


def test_an_ensemble_trains_saves_and_reloads_as_one_model(inputs, tmp_path):
    import dataclasses

    import torch

    from chtn.model import CHTNEnsemble
    from chtn.train import train

    config, data, meta, tfidf = inputs
    ensemble = dataclasses.replace(config, model=dataclasses.replace(config.model, ensemble=2))
    result = train(ensemble, data, tmp_path, meta, tfidf, log=lambda _: None)
    loaded = load_checkpoint(result.best_path)
    assert isinstance(loaded.model, CHTNEnsemble) and loaded.config.model.ensemble == 2
    image = torch.from_numpy(data.val.image)
    with torch.no_grad():
        members = [m.encode_image(image) for m in loaded.model.members]
        mean = loaded.model.encode_image(image)
    assert not torch.allclose(members[0], members[1])  # two different networks ...
    assert torch.allclose(mean, (members[0] + members[1]) / 2)  # ... averaged
    assert _lines(tmp_path / "metrics.jsonl")[-1]["val_map_mean"] > 0.3


def _cli(*args: str, env_extra: dict | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, **(env_extra or {})}
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, env=env, timeout=900)


def test_cli_train_then_evaluate(tmp_path):
    run = _cli(
        "-m",
        "chtn",
        "train",
        "--data",
        str(PAIRS),
        "--source",
        "none",
        "--out",
        str(tmp_path / "run"),
        "--set",
        "train.epochs=2",
        "--set",
        "train.min_steps_per_epoch=2",
        "--threads",
        "1",
    )
    assert run.returncode == 0, run.stderr
    assert "torch uses 1 CPU thread (set by --threads" in run.stdout
    ckpt = tmp_path / "run" / "best.safetensors"
    assert load_checkpoint(ckpt).meta["source"] is None
    assert load_checkpoint(ckpt).meta["provenance"]["torch_threads"] == 1
    out = _cli("-m", "chtn", "evaluate", "--checkpoint", str(ckpt), "--data", str(PAIRS), "--out", str(tmp_path / "ev"))
    assert out.returncode == 0, out.stderr
    assert "MAP@all on 400 test pairs" in out.stdout
    import pandas as pd

    per_query = pd.read_csv(tmp_path / "ev" / "per_query.csv")
    assert len(per_query) == 800 and set(per_query.direction) == {"i2t", "t2i"}
    assert len(pd.read_csv(tmp_path / "ev" / "per_category.csv")) == 20
    bad = _cli("-m", "chtn", "train", "--data", str(PAIRS), "--out", str(tmp_path / "x"), "--set", "train.epochs")
    assert bad.returncode == 2 and "section.field=value" in bad.stderr and "Traceback" not in bad.stderr


def test_ddp_two_processes_on_cpu_with_gloo(tmp_path):
    """torchrun with 2 CPU processes (gloo): both ranks choose the same text features on validation pairs carved
    from the training pairs (different choices would give the ranks models of different widths), both train, rank
    0 writes one consistent checkpoint and alone reports."""
    run = _cli(
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "chtn",
        "train",
        "--data",
        str(PAIRS),
        "--source",
        "none",
        "--out",
        str(tmp_path / "ddp"),
        "--set",
        "train.epochs=3",
        "--set",
        "train.min_steps_per_epoch=10",
        "--set",
        "encoder.text_choice=validation",
        "--set",
        "encoder.text_choice_epochs=2",
        env_extra={"OMP_NUM_THREADS": "1"},
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.count("best checkpoint:") == 1 and run.stdout.count("text features chosen on 40 pairs") == 1
    history = _lines(tmp_path / "ddp" / "metrics.jsonl")
    assert len(history) == 3 and all(h["world_size"] == 2 for h in history)
    assert history[-1]["val_map_mean"] > 0.3
    checkpoint = load_checkpoint(tmp_path / "ddp" / "best.safetensors")
    assert checkpoint.config.model.num_classes == 20 and checkpoint.meta["provenance"]["processes"] == 2
    choice = checkpoint.meta["text_choice"]
    assert choice["mode"] == "validation" and (choice["n_fit"], choice["n_val"]) == (160, 40)
    scores = {c["name"]: c["val_map"] for c in choice["candidates"]}
    assert len(scores) == 3 and all(0.0 < s <= 1.0 for s in scores.values())
    assert choice["chosen"] == max(scores, key=scores.get)
    chosen = checkpoint.config.encoder  # the trained model's text width matches the chosen features
    assert choice["features"].startswith("MiniLM") == chosen.uses_minilm
