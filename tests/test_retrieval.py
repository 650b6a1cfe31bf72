"""chtn.ranking: exact scores, chunked top-k, rank_of and tie groups against brute-force references.

Reference = the full (q, n) score matrix from ONE float64 matmul of the normalised rows rounded to
float32 (the definition of a score in chtn.ranking), and ``np.argsort(-s, kind="stable")`` per row
(higher score first, ties by lower gallery index: the protocol's convention). Exact ties are made with
small-integer vectors and ``normalized=True`` (every product and sum is exact, so tied scores are
bit-identical however the matmul is blocked), duplicated gallery rows, and all-equal galleries.
"""

from __future__ import annotations

import itertools
import tracemalloc

import numpy as np
import pytest

from chtn.ranking import TIE_TOLERANCE, TieGroups, TopK, cosine_scores, normalize_rows, rank_of, tie_groups, top_k
from tests.conftest import CHECKPOINTS

# ---------------------------------------------------------------- brute-force references


def brute_scores(queries, gallery, normalized=False):
    """One float64 matmul per 65,536 gallery rows (bounded memory), rounded once to float32."""
    q = np.atleast_2d(np.asarray(queries, dtype=np.float32))
    g = np.asarray(gallery, dtype=np.float32)
    if not normalized:
        q, g = normalize_rows(q), normalize_rows(g)
    out = np.empty((len(q), len(g)), np.float32)
    for lo in range(0, len(g), 65536):
        out[:, lo : lo + 65536] = q.astype(np.float64) @ g[lo : lo + 65536].astype(np.float64).T
    return out


def brute_top_k(scores, k, mask=None):
    if mask is None:
        idx = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    else:
        allowed = np.flatnonzero(mask)
        idx = allowed[np.argsort(-scores[:, allowed], axis=1, kind="stable")[:, :k]]
    return idx, np.take_along_axis(scores, idx, axis=1)


def brute_rank(scores, targets, mask=None):
    """1-based position of targets[i] in row i's stable ranking of the allowed rows; 0 if not allowed."""
    allowed = np.arange(scores.shape[1]) if mask is None else np.flatnonzero(mask)
    ranks = np.zeros(len(targets), dtype=np.int64)
    for i, t in enumerate(targets):
        order = allowed[np.argsort(-scores[i, allowed], kind="stable")]
        hit = np.flatnonzero(order == t)
        ranks[i] = hit[0] + 1 if len(hit) else 0
    return ranks


def assert_matches(result, scores, k, mask=None):
    ref_idx, ref_val = brute_top_k(scores, k, mask)
    assert isinstance(result, TopK)
    assert result.indices.dtype == np.int64 and result.scores.dtype == np.float32
    assert result.indices.shape == ref_idx.shape
    np.testing.assert_array_equal(result.indices, ref_idx)
    np.testing.assert_allclose(result.scores, ref_val, rtol=1e-6, atol=1e-6)


def integer_data(rng, q, n, d, low=-2, high=3):
    """Small-integer float32 vectors: dot products are exact in float32, so many scores tie exactly."""
    return (rng.integers(low, high, (q, d)).astype(np.float32), rng.integers(low, high, (n, d)).astype(np.float32))


# ---------------------------------------------------------------- random data, many shapes

COMBOS = [  # (n_queries, n_gallery, d, k, chunk_size)
    (1, 1, 3, 1, 1),
    (3, 50, 8, 5, 3),  # chunk smaller than k, not dividing n
    (4, 1000, 20, 10, 7),
    (2, 1000, 20, 10, 1000),  # exactly one chunk
    (2, 1000, 20, 10, 999),  # one full chunk + a 1-row chunk
    (5, 1001, 20, 37, 64),
    (7, 300, 256, 300, 50),  # k == n
    (2, 10, 4, 20, 3),  # k > n
    (3, 997, 16, 10, 5),
    (64, 5000, 20, 10, 999),
    (300, 700, 20, 3, 65536),  # more queries than one query block when chunk_size is large
]


@pytest.mark.parametrize("q,n,d,k,chunk", COMBOS)
def test_top_k_matches_brute_force_on_random_data(q, n, d, k, chunk):
    rng = np.random.default_rng(q * 1000 + n + d + k + chunk)
    queries = rng.standard_normal((q, d)).astype(np.float32)
    gallery = rng.standard_normal((n, d)).astype(np.float32) * rng.uniform(0.1, 10, (n, 1)).astype(np.float32)
    result = top_k(queries, gallery, k, chunk_size=chunk)
    assert_matches(result, brute_scores(queries, gallery), k)
    assert result.indices.shape == (q, min(k, n))
    assert np.all(np.diff(result.scores, axis=1) <= 0)


