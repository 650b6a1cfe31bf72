"""analysis.stats against reference computations: full enumeration, a plain numpy bootstrap, the paired t-test."""

from __future__ import annotations

import itertools
import warnings

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from analysis.stats import (
    MIN_QUERIES,
    adjust_p_values,
    batch_size,
    check_same_queries,
    cluster_comparison,
    compare_slices,
    mean_interval,
    median_difference_ci,
    paired_comparison,
    runs_comparison,
    welch_test,
)
from chtn.errors import CHTNError


def _scores(n: int, shift: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    a = rng.uniform(size=n)
    return a, np.clip(a + rng.normal(shift, 0.1, size=n), 0, 1)


def test_small_slices_enumerate_every_sign_flip():
    a, b = _scores(12, 0.03)
    d = b - a
    observed = abs(d.mean())
    flips = np.array(list(itertools.product((1, -1), repeat=len(d))))
    reference = np.mean(np.abs((flips * d).mean(axis=1)) >= observed - 1e-12)
    result = paired_comparison(a, b)
    assert result.exact
    assert result.p_value == pytest.approx(reference, abs=1e-9)


def test_bootstrap_interval_matches_a_plain_resampling_reference():
    a, b = _scores(400, 0.02)
    d = b - a
    rng = np.random.default_rng(123)
    means = d[rng.integers(0, len(d), size=(10_000, len(d)))].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    result = paired_comparison(a, b)
    assert result.ci_low == pytest.approx(low, abs=0.002)
    assert result.ci_high == pytest.approx(high, abs=0.002)
    assert result.ci_low < result.delta < result.ci_high


@pytest.mark.parametrize("n", [400, 5_000])  # one batch, and several batches with a shorter last one
def test_bootstrap_intervals_equal_scipy_given_the_same_draws(n):
    """The hand-written bootstrap draws the index matrices scipy.stats.bootstrap draws, batch for batch, so its
    percentile intervals are scipy's to rounding: of a mean, and of a paired difference of medians."""
    from scipy import stats

    a, b = _scores(n, 0.02, seed=n)
    resamples, seed = 3_000, 11
    batch = batch_size(resamples, n)

    def scipy_ci(data, statistic, paired=False):
        ci = stats.bootstrap(
            data,
            statistic,
            paired=paired,
            n_resamples=resamples,
            method="percentile",
            batch=batch,
            rng=np.random.default_rng([seed, 0]),
        ).confidence_interval
        return ci.low, ci.high

    assert mean_interval(b - a, resamples, seed) == pytest.approx(scipy_ci((b - a,), np.mean), abs=1e-12)
    result = paired_comparison(a, b, resamples, seed)
    assert (result.ci_low, result.ci_high) == pytest.approx(scipy_ci((b - a,), np.mean), abs=1e-12)

    def median_difference(x, y, axis=-1):
        return np.median(y, axis=axis) - np.median(x, axis=axis)

    expected = scipy_ci((a, b), median_difference, paired=True)
    assert median_difference_ci(a, b, resamples, seed) == pytest.approx(expected, abs=1e-12)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 30), st.integers(1, 30)), min_size=2, max_size=41), st.integers(0, 3))
def test_median_interval_is_the_plain_bootstrap_of_numpy_medians(ranks, seed):
    """Ranks with many ties, odd and even counts: the interval is that of np.median over the same index draws."""
    a, b = (np.array(column, dtype=np.float64) for column in zip(*ranks))
    rng = np.random.default_rng([seed, 5])
    assert batch_size(300, len(a)) == 300  # one batch of draws
    draws = rng.integers(0, len(a), (300, len(a)))
    expected = np.quantile(np.median(b[draws], axis=1) - np.median(a[draws], axis=1), [0.025, 0.975])
    if np.ptp(a) == 0 and np.ptp(b) == 0:
        expected = [b[0] - a[0]] * 2
    assert median_difference_ci(a, b, 300, seed, stream=5) == pytest.approx(tuple(expected), abs=1e-12)
    assert np.isnan(median_difference_ci(np.append(a, np.nan), np.append(b, 1.0), 300, seed)).all()


def test_random_sign_flips_estimate_the_exact_p_above_the_enumeration_limit():
    """At 22 queries (past EXACT_UP_TO) the random test's p lies within four Monte Carlo standard errors of the
    full enumeration of all 2^22 sign patterns, for a null, a borderline and a clear shift."""
    rng = np.random.default_rng(5)
    for shift in (0.0, 0.03, 0.08):
        d = rng.normal(shift, 0.1, size=22)
        sums = np.zeros(1)
        for value in d:
            sums = np.concatenate([sums + value, sums - value])
        exact = np.mean(np.abs(sums) >= abs(d.sum()) * (1 - 1e-12))
        result = paired_comparison(np.zeros(22), d, resamples=20_000, seed=1)
        assert not result.exact
        se = np.sqrt(max(exact * (1 - exact), 1e-4) / 20_000)
        assert result.p_value == pytest.approx(exact, abs=4 * se)


