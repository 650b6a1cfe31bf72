"""The evaluation engine (chtn.engine) against the reference it replaced: AP read off a stable argsort of every score
row, top-1 from the same order, and the own pair's rank and tie groups from chtn.ranking. Ties are the hard part, so
most data here is small integers, whose scores tie exactly and often."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from chtn import engine
from chtn.evaluate import average_precision, evaluate_direction
from chtn.ranking import cosine_scores, normalize_rows, rank_of, tie_groups
from tests.conftest import CHECKPOINTS, PAIRS, ROOT


@pytest.fixture(params=["counting", "sorting"])
def cpu_path(request, monkeypatch) -> str:
    """The CPU engine's two ways (chtn.engine.COUNT_FROM): counting row by row, or one stable argsort of a block."""
    monkeypatch.setattr(engine, "COUNT_FROM", 0 if request.param == "counting" else 1 << 30)
    return request.param


def integer_data(rng: np.random.Generator, n: int, d: int, classes: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Small-integer vectors (many exactly equal scores) and labels, as (queries, gallery, labels)."""
    q = rng.integers(-2, 3, (n, d)).astype(np.float32)
    g = rng.integers(-2, 3, (n, d)).astype(np.float32)
    return q, g, rng.integers(0, classes, n)


def reference(q: np.ndarray, g: np.ndarray, labels: np.ndarray, at_k: int | None) -> dict[str, np.ndarray]:
    """The figures as the old evaluation computed them: a stable argsort per row, and chtn.ranking for the pair."""
    scores = cosine_scores(q, g)
    relevant = labels[:, None] == labels[None, :]
    order = np.argsort(-scores, axis=1, kind="stable")
    own = np.arange(len(q))
    ties = tie_groups(q, g, own[:, None])
    exact = tie_groups(q, g, own[:, None], tolerance=0.0)
    return {
        "ap": np.array([average_precision(s, r, at_k) for s, r in zip(scores, relevant)]),
        "top1": np.take_along_axis(relevant, order[:, :1], axis=1)[:, 0],
        "rank": rank_of(q, g, own),
        "ties": np.stack([ties.others[:, 0], ties.first[:, 0], ties.last[:, 0]]),
        "exact": np.stack([exact.others[:, 0], exact.first[:, 0], exact.last[:, 0]]),
    }


def engine_figures(q: np.ndarray, g: np.ndarray, labels: np.ndarray, at_k: int | None, device: torch.device | None):
    nq, ng = normalize_rows(q), normalize_rows(g)
    block = engine.rank_block(engine.block_scorer(ng, device)(nq), labels, labels, at_k, np.arange(len(q)))
    assert block.pair_rank is not None and block.pair_ties is not None and block.pair_exact is not None
    return {
        "ap": block.ap,
        "top1": block.top1,
        "rank": block.pair_rank,
        "ties": np.stack([block.pair_ties.others, block.pair_ties.first, block.pair_ties.last]),
        "exact": np.stack([block.pair_exact.others, block.pair_exact.first, block.pair_exact.last]),
    }


def assert_same(found: dict[str, np.ndarray], expected: dict[str, np.ndarray]) -> None:
    np.testing.assert_allclose(found["ap"], expected["ap"], rtol=0, atol=1e-9)
    for key in ("top1", "rank", "ties", "exact"):
        np.testing.assert_array_equal(found[key], expected[key], err_msg=key)


@pytest.mark.parametrize("device", [None, torch.device("cpu")], ids=["numpy", "torch"])
@pytest.mark.parametrize("at_k", [None, 1, 5])
@pytest.mark.parametrize("seed", range(4))
def test_equals_the_stable_argsort_reference_with_many_exact_ties(seed, at_k, device, cpu_path):
    q, g, labels = integer_data(np.random.default_rng(seed), 120, 3, 4)
    expected = reference(q, g, labels, at_k)
    scores = cosine_scores(q, g)
    tied = [
        (row[labels == labels[i]][:, None] == row[None, :]).sum() > (labels == labels[i]).sum()
        for i, row in enumerate(scores)
    ]
    assert np.mean(tied) > 0.9  # nearly every query has a relevant item sharing its score: the tie rule is exercised
    assert_same(engine_figures(q, g, labels, at_k, device), expected)


@pytest.mark.parametrize("device", [None, torch.device("cpu")], ids=["numpy", "torch"])
def test_equals_the_reference_on_continuous_scores_and_a_missing_class(device, cpu_path):
    rng = np.random.default_rng(7)
    q, g = rng.standard_normal((300, 16)).astype(np.float32), rng.standard_normal((300, 16)).astype(np.float32)
    labels = rng.integers(0, 6, 300)
    assert_same(engine_figures(q, g, labels, None, device), reference(q, g, labels, None))
    nq, ng = normalize_rows(q), normalize_rows(g)
    scores = engine.block_scorer(ng, device)(nq[:7])
    found = scores.numpy() if isinstance(scores, torch.Tensor) else scores
    assert np.array_equal(found, cosine_scores(q[:7], g))  # the same bits as chtn.ranking's scores
    # a query whose class has no gallery item: AP undefined (NaN), never relevant at top 1
    block = engine.rank_block(engine.block_scorer(ng, device)(nq[:2]), np.array([99, 0]), labels)
    assert np.isnan(block.ap[0]) and not block.top1[0] and not np.isnan(block.ap[1]) and block.pair_rank is None


@settings(max_examples=60, deadline=None)
@given(
    data=st.lists(st.integers(-3, 3), min_size=8, max_size=80),
    classes=st.integers(1, 3),
    at_k=st.one_of(st.none(), st.integers(1, 8)),
)
def test_any_small_integer_split_matches_the_reference(data, classes, at_k):
    """Any 2-d integer split (exact ties everywhere, zero vectors included) gives the reference's figures."""
    n = len(data) // 4
    q = np.array(data[: 2 * n], dtype=np.float32).reshape(n, 2)
    g = np.array(data[2 * n : 4 * n], dtype=np.float32).reshape(n, 2)
    labels = np.arange(len(q)) % classes
    expected = reference(q, g, labels, at_k)
    for count_from in (0, 1 << 30):  # counting, then sorting (a fixture would outlive hypothesis's examples)
        engine.COUNT_FROM, saved = count_from, engine.COUNT_FROM
        try:
            assert_same(engine_figures(q, g, labels, at_k, None), expected)
        finally:
            engine.COUNT_FROM = saved


def test_stable_positions_are_the_positions_in_the_stable_argsort():
    rng = np.random.default_rng(3)
    scores = rng.integers(0, 5, (4, 200)).astype(np.float32)  # values 0-4: every item ties with ~40 others
    scores[2] = 0.5  # a constant row: gallery order
    scores[3, :100] = -0.0  # -0.0 and 0.0 are one score
    rows, columns = np.nonzero(rng.random((4, 200)) < 0.15)
    where = np.empty((4, 200), dtype=np.int64)
    np.put_along_axis(where, np.argsort(-scores, axis=1, kind="stable"), np.arange(1, 201), axis=1)
    for row in range(4):
        items = columns[rows == row]
        np.testing.assert_array_equal(engine.stable_positions(scores[row], items), np.sort(where[row, items]))


@settings(max_examples=200, deadline=None)
@given(
    row=st.lists(
        st.one_of(
            st.floats(-1, 1, width=32),  # subnormals and both zeros included
            st.sampled_from([0.5, np.nextafter(np.float32(0.5), np.float32(1)), -0.0, 1e-45, -1e-45, 3e38, -3e38]),
        ),
        min_size=1,
        max_size=60,
    ),
    picks=st.lists(st.booleans(), min_size=60, max_size=60),
)
def test_stable_positions_hold_for_any_float32_row(row, picks):
    """The buckets behind stable_positions merge or split scores however the row's range falls (one-ulp gaps, a
    range of 6e38, subnormals next to zeros): the positions are those of the stable argsort."""
    s = np.array(row, dtype=np.float32)
    items = np.flatnonzero(np.array(picks[: len(s)]))
    where = np.empty(len(s), dtype=np.int64)
    where[np.argsort(-s, kind="stable")] = np.arange(1, len(s) + 1)
    np.testing.assert_array_equal(engine.stable_positions(s, items), np.sort(where[items]))


def test_evaluate_direction_blocks_keep_memory_bounded_and_change_nothing(monkeypatch, cpu_path):
    """Blocks of 7 queries (not dividing the split) give the figures of one block."""
    rng = np.random.default_rng(11)
    q, g, labels = integer_data(rng, 50, 4, 5)
    whole = evaluate_direction(q, g, labels, labels, "i2t")
    monkeypatch.setattr(engine, "BLOCK_ELEMS", 7 * 50)
    assert engine.block_rows(50) == 7
    blocked = evaluate_direction(q, g, labels, labels, "i2t")
    np.testing.assert_allclose(blocked.ap, whole.ap, rtol=0, atol=1e-12)
    np.testing.assert_array_equal(blocked.paired_rank, whole.paired_rank)
    assert blocked.paired_exact is not None and whole.paired_exact is not None
    np.testing.assert_array_equal(blocked.paired_exact.first, whole.paired_exact.first)


@pytest.mark.parametrize("other_thread", [False, True], ids=["fork", "spawn"])
def test_a_large_gallery_is_ranked_by_one_worker_process_per_core_with_the_same_figures(monkeypatch, other_thread):
    """From chtn.engine.PROCESSES_FROM rows the blocks go to worker processes: forked from a one-thread process,
    spawned while another thread runs (as in the dashboard's server). Every figure equals the threads' ones."""

    from chtn import evaluate

    q, g, labels = integer_data(np.random.default_rng(5), 90, 3, 4)
    monkeypatch.setattr(engine, "BLOCK_ELEMS", 10 * 90)  # 9 blocks
    monkeypatch.setattr(evaluate, "usable_cores", lambda: (2, "two cores"))
    threads = evaluate_direction(q, g, labels, labels, "i2t", at_k=5)
    pools, made = [], evaluate._ranking_pool

    def spied(*args):
        pools.append(made(*args))
        return pools[-1]

    monkeypatch.setattr(evaluate, "PROCESSES_FROM", 0)
    monkeypatch.setattr(evaluate, "_ranking_pool", spied)
    monkeypatch.setattr(evaluate.threading, "active_count", lambda: 2 if other_thread else 1)
    processes = evaluate_direction(q, g, labels, labels, "i2t", at_k=5)
    assert isinstance(pools[0], evaluate.ProcessPoolExecutor)
    assert pools[0]._mp_context.get_start_method() == ("spawn" if other_thread else "fork")
    assert engine._served is None  # the gallery was served in the workers, never set in this process
    np.testing.assert_allclose(processes.ap, threads.ap, rtol=0, atol=1e-12)
    np.testing.assert_array_equal(processes.top1_correct, threads.top1_correct)
    np.testing.assert_array_equal(processes.paired_rank, threads.paired_rank)
    for found, expected in (
        (processes.paired_ties, threads.paired_ties),
        (processes.paired_exact, threads.paired_exact),
    ):
        assert found is not None and expected is not None
        for part in ("others", "first", "last"):
            np.testing.assert_array_equal(getattr(found, part), getattr(expected, part), err_msg=part)


def _chtn(*argv: str, processes: int = 1) -> subprocess.CompletedProcess:
    """`python -m chtn ARGV`, under `torchrun --nproc_per_node PROCESSES` (gloo on CPU) when more than one."""
    launcher = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes)]
    command = [sys.executable, *(launcher if processes > 1 else []), "-m", "chtn", *argv]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, env=env)


