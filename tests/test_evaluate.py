import math

import numpy as np
import pytest

from chtn import engine
from chtn.evaluate import average_precision, evaluate_direction, evaluate_embeddings

# ---- average_precision: hand-computed cases ----


def test_ap_relevant_at_ranks_1_and_3():
    scores = np.array([0.9, 0.8, 0.7, 0.6])
    assert average_precision(scores, np.array([1, 0, 1, 0], bool)) == pytest.approx((1 / 1 + 2 / 3) / 2)


def test_ap_relevant_at_ranks_2_and_4_after_reordering():
    # ranking by score is gallery index 3, 0, 2, 1 -> relevant {0, 1} sit at ranks 2 and 4
    scores = np.array([0.5, 0.1, 0.3, 0.9])
    assert average_precision(scores, np.array([1, 1, 0, 0], bool)) == pytest.approx((1 / 2 + 2 / 4) / 2)


def test_ap_no_relevant_is_nan():
    assert math.isnan(average_precision(np.array([0.3, 0.2]), np.array([False, False])))


def test_ap_all_tied_uses_gallery_order():
    relevant = np.array([0, 1, 0, 1], bool)  # ranks 2 and 4 in gallery order
    assert average_precision(np.zeros(4), relevant) == pytest.approx((1 / 2 + 2 / 4) / 2)


def test_ap_tie_break_is_stable_not_arbitrary():
    # Relevant item at index 9 tied with 9 earlier irrelevant items: stable order puts it last.
    # (An unstable sort such as numpy's default quicksort on ties is free to move it.)
    scores = np.full(10, 0.5)
    relevant = np.zeros(10, bool)
    relevant[9] = True
    assert average_precision(scores, relevant) == pytest.approx(1 / 10)
    # a strictly higher score still wins over the tie-break
    scores[9] = 0.5 + 1e-12
    assert average_precision(scores, relevant) == pytest.approx(1.0)


def test_ap_tie_break_stable_when_sort_moves_elements():
    # 30 tied items behind 3 higher ones: numpy's default (unstable) argsort reorders the tied
    # block here, while the stable order keeps index 1 right after the 3 leaders (rank 5).
    scores = np.array([0.5] * 30 + [0.9] * 3)
    relevant = np.zeros(33, bool)
    relevant[[1, 7]] = True
    assert average_precision(scores, relevant) == pytest.approx((1 / 5 + 2 / 11) / 2)
    res = evaluate_direction(
        np.ones((1, 1)), scores[:, None] - 0.7, np.array([0]), np.where(relevant, 0, 1), "i2t"
    )  # cosine of +/-1 -> the same tie pattern
    assert res.ap[0] == pytest.approx((1 / 5 + 2 / 11) / 2)


def test_ap_at_k():
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.5])
    relevant = np.array([0, 1, 0, 1, 1], bool)
    # top-3 holds one relevant item at rank 2, normalised by 1 retrieved (not by 3 total)
    assert average_precision(scores, relevant, at_k=3) == pytest.approx(1 / 2)
    assert average_precision(scores, relevant, at_k=4) == pytest.approx((1 / 2 + 2 / 4) / 2)
    assert average_precision(scores, relevant) == pytest.approx((1 / 2 + 2 / 4 + 3 / 5) / 3)
    assert average_precision(scores, relevant, at_k=1) == 0.0
    assert math.isnan(average_precision(scores, np.zeros(5, bool), at_k=3))


# ---- evaluate_direction ----


def _brute_force(query, gallery, ql, gl, at_k):
    q = query / np.linalg.norm(query, axis=1, keepdims=True)
    g = gallery / np.linalg.norm(gallery, axis=1, keepdims=True)
    return np.array([average_precision(q[i] @ g.T, gl == ql[i], at_k) for i in range(len(q))])


@pytest.mark.parametrize("at_k", [None, 5])
@pytest.mark.parametrize("block_rows", [7, 1024])
def test_evaluate_direction_matches_brute_force(at_k, block_rows, monkeypatch):
    monkeypatch.setattr(engine, "BLOCK_ELEMS", block_rows * 33)  # queries per block of the 33-item gallery
    rng = np.random.default_rng(0)
    query, gallery = rng.normal(size=(40, 6)), rng.normal(size=(33, 6))
    ql, gl = rng.integers(0, 4, 40), rng.integers(0, 4, 33)
    ql[0] = 9  # a query with no relevant item in the gallery
    res = evaluate_direction(query, gallery, ql, gl, "i2t", at_k=at_k)
    expected = _brute_force(query, gallery, ql, gl, at_k)
    np.testing.assert_allclose(res.ap, expected, equal_nan=True)
    assert math.isnan(res.ap[0]) and np.isnan(res.ap).sum() == 1
    assert res.map == pytest.approx(np.nanmean(expected))
    assert (res.paired_rank == -1).all()  # 40 queries vs 33 gallery items: no pairing
    assert res.at_k == at_k and res.direction == "i2t"


