"""The built-in simple baseline (`chtn baseline`, chtn/baseline.py): fitted on the sample's training pairs, its setting
chosen on validation pairs, written as a checkpoint that every command and dashboard page opens."""

from __future__ import annotations

import time

import numpy as np
import pytest
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from streamlit.testing.v1 import AppTest

from chtn.baseline import C_GRID, affine_map
from chtn.checkpoint import load_checkpoint
from chtn.cli import main
from chtn.gallery import embed_split, evaluate_gallery
from chtn.model import LinearBaseline
from tests.conftest import PAIRS, ROOT


@pytest.mark.parametrize(
    "pipeline",
    [
        make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=500)),
        make_pipeline(StandardScaler(), PCA(5, random_state=0)),
    ],
    ids=["classifier", "pca"],
)
def test_affine_map_reproduces_a_fitted_pipeline(pipeline):
    """The weight and bias read off a fitted scikit-learn pipeline give its outputs on rows it has not seen."""
    rng = np.random.default_rng(0)
    x, labels = rng.normal(size=(60, 12)), np.arange(60) % 3
    pipeline.fit(x, labels)
    transform = pipeline.decision_function if hasattr(pipeline, "decision_function") else pipeline.transform
    weight, bias = affine_map(transform, 12)
    new = rng.normal(size=(20, 12)) * 3
    np.testing.assert_allclose(new @ weight.T + bias, transform(new), rtol=1e-9, atol=1e-9)


@pytest.fixture(scope="module")
def baselines(tmp_path_factory):
    """`chtn baseline` on the sample, both kinds (about 10 s on 2 cores: the sample ships its features)."""
    out = tmp_path_factory.mktemp("baseline")
    assert main(["baseline", "--data", str(PAIRS), "--out", str(out)]) == 0
    return {kind: out / f"baseline_{kind}.safetensors" for kind in ("softmax", "cca")}


def test_baseline_checkpoints_open_like_any_other_and_say_what_validation_chose(baselines):
    """Each baseline is a checkpoint of the sample's rows whose setting is the best of those tried on validation
    pairs, and it ranks the test split far above chance."""
    pairs_test = None
    for kind, path in baselines.items():
        checkpoint = load_checkpoint(path)
        assert isinstance(checkpoint.model, LinearBaseline) and checkpoint.config.model.architecture == "linear"
        choice = checkpoint.meta["baseline"]
        scores = {float(k): v for k, v in choice["val_map"].items()}
        chosen = choice["C"] if kind == "softmax" else choice["components"]
        assert scores[float(chosen)] == max(scores.values()), "the setting is the best on validation pairs"
        if kind == "softmax":
            assert set(scores) == set(C_GRID)
        assert checkpoint.meta["dataset"]["n_train"] == 200 and checkpoint.meta["source"] is None
        from chtn.data import load_pairs

        pairs_test = pairs_test or load_pairs(PAIRS).split("test")
        gallery = embed_split(checkpoint, pairs_test, "test")
        if kind == "softmax":  # images and texts meet as class probabilities
            np.testing.assert_allclose(gallery.image.sum(1), 1.0, atol=1e-5)
        report = evaluate_gallery(gallery, checkpoint.label_names)
        assert report.mean_map > 0.5, f"{kind}: far above chance (1/20) on the sample"


@pytest.mark.parametrize(
    "page",
    [
        "views/overview.py",
        "views/explorer.py",
        "views/attribution.py",
        "views/space.py",
        "views/bias.py",
        "views/review.py",
        "views/compare.py",
    ],
)
def test_every_page_opens_a_baseline_checkpoint(baselines, page, review_db):
    """A baseline checkpoint opens on every page with no error, as the one under review or (Compare) against CHTN."""
    at = AppTest.from_file(str(ROOT / "dashboard.py"), default_timeout=300)
    at.switch_page(page)
    at.query_params["checkpoint"] = str(baselines["softmax"])
    if page == "views/compare.py":
        at.query_params["baseline"] = "chtn_fashion_source"
    at.run()
    for _ in range(120):  # past the shared evaluation job's progress (a browser's poll reruns by itself)
        if not any(info.value.startswith("**Evaluating ") for info in at.info):
            break
        time.sleep(0.5)
        at.run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    if page == "views/overview.py":
        assert any(metric.label == "MAP (mean of directions)" for metric in at.metric)
    if page == "views/attribution.py":  # Grad-CAM and Layer IG through the baseline's linear maps
        assert "Strongest words" in " ".join(caption.value for caption in at.caption)


def test_train_refuses_the_baseline_architecture_before_any_work(tmp_path, capsys):
    """`chtn train --set model.architecture=linear` would train nothing CHTN's losses know: a clear error that names
    the command that fits it, before any feature is extracted."""
    code = main(["train", "--data", str(PAIRS), "--out", str(tmp_path), "--set", "model.architecture=linear"])
    assert code == 2
    assert "chtn baseline" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())