@pytest.mark.slow
def test_torchrun_shards_the_evaluation_and_rank_zero_reports_the_figures_of_one_process(tmp_path):
    """`torchrun --nproc_per_node 2 -m chtn evaluate` (gloo on CPU): each process ranks every other block of 50
    queries, and rank 0 alone writes files equal to one process's."""
    argv = ["evaluate", "--data", str(PAIRS), "--block-queries", "50"]
    argv += ["--checkpoint", str(CHECKPOINTS / "chtn_fashion_source.safetensors"), "--out"]
    one, two = _chtn(*argv, str(tmp_path / "one")), _chtn(*argv, str(tmp_path / "two"), processes=2)
    assert one.returncode == 0 and two.returncode == 0, two.stderr[-3000:]
    assert two.stdout.count("MAP@all on 400 test pairs") == 1  # rank 0 reports, once
    assert "rank 1 of 2 ranked its share of 1 evaluation(s)" in two.stderr
    for name in ("per_query.csv", "per_category.csv"):
        assert (tmp_path / "two" / name).read_bytes() == (tmp_path / "one" / name).read_bytes(), name
    found, expected = (json.loads((tmp_path / side / "summary.json").read_text()) for side in ("two", "one"))
    assert found == expected


@pytest.mark.slow
@pytest.mark.parametrize("command", ["compare", "bias"])
def test_torchrun_shares_out_every_split_that_compare_and_bias_rank(command, tmp_path):
    """Rank 0 runs the command and the other rank ranks half of each split it evaluates (an empty cache each, so
    every evaluation is computed): 6 of them, 3 training runs per side. The figures equal one process's."""
    from tests.conftest import recipe_runs

    fashion, no_source = recipe_runs("chtn_fashion_source"), recipe_runs("chtn_no_source")
    argv = {
        "compare": ["compare", "--baseline", *no_source, "--candidate", *fashion],
        "bias": ["bias", "--checkpoint", *fashion, "--resamples", "1000"],
    }[command]
    runs = {}
    for processes in (1, 2):
        where = ["--out", str(tmp_path / f"out{processes}"), "--cache-dir", str(tmp_path / f"cache{processes}")]
        runs[processes] = _chtn(*argv, "--data", str(PAIRS), *where, processes=processes)
    assert runs[1].returncode == runs[2].returncode, runs[2].stderr[-3000:]
    assert "rank 1 of 2 ranked its share of 6 evaluation(s)" in runs[2].stderr, runs[2].stderr[-3000:]
    figures = ["figures.csv", "queries.csv"] if command == "compare" else ["gain.csv", "categories.csv"]
    for name in figures:
        assert (tmp_path / "out2" / name).read_bytes() == (tmp_path / "out1" / name).read_bytes(), name