def test_query_blocks_smaller_than_query_set(monkeypatch):
    # force several query blocks (1 query x chunk elements each) and check the result is unchanged
    import chtn.ranking as ranking

    rng = np.random.default_rng(7)
    queries, gallery = rng.standard_normal((9, 12)), rng.standard_normal((400, 12))
    expected = top_k(queries, gallery, 6, chunk_size=64)
    monkeypatch.setattr(ranking, "_QUERY_BLOCK_ELEMS", 100)
    blocked = top_k(queries, gallery, 6, chunk_size=64)
    np.testing.assert_array_equal(blocked.indices, expected.indices)
    assert_matches(blocked, brute_scores(queries, gallery), 6)


def test_float64_inputs_give_the_float32_result():
    rng = np.random.default_rng(8)
    queries, gallery = rng.standard_normal((3, 20)), rng.standard_normal((500, 20))
    assert_matches(top_k(queries, gallery, 10, chunk_size=77), brute_scores(queries, gallery), 10)


# ---------------------------------------------------------------- ties


@pytest.mark.parametrize("chunk", [1, 2, 3, 5, 16, 97, 65536])
@pytest.mark.parametrize("k", [1, 4, 10, 33])
def test_ties_from_integer_vectors_break_by_lower_index(chunk, k):
    rng = np.random.default_rng(chunk * 100 + k)
    queries, gallery = integer_data(rng, 6, 300, 3)
    scores = brute_scores(queries, gallery, normalized=True)
    # the data really is tie-heavy, including ties that straddle the k-th place
    kth = np.sort(scores, axis=1)[:, ::-1][:, k - 1]
    assert (np.count_nonzero(scores >= kth[:, None], axis=1) > k).any()
    assert_matches(top_k(queries, gallery, k, chunk_size=chunk, normalized=True), scores, k)
    for i in range(len(queries)):  # one query at a time (the dashboard's case, its own code path)
        assert_matches(top_k(queries[i], gallery, k, chunk_size=chunk, normalized=True), scores[i : i + 1], k)


@pytest.mark.parametrize("chunk", [1, 4, 7, 50, 65536])
def test_ties_from_duplicated_rows_with_normalisation(chunk):
    rng = np.random.default_rng(chunk)
    distinct = rng.standard_normal((6, 20)).astype(np.float32)
    # duplicates scaled by powers of two normalise to bit-identical rows, so their scores tie exactly
    gallery = distinct[rng.integers(0, 6, 200)] * rng.choice([1.0, 2.0, 0.5], (200, 1)).astype(np.float32)
    queries = rng.standard_normal((4, 20)).astype(np.float32)
    scores = brute_scores(queries, gallery)
    assert_matches(top_k(queries, gallery, 12, chunk_size=chunk), scores, 12)


@pytest.mark.parametrize("chunk", [1, 3, 4, 10, 1000])
def test_all_equal_gallery_returns_first_k_rows(chunk):
    gallery = np.tile(np.array([0.3, -1.0, 2.0], np.float32), (100, 1))
    result = top_k(np.array([[1.0, 2.0, 3.0], [-1.0, 0.0, 0.5]]), gallery, 10, chunk_size=chunk)
    np.testing.assert_array_equal(result.indices, np.tile(np.arange(10), (2, 1)))
    assert np.all(result.scores == result.scores[:, :1])


def test_tie_at_the_k_boundary_keeps_lowest_indices():
    # one clear winner (row 50), then rows {3, 7, 20, 40, 60, 61, 80, 90} tied, the rest lower
    gallery = np.zeros((100, 2), np.float32)
    gallery[:, 0] = 1.0
    gallery[[3, 7, 20, 40, 60, 61, 80, 90], 1] = 1.0
    gallery[50] = [1.0, 2.0]
    for chunk in (1, 6, 45, 100):
        result = top_k(np.array([0.0, 1.0]), gallery, 4, chunk_size=chunk, normalized=True)
        np.testing.assert_array_equal(result.indices, [[50, 3, 7, 20]])
        np.testing.assert_array_equal(result.scores, [[2.0, 1.0, 1.0, 1.0]])


