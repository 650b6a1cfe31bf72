"""The built-in simple baseline (`chtn baseline`, chtn/baseline.py): fitted on the sample's training pairs, its setting
chosen on validation pairs, written as a checkpoint that every command and dashboard page opens."""

from __future__ import annotations

import csv
import shlex
import shutil
import time

import numpy as np
import pandas as pd
import pytest
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from streamlit.testing.v1 import AppTest

from analysis.bias.gain import pick_reference
from analysis.compare.margin import baseline_command, baseline_margin, compare_command, find_baseline, margin_text
from chtn.baseline import C_GRID, affine_map, cross_validated_c
from chtn.checkpoint import load_checkpoint
from chtn.cli import main
from chtn.gallery import embed_split, evaluate_gallery
from chtn.model import LinearBaseline
from tests.conftest import PAIRS, ROOT

SAMPLES = ROOT / "sample_data" / "checkpoints"


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
def beside(tmp_path_factory):
    """A sample CHTN checkpoint copied into a run folder of its own (its dataset: the sample's pairs)."""
    folder = tmp_path_factory.mktemp("run")
    shutil.copy(SAMPLES / "chtn_fashion_source.safetensors", folder / "chtn.safetensors")
    return folder / "chtn.safetensors"


@pytest.fixture(scope="module")
def baselines(beside):
    """The `chtn baseline` command that the model card prints for that checkpoint, run as printed: both kinds, beside
    it (about 10 s on 2 cores: the sample ships its features)."""
    command = shlex.split(baseline_command(load_checkpoint(beside), str(PAIRS), skip_invalid=False))
    assert command[:3] == ["python", "-m", "chtn"] and "--preset" in command
    assert main(command[3:]) == 0
    return {kind: beside.parent / f"baseline_{kind}.safetensors" for kind in ("softmax", "cca")}


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


def test_the_card_margin_is_the_comparisons_figure(baselines, beside, tmp_path, monkeypatch, review_db):
    """The baseline found for a CHTN checkpoint is the softmax one of its dataset (none for a baseline itself), and
    the model card's margin equals the figure and interval of the `chtn compare` command it prints for a large split."""
    chtn, softmax, cca = (load_checkpoint(p) for p in (beside, baselines["softmax"], baselines["cca"]))
    no_source = load_checkpoint(SAMPLES / "chtn_no_source.safetensors")
    assert find_baseline(chtn, [no_source, cca, softmax]) == softmax
    assert find_baseline(chtn, [no_source, cca]) == cca
    assert find_baseline(softmax, [cca, softmax]) is None
    assert pick_reference(chtn, [softmax, cca, no_source]) == no_source, "a baseline is never the no-source CHTN"
    from chtn.data import load_pairs

    test = load_pairs(PAIRS).split("test")
    ours, theirs = (evaluate_gallery(embed_split(c, test, "test"), c.label_names) for c in (chtn, softmax))
    margins = baseline_margin(ours, theirs)
    monkeypatch.chdir(tmp_path)  # the command a large split's card prints, run as printed: its report lands here
    command = shlex.split(compare_command(softmax, chtn, str(PAIRS), skip_invalid=False))
    assert command[:3] == ["python", "-m", "chtn"] and main(command[3:]) in (0, 1, 2)  # 2: one run per side
    figures = pd.read_csv(tmp_path / command[command.index("--out") + 1] / "figures.csv")
    for direction, margin in margins.items():
        row = figures[(figures.metric == f"map_{direction}") & (figures.slice == "overall")].iloc[0]
        for field in ("delta", "ci_low", "ci_high"):
            assert getattr(margin, field) == pytest.approx(row[field], abs=1e-9)
    assert "over the built-in linear softmax baseline" in margin_text(margins, softmax)


def test_overview_card_shows_the_margin_over_a_baseline_beside_the_checkpoint(baselines, beside, review_db):
    at = AppTest.from_file(str(ROOT / "dashboard.py"), default_timeout=300)
    at.query_params["checkpoint"] = str(beside)
    at.run()
    for _ in range(120):
        if not any(info.value.startswith("**Evaluating ") for info in at.info):
            break
        time.sleep(0.5)
        at.run()
    assert not at.exception and not at.error
    lines = [m.value for m in at.markdown if "Margin over the built-in baseline" in m.value]
    assert lines and "baseline_softmax.safetensors" in lines[0] and "I->T +" in lines[0]