def test_a_split_is_evaluated_once_per_content_and_read_back_as_computed(pairs, tmp_path, monkeypatch):
    """chtn.gallery.evaluate_gallery keeps each evaluation on disk under a hash of what it depends on: read back, it
    equals the computed one; other embeddings are another file; a damaged file is computed again."""
    from chtn import gallery as gal

    part = pairs.split("test")
    rng = np.random.default_rng(0)
    image, text = (rng.standard_normal((len(part), 8)).astype(np.float32) for _ in range(2))
    names = [f"category {i}" for i in range(int(part.label_index.max()) + 1)]
    computed = gal.evaluate_gallery(gal.Gallery(part, image, text, part.label_index), names, tmp_path)
    files = list((tmp_path / "evaluations").glob("*.npz"))
    assert len(files) == 1

    def never(*args, **kwargs):
        raise AssertionError("evaluated again")

    with monkeypatch.context() as patched:
        patched.setattr(gal.shards, "evaluate", never)
        again = gal.evaluate_gallery(gal.Gallery(part, image, text, part.label_index), names, tmp_path)
    assert again.summary() == computed.summary() and again.label_names == names
    for found, expected in ((again.i2t, computed.i2t), (again.t2i, computed.t2i)):
        np.testing.assert_array_equal(found.ap, expected.ap)
        np.testing.assert_array_equal(found.paired_rank, expected.paired_rank)
        assert found.paired_ties is not None and expected.paired_ties is not None
        np.testing.assert_array_equal(found.paired_ties.first, expected.paired_ties.first)
    moved = image.copy()
    moved[0, 0] += 1
    gal.evaluate_gallery(gal.Gallery(part, moved, text, part.label_index), names, tmp_path)
    assert len(list((tmp_path / "evaluations").glob("*.npz"))) == 2
    files[0].write_bytes(b"not a zip file")
    repaired = gal.evaluate_gallery(gal.Gallery(part, image, text, part.label_index), names, tmp_path)
    assert repaired.summary() == computed.summary()