def test_randomization_p_agrees_with_the_paired_t_test_on_many_queries():
    from scipy import stats

    for shift in (0.0, 0.005, 0.01):
        a, b = _scores(2000, shift, seed=7)
        result = paired_comparison(a, b)
        assert result.p_value == pytest.approx(stats.ttest_rel(b, a).pvalue, abs=0.02)


def test_figures_beside_p():
    a = np.array([0.5, 0.5, 0.2, 0.9, 0.4])
    b = np.array([0.6, 0.5, 0.1, 0.9, 0.8])
    result = paired_comparison(a, b)
    assert (result.wins, result.ties, result.losses) == (2, 2, 1)
    assert result.delta == pytest.approx(0.08)
    assert result.relative == pytest.approx(0.08 / 0.5)
    assert result.effect_size == pytest.approx(0.08 / np.std(b - a, ddof=1))
    assert result.insufficient and result.n == 5 < MIN_QUERIES


def test_no_change_is_p_one_and_a_point_interval():
    a = np.linspace(0, 1, 50)
    result = paired_comparison(a, a.copy())
    assert result.p_value == 1.0 and result.ties == 50
    assert result.ci_low == result.ci_high == 0.0


def test_same_seed_same_figures_and_the_seed_is_recorded():
    a, b = _scores(300, 0.01)
    first, second = paired_comparison(a, b, seed=3), paired_comparison(a, b, seed=3)
    assert first == second and first.seed == 3 and first.resamples == 10_000
    assert paired_comparison(a, b, seed=4).ci_low != first.ci_low


def test_bad_input_is_a_clear_error():
    with pytest.raises(CHTNError, match="empty"):
        paired_comparison(np.array([]), np.array([]))
    with pytest.raises(CHTNError, match="equal-length"):
        paired_comparison(np.zeros(3), np.zeros(4))
    with pytest.raises(CHTNError, match="finite"):
        paired_comparison(np.array([0.1, np.nan]), np.array([0.1, 0.2]))


def test_different_query_sets_are_refused_never_aligned():
    check_same_queries(["a", "b"], ["a", "b"])
    with pytest.raises(CHTNError, match="different order"):
        check_same_queries(["a", "b"], ["b", "a"])
    with pytest.raises(CHTNError, match="1 queries only in the first"):
        check_same_queries(["a", "b", "c"], ["a", "b"])


def test_holm_by_hand():
    assert adjust_p_values([0.01, 0.04, 0.03, 0.5], "holm") == pytest.approx([0.04, 0.09, 0.09, 0.5])


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(0, 1), min_size=1, max_size=40))
def test_adjusted_p_values_are_valid_and_keep_the_order(p_values):
    p = np.array(p_values)
    for method in ("holm", "bh"):
        adjusted = adjust_p_values(p, method)
        assert np.all(adjusted >= p - 1e-12) and np.all(adjusted <= 1)
        order = np.argsort(p, kind="stable")
        assert np.all(np.diff(adjusted[order]) >= -1e-12)
    assert np.all(adjust_p_values(p, "holm") >= adjust_p_values(p, "bh") - 1e-12)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(0, 1), min_size=1, max_size=40))
def test_benjamini_hochberg_is_scipys(p_values):
    from scipy import stats

    assert adjust_p_values(p_values, "bh") == pytest.approx(stats.false_discovery_control(p_values, method="bh"))


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.floats(0, 1), min_size=2, max_size=8),
    st.lists(st.floats(0, 1), min_size=2, max_size=8),
)
def test_welch_test_is_scipys_ttest_ind(a, b):
    """p and interval as scipy's Welch test gives them, for any sizes, also with one side without spread."""
    from scipy import stats

    a, b = np.array(a), np.array(b)
    assume(np.ptp(a) > 1e-6 or np.ptp(b) > 1e-6)  # both without spread: runs_comparison's exact branch
    p_value, low, high = welch_test(a, b)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # scipy's precision-loss note on a side without spread
        reference = stats.ttest_ind(b, a, equal_var=False)
    interval = reference.confidence_interval(0.95)
    assert p_value == pytest.approx(reference.pvalue, rel=1e-9, abs=1e-12)
    assert (low, high) == pytest.approx((interval.low, interval.high), rel=1e-9, abs=1e-12)


def test_slices_are_adjusted_together_and_independent_of_each_other():
    a, b = _scores(600, 0.0)
    b[:200] = np.clip(a[:200] + 0.1, 0, 1)  # slice "up" really improved
    groups = np.repeat(["up", "flat", "tiny"], [200, 390, 10])
    masks = {name: groups == name for name in ("flat", "tiny", "absent", "up")}
    frame = compare_slices(a, b, masks, "holm").set_index("slice")
    assert list(frame.index) == ["flat", "tiny", "up"]  # an empty slice is left out
    assert frame.loc["up", "p_adjusted"] < 0.001 and frame.loc["flat", "p_adjusted"] > 0.05
    assert frame.loc["tiny", "insufficient"] and np.isnan(frame.loc["tiny", "p_adjusted"])
    alone = compare_slices(a, b, {"up": masks["up"]}, "holm").set_index("slice")
    assert alone.loc["up", "ci_low"] == frame.loc["up", "ci_low"]  # its stream does not depend on the others