def test_evaluate_direction_paired_rank_top1_and_zero_query(monkeypatch):
    monkeypatch.setattr(engine, "BLOCK_ELEMS", 2 * 3)  # blocks of 2 queries
    gallery = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    query = np.array(
        [
            [1.0, 0.0],  # gallery ranks: 0 (1.0), 2 (0.707), 1 (0) -> own item rank 1
            [1.0, 0.1],  # ranks 0, 2, 1 -> own item (1) rank 3
            [0.0, 0.0],
        ]
    )  # zero vector: all scores 0, stable order 0, 1, 2 -> own item rank 3
    labels = np.array([0, 1, 1])
    res = evaluate_direction(query, gallery, labels, labels, "t2i")
    np.testing.assert_array_equal(res.paired_rank, [1, 3, 3])
    np.testing.assert_array_equal(res.top1_correct, [True, False, False])
    assert not np.isnan(res.ap).any()
    # zero query, label 1: relevant {1, 2} at ranks 2, 3 of the stable order
    assert res.ap[2] == pytest.approx((1 / 2 + 2 / 3) / 2)


def test_perfect_embeddings_give_map_one():
    labels = np.array([0, 1, 2, 1, 0, 2, 2])
    emb = np.eye(3)[labels] * np.arange(1, 8)[:, None]  # scale must not matter (cosine)
    report = evaluate_embeddings(emb, emb.copy(), labels, ["a", "b", "c"])
    assert report.i2t.map == 1.0 and report.t2i.map == 1.0 and report.mean_map == 1.0
    assert report.i2t.top1_correct.all()


# ---- EvaluationReport views ----


@pytest.fixture
def tiny_report():
    image = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.2]])
    text = np.array([[0.0, 1.0], [1.0, 0.0], [1.0, 0.1]])
    labels = np.array([0, 1, 0])
    return evaluate_embeddings(image, text, labels, ["cat", "dog", "empty"])


def test_tiny_report_values(tiny_report):
    # i2t: image 0 ranks texts 1, 2, 0 (relevant {0, 2}); image 1 ranks 0, 2, 1 (relevant {1});
    #      image 2 ranks 2, 1, 0 (cos 0.995 > 0.981 > 0.196)
    np.testing.assert_allclose(tiny_report.i2t.ap, [(1 / 2 + 2 / 3) / 2, 1 / 3, (1 + 2 / 3) / 2])
    np.testing.assert_array_equal(tiny_report.i2t.paired_rank, [3, 3, 1])
    np.testing.assert_array_equal(tiny_report.i2t.top1_correct, [False, False, True])
    # t2i: text 0 ranks images 1, 2, 0; text 1 ranks 0, 2, 1; text 2 ranks 2, 0, 1 (0.9952 > 0.9950)
    np.testing.assert_allclose(tiny_report.t2i.ap, [(1 / 2 + 2 / 3) / 2, 1 / 3, 1.0])
    np.testing.assert_array_equal(tiny_report.t2i.paired_rank, [3, 3, 1])


def test_per_category(tiny_report):
    df = tiny_report.per_category()
    assert list(df.columns) == ["category", "n", "ap_i2t", "ap_t2i", "ap_mean"]
    assert list(df["category"]) == ["cat", "dog", "empty"] and list(df["n"]) == [2, 1, 0]
    cat_i2t, cat_t2i = (7 / 12 + 5 / 6) / 2, (7 / 12 + 1.0) / 2
    assert df.loc[0, "ap_i2t"] == pytest.approx(cat_i2t)
    assert df.loc[0, "ap_t2i"] == pytest.approx(cat_t2i)
    assert df.loc[0, "ap_mean"] == pytest.approx((cat_i2t + cat_t2i) / 2)
    assert df.loc[1, "ap_mean"] == pytest.approx(1 / 3)
    assert df.loc[2, ["ap_i2t", "ap_t2i", "ap_mean"]].isna().all()


def test_per_query(tiny_report):
    df = tiny_report.per_query(["p0", "p1", "p2"], texts=["t0", "t1", "t2"])
    assert len(df) == 6
    assert list(df.columns) == [
        "id",
        "direction",
        "category",
        "ap",
        "paired_rank",
        "paired_tied_with",
        "paired_tie_first",
        "paired_tie_last",
        "paired_expected_rank",
        "top1_correct",
        "text",
    ]
    # no ties in the tiny report: each pair's group is itself alone, at its own rank
    assert (df.paired_tied_with == 0).all() and (df.paired_tie_first == df.paired_rank).all()
    assert (df.paired_tie_last == df.paired_rank).all() and (df.paired_expected_rank == df.paired_rank).all()
    assert list(df["direction"]) == ["i2t"] * 3 + ["t2i"] * 3
    assert list(df["id"]) == ["p0", "p1", "p2"] * 2 and list(df["category"]) == ["cat", "dog", "cat"] * 2
    assert df.loc[5, "ap"] == pytest.approx(1.0) and df.loc[5, "top1_correct"]
    assert "text" not in tiny_report.per_query(["p0", "p1", "p2"]).columns
    with pytest.raises(ValueError):
        tiny_report.per_query(["p0"])