def test_argpartition_alone_would_not_be_enough():
    """Guard for the test above: plain argpartition picks other tied rows on this data."""
    scores = np.zeros(1000, np.float32)
    scores[::3] = 1.0  # 334 rows tie for the top
    chosen = np.argpartition(-scores, 9)[:10]
    assert sorted(chosen) != list(range(0, 30, 3))  # what the stable convention requires
    gallery = np.stack([np.ones(1000, np.float32), scores], axis=1)
    result = top_k(np.array([0.0, 1.0]), gallery, 10, normalized=True)
    np.testing.assert_array_equal(result.indices[0], np.arange(0, 30, 3))


@pytest.mark.parametrize("fraction", [0.0, 1.0])
def test_both_merge_paths_keep_the_stable_order(monkeypatch, fraction):
    """Once the running top-k is full, a chunk's items above the running k-th score are merged directly
    (few of them) or first cut to the chunk's own top k (many): force each path in turn on tie-heavy
    and on random data, and check it was really taken."""
    import chtn.ranking as ranking

    calls = {"dense": 0}
    real_cut = ranking._dense_cut

    def counting_cut(*args):
        calls["dense"] += 1
        return real_cut(*args)

    monkeypatch.setattr(ranking, "_SPARSE_MERGE_FRACTION", fraction)
    monkeypatch.setattr(ranking, "_dense_cut", counting_cut)
    rng = np.random.default_rng(99)
    for chunk in (2, 5, 13, 64):
        for k in (1, 3, 10):
            queries, gallery = integer_data(rng, 8, 257, 3)
            mask = rng.random(257) < 0.6
            assert_matches(
                top_k(queries, gallery, k, chunk_size=chunk, normalized=True),
                brute_scores(queries, gallery, normalized=True),
                k,
            )
            assert_matches(
                top_k(queries, gallery, k, mask=mask, chunk_size=chunk, normalized=True),
                brute_scores(queries, gallery, normalized=True),
                k,
                mask,
            )
            queries, gallery = rng.standard_normal((8, 20)), rng.standard_normal((257, 20))
            assert_matches(top_k(queries, gallery, k, chunk_size=chunk), brute_scores(queries, gallery), k)
    assert (calls["dense"] > 0) == (fraction == 0.0)


@pytest.mark.parametrize("n_queries", [1, 8])
def test_small_seed_chunk_for_query_batches(monkeypatch, n_queries):
    """Batches of queries start with a small first chunk (8 k rows); results must not depend on it."""
    import chtn.ranking as ranking

    firsts = []
    real_chunks = ranking._chunks

    def spy(*args):
        firsts.append(args[-1])
        return real_chunks(*args)

    monkeypatch.setattr(ranking, "_SEED_ROWS", 1)
    monkeypatch.setattr(ranking, "_SEED_MIN_QUERIES", 1)
    monkeypatch.setattr(ranking, "_chunks", spy)
    rng = np.random.default_rng(n_queries)
    for chunk in (50, 333, 1000):
        for k in (1, 5, 40):
            queries, gallery = integer_data(rng, n_queries, 1000, 3)
            mask = rng.random(1000) < 0.7
            scores = brute_scores(queries, gallery, normalized=True)
            assert_matches(top_k(queries, gallery, k, chunk_size=chunk, normalized=True), scores, k)
            assert_matches(top_k(queries, gallery, k, mask=mask, chunk_size=chunk, normalized=True), scores, k, mask)
            queries, gallery = rng.standard_normal((n_queries, 20)), rng.standard_normal((1000, 20))
            assert_matches(top_k(queries, gallery, k, chunk_size=chunk), brute_scores(queries, gallery), k)
    assert set(firsts) == {8, 40, 320}


# ---------------------------------------------------------------- mask (category filter)


@pytest.mark.parametrize("chunk", [2, 9, 128, 65536])
def test_mask_matches_brute_force_and_never_returns_masked_rows(chunk):
    rng = np.random.default_rng(chunk + 11)
    queries, gallery = integer_data(rng, 5, 400, 4)
    mask = rng.random(400) < 0.3
    scores = brute_scores(queries, gallery, normalized=True)
    result = top_k(queries, gallery, 15, mask=mask, chunk_size=chunk, normalized=True)
    assert mask[result.indices].all()
    assert_matches(result, scores, 15, mask)
    # and on random floats with normalisation
    queries, gallery = rng.standard_normal((5, 20)), rng.standard_normal((400, 20))
    result = top_k(queries, gallery, 15, mask=mask, chunk_size=chunk)
    assert mask[result.indices].all()
    assert_matches(result, brute_scores(queries, gallery), 15, mask)