@pytest.mark.parametrize(
    ("p", "shown"), [(0.0, "< 0.001"), (0.00099, "< 0.001"), (0.001, "0.001"), (0.0424, "0.042"), (1.0, "1.000")]
)
def test_p_values_print_with_three_decimals_and_never_as_zero(p, shown):
    from analysis.stats import format_p

    assert format_p(p) == shown


def test_an_undefined_p_value_prints_as_not_available():
    from analysis.stats import format_p

    assert format_p(float("nan")) == "n/a"


def _clustered_null(seed: int, clusters: int = 20, per_cluster: int = 20) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Two checkpoints of one recipe: no true difference, but each category's queries move together (a shared
    shift per category, as when a category's text queries rank the same gallery), plus query noise."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(clusters), per_cluster)
    a = rng.uniform(0.3, 0.9, size=len(labels))
    shift = rng.normal(0, 0.03, size=clusters)[labels] + rng.normal(0, 0.02, size=len(labels))
    return a, a + shift, labels


def test_clustered_differences_fool_the_query_bootstrap_but_not_the_cluster_one():
    """On A/A data with a category-level shift, resampling single queries rejects far more often than its 5%;
    resampling whole categories stays near 5%."""
    query_rejects = cluster_rejects = 0
    runs = 120
    for seed in range(runs):
        a, b, labels = _clustered_null(seed)
        query_rejects += paired_comparison(a, b, resamples=300, seed=seed).p_value < 0.05
        cluster_rejects += cluster_comparison(a, b, labels, resamples=300, seed=seed).p_value < 0.05
    assert query_rejects / runs > 0.3
    assert cluster_rejects / runs <= 0.10


def test_cluster_test_enumerates_every_sign_pattern_of_whole_clusters():
    a, b, labels = _clustered_null(3, clusters=6, per_cluster=4)
    result = cluster_comparison(a, b, labels, resamples=2000)
    sums = np.bincount(labels, weights=b - a)
    flips = [abs(np.dot(signs, sums)) for signs in itertools.product([-1, 1], repeat=6)]
    assert result.exact and result.unit == "clusters" and result.units == 6
    assert result.p_value == pytest.approx(np.mean(np.array(flips) >= abs(sums.sum()) * (1 - 1e-12)))
    assert result.ci_low <= result.delta <= result.ci_high
    assert result.delta == pytest.approx((b - a).mean())


def test_cluster_test_needs_five_clusters_and_finds_a_real_shift():
    a, b, labels = _clustered_null(5, clusters=4)
    assert cluster_comparison(a, b, labels, resamples=500).insufficient
    a, b, labels = _clustered_null(6, clusters=30)
    found = cluster_comparison(a, b + 0.05, labels, resamples=1000)
    assert not found.insufficient and not found.exact and found.p_value < 0.01 and found.ci_low > 0


def test_runs_comparison_is_welch_t_over_each_runs_mean():
    from scipy import stats

    rng = np.random.default_rng(7)
    a_runs = [rng.uniform(size=50) for _ in range(3)]
    b_runs = [x + 0.02 + rng.normal(0, 0.05, size=50) for x in a_runs]
    result = runs_comparison(a_runs, b_runs)
    reference = stats.ttest_ind([x.mean() for x in b_runs], [x.mean() for x in a_runs], equal_var=False)
    assert result.p_value == pytest.approx(reference.pvalue) and result.unit == "runs"
    assert result.runs == (3, 3) and result.units == 3 and not result.insufficient
    assert result.delta == pytest.approx(np.mean(b_runs) - np.mean(a_runs))
    low, high = reference.confidence_interval(0.95)
    assert (result.ci_low, result.ci_high) == pytest.approx((low, high))


def test_one_run_on_a_side_is_insufficient_and_identical_runs_change_nothing():
    a = np.linspace(0.1, 0.9, 40)
    assert runs_comparison([a], [a, a + 0.01]).insufficient
    same = runs_comparison([a, a], [a, a])
    assert (same.delta, same.ci_low, same.ci_high, same.p_value) == (0.0, 0.0, 0.0, 1.0)
    with pytest.raises(CHTNError, match="identical query set"):
        runs_comparison([a], [a[:-1], a[:-1]])


def test_mean_interval_brackets_the_mean_and_handles_degenerate_samples():
    from analysis.stats import mean_interval

    rng = np.random.default_rng(3)
    values = rng.normal(0.6, 0.2, 400)
    low, high = mean_interval(values, resamples=4_000)
    se = values.std(ddof=1) / np.sqrt(len(values))
    assert low < values.mean() < high
    assert (high - low) == pytest.approx(2 * 1.96 * se, rel=0.1)  # the normal approximation at n = 400
    assert mean_interval(values, resamples=4_000) == (low, high)  # seeded
    assert mean_interval(np.full(5, 0.25)) == (0.25, 0.25)
    assert all(np.isnan(mean_interval(np.array([0.5]))))
