"""Source-bias diagnostics: transfer gain on null and known-effect cases, confusions, reference and source
lookup, and the whole report on the real sample (fashion catalogue vs CIFAR-10 source)."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import numpy as np
import pytest

from analysis.bias.gain import (
    HELPED,
    INSUFFICIENT,
    NEGLIGIBLE,
    NO_EFFECT,
    confusions,
    pick_reference,
    resolve_source,
    transfer_gain,
)
from chtn.checkpoint import load_checkpoint
from chtn.errors import CHTNError
from chtn.evaluate import evaluate_embeddings
from tests.conftest import CHECKPOINTS, PAIRS

NAMES = [f"c{i}" for i in range(8)]


def _embeddings(seed: int, n_per_class: int = 30, noise: float = 1.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Images and texts around one centre per class: a retrieval problem with a known difficulty."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(len(NAMES)), n_per_class)
    centres = np.random.default_rng(0).normal(size=(len(NAMES), 16))
    return (
        centres[labels] + noise * rng.normal(size=(len(labels), 16)),
        centres[labels] + noise * rng.normal(size=(len(labels), 16)),
        labels,
    )


def test_identical_checkpoints_show_no_effect_anywhere():
    image, text, labels = _embeddings(1)
    report = evaluate_embeddings(image, text, labels, NAMES)
    gain = transfer_gain(report, report, resamples=500)
    assert len(gain) == 2 * len(NAMES) and set(gain["direction"]) == {"i2t", "t2i"}
    assert (gain["ΔAP"] == 0).all() and (gain["p_value"] == 1).all() and set(gain["flag"]) == {NO_EFFECT}


def _swap_per_query(model, reference, rng):
    """Permuted labels: each query's two APs are assigned to model and reference at random (the exact null)."""
    swapped = {}
    for direction in ("i2t", "t2i"):
        a, b = getattr(model, direction), getattr(reference, direction)
        flip = rng.random(len(a.ap)) < 0.5
        swapped[direction] = (
            dataclasses.replace(a, ap=np.where(flip, b.ap, a.ap)),
            dataclasses.replace(b, ap=np.where(flip, a.ap, b.ap)),
        )
    return (
        dataclasses.replace(model, i2t=swapped["i2t"][0], t2i=swapped["t2i"][0]),
        dataclasses.replace(reference, i2t=swapped["i2t"][1], t2i=swapped["t2i"][1]),
    )


def test_null_data_false_positives_near_five_percent_and_no_flags():
    model = evaluate_embeddings(*_embeddings(1, noise=1.2), NAMES)
    reference = evaluate_embeddings(*_embeddings(2, noise=1.2), NAMES)
    rng = np.random.default_rng(0)
    raw = []
    for _ in range(5):
        gain = transfer_gain(*_swap_per_query(model, reference, rng), resamples=500)
        assert set(gain["flag"]) == {NO_EFFECT}
        raw += list(gain["p_value"])
    assert 0.0 < np.mean(np.array(raw) <= 0.05) <= 0.12


def test_a_known_gain_is_flagged_and_covered_by_its_interval():
    image, text, labels = _embeddings(1, noise=1.5)
    reference = evaluate_embeddings(image, text, labels, NAMES)
    better_image, better_text = image.copy(), text.copy()
    helped = labels == 3
    better_image[helped] = 0.2 * image[helped] + 0.8 * np.random.default_rng(0).normal(size=(len(NAMES), 16))[3]
    better_text[helped] = 0.2 * text[helped] + 0.8 * np.random.default_rng(0).normal(size=(len(NAMES), 16))[3]
    model = evaluate_embeddings(better_image, better_text, labels, NAMES)
    gain = transfer_gain(model, reference, resamples=2000).set_index(["category", "direction"])
    row = gain.loc[("c3", "i2t")]
    assert row["flag"] == HELPED and row["ci_low"] > 0
    true_delta = np.nanmean(model.i2t.ap[helped]) - np.nanmean(reference.i2t.ap[helped])
    assert row["ci_low"] <= true_delta <= row["ci_high"]


