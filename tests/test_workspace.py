"""What the dashboard opens: on-disk embedding cache, model card, uploads (pure functions, no Streamlit)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from analysis import workspace as ws
from analysis.explorer import top_tie_note
from chtn import gallery as gal
from chtn.errors import CHTNError


def test_second_open_reads_embeddings_from_disk_without_encoding(tmp_path, monkeypatch):
    """A private cache folder, so what other tests cached cannot make this pass or fail (and the embeddings
    shipped with the sample checkpoints are not read: tests/test_sample.py covers them)."""
    checkpoint = ws.open_checkpoint("chtn_no_source")
    data, _ = ws.open_dataset(ws.SAMPLE_DATASET, checkpoint)
    first = gal.embed_split(checkpoint, data, "test", cache_dir=tmp_path, shipped=False)
    stored = list((tmp_path / "embeddings").glob(f"{checkpoint.digest}_*.npz"))
    assert len(stored) == 1
    mtime = stored[0].stat().st_mtime

    def no_encoding(*args, **kwargs):
        raise AssertionError("embeddings were recomputed")

    monkeypatch.setattr("chtn.tower.Tower.embed_pairs", no_encoding)
    second = gal.embed_split(checkpoint, data, "test", cache_dir=tmp_path, shipped=False)
    assert np.array_equal(first.image, second.image) and np.array_equal(first.text, second.text)
    assert stored[0].stat().st_mtime == mtime and len(second) == 400
    other = ws.open_checkpoint("chtn_cifar_source")  # another checkpoint: its own entry
    with pytest.raises(AssertionError, match="recomputed"):
        gal.embed_split(other, data, "test", cache_dir=tmp_path, shipped=False)


def test_model_card_names_data_source_and_provenance():
    card = ws.model_card(ws.open_checkpoint("chtn_cifar_source"))
    assert "cifar10" in card["source domain"] and "500 images" in card["source domain"]
    assert card["training data"].endswith("(200 train / 100 val / 400 test pairs)")
    assert card["common representation"] == "softmax (release)" and card["created at"].startswith("20")
    assert ws.model_card(ws.open_checkpoint("chtn_no_source"))["source domain"].startswith("none")


def test_model_card_says_unknown_for_provenance_older_checkpoints_lack(tmp_path):
    """A checkpoint written before the provenance and text-choice records (the sample's, re-saved without them)."""
    from chtn.checkpoint import save_checkpoint

    shipped = ws.open_checkpoint("chtn_fashion_source")
    assert shipped.meta["provenance"]["device"] == "CPU" and ws.model_card(shipped)["trained on"].startswith("CPU")
    older = {k: v for k, v in shipped.meta.items() if k not in ("provenance", "text_choice")}
    path = tmp_path / "older.safetensors"
    save_checkpoint(path, shipped.model, shipped.config, older, shipped.tfidf_state)
    checkpoint = ws.open_checkpoint(str(path))
    card = ws.model_card(checkpoint)
    assert card["trained on"].startswith("unknown") and card["software"] == "unknown"
    assert card["text features"].startswith("unknown")
    assert ws.trained_on({"device": "NVIDIA H100 80GB HBM3", "device_type": "cuda", "processes": 4}) == (
        "NVIDIA H100 80GB HBM3 · ? · 4 processes · ? (CUDA ?, cuDNN ?) · ? · ?"
    )


def test_uploads_are_content_addressed_and_keep_their_name(tmp_path):
    first = ws.store_upload("my model.safetensors", b"abc", tmp_path)
    assert first.name == "my model.safetensors" and first.read_bytes() == b"abc"
    assert ws.store_upload("renamed.safetensors", b"abc", tmp_path).parent == first.parent
    assert ws.store_upload("my model.safetensors", b"abd", tmp_path).parent != first.parent
    assert ws.store_upload("../../evil.pt", b"x", tmp_path).parent.parent == tmp_path / "uploads"


def test_a_split_with_no_rows_is_a_clear_error(pairs):
    checkpoint = ws.open_checkpoint("chtn_no_source")
    with pytest.raises(CHTNError, match="no 'holdout' rows"):
        gal.embed_split(checkpoint, pairs, "holdout")


def test_pair_score_is_the_score_the_explorer_ranks_by(tmp_path):
    from analysis.explorer import pair_score, query_score
    from chtn.search import query_side, retrieve
    from chtn.tower import create_tower

    checkpoint = ws.open_checkpoint("chtn_fashion_source")
    gallery = gal.embed_split(checkpoint, ws.open_dataset(ws.SAMPLE_DATASET, checkpoint)[0], "test", cache_dir=tmp_path)
    for direction in ("i2t", "t2i"):
        view = retrieve(gallery, direction, query_side(gallery, direction)[0][7], 3, checkpoint.label_names)
        for row, score in zip(view.table.row, view.table.score):
            assert pair_score(gallery, direction, 7, int(row)) == pytest.approx(float(score), abs=1e-5)
    text = create_tower(checkpoint).embed_texts(["black leather wallet"])[0]  # a free-text query, as on Explain
    view = retrieve(gallery, "t2i", text, 3, checkpoint.label_names)
    for row, score in zip(view.table.row, view.table.score):
        assert query_score(text, gallery, "t2i", int(row)) == pytest.approx(float(score), abs=1e-5)


def test_a_tie_at_the_top_is_said_before_the_results():
    """The first results tied at one score are said once, above the grid, with how far the tie goes."""
    table = pd.DataFrame(
        {"score": [1.0, 1.0, 1.0, 0.9], "tied_with": [22, 22, 22, 0], "tie_first": [1, 1, 1, 24], "tie_last": [23] * 4}
    )
    note = top_tie_note(table)
    assert note.startswith("**The first 23 results are tied** at 1.0000") and "more than the 4 shown" in note
    assert "more than" not in top_tie_note(table.assign(tie_last=[3, 3, 3, 4], tied_with=[2, 2, 2, 0]))
    assert top_tie_note(table.iloc[3:]) is None and top_tie_note(table.iloc[:0]) is None


def test_a_damaged_provenance_reads_as_unknown_parts_never_an_error():
    """Found by test_robustness's damaged headers: a list or text where a number belongs shows "?" in the card."""
    from analysis.workspace import trained_on

    assert trained_on({"wall_seconds": [None, None], "device": "cpu", "seed": 3}) == "cpu · ? · ? · ? · ? · seed 3"
    assert trained_on({"wall_seconds": "soon", "precision": {"a": 1}}) == "? · ? · ? · ? · ? · ?"


def test_a_damaged_text_choice_reads_as_question_marks_never_an_error():
    """Found by test_robustness's damaged headers: `cjk_share: []` raised a TypeError in the model card."""
    shown = ws.text_features_choice({"mode": "language", "cjk_share": [], "features": "char"})
    assert shown == "char (language rule: ? CJK characters, switched to character n-grams)"
    assert "91% CJK" in ws.text_features_choice({"mode": "language", "cjk_share": 0.91, "chosen": "configured"})
    damaged = ws.text_features_choice({"mode": "validation", "candidates": [3, {"name": "word", "val_map": 0.5}]})
    assert "word 0.5" in damaged
    assert ws.text_features_choice({"mode": "validation", "candidates": "x"}).endswith("training pairs: ?)")


def test_category_ap_sorts_lowest_first_and_brackets_each_mean():
    checkpoint = ws.open_checkpoint("chtn_no_source")  # the shipped embeddings: nothing is encoded
    gallery = gal.embed_split(checkpoint, ws.open_dataset(ws.SAMPLE_DATASET, checkpoint)[0])
    report = gal.evaluate_gallery(gallery, checkpoint.label_names)
    table = ws.category_ap(report, resamples=2_000)
    assert len(table) == 2 * len(checkpoint.label_names) and set(table.n) == {20}  # 20 test queries per category
    expected = report.per_category().set_index("category")
    for row in table.itertuples():
        column = "ap_i2t" if row.direction == "Image → Text" else "ap_t2i"
        assert row.AP == pytest.approx(expected.loc[row.category, column], abs=1e-12)
        assert row.low <= row.AP + 1e-12 and row.AP <= row.high + 1e-12
    order = table.groupby("category", sort=False)["AP"].mean()
    assert (np.diff(order.to_numpy()) >= -1e-12).all() and list(order.index) == list(dict.fromkeys(table.category))
    assert (table.high - table.low).max() > 0  # some category's queries disagree: a real interval
    again = ws.category_ap(report, resamples=2_000)
    np.testing.assert_allclose(again[["low", "high"]], table[["low", "high"]], atol=1e-12)  # seeded


def test_runs_trained_into_folders_are_named_by_their_folder(tmp_path):
    """Two `chtn train` runs both write best.safetensors: a page names them by folder, other files by their name."""
    import shutil

    from chtn.checkpoint import load_checkpoint
    from tests.conftest import CHECKPOINTS

    paths = [tmp_path / "run" / "best.safetensors", tmp_path / "run_nosrc" / "best.safetensors"]
    for path in paths:
        path.parent.mkdir()
        shutil.copy(CHECKPOINTS / "chtn_no_source.safetensors", path)
    runs = [*(load_checkpoint(p) for p in paths), load_checkpoint(CHECKPOINTS / "chtn_fashion_source.safetensors")]
    assert ws.run_names(runs) == "`run/best`, `run_nosrc/best`, `chtn_fashion_source`"