def test_summary(tiny_report):
    s = tiny_report.summary()
    assert s["metric"] == "MAP@all" and s["at_k"] is None
    assert s["n_queries"] == 6 and s["n_undefined"] == 0
    assert s["map_mean"] == pytest.approx((s["map_i2t"] + s["map_t2i"]) / 2)
    assert s["map_i2t"] == pytest.approx(np.mean(tiny_report.i2t.ap))
    # own pairs at ranks 3, 3, 1 in both directions, no ties
    assert s["pair_recall@1_i2t"] == pytest.approx(1 / 3) and s["pair_recall@10_i2t"] == 1.0
    assert s["pair_median_rank_i2t"] == 3.0 and s["pair_median_stable_rank_t2i"] == 3.0
    assert "random order" in s["pair_tie_rule"] and s["tie_tolerance"] == 1e-4


# ---- own-pair figures: the tie rule


def test_own_pair_figures_count_exact_ties_in_random_order():
    # text rows: 0 and 3 are the same vector, so a query scores them exactly equal
    text = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [1.0, 0.0]])
    image = np.array(
        [
            [1.0, 0.0],  # scores 1, 0, .707, 1: own pair (0) tied with row 3 at ranks 1-2
            [0.0, 1.0],  # own pair (1) alone at rank 1
            [1.0, 1.0],  # own pair (2) alone at rank 1
            [0.0, 1.0],
        ]
    )  # scores 0, 1, .707, 0: own pair (3) tied with row 0 at ranks 3-4
    r = evaluate_embeddings(image, text, np.arange(4), list("abcd")).i2t
    np.testing.assert_array_equal(r.paired_rank, [1, 1, 1, 4])  # the protocol's gallery-order tie-break
    np.testing.assert_array_equal(r.paired_exact.others, [1, 0, 0, 1])
    np.testing.assert_array_equal(r.paired_exact.first, [1, 1, 1, 3])
    np.testing.assert_array_equal(r.own_pair_expected_rank(), [1.5, 1, 1, 3.5])
    # recall@1: 1/2 + 1 + 1 + 0 (the tie-break alone would say 3 of 4); recall@3: 1 + 1 + 1 + 1/2
    assert r.own_pair_recall(1) == pytest.approx(2.5 / 4)
    assert r.own_pair_recall(3) == pytest.approx(3.5 / 4)
    assert r.own_pair_recall(4) == 1.0


def test_paired_tie_group_reaches_four_decimals_but_exact_ties_do_not():
    angle = np.array([0.0, 0.004, 0.008, 0.03])  # cosines with row 0: 1, 0.999992, 0.999968, 0.99955
    gallery = np.stack([np.cos(angle), np.sin(angle)], axis=1)
    r = evaluate_direction(gallery, gallery.copy(), np.zeros(4, int), np.zeros(4, int), "t2i")
    # query 0: rows 0-2 all read 1.0000 to four decimals (ranks 1-3); row 3 reads 0.9996
    assert (r.paired_ties.others[0], r.paired_ties.first[0], r.paired_ties.last[0]) == (2, 1, 3)
    # query 3: its own pair 1.0000 stands alone; row 2 reads 0.9997 (cos 0.022), not the same to four decimals
    assert (r.paired_ties.others[3], r.paired_ties.first[3], r.paired_ties.last[3]) == (0, 1, 1)
    assert (r.paired_exact.others == 0).all() and r.own_pair_recall(1) == 1.0


def test_unpaired_sets_have_no_own_pair_figures():
    rng = np.random.default_rng(1)
    res = evaluate_direction(
        rng.normal(size=(5, 3)), rng.normal(size=(4, 3)), np.zeros(5, int), np.zeros(4, int), "i2t"
    )
    assert res.paired_ties is None and res.paired_exact is None
    assert math.isnan(res.own_pair_recall(1)) and (res.own_pair_expected_rank() == -1).all()


def test_summary_at_k_label():
    labels = np.array([0, 1])
    report = evaluate_embeddings(np.eye(2), np.eye(2), labels, ["a", "b"], at_k=50)
    assert report.summary()["metric"] == "MAP@50" and report.summary()["at_k"] == 50