def test_a_significant_change_below_the_minimum_effect_is_negligible_not_helped():
    """Kurtas T->I on the sample: +0.002 [+0.002, +0.002] was "helped" with q printed as 0.000. Every query of a
    category moved by the same tiny amount is as significant as can be and still nothing to act on."""
    image, text, labels = _embeddings(1, noise=1.5)
    reference = evaluate_embeddings(image, text, labels, NAMES)
    nudged = dataclasses.replace(reference.i2t, ap=np.where(labels == 3, reference.i2t.ap + 0.002, reference.i2t.ap))
    model = dataclasses.replace(reference, i2t=nudged)
    gain = transfer_gain(model, reference, resamples=500).set_index(["category", "direction"])
    row = gain.loc[("c3", "i2t")]
    assert row["p_adjusted"] <= 0.10 and row["ΔAP"] == pytest.approx(0.002)
    assert row["flag"] == NEGLIGIBLE
    assert (
        transfer_gain(model, reference, resamples=500, min_effect=0.001)
        .set_index(["category", "direction"])
        .loc[("c3", "i2t"), "flag"]
        == HELPED
    )


def test_small_categories_are_insufficient_evidence():
    image, text, labels = _embeddings(1, n_per_class=5)
    gain = transfer_gain(
        evaluate_embeddings(image, text, labels, NAMES),
        evaluate_embeddings(*_embeddings(2, n_per_class=5), NAMES),
        resamples=200,
    )
    assert set(gain["flag"]) == {INSUFFICIENT} and gain["p_adjusted"].isna().all()


def test_different_query_sets_are_refused():
    a = evaluate_embeddings(*_embeddings(1), NAMES)
    b = evaluate_embeddings(*_embeddings(1, n_per_class=20), NAMES)
    with pytest.raises(CHTNError, match="identical query set"):
        transfer_gain(a, b)


def test_confusions_say_where_a_category_lands():
    labels = np.array([0, 0, 1, 1])
    query = np.array([[1.0, 0.0], [1.0, 0.1], [0.0, 1.0], [0.1, 1.0]])
    gallery = np.array([[0.0, 1.0], [0.1, 1.0], [1.0, 0.0], [1.0, 0.1]])  # each category's items look like the other
    table = confusions(query, gallery, labels, ["a", "b"], k=2).set_index(["query category", "retrieved category"])
    assert table.loc[("a", "b"), "rank-1 share"] == 1.0 and table.loc[("a", "a"), "top-2 share"] == 0.0
    assert table.groupby(level=0)["top-2 share"].sum().tolist() == [1.0, 1.0]


@pytest.fixture(scope="module")
def checkpoints():
    return {p.stem: load_checkpoint(p) for p in sorted(CHECKPOINTS.glob("*.safetensors"))}


def test_the_sample_ships_a_reference_for_its_source_checkpoints(checkpoints):
    candidates = list(checkpoints.values())
    for name in ("chtn_fashion_source", "chtn_cifar_source"):
        assert pick_reference(checkpoints[name], candidates) == checkpoints["chtn_no_source"]
    assert pick_reference(checkpoints["chtn_no_source"], candidates) is None