def test_mask_allowing_fewer_than_k_rows_returns_them_all():
    rng = np.random.default_rng(3)
    queries, gallery = rng.standard_normal((3, 8)), rng.standard_normal((50, 8))
    mask = np.zeros(50, bool)
    mask[[4, 17, 49]] = True
    result = top_k(queries, gallery, 10, mask=mask, chunk_size=4)
    assert result.indices.shape == result.scores.shape == (3, 3)
    for row in result.indices:
        assert sorted(row) == [4, 17, 49]
    assert_matches(result, brute_scores(queries, gallery), 10, mask)


def test_mask_allowing_nothing_returns_empty_rows():
    rng = np.random.default_rng(4)
    result = top_k(rng.standard_normal((3, 8)), rng.standard_normal((50, 8)), 5, mask=np.zeros(50, bool))
    assert result.indices.shape == result.scores.shape == (3, 0)
    assert result.indices.dtype == np.int64 and result.scores.dtype == np.float32


def test_mask_must_be_boolean_with_one_flag_per_row():
    rng = np.random.default_rng(5)
    queries, gallery = rng.standard_normal((2, 4)), rng.standard_normal((10, 4))
    with pytest.raises(ValueError, match="mask"):
        top_k(queries, gallery, 3, mask=np.ones(9, bool))
    with pytest.raises(ValueError, match="mask"):
        top_k(queries, gallery, 3, mask=np.array([0, 1, 2]))  # row indices are not a mask


# ---------------------------------------------------------------- shapes, k and degenerate input


def test_k_larger_than_gallery_returns_full_ranking():
    rng = np.random.default_rng(6)
    queries, gallery = rng.standard_normal((2, 5)), rng.standard_normal((7, 5))
    result = top_k(queries, gallery, 100, chunk_size=3)
    assert result.indices.shape == (2, 7)
    np.testing.assert_array_equal(result.indices, np.argsort(-brute_scores(queries, gallery), axis=1, kind="stable"))


@pytest.mark.parametrize("k", [0, -1])
def test_non_positive_k_is_an_error(k):
    with pytest.raises(ValueError, match=f"k must be a positive integer.*k={k}"):
        top_k(np.ones(3), np.ones((4, 3)), k)


def test_non_integer_k_is_an_error():
    with pytest.raises(ValueError, match="k must be a positive integer"):
        top_k(np.ones(3), np.ones((4, 3)), 2.5)


def test_dimension_mismatch_names_both_shapes():
    with pytest.raises(ValueError, match=r"\(2, 5\).*\(10, 4\)"):
        top_k(np.ones((2, 5)), np.ones((10, 4)), 3)
    with pytest.raises(ValueError, match=r"\(5,\).*\(10, 4\)"):
        rank_of(np.ones(5), np.ones((10, 4)), [0])


@pytest.mark.parametrize("chunk", [0, -5, 2.5, True])
def test_bad_chunk_size_is_an_error(chunk):
    with pytest.raises(ValueError, match="chunk_size must be a positive integer"):
        top_k(np.ones(3), np.ones((4, 3)), 2, chunk_size=chunk)


def test_one_dimensional_query_is_one_query():
    rng = np.random.default_rng(9)
    query, gallery = rng.standard_normal(16), rng.standard_normal((200, 16))
    single = top_k(query, gallery, 5, chunk_size=30)
    batch = top_k(query[None, :], gallery, 5, chunk_size=30)
    assert single.indices.shape == (1, 5)
    np.testing.assert_array_equal(single.indices, batch.indices)
    assert_matches(single, brute_scores(query, gallery), 5)


def test_zero_query_and_zero_rows_give_zero_scores_not_nan():
    rng = np.random.default_rng(10)
    gallery = rng.standard_normal((30, 6))
    gallery[[2, 5]] = 0.0
    result = top_k(np.zeros(6), gallery, 4, chunk_size=7)
    assert not np.isnan(result.scores).any()
    np.testing.assert_array_equal(result.scores, np.zeros((1, 4), np.float32))
    np.testing.assert_array_equal(result.indices, [[0, 1, 2, 3]])  # all tied at 0 -> gallery order
    # a zero gallery row scores 0, below the positive matches and above the negative ones
    query = gallery[0]
    ranked = top_k(query, gallery, 30, chunk_size=7)
    assert not np.isnan(ranked.scores).any()
    assert ranked.indices[0, 0] == 0 and ranked.scores[0, 0] == pytest.approx(1.0, abs=1e-6)
    zero_at = [list(ranked.indices[0]).index(r) for r in (2, 5)]
    assert (ranked.scores[0, zero_at] == 0).all() and zero_at[0] + 1 == zero_at[1]


