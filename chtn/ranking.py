"""The one ranking module: cosine scores, exact top-k, the rank of a given row, and tie groups.

Evaluation (:mod:`chtn.evaluate`), the dashboard's explorer and the CLI all rank with these functions,
so a query's ranks are the same on every page and in every file.

Ordering convention (the protocol's): higher score first; equal scores are broken by the LOWER gallery
row index first, i.e. the result of :func:`top_k` equals ``np.argsort(-scores, kind="stable")[:k]`` of
the full score row, including which of several tied items are kept at the k-th boundary. A tie means
exact equality of the float32 scores.

Scores: one dtype, and the same bits however they are computed. A score is the cosine similarity of
two rows rounded once to float32. A float32 BLAS matmul does not give that: its summation order depends
on the matrix shapes (gemv for one query, gemm blockings for a batch); on the sample checkpoints 57% of
a query's scores differ in the last bit between the two, enough to reorder near-ties. So:

- :func:`normalize_rows` divides each row by its norm (a float64 sum of squares along the contiguous row:
  numpy's pairwise sum there depends on the row alone, not on the rows beside it) and rounds every
  component to a multiple of 2**-24 (exact in float32 for |x| <= 1; a component moves by at most 2**-25,
  float32's own rounding step of components in [0.5, 1));
- a score is the dot product of two such rows accumulated in float64: every product is a multiple of
  2**-48 and every partial sum is below 2 in magnitude (Cauchy-Schwarz), so every intermediate value is
  an integer multiple of 2**-48 below 2**49, exact in float64 whatever the BLAS kernel, blocking,
  summation order or FMA; that exact value is rounded once to float32 (within 6e-8 (sqrt(d) + 1) of the
  true cosine of the input rows).

``normalized=True`` means the rows come from :func:`normalize_rows`; other rows are scored the same way,
but without the bit-for-bit guarantee.

Tie groups (:func:`tie_groups`): the softmax common space saturates (many scores near 1), so an order
among items whose scores agree to four decimals is not one the model made. Scores are tied when they
round to the same multiple of ``TIE_TOLERANCE`` (1e-4): the groups partition each ranking, so two
results shown side by side are either in one group (with the same ranks) or in disjoint ones, never in
overlapping windows. The group of a result is every allowed row in its bucket, with the ranks the group
spans; ``tolerance=0`` gives the exact ties of the ordering convention.

Why this is written by hand: numpy has ``argpartition`` (unordered, and arbitrary about *which*
tied items it keeps at the k-th boundary) and ``argsort`` (exact but O(n log n) over the whole
similarity row, which must exist in full), but no chunked, memory-bounded exact top-k with a stable
tie-break; torch's ``topk`` does not specify its tie order either. faiss / hnswlib are not
dependencies of this project; a vector index of that kind (IVF/HNSW, approximate) is the path if
galleries grow far beyond ~10M rows or latency must drop below one exact pass over the gallery.

Algorithm, per block of queries, walking the gallery chunk by chunk in row order:

1. scores of the chunk: one float64 matmul of grid values, rounded to float32 (see above);
2. candidates: while a query's running top-k is not full, every item >= the chunk's k-th largest
   value (``np.partition``, O(c)); all items tied at that value are kept, not an arbitrary subset as
   with ``argpartition``. Once it is full, only items strictly above the running k-th score (an equal
   score loses the tie-break to the lower running index): usually a handful, found by one comparison
   pass, so later chunks cost little more than their matmul;
3. merge: running items + candidates are sorted exactly by (score desc, index asc) with one
   ``lexsort`` and the first k kept.

With 8+ queries the first chunk is cut to ``max(4096, 8 k)`` rows, so the running thresholds are set
before the expensive full-width partitions would be needed.

Memory: the gallery is walked ``chunk_size`` rows at a time, and queries ``_QUERY_BLOCK_ELEMS //
chunk_size`` at a time (256 with the default ``chunk_size``), so at most one (query block x chunk)
float32 score matrix (64 MiB by default), a partition copy and a bool mask of it, the float64 pieces
of the matmul (at most ``_PIECE_ELEMS`` elements each, 16 MiB), plus the running top-k exist at once,
however large the gallery or the query set. The gallery is never copied as a whole: with
``normalized=False`` each chunk is normalised as it is read; pass an already L2-normalised float32
gallery with ``normalized=True`` (see :func:`normalize_rows`) to skip that per-call cost, which
dominates a single query over a large gallery.

Pure functions; no Streamlit import.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass

import numpy as np

__all__ = [
    "TIE_LEGEND",
    "TIE_TOLERANCE",
    "TieGroups",
    "TopK",
    "cosine_scores",
    "describe_tie",
    "own_pair_headline",
    "normalize_rows",
    "rank_of",
    "tie_bucket",
    "tie_groups",
    "top_k",
]

# Scores that round to the same multiple of this are "tied to four decimals" (see tie_groups).
TIE_TOLERANCE = 1e-4
# The legend every result list shows beside "tied with N others" (explorer, review): one tie language everywhere.
TIE_LEGEND = (
    f"“Tied with N others”: N more items have that result's score to four decimals (rounded to the same multiple of "
    f"{TIE_TOLERANCE:g}); their order there is the gallery-order tie-break, not the model's. Tie groups never "
    "overlap: results with the same ranks are one group."
)
# Unit-vector components are multiples of 1 / _GRID, which makes every score exact in float64.
_GRID = 2.0**24
# _similarities casts and multiplies the gallery in pieces of at most _PIECE_ELEMS float64 elements (16 MiB)
# of gallery rows and of scores, and at most _PIECE_ELEMS_PER_QUERY gallery elements per query: one query's
# piece (512 KiB) stays in cache between the cast and the matmul, a batch's is large enough to amortise calls.
_PIECE_ELEMS = 1 << 21
_PIECE_ELEMS_PER_QUERY = 1 << 16

# Upper bound on the elements of one (query block x gallery chunk) similarity matrix: 2**24 float32
# = 64 MiB (plus the same again for np.partition's copy and a quarter for a bool mask).
_QUERY_BLOCK_ELEMS = 1 << 24
# Once the running top-k is full, a chunk whose items above the running k-th scores are at most this
# fraction of its similarities is merged directly; denser chunks are first cut to their own top k
# (by a partition), so the exact merge sort stays small.
_SPARSE_MERGE_FRACTION = 1 / 32
# For a block of at least _SEED_MIN_QUERIES queries, the first chunk is cut to max(_SEED_ROWS, 8 k) rows.
_SEED_ROWS = 4096
_SEED_MIN_QUERIES = 8


@dataclass(frozen=True)
class TopK:
    """The k best gallery rows per query.

    ``indices``: (n_queries, k') int64 gallery row indices, best first; ``k' = min(k, n_allowed)``
    where ``n_allowed`` is the number of gallery rows the mask allows (all rows without a mask).
    ``scores``: (n_queries, k') float32 cosine similarities of those rows, non-increasing per row.
    """

    indices: np.ndarray
    scores: np.ndarray


def normalize_rows(x: np.ndarray) -> np.ndarray:
    """Float32 unit-length copy of ``x`` (rows of a (n, d) array, or a single (d,) vector) on the score grid.

    The same row gives the same bits alone or in any batch: its squared norm is a float64 sum of exact
    squares along the (C-contiguous) row, and its components are rounded to multiples of 2**-24, which
    makes every score exact (see the module docstring). Rows of norm 0 stay zero (their score with
    anything is 0, never NaN). Raises ``ValueError`` if ``x`` contains NaN or infinity (as float32).
    """
    x = np.asarray(x)
    if x.ndim not in (1, 2):
        raise ValueError(f"normalize_rows expects a (n, d) array or a (d,) vector, got shape {x.shape}")
    x64 = np.ascontiguousarray(x.astype(np.float32, copy=False), dtype=np.float64)
    sq = np.sum(np.square(x64), axis=-1, keepdims=True)  # squares of float32 values: exact, never overflowing
    if not np.isfinite(sq).all():
        raise ValueError("cannot normalise: the array contains NaN or infinite values")
    norms = np.sqrt(sq)
    # unit * 2**24, rounded to integers: dividing by norm / 2**24 is exact power-of-two scaling of unit
    grid = x64 / (np.where(norms > 0, norms, 1.0) / _GRID)  # zero rows: 0 / 1 = 0
    np.rint(grid, out=grid)
    out = grid.astype(np.float32)  # integers of at most 2**24 in magnitude: exact in float32
    out *= np.float32(1 / _GRID)
    return out


# ---------------------------------------------------------------- input checks and chunk iteration


def _check_k(k: int) -> int:
    if isinstance(k, (bool, np.bool_)):
        raise ValueError(f"k must be a positive integer, got {k!r}")
    try:
        k = operator.index(k)
    except TypeError:
        raise ValueError(f"k must be a positive integer, got {k!r}") from None
    if k <= 0:
        raise ValueError(f"k must be a positive integer (number of results per query), got k={k}")
    return k


def _prepare(
    queries: np.ndarray, gallery: np.ndarray, mask: np.ndarray | None, chunk_size: int, normalized: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, int]:
    """Validated (float32 queries (q, d), gallery (n, d), allowed row indices or None, chunk size)."""
    q = np.asarray(queries)
    g = np.asarray(gallery)
    if q.ndim == 1:
        q = q[None, :]
    if q.ndim != 2:
        raise ValueError(f"queries must be (n_queries, d) or (d,), got shape {np.shape(queries)}")
    if g.ndim != 2:
        raise ValueError(f"gallery must be (n_gallery, d), got shape {g.shape}")
    if q.shape[1] != g.shape[1]:
        raise ValueError(
            f"dimension mismatch: queries have shape {np.shape(queries)} but gallery has shape "
            f"{g.shape}; both need the same embedding width d"
        )
    if not isinstance(chunk_size, (int, np.integer)) or isinstance(chunk_size, (bool, np.bool_)) or chunk_size <= 0:
        raise ValueError(f"chunk_size must be a positive integer (gallery rows per chunk), got {chunk_size!r}")
    allowed = None
    if mask is not None:
        m = np.asarray(mask)
        if m.dtype != np.bool_ or m.shape != (g.shape[0],):
            raise ValueError(
                f"mask must be a boolean array of shape ({g.shape[0]},) (one flag per gallery row), "
                f"got dtype {m.dtype} and shape {m.shape}"
            )
        allowed = np.flatnonzero(m)
    if normalized:
        q = q.astype(np.float32, copy=False)
        if not np.isfinite(q).all():
            raise ValueError("queries contain NaN or infinite values")
    else:
        q = normalize_rows(q)
    return q, g, allowed, int(chunk_size)


def _chunks(g: np.ndarray, allowed: np.ndarray | None, chunk_size: int, normalized: bool, first: int | None = None):
    """Yield (rows, float32 gallery rows (c, d)) chunk by chunk, in row order; ``rows`` is the global
    index of the chunk's first row (int) without a mask, the (c,) int64 global indices with one.

    Chunks have ``chunk_size`` rows, except a smaller first one of ``first`` rows when given. Without a
    mask the rows are slices (views, no copy when the gallery is float32); with one, only the allowed
    rows are gathered, so the similarity work shrinks with the filter.
    """
    n = g.shape[0] if allowed is None else len(allowed)
    start = 0
    if first is not None and first < min(chunk_size, n):
        yield _rows_block(g, allowed, 0, first, normalized)
        start = first
    for lo in range(start, n, chunk_size):
        yield _rows_block(g, allowed, lo, min(lo + chunk_size, n), normalized)


def _query_block(chunk_size: int, n_queries: int) -> int:
    return max(1, min(n_queries, _QUERY_BLOCK_ELEMS // chunk_size))


def _similarities(q64: np.ndarray, block: np.ndarray) -> np.ndarray:
    """(q, c) float32 scores of float64 grid queries against float32 grid gallery rows.

    Each score is an exact float64 dot product rounded once to float32 (module docstring), so it has the
    same bits for any shapes. The block is cast and multiplied piece by piece (see _PIECE_ELEMS).
    """
    out = np.empty((q64.shape[0], block.shape[0]), dtype=np.float32)
    n_q, d = max(q64.shape[0], 1), max(block.shape[1], 1)
    step = max(1, min(min(n_q * _PIECE_ELEMS_PER_QUERY, _PIECE_ELEMS) // d, _PIECE_ELEMS // n_q))
    for lo in range(0, block.shape[0], step):
        out[:, lo : lo + step] = q64 @ block[lo : lo + step].astype(np.float64).T  # assignment rounds to float32
    return out


def _pair_scores(q: np.ndarray, g: np.ndarray, rows: np.ndarray, normalized: bool) -> np.ndarray:
    """(b, m) float32 scores of query i (rows of ``q``, on the grid) with gallery rows ``rows[i]``.

    The same bits as in any matmul over the gallery: every score is exact before its one rounding.
    """
    picked = g[rows.ravel()]
    picked = picked.astype(np.float32, copy=False) if normalized else normalize_rows(picked)
    picked = picked.astype(np.float64).reshape(*rows.shape, g.shape[1])
    return np.einsum("bd,bmd->bm", q.astype(np.float64), picked).astype(np.float32)


def cosine_scores(queries: np.ndarray, gallery: np.ndarray, *, normalized: bool = False) -> np.ndarray:
    """(n_queries, n_gallery) float32 scores of every query against every gallery row.

    Bit for bit the scores :func:`top_k`, :func:`rank_of` and :func:`tie_groups` rank by, whatever the
    number of queries. Builds the whole matrix: meant for blocks of queries over a gallery that fits
    (evaluation); a (d,) query gives one row. Raises ``ValueError`` as :func:`top_k`.
    """
    q, g, _, _ = _prepare(queries, gallery, None, 1, normalized)
    block = g.astype(np.float32, copy=False) if normalized else normalize_rows(g)
    scores = _similarities(q.astype(np.float64), block)
    if normalized:
        _check_finite(scores, block)
    return scores


# ---------------------------------------------------------------- top-k


def _kth_largest(sims: np.ndarray, k: int) -> np.ndarray:
    """(q, 1) k-th largest value of each row of ``sims`` (q, c), c > k; O(c) selection per row."""
    c = sims.shape[1]
    return np.partition(sims, c - k, axis=1)[:, c - k : c - k + 1]


def _dense_cut(sims: np.ndarray, candidates: np.ndarray, k: int) -> np.ndarray:
    """Restrict ``candidates`` to items >= each row's k-th largest chunk value (at least k stay per row)."""
    return candidates & (sims >= _kth_largest(sims, k))


def _merge(
    best_idx: np.ndarray | None,
    best_val: np.ndarray | None,
    sims: np.ndarray,
    candidates: np.ndarray,
    rows: int | np.ndarray,
    k: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Running top-k merged with the chunk items marked in ``candidates`` (q, c), exactly.

    All items (running ones and candidates) are sorted at once by (query, score desc, gallery index
    asc) with one ``lexsort`` and the first k of each query are kept. Every row ends with the same
    width min(k, items per row) because of how the candidates are chosen (see :func:`top_k`).
    """
    n_queries, n_cols = sims.shape
    flat = np.flatnonzero(candidates)  # row-major; much faster than a 2-D np.nonzero
    new_val = sims.ravel()[flat]
    if n_queries == 1:  # the dashboard's case: no per-query bookkeeping
        new_idx = _global(rows, flat)
        if best_idx is not None:
            assert best_val is not None  # the running top-k's indices and scores are set together
            new_idx, new_val = np.concatenate([best_idx[0], new_idx]), np.concatenate([best_val[0], new_val])
        order = np.lexsort((new_idx, -new_val))[:k]
        return new_idx[order][None, :], new_val[order][None, :]
    r, c = np.divmod(flat, n_cols)
    item_row, item_idx, item_val, width = r, _global(rows, c), new_val, 0
    if best_idx is not None:
        assert best_val is not None  # the running top-k's indices and scores are set together
        width = best_idx.shape[1]
        item_row = np.concatenate([np.repeat(np.arange(n_queries), width), r])
        item_idx = np.concatenate([best_idx.ravel(), item_idx])
        item_val = np.concatenate([best_val.ravel(), item_val])
    order = np.lexsort((item_idx, -item_val, item_row))
    counts = width + np.bincount(r, minlength=n_queries)
    keep = min(k, int(counts.min()))
    starts = np.cumsum(counts) - counts
    take = order[starts[:, None] + np.arange(keep)]
    return item_idx[take], item_val[take]


def _check_finite(sims: np.ndarray, block: np.ndarray) -> None:
    """Reject NaN/inf gallery values (a non-finite gallery value makes its similarities non-finite).

    Checks whichever of the similarity block and the gallery block is smaller (same verdict)."""
    if not np.isfinite(sims if sims.size <= block.size else block).all():
        raise ValueError("the gallery contains NaN or infinite values (found while scoring it with normalized=True)")


def top_k(
    queries: np.ndarray,
    gallery: np.ndarray,
    k: int,
    *,
    mask: np.ndarray | None = None,
    chunk_size: int = 65536,
    normalized: bool = False,
) -> TopK:
    """Exact cosine top-k of every query over the gallery, memory-bounded.

    Args:
        queries: (n_queries, d) embeddings, or one (d,) query (treated as 1 query: results have 1 row).
        gallery: (n_gallery, d) embeddings.
        k: results per query (> 0). If fewer gallery rows are allowed, all allowed rows are returned
            (``k' = min(k, n_allowed)`` columns, possibly 0); never an error.
        mask: optional bool (n_gallery,) of allowed gallery rows (e.g. a category filter); other rows
            are never returned.
        chunk_size: gallery rows scored at a time (bounds memory, see the module docstring).
        normalized: True if queries and gallery rows are already L2-normalised (float32 preferred);
            skips the per-call normalisation. Rows that are not unit length then give dot products,
            not cosines.

    Returns:
        :class:`TopK` with (n_queries, k') int64 ``indices`` (best first, ties by lower row index) and
        float32 ``scores``. Equals brute force ``np.argsort(-cosine_scores(q, g), kind="stable")[:, :k]``.

    Raises:
        ValueError: k <= 0, queries/gallery widths differ (both shapes named), a malformed mask,
            or NaN/infinite values.
    """
    k = _check_k(k)
    q, g, allowed, chunk_size = _prepare(queries, gallery, mask, chunk_size, normalized)
    n_allowed = g.shape[0] if allowed is None else len(allowed)
    k_out = min(k, n_allowed)
    out_idx = np.zeros((q.shape[0], k_out), dtype=np.int64)
    out_val = np.zeros((q.shape[0], k_out), dtype=np.float32)
    if k_out == 0 or q.shape[0] == 0:
        return TopK(out_idx, out_val)
    qb = _query_block(chunk_size, q.shape[0])
    for q0 in range(0, q.shape[0], qb):
        qs = q[q0 : q0 + qb]
        q64 = qs.astype(np.float64)
        best_idx: np.ndarray | None = None
        best_val: np.ndarray | None = None
        # With many queries, a small first chunk sets each query's running k-th score cheaply; after
        # it, most chunk items fall below that score and are dismissed by one comparison pass instead
        # of a partition of the whole chunk (the partition is the costliest step for a batch).
        first = max(_SEED_ROWS, 8 * k) if len(qs) >= _SEED_MIN_QUERIES else None
        for rows, block in _chunks(g, allowed, chunk_size, normalized, first):
            sims = _similarities(q64, block)
            if normalized:  # otherwise normalize_rows has already rejected non-finite rows
                _check_finite(sims, block)
            # Candidates of this chunk, a superset of what can enter the running top-k, always with at
            # least min(k, c) per query when the running top-k is not yet full.
            if best_idx is not None and best_val is not None and best_idx.shape[1] == k:
                # Only items strictly ABOVE the running k-th score can enter: an equal score loses the
                # tie-break, since every running index is lower than this chunk's. After the first chunk
                # these are usually a handful, found by one comparison pass instead of a selection.
                candidates = sims > best_val[:, k - 1 :]
                n_candidates = np.count_nonzero(candidates)
                if n_candidates == 0:
                    continue
                if n_candidates > _SPARSE_MERGE_FRACTION * sims.size and sims.shape[1] > k:
                    candidates = _dense_cut(sims, candidates, k)
            elif sims.shape[1] > k:
                # Every item >= the chunk's k-th largest value. Not argpartition's k indices: with ties
                # at the k-th value, argpartition keeps an arbitrary subset of the tied items, while all
                # of them go to the merge here and the exact (score, index) sort picks the lowest indices.
                candidates = sims >= _kth_largest(sims, k)
            else:
                candidates = np.ones(sims.shape, dtype=bool)
            best_idx, best_val = _merge(best_idx, best_val, sims, candidates, rows, k)
        assert best_idx is not None and best_val is not None  # k_out > 0: at least one chunk was merged
        out_idx[q0 : q0 + qb] = best_idx
        out_val[q0 : q0 + qb] = best_val
    return TopK(out_idx, out_val)


# ---------------------------------------------------------------- rank of a given item


def rank_of(
    queries: np.ndarray,
    gallery: np.ndarray,
    targets: np.ndarray,
    *,
    mask: np.ndarray | None = None,
    chunk_size: int = 65536,
    normalized: bool = False,
) -> np.ndarray:
    """1-based rank of gallery row ``targets[i]`` for query i, under the ordering of :func:`top_k`.

    rank = 1 + (allowed rows scoring strictly higher) + (allowed rows scoring equal with a lower
    index), i.e. the position of the target in ``np.argsort(-scores, kind="stable")`` restricted to
    the allowed rows; ``rank_of(q, g, top_k(q, g, k).indices[:, r]) == r + 1``.

    Returns (n_queries,) int64; **0 where the target row is not allowed by ``mask``** (it is not in
    the filtered ranking at all). ``queries`` may be one (d,) vector with ``targets`` of shape (1,) or
    a scalar. Raises ``ValueError`` for a wrong number of targets or a target outside [0, n_gallery).

    Cost: one pass over the gallery.
    """
    q, g, allowed, chunk_size = _prepare(queries, gallery, mask, chunk_size, normalized)
    t = np.atleast_1d(np.asarray(targets))
    if t.ndim != 1 or len(t) != q.shape[0]:
        raise ValueError(
            f"targets must hold one gallery row per query: {q.shape[0]} queries, targets of shape {np.shape(targets)}"
        )
    t = _gallery_rows(t, g.shape[0], "targets")
    live = np.ones(len(t), dtype=bool) if mask is None else np.asarray(mask)[t]  # masked-out targets: rank 0
    ranks = np.zeros(len(t), dtype=np.int64)
    qb = _query_block(chunk_size, max(q.shape[0], 1))
    for q0 in range(0, q.shape[0], qb):
        qs, ts = q[q0 : q0 + qb], t[q0 : q0 + qb]
        if not live[q0 : q0 + qb].any():
            continue
        s_t = _pair_scores(qs, g, ts[:, None], normalized)  # (b, 1), the same bits as in the chunk matmul
        q64 = qs.astype(np.float64)
        before = np.zeros(len(qs), dtype=np.int64)
        for rows, block in _chunks(g, allowed, chunk_size, normalized):
            s = _similarities(q64, block)
            if normalized:
                _check_finite(s, block)
            before += np.count_nonzero(s > s_t, axis=1)
            # ties: only rows with a lower gallery index than the target rank before it
            lower = _global(rows, np.arange(s.shape[1]))[None, :] < ts[:, None]
            before += np.count_nonzero((s == s_t) & lower, axis=1)
        ranks[q0 : q0 + qb] = np.where(live[q0 : q0 + qb], before + 1, 0)
    return ranks


# ---------------------------------------------------------------- tie groups


@dataclass(frozen=True)
class TieGroups:
    """For each given result, the allowed gallery rows whose score is within a tolerance of its score.

    ``others``: int64, how many OTHER allowed rows are in the group (0 = the result stands alone).
    ``first``, ``last``: int64, the 1-based ranks the group spans; the result's own rank lies between
    them, and the order inside the span is the tie-break, not the model's. All three have the shape of
    the results given to :func:`tie_groups`.
    """

    others: np.ndarray
    first: np.ndarray
    last: np.ndarray


def tie_groups(
    queries: np.ndarray,
    gallery: np.ndarray,
    indices: np.ndarray,
    *,
    tolerance: float = TIE_TOLERANCE,
    mask: np.ndarray | None = None,
    chunk_size: int = 65536,
    normalized: bool = False,
) -> TieGroups:
    """Tie group of each ranked result: the allowed rows whose score falls in its :func:`tie_bucket`.

    For result row r of query i, with bucket b: ``first = 1 + #(allowed rows in a higher bucket)``,
    ``last = #(allowed rows in bucket b or higher)``, ``others = last - first`` (r itself is in the group).
    Buckets partition the scores, so the groups of one query never overlap: two results are in one group,
    with the same ranks, or in disjoint ones. ``tolerance=0`` gives the exact ties (equal float32 scores).
    Buckets are computed in float64 from the float32 scores, the same way for every row.

    Args:
        queries, gallery, mask, chunk_size, normalized: as :func:`top_k`.
        indices: (n_queries, m) allowed gallery rows, e.g. ``top_k(...).indices``; with one (d,) query
            also a (m,) vector.
        tolerance: width of a bucket, >= 0 (0: exact ties).

    Returns :class:`TieGroups` of (n_queries, m) arrays. Raises ``ValueError`` for a malformed
    ``indices`` (wrong shape, outside the gallery, or rows the mask excludes) or a negative tolerance.

    Cost: one pass over the gallery per query block, as :func:`top_k`: rows scoring below every result's
    lower bound are dismissed by one comparison; the few others are sorted and counted with a binary search.
    """
    q, g, allowed, chunk_size = _prepare(queries, gallery, mask, chunk_size, normalized)
    idx = np.asarray(indices)
    if idx.ndim == 1 and np.ndim(queries) == 1:
        idx = idx[None, :]
    if idx.ndim != 2 or idx.shape[0] != q.shape[0]:
        raise ValueError(
            f"indices must be (n_queries, m) gallery rows: {q.shape[0]} queries, indices of shape {np.shape(indices)}"
        )
    idx = _gallery_rows(idx, g.shape[0], "indices")
    if mask is not None and not np.asarray(mask)[idx].all():
        raise ValueError("indices must be rows the mask allows (a filtered-out row is not in the ranking)")
    if not tolerance >= 0:
        raise ValueError(f"tolerance must be >= 0, got {tolerance!r}")
    first = np.ones(idx.shape, dtype=np.int64)
    last = np.zeros(idx.shape, dtype=np.int64)
    qb = _query_block(chunk_size, max(q.shape[0], 1))
    for q0 in range(0, q.shape[0] if idx.size else 0, qb):
        qs = q[q0 : q0 + qb]
        s = _pair_scores(qs, g, idx[q0 : q0 + qb], normalized)
        bucket = tie_bucket(s, tolerance)
        # rows scoring below this count for no result: a row in a bucket >= b scores at least (b - 1/2) * tolerance
        floor = s.min(axis=1, keepdims=True).astype(np.float64) - tolerance
        above = np.zeros(s.shape, dtype=np.int64)
        within = np.zeros(s.shape, dtype=np.int64)
        q64 = qs.astype(np.float64)
        for _, block in _chunks(g, allowed, chunk_size, normalized):
            sims = _similarities(q64, block)
            if normalized:
                _check_finite(sims, block)
            near = sims >= floor
            for i in np.flatnonzero(near.any(axis=1)):
                buckets = tie_bucket(np.sort(sims[i, near[i]]), tolerance)  # sorted: the bucket is monotone
                above[i] += len(buckets) - np.searchsorted(buckets, bucket[i], side="right")
                within[i] += len(buckets) - np.searchsorted(buckets, bucket[i], side="left")
        first[q0 : q0 + qb] = above + 1
        last[q0 : q0 + qb] = within
    return TieGroups(last - first, first, last)


def tie_bucket(scores: np.ndarray, tolerance: float = TIE_TOLERANCE) -> np.ndarray:
    """The tie bucket of float32 scores, as float64: the nearest multiple of ``tolerance`` (in units of it), or the
    score itself for ``tolerance=0``. Monotone in the score, so sorted scores give sorted buckets."""
    values = np.asarray(scores, dtype=np.float64)
    return values if tolerance == 0 else np.floor(values / tolerance + 0.5)


def describe_tie(others: int, first: int, last: int) -> str:
    """One result's tie group in words, e.g. 'tied with 16 others (ranks 1–17)'; '' when it stands alone."""
    if others <= 0:
        return ""
    return f"tied with {others} other{'s' if others > 1 else ''} (ranks {first}–{last})"


def own_pair_headline(rank: int, tie: tuple[int, int, int] | None) -> str:
    """What a page shows in large type for the own pair's rank: its tie group's range when it is tied ("ranks 1–14":
    one number would claim an order the model did not make), else "#rank"; "filtered out" for rank 0."""
    if rank == 0:
        return "filtered out"
    if tie is not None and tie[0] > 0:
        return f"ranks {tie[1]}–{tie[2]}"
    return f"#{rank}"


def _gallery_rows(rows: np.ndarray, n: int, what: str) -> np.ndarray:
    """``rows`` as int64 gallery row indices; ``ValueError`` naming ``what`` unless integers in [0, n)."""
    if not np.issubdtype(rows.dtype, np.integer) and rows.size:
        raise ValueError(f"{what} must be integer gallery row indices, got dtype {rows.dtype}")
    rows = rows.astype(np.int64)
    if rows.size and (rows.min() < 0 or rows.max() >= n):
        raise ValueError(f"{what} must be gallery row indices in [0, {n}), got values in [{rows.min()}, {rows.max()}]")
    return rows


def _rows_block(
    g: np.ndarray, allowed: np.ndarray | None, lo: int, hi: int, normalized: bool
) -> tuple[int | np.ndarray, np.ndarray]:
    """Walked rows lo..hi-1 (of the gallery, or of its allowed rows): (rows, float32 block)."""
    rows: int | np.ndarray
    if allowed is None:
        rows, block = lo, g[lo:hi]
    else:
        rows = allowed[lo:hi].astype(np.int64, copy=False)
        block = g[rows]
    block = normalize_rows(block) if not normalized else block.astype(np.float32, copy=False)
    return rows, block


def _global(rows: int | np.ndarray, local: np.ndarray) -> np.ndarray:
    """Global gallery indices (int64) of chunk-local column indices (``rows`` as :func:`_chunks` yields)."""
    if isinstance(rows, np.ndarray):
        return rows[local]
    return local.astype(np.int64, copy=False) + rows