def test_the_source_is_found_as_training_recorded_it_or_named_when_missing(checkpoints, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the recorded path is relative to where training ran
    assert resolve_source(checkpoints["chtn_cifar_source"]).name == "cifar10"
    with pytest.raises(CHTNError, match="does not exist"):
        resolve_source(checkpoints["chtn_cifar_source"], tmp_path / "nowhere")
    moved = tmp_path / "elsewhere.safetensors"  # a copy far from the repository: the recorded path is gone
    moved.write_bytes(checkpoints["chtn_cifar_source"].path.read_bytes())
    with pytest.raises(CHTNError, match=r"sample_data/cifar10\) was not found.*--source"):
        resolve_source(load_checkpoint(moved))
    with pytest.raises(CHTNError, match="without a source"):
        resolve_source(checkpoints["chtn_no_source"])


@pytest.mark.slow
def test_sample_report_cifar_covers_less_and_sits_further_than_the_catalogue(checkpoints, tmp_path):
    from analysis.bias.report import BiasReport, BiasSettings, bias_report, open_source
    from chtn.data import load_pairs

    settings = BiasSettings(resamples=500, permutations=100)
    reports, sources = {}, {}
    for name in ("chtn_fashion_source", "chtn_cifar_source"):
        checkpoint = checkpoints[name]
        source = open_source(checkpoint, None, PAIRS)
        per_class = [np.flatnonzero(source.label_index == c)[:12] for c in range(len(source.label_names))]
        source = sources[name] = source.select(np.concatenate(per_class))  # a few per class keeps it quick
        data = load_pairs(PAIRS, checkpoint.label_names)
        reports[name] = bias_report(checkpoint, data, checkpoints["chtn_no_source"], source, settings)
    fashion, cifar = reports["chtn_fashion_source"], reports["chtn_cifar_source"]
    similarity = {n: r.tables["coverage"].query("rank == 1")["similarity"] for n, r in reports.items()}
    assert (similarity["chtn_fashion_source"].to_numpy() > similarity["chtn_cifar_source"].to_numpy()).all()
    assert (fashion.tables["coverage"].query("rank == 1")["match"] == "label").all()
    for column in ("MMD² trunk", "A-distance"):
        assert cifar.tables["discrepancy"][column].median() > fashion.tables["discrepancy"][column].median()
    assert cifar.gate["relevance"] == 0.0 and len(fashion.tables["gain"]) == 40
    assert np.allclose(fashion.tables["capture"].sum(axis=1), 1.0)  # each category's images, shared out
    checkpoint = checkpoints["chtn_fashion_source"]
    data = load_pairs(PAIRS, checkpoint.label_names)
    without = bias_report(checkpoint, data, checkpoints["chtn_no_source"], None, settings)
    assert "coverage" not in without.tables and "gain" in without.tables
    assert any("No source data" in note for note in without.notes)  # says what it cannot show
    shuffled = dataclasses.replace(data, label_names=data.label_names[::-1])  # a dataset read in another order
    again = bias_report(
        checkpoint, shuffled, None, sources["chtn_fashion_source"], dataclasses.replace(settings, seed=1)
    )
    best = again.tables["coverage"].query("rank == 1")
    assert (best["category"] == best["source class"]).all() and (best["similarity"] > 0.9).all()
    restored = BiasReport.from_json(fashion.to_json())
    assert restored.tables["gain"].equals(fashion.tables["gain"]) and restored.settings == settings
    # the same images in another folder (another clone): the cached report, saying where they are now
    moved_dir = tmp_path / "moved"
    moved_dir.mkdir()
    kept = sources["chtn_fashion_source"]
    paths = [Path(shutil.copy(path, moved_dir / f"{i}{Path(path).suffix}")) for i, path in enumerate(kept.image_paths)]
    moved = dataclasses.replace(kept, image_paths=paths, source=str(moved_dir))
    cached = bias_report(checkpoint, data, checkpoints["chtn_no_source"], moved, settings)
    assert cached.tables["coverage"].equals(fashion.tables["coverage"])  # read from the cache, not computed again
    assert cached.source["path"] == str(moved_dir) != fashion.source["path"]


def test_the_embeddings_only_report_reads_no_image_and_keeps_its_own_cache_entry(checkpoints, tmp_path, monkeypatch):
    """The dashboard's first answer: gain, confusions and gap from the test embeddings, with no image model loaded
    (that import and load alone take seconds on 2 cores), stored apart from the complete report."""
    import analysis.bias.report as bias
    from chtn.data import load_pairs

    def no_images(*_args):
        raise AssertionError("an image model was loaded for the embeddings-only report")

    monkeypatch.setattr("chtn.encoders.cached_image_trunk", no_images)  # imported where the images are read
    monkeypatch.setattr("chtn.tower.create_tower", no_images)
    checkpoint, reference = checkpoints["chtn_fashion_source"], checkpoints["chtn_no_source"]
    data = load_pairs(PAIRS, checkpoint.label_names)
    source = bias.open_source(checkpoint, None, PAIRS)
    settings = bias.BiasSettings(resamples=200)
    first = bias.bias_report(checkpoint, data, reference, source, settings, tmp_path, read_images=False)
    assert {"gain", "confusions", "gap"} == set(first.tables) and first.source is None and not first.notes
    quick = bias.report_path(checkpoint, data, reference, source, settings, tmp_path, read_images=False)
    assert quick.exists() and not bias.report_path(checkpoint, data, reference, source, settings, tmp_path).exists()


def test_cli_without_a_source_or_with_its_source_gone_is_a_clear_error(tmp_path, capsys):
    from chtn.cli import main

    out = tmp_path / "out"
    no_source = CHECKPOINTS / "chtn_no_source.safetensors"
    assert main(["bias", "--checkpoint", str(no_source), "--data", str(PAIRS), "--out", str(out)]) == 2
    assert "trained without a source domain" in capsys.readouterr().err
    cifar = CHECKPOINTS / "chtn_cifar_source.safetensors"
    args = ["bias", "--checkpoint", str(cifar), "--data", str(PAIRS), "--out", str(out), "--source", "gone/cifar"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "gone/cifar" in err and "does not exist" in err
    assert not any(out.iterdir())  # checked writable before any work, and nothing half-written


@pytest.mark.slow
def test_cli_writes_tables_json_and_an_offline_html_report(tmp_path, capsys):
    import json

    from chtn.cli import main

    out = tmp_path / "bias"
    cifar = CHECKPOINTS / "chtn_cifar_source.safetensors"
    args = ["bias", "--checkpoint", str(cifar), "--data", str(PAIRS), "--out", str(out), "--resamples", "1000"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "chtn_no_source.safetensors" in printed  # the reference was found beside it
    assert "switched the source off" in printed  # CIFAR-10 on fashion: the gate said so
    for name in ("categories", "gain", "coverage", "capture", "discrepancy", "prior", "confusions", "gap"):
        assert (out / f"{name}.csv").stat().st_size > 0
    report = json.loads((out / "report.json").read_text())
    assert report["settings"]["resamples"] == 1000 and report["gate"]["relevance"] == 0.0
    page = (out / "report.html").read_text()
    assert page.count("Plotly.newPlot") >= 4 and "<script src=" not in page  # plots embedded, nothing fetched


def test_cli_refuses_a_run_given_twice_or_a_run_of_another_recipe(tmp_path, capsys):
    from chtn.cli import main
    from tests.conftest import recipe_runs

    fashion, no_source = recipe_runs("chtn_fashion_source"), recipe_runs("chtn_no_source")
    base = ["bias", "--data", str(PAIRS), "--out", str(tmp_path / "out")]
    assert main([*base, "--checkpoint", fashion[0], fashion[1], fashion[1]]) == 2
    assert "--checkpoint" in (err := capsys.readouterr().err) and "given twice" in err
    assert main([*base, "--checkpoint", *fashion, "--reference", no_source[0], fashion[1]]) == 2
    err = capsys.readouterr().err
    assert "--reference" in err and "chtn_fashion_source_s1.safetensors is not a run of chtn_no_source" in err


@pytest.mark.slow
def test_cli_with_three_runs_per_side_compares_the_recipes(tmp_path, capsys):
    import json

    from chtn.cli import main
    from tests.conftest import recipe_runs

    out = tmp_path / "bias"
    fashion = recipe_runs("chtn_fashion_source")
    args = ["bias", "--checkpoint", *fashion, "--data", str(PAIRS), "--out", str(out)]  # the page's settings: the
    assert main(args) == 0  # Source bias page test then reads this report from the session's cache
    printed = capsys.readouterr().out
    assert "chtn_no_source_s1.safetensors" in printed  # the reference's other runs were found beside it
    assert "The flags compare the two recipes: 3 training runs with the source against 3 without it" in printed
    report = json.loads((out / "report.json").read_text())
    assert len(report["runs"]) == 2 and len(report["reference_runs"]) == 2
    gain = report["tables"]["gain"]
    assert {row[gain["columns"].index("unit")] for row in gain["data"]} == {"runs"}
    assert "compare the two recipes" in (out / "report.html").read_text()


def test_a_source_checkpoint_without_a_recorded_path_asks_for_one(checkpoints, tmp_path):
    from chtn.checkpoint import save_checkpoint

    cifar = checkpoints["chtn_cifar_source"]
    bare = save_checkpoint(
        tmp_path / "bare.safetensors", cifar.model, cifar.config, {**cifar.meta, "source": None}, cifar.tfidf_state
    )
    with pytest.raises(CHTNError, match="does not record where its source images are"):
        resolve_source(load_checkpoint(bare))
    assert resolve_source(load_checkpoint(bare), CHECKPOINTS.parent / "cifar10").name == "cifar10"


def test_the_note_while_images_compute_never_calls_a_gain_it_cannot_show_complete():
    """Without a no-source reference there is no transfer gain: the note says which figures are final, and what
    follows (the source's diagnostics only when there is a source)."""
    from analysis.bias.render import pending_statement

    assert pending_statement(True, True).startswith("The transfer gain, confusions and modality gap below are complete")
    lone = pending_statement(False, False)
    assert "transfer gain" not in lone and "ImageNet prior" in lone and "coverage" not in lone
    assert "coverage, capture and domain discrepancy" in pending_statement(False, True)