def test_bench_cells_fit_the_baseline_on_their_own_pairs_and_report_the_paired_margin(pairs, cache):
    """bench_core's per-cell baseline: C cross-validated over the cell's own pairs, refitted on all of them, scored
    on the cell's rows; the margin is the difference of MAPs, inside its interval."""
    from bench.bench_core import baseline_figures, softmax_baseline
    from chtn.baseline import common_space, softmax_maps
    from chtn.encoders import TfidfTextEncoder, cached_image_trunk
    from chtn.evaluate import evaluate_embeddings
    from chtn.features import image_features
    from chtn.train import FeatureSet

    image = image_features(pairs.image_paths, cache, cached_image_trunk())[0]
    rows = {split: np.flatnonzero(np.asarray(pairs.splits) == split) for split in ("train", "test")}
    tfidf = TfidfTextEncoder("char_wb", (2, 4), 1000).fit([pairs.texts[i] for i in rows["train"]])
    text = tfidf.encode(pairs.texts)
    cell, scored = (FeatureSet(image[r], text[r], pairs.label_index[r]) for r in (rows["train"], rows["test"]))
    names = pairs.label_names
    baseline, c = softmax_baseline(cell, scored, names, seed=0)
    assert c in C_GRID and baseline.mean_map > 0.5  # chance on the sample's 20 balanced classes ~0.06
    chosen, means = cross_validated_c(cell, names, seed=0)
    assert chosen == c and means[f"{c:g}"] == max(means.values()) and len(means) == len(C_GRID)
    other_c = C_GRID[0] if c != C_GRID[0] else C_GRID[-1]
    image_map, text_map = softmax_maps(cell, len(names), other_c)
    other = evaluate_embeddings(
        common_space(scored.image, image_map, True), common_space(scored.text, text_map, True), scored.labels, names
    )
    figures = baseline_figures(other, (baseline, c))
    assert figures["baseline_C"] == c
    for direction in ("i2t", "t2i"):
        delta, low, high = figures[f"margin_{direction}"]
        expected = getattr(other, direction).ap.mean() - getattr(baseline, direction).ap.mean()
        assert delta == pytest.approx(expected, abs=1e-4) and low <= delta <= high
        assert figures[f"baseline_map_{direction}"] == pytest.approx(getattr(baseline, direction).ap.mean(), abs=1e-4)


def test_cross_validation_uses_as_many_folds_as_the_smallest_category_allows(pairs, cache):
    """Three pairs per category (a k=3 cell) still gets a C: three folds, each holding one pair per category."""
    from chtn.encoders import TfidfTextEncoder
    from chtn.train import FeatureSet

    train = np.flatnonzero(np.asarray(pairs.splits) == "train")
    rows = np.concatenate([train[pairs.label_index[train] == label][:3] for label in range(len(pairs.label_names))])
    text = TfidfTextEncoder("char_wb", (2, 4), 500).fit([pairs.texts[i] for i in rows]).encode(pairs.texts)
    cell = FeatureSet(text[rows][:, :64], text[rows], pairs.label_index[rows])
    chosen, means = cross_validated_c(cell, pairs.label_names, seed=0)
    assert chosen in C_GRID and all(0.0 < m <= 1.0 for m in means.values())


def _wikipedia_copy(out, pairs_csv=PAIRS):
    """The sample in the Wikipedia layout (categories.list, <split>set_txt_img_cat.list, texts/, images/<category>/),
    its 'val' rows listed as training rows as that layout has no other, with the sample's feature pack beside the
    images so that no image is encoded again."""
    rows = list(csv.DictReader(pairs_csv.open(encoding="utf-8")))
    categories = sorted({r["label"] for r in rows})
    (out / "texts").mkdir(parents=True)
    (out / "categories.list").write_text("\n".join(categories) + "\n", encoding="utf-8")
    lists: dict[str, list[str]] = {"train": [], "test": []}
    for r in rows:
        (out / "images" / r["label"]).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(pairs_csv.parent / r["image"], out / "images" / r["label"] / f"{r['id']}.jpg")
        (out / "texts" / f"t{r['id']}.txt").write_text(r["text"], encoding="utf-8")
        split = "test" if r["split"] == "test" else "train"
        lists[split].append(f"t{r['id']}\t{r['id']}\t{categories.index(r['label']) + 1}")
    for split, lines in lists.items():
        (out / f"{split}set_txt_img_cat.list").write_text("\n".join(lines) + "\n", encoding="utf-8")
    shutil.copyfile(pairs_csv.with_suffix(".features.npz"), out / "images" / "features.npz")
    return out


def test_a_dataset_without_val_rows_chooses_on_pairs_carved_from_training(tmp_path, capsys):
    """The Wikipedia layout has no 'val' rows: `chtn baseline` chooses each setting on a per-category 20% carved from
    the training pairs (as `chtn train`'s text choice does), then fits it on all of them, the rows CHTN trains on."""
    data = _wikipedia_copy(tmp_path / "news")
    assert main(["baseline", "--data", str(data), "--out", str(tmp_path / "run")]) == 0
    said = capsys.readouterr().out
    for kind in ("softmax", "cca"):
        checkpoint = load_checkpoint(tmp_path / "run" / f"baseline_{kind}.safetensors")
        assert checkpoint.meta["dataset"]["n_train"] == 300 and checkpoint.meta["dataset"]["n_val"] == 0
        assert checkpoint.meta["baseline"]["carved_val"] == 60  # 3 of the 15 training pairs of each category
        assert f"baseline {kind}: validation MAP" in said
    assert said.count("on 60 validation pairs carved from the training pairs, then fitted on all of them") == 2


def test_too_few_training_pairs_to_carve_from_is_a_clear_error(tmp_path):
    from chtn.baseline import train_baselines
    from chtn.config import PRESETS, CHTNConfig
    from chtn.errors import CHTNError
    from chtn.train import FeatureSet, TrainInputs

    one_each = FeatureSet(np.eye(3, dtype=np.float32), np.eye(3, dtype=np.float32), np.arange(3))
    with pytest.raises(CHTNError, match="no 'val' rows and its 3 training pairs are too few to carve"):
        train_baselines(
            CHTNConfig.from_dict(PRESETS["small"]), TrainInputs(one_each, None, ["a", "b", "c"]), tmp_path, {}
        )
    assert not list(tmp_path.iterdir())