def test_nan_input_is_an_error():
    gallery = np.ones((10, 3))
    gallery[4, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        top_k(np.ones(3), gallery, 2)
    with pytest.raises(ValueError, match="NaN"):
        top_k(np.ones(3), gallery, 2, normalized=True, chunk_size=3)
    with pytest.raises(ValueError, match="NaN"):
        top_k(np.array([1.0, np.nan, 0.0]), np.ones((10, 3)), 2)


def test_empty_gallery_and_empty_query_set():
    assert top_k(np.ones((2, 3)), np.zeros((0, 3)), 5).indices.shape == (2, 0)
    assert top_k(np.zeros((0, 3)), np.ones((4, 3)), 2).indices.shape == (0, 2)


def test_normalized_true_skips_normalisation():
    rng = np.random.default_rng(12)
    queries, gallery = rng.standard_normal((3, 10)), rng.standard_normal((80, 10)) * rng.uniform(0.1, 5, (80, 1))
    # on raw vectors, normalized=True ranks by dot product (what the flag promises to compute)
    raw = top_k(queries, gallery, 8, normalized=True)
    assert_matches(raw, brute_scores(queries, gallery, normalized=True), 8)
    assert not np.array_equal(raw.indices, top_k(queries, gallery, 8).indices)
    # on pre-normalised vectors both settings agree
    qn, gn = normalize_rows(queries), normalize_rows(gallery)
    np.testing.assert_array_equal(top_k(qn, gn, 8, normalized=True).indices, top_k(queries, gallery, 8).indices)


def test_normalize_rows():
    x = np.array([[3.0, 4.0], [0.0, 0.0], [1e30, 1e30]])
    out = normalize_rows(x)
    assert out.dtype == np.float32 and out is not x
    np.testing.assert_allclose(out, [[0.6, 0.8], [0.0, 0.0], [2**-0.5, 2**-0.5]], rtol=1e-6)
    assert x[0, 0] == 3.0  # input untouched
    x32 = np.array([[3.0, 4.0]], np.float32)
    assert not np.shares_memory(normalize_rows(x32), x32)
    np.testing.assert_allclose(normalize_rows(np.array([0.0, 2.0])), [0.0, 1.0])
    with pytest.raises(ValueError, match="NaN"):
        normalize_rows(np.array([[np.inf, 1.0]]))


# ---------------------------------------------------------------- large galleries, bounded memory


@pytest.fixture(scope="module")
def million():
    rng = np.random.default_rng(2024)
    gallery = normalize_rows(rng.standard_normal((1_000_000, 20), dtype=np.float32))
    queries = normalize_rows(rng.standard_normal((64, 20), dtype=np.float32))
    return queries, gallery


@pytest.mark.parametrize("n_queries", [1, 16])
def test_million_row_gallery_matches_brute_force_with_bounded_memory(million, n_queries):
    queries, gallery = million[0][:n_queries], million[1]
    tracemalloc.start()
    try:
        result = top_k(queries, gallery, 10, normalized=True)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # the chunked walk never holds anything as large as the full (n_queries, 1M) float32 similarity
    # matrix (4 MB for 1 query, 64 MB for 16), let alone argpartition's int64 indices over it
    assert peak < n_queries * len(gallery) * 4
    assert_matches(result, brute_scores(queries, gallery, normalized=True), 10)


def test_million_row_gallery_with_category_mask(million):
    queries, gallery = million[0][:4], million[1]
    mask = np.zeros(len(gallery), bool)
    mask[np.random.default_rng(1).choice(len(gallery), 5000, replace=False)] = True
    result = top_k(queries, gallery, 10, mask=mask, normalized=True)
    assert mask[result.indices].all()
    assert_matches(result, brute_scores(queries, gallery, normalized=True), 10, mask)


# ---------------------------------------------------------------- rank_of


@pytest.mark.parametrize("chunk", [1, 3, 16, 65536])
def test_rank_of_matches_brute_force_with_ties(chunk):
    rng = np.random.default_rng(chunk + 21)
    queries, gallery = integer_data(rng, 20, 150, 3)
    targets = rng.integers(0, 150, 20)
    scores = brute_scores(queries, gallery, normalized=True)
    ranks = rank_of(queries, gallery, targets, chunk_size=chunk, normalized=True)
    assert ranks.dtype == np.int64
    np.testing.assert_array_equal(ranks, brute_rank(scores, targets))
    # tie-heavy: several targets share their score with a lower-indexed row, which must outrank them
    tied_earlier = [(scores[i, :t] == scores[i, t]).any() for i, t in enumerate(targets)]
    assert sum(tied_earlier) >= 3


@pytest.mark.parametrize("chunk", [5, 64, 65536])
def test_rank_of_random_data_and_consistency_with_top_k(chunk):
    rng = np.random.default_rng(chunk + 31)
    queries, gallery = rng.standard_normal((12, 20)), rng.standard_normal((600, 20))
    targets = rng.integers(0, 600, 12)
    np.testing.assert_array_equal(
        rank_of(queries, gallery, targets, chunk_size=chunk), brute_rank(brute_scores(queries, gallery), targets)
    )
    best = top_k(queries, gallery, 7, chunk_size=chunk)
    for r in range(7):
        np.testing.assert_array_equal(rank_of(queries, gallery, best.indices[:, r], chunk_size=chunk), r + 1)


def test_rank_of_duplicate_of_target_ties_exactly():
    rng = np.random.default_rng(41)
    row = rng.standard_normal(20)
    gallery = rng.standard_normal((100, 20))
    # same direction, scaled by powers of two (exact in floating point): bit-identical cosines
    gallery[[10, 30, 70]] = row * np.array([[1.0], [4.0], [0.5]])
    query = row + 0.01 * rng.standard_normal(20)
    # rows 10, 30, 70 tie for first: ranks 1, 2, 3 in index order, whatever the chunking
    for chunk in (7, 25, 100):
        np.testing.assert_array_equal(
            rank_of(np.tile(query, (3, 1)), gallery, [10, 30, 70], chunk_size=chunk), [1, 2, 3]
        )


def test_rank_of_with_mask_and_masked_out_target_is_zero():
    rng = np.random.default_rng(51)
    queries, gallery = integer_data(rng, 10, 120, 3)
    mask = rng.random(120) < 0.5
    targets = np.concatenate([rng.choice(np.flatnonzero(mask), 7), rng.choice(np.flatnonzero(~mask), 3)])
    ranks = rank_of(queries, gallery, targets, mask=mask, chunk_size=8, normalized=True)
    np.testing.assert_array_equal(ranks[7:], 0)
    assert (ranks[:7] >= 1).all()
    np.testing.assert_array_equal(ranks, brute_rank(brute_scores(queries, gallery, normalized=True), targets, mask))
    assert (rank_of(queries, gallery, targets, mask=np.zeros(120, bool)) == 0).all()


def test_rank_of_one_dimensional_query_and_bad_targets():
    rng = np.random.default_rng(61)
    query, gallery = rng.standard_normal(5), rng.standard_normal((40, 5))
    expected = brute_rank(brute_scores(query, gallery), [17])
    np.testing.assert_array_equal(rank_of(query, gallery, 17), expected)
    np.testing.assert_array_equal(rank_of(query, gallery, [17]), expected)
    with pytest.raises(ValueError, match=r"\[0, 40\)"):
        rank_of(query, gallery, [40])
    with pytest.raises(ValueError, match=r"\[0, 40\)"):
        rank_of(query, gallery, [-1])
    with pytest.raises(ValueError, match="one gallery row per query"):
        rank_of(np.ones((3, 5)), gallery, [1, 2])


def test_rank_of_million_rows(million):
    queries, gallery = million[0][:3], million[1]
    scores = brute_scores(queries, gallery, normalized=True)
    best = top_k(queries, gallery, 5, normalized=True)
    np.testing.assert_array_equal(rank_of(queries, gallery, best.indices[:, 4], normalized=True), 5)
    targets = np.array([0, 123_456, 999_999])
    expected = 1 + np.count_nonzero(scores > scores[np.arange(3), targets][:, None], axis=1)  # no ties here
    np.testing.assert_array_equal(rank_of(queries, gallery, targets, normalized=True), expected)


# ---------------------------------------------------------------- real embeddings of the sample


@pytest.fixture(scope="module")
def sample_embeddings(pairs, cache):
    from chtn.checkpoint import load_checkpoint
    from chtn.tower import create_tower

    test = pairs.split("test")
    checkpoint = load_checkpoint(CHECKPOINTS / "chtn_fashion_source.safetensors")
    image, text = create_tower(checkpoint, "cpu").embed_pairs(test, cache)
    return image, text, test.label_index


def test_real_embeddings_top_k_matches_brute_force_and_finds_the_category(sample_embeddings):
    image, text, labels = sample_embeddings
    assert image.shape == text.shape == (400, 20)
    # several test texts are identical (same product name), so exact ties straddle the 10th place
    scores = brute_scores(image, text)
    kth = np.sort(scores, axis=1)[:, -10]
    assert (np.count_nonzero(scores >= kth[:, None], axis=1) > 10).sum() > 20
    for chunk in (33, 65536):
        result = top_k(image, text, 10, chunk_size=chunk)
        assert_matches(result, brute_scores(image, text), 10)
    # image -> text: the best text is of the query image's category for most queries
    top1_same_category = labels[result.indices[:, 0]] == labels
    assert top1_same_category.mean() > 0.7
    # category filter: restricting to one category only ever returns it, and equals brute force
    mask = labels == labels[0]
    filtered = top_k(image, text, 10, mask=mask, chunk_size=33)
    assert (labels[filtered.indices] == labels[0]).all()
    assert_matches(filtered, brute_scores(image, text), 10, mask)
    # where the paired text ranks (the dashboard's "paired item" column) equals brute force
    np.testing.assert_array_equal(
        rank_of(image, text, np.arange(400), chunk_size=33), brute_rank(brute_scores(image, text), np.arange(400))
    )


# ---------------------------------------------------------------- scores: exact, whatever the shapes


@pytest.mark.parametrize("n,d", [(1000, 3), (3000, 20), (500, 256)])
def test_normalize_rows_gives_a_row_the_same_bits_alone_or_in_any_batch(n, d):
    rng = np.random.default_rng(n + d)
    x = rng.standard_normal((n, d)).astype(np.float32) * rng.uniform(1e-3, 1e3, (n, 1)).astype(np.float32)
    batch = normalize_rows(x)
    np.testing.assert_array_equal(batch, np.stack([normalize_rows(row) for row in x]))
    np.testing.assert_array_equal(batch, normalize_rows(np.asfortranarray(x)))
    np.testing.assert_array_equal(batch, np.concatenate([normalize_rows(x[i : i + 13]) for i in range(0, n, 13)]))
    # on the grid of multiples of 2**-24, and unit length to float32 precision
    assert (np.rint(batch * 2.0**24) == batch * 2.0**24).all()
    np.testing.assert_allclose(np.linalg.norm(batch.astype(np.float64), axis=1), 1.0, atol=1e-6)


def test_cosine_scores_are_the_exact_dot_product_rounded_once():
    rng = np.random.default_rng(3)
    q, g = normalize_rows(rng.standard_normal((4, 256))), normalize_rows(rng.standard_normal((50, 256)))
    scores = cosine_scores(q, g, normalized=True)
    assert scores.dtype == np.float32 and scores.shape == (4, 50)
    q_int, g_int = (q.astype(np.float64) * 2**24).astype(np.int64), (g.astype(np.float64) * 2**24).astype(np.int64)
    for i in range(4):
        for j in range(50):
            exact = sum(int(a) * int(b) for a, b in zip(q_int[i], g_int[j]))  # Python ints: no rounding at all
            assert scores[i, j] == np.float32(exact / 2**48)  # exact / 2**48 is exact in float64 (|exact| < 2**49)


def test_scores_of_one_query_equal_those_of_a_batch_bit_for_bit():
    # A float32 matmul does not do this (gemv and gemm blockings sum in different orders); ranking needs it,
    # since the explorer scores one query and evaluation a batch.
    rng = np.random.default_rng(4)
    for d in (20, 256):
        queries, gallery = rng.standard_normal((70, d)), rng.standard_normal((3000, d))
        batch = cosine_scores(queries, gallery)
        np.testing.assert_array_equal(batch, np.concatenate([cosine_scores(q, gallery) for q in queries]))
        np.testing.assert_array_equal(
            batch, np.concatenate([cosine_scores(queries[i : i + 9], gallery) for i in range(0, 70, 9)])
        )
        found = top_k(queries, gallery, 5, chunk_size=333)
        np.testing.assert_array_equal(found.scores, np.take_along_axis(batch, found.indices, axis=1))


# ---------------------------------------------------------------- tie groups


def brute_ties(scores, indices, tolerance, mask=None):
    """(others, first, last) of each result from the full score rows: rows whose float32 score rounds to the same
    multiple of `tolerance` (in float64) are tied; exactly equal scores for tolerance 0."""

    def bucket(x):
        x = x.astype(np.float64)
        return x if tolerance == 0 else np.floor(x / tolerance + 0.5)

    allowed = np.ones(scores.shape[1], bool) if mask is None else mask
    s = bucket(scores[:, allowed])
    own = bucket(np.take_along_axis(scores, indices, axis=1))
    above = (s[:, None, :] > own[:, :, None]).sum(axis=2)
    within = (s[:, None, :] >= own[:, :, None]).sum(axis=2)
    return within - above - 1, above + 1, within


@pytest.mark.parametrize("chunk", [1, 7, 64, 65536])
@pytest.mark.parametrize("tolerance", [0.0, 0.05, TIE_TOLERANCE])
def test_tie_groups_match_brute_force(chunk, tolerance):
    rng = np.random.default_rng(chunk + int(tolerance * 1e4))
    queries, gallery = integer_data(rng, 9, 300, 3)  # many exact ties
    mask = rng.random(300) < 0.6
    for m in (None, mask):
        best = top_k(queries, gallery, 12, mask=m, chunk_size=chunk, normalized=True)
        groups = tie_groups(
            queries, gallery, best.indices, tolerance=tolerance, mask=m, chunk_size=chunk, normalized=True
        )
        assert isinstance(groups, TieGroups) and groups.others.shape == (9, 12)
        expected = brute_ties(brute_scores(queries, gallery, normalized=True), best.indices, tolerance, m)
        for got, want in zip((groups.others, groups.first, groups.last), expected):
            np.testing.assert_array_equal(got, want)
        ranks = np.arange(1, 13)[None, :]
        assert ((groups.first <= ranks) & (ranks <= groups.last)).all()  # a result lies inside its group
    if tolerance == 0.0:
        assert (groups.others > 0).any()  # the integer data really has exact ties


def test_tie_groups_on_random_data_with_a_tolerance_spanning_several_results():
    rng = np.random.default_rng(12)
    queries, gallery = rng.standard_normal((5, 20)), rng.standard_normal((2000, 20))
    targets = rng.integers(0, 2000, (5, 3))
    groups = tie_groups(queries, gallery, targets, tolerance=0.01, chunk_size=300)
    expected = brute_ties(brute_scores(queries, gallery), targets, 0.01)
    for got, want in zip((groups.others, groups.first, groups.last), expected):
        np.testing.assert_array_equal(got, want)
    assert (groups.others > 3).any()
    # one (d,) query with a (m,) vector of rows is one query
    single = tie_groups(queries[0], gallery, targets[0], tolerance=0.01)
    np.testing.assert_array_equal(single.last, groups.last[:1])


def test_tie_groups_shown_side_by_side_never_overlap():
    """Results of one query are in one group (the same ranks) or in disjoint groups: a grid never says "ranks 1–17"
    on one card and "ranks 3–20" on the next."""
    rng = np.random.default_rng(14)
    queries, gallery = rng.standard_normal((6, 8)), rng.standard_normal((3000, 8))
    best = top_k(queries, gallery, 200)
    groups = tie_groups(queries, gallery, best.indices, tolerance=0.01)
    for first, last in zip(groups.first, groups.last):
        spans = set(zip(first.tolist(), last.tolist()))
        for a, b in itertools.combinations(sorted(spans), 2):
            assert a[1] < b[0], (a, b)  # sorted, distinct spans are disjoint
    assert (groups.others > 0).any()


def test_tie_groups_reject_bad_indices_and_tolerance():
    rng = np.random.default_rng(13)
    queries, gallery = rng.standard_normal((2, 4)), rng.standard_normal((10, 4))
    mask = np.arange(10) < 5
    with pytest.raises(ValueError, match="mask allows"):
        tie_groups(queries, gallery, [[1], [7]], mask=mask)
    with pytest.raises(ValueError, match=r"\[0, 10\)"):
        tie_groups(queries, gallery, [[1], [10]])
    with pytest.raises(ValueError, match="n_queries, m"):
        tie_groups(queries, gallery, [1, 2, 3])
    with pytest.raises(ValueError, match="tolerance"):
        tie_groups(queries, gallery, [[1], [2]], tolerance=-1e-4)
    assert tie_groups(queries, gallery, np.zeros((2, 0), np.int64)).others.shape == (2, 0)
