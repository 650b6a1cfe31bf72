"""Paired statistics over per-query scores: the one implementation behind the source-bias page, the checkpoint
comparison and the go/no-go gate (conventions: docs/conventions.md).

The unit is the per-query difference d_q = B(q) - A(q) on the identical query set. Interval: paired bootstrap,
percentile 95% CI of mean d_q. Test: two-sided paired randomization (sign-flip) test on mean d_q, exact
enumeration when n <= 20. Effect size (standardized d, win/tie/loss) always beside p. Many slices: Holm for
what can block a release, Benjamini-Hochberg for exploratory flags.

The bootstrap draws exactly what scipy.stats.bootstrap draws (the same index matrices from the same generator, so
the same interval: tests/test_stats.py checks it), and the sign-flip test draws its signs as random bits. Both are
written here because they must keep up with the ranking on 100,000 queries x 10,000 resamples: scipy's bootstrap
took 2.4x and its permutation test 14x the time of these loops at 20,000 queries (docs/scale_benchmark.md).
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Literal

import numpy as np
import pandas as pd

from chtn.errors import CHTNError

RESAMPLES = 10_000  # bootstrap and randomization resamples (docs/conventions.md)
MAX_RESAMPLES = 1_000_000  # the most a rule file or --resamples may ask for: minutes per slice, never days
CONFIDENCE = 0.95
MIN_QUERIES = 20  # below this a slice is "insufficient evidence": shown, never blocking on its own
EXACT_UP_TO = 20  # the randomization test enumerates all 2^n sign flips up to this many queries
MIN_EFFECT = 0.01  # minimum practical |change| of AP: a smaller significant change is "negligible", never a flag
TIE = 1e-12  # |d_q| at or below this is a tie (APs of one ranking code on one query set agree bit for bit)
_BATCH_DRAWS = 2**23  # resampled values held at once (~64 MB of indices): memory stays bounded whatever the n
# The unit of resampling. "queries": one checkpoint per side, queries resampled one by one (a slice within one
# category, whose queries cannot be split further). "clusters": one checkpoint per side, whole categories resampled
# and sign-flipped (a category's text queries rank the same gallery, so their differences move together; resampling
# them one by one understated the SE of a same-recipe MAP change 2.2x on the sample). "runs": several checkpoints
# per side, each run's slice mean is one observation and Welch's t compares the sides: the only unit that holds
# training-seed variance, so the only one that speaks of recipes.
Unit = Literal["queries", "clusters", "runs"]
MIN_UNITS: dict[str, int] = {"queries": 1, "clusters": 5, "runs": 2}  # below these: insufficient evidence


@dataclass(frozen=True)
class PairedComparison:
    """Candidate B against baseline A on one slice of queries (one direction)."""

    n: int  # queries in the slice
    mean_a: float
    mean_b: float
    delta: float  # mean d_q = mean_b - mean_a
    relative: float  # delta / mean_a (NaN when mean_a is 0)
    ci_low: float  # percentile bootstrap CI of delta (NaN below 2 queries)
    ci_high: float
    p_value: float  # two-sided paired randomization test of mean d_q = 0
    exact: bool  # p_value from full enumeration of sign flips
    effect_size: float  # mean(d_q) / sd(d_q) (NaN when every d_q is equal)
    wins: int  # queries where B is better
    ties: int
    losses: int
    resamples: int
    seed: int
    min_queries: int
    unit: Unit = "queries"  # what the interval and the test resample (see `Unit`)
    units: int = 0  # how many independent units there were: queries, clusters, or the fewer runs of the two sides
    runs: tuple[int, int] = (1, 1)  # training runs (checkpoints) of A and of B behind the figures

    @property
    def insufficient(self) -> bool:
        """Too few queries, clusters or runs for the slice to count on its own (docs/conventions.md)."""
        return self.n < self.min_queries or self.units < MIN_UNITS[self.unit]

    def to_dict(self) -> dict[str, float | int | bool | str]:
        """Plain fields for a table row (the runs as runs_a, runs_b: they survive a JSON round trip)."""
        fields = asdict(self)
        runs_a, runs_b = fields.pop("runs")
        return {**fields, "runs_a": runs_a, "runs_b": runs_b, "insufficient": self.insufficient}


def check_same_queries(ids_a: Sequence[str], ids_b: Sequence[str], what: str = "the two rankings") -> None:
    """Refuse to pair scores of different query sets: they are never silently aligned."""
    if list(ids_a) != list(ids_b):
        only_a, only_b = sorted(set(ids_a) - set(ids_b)), sorted(set(ids_b) - set(ids_a))
        detail = (
            f"{len(only_a)} queries only in the first, {len(only_b)} only in the second (e.g. {(only_a + only_b)[:3]})"
            if only_a or only_b
            else "the same ids in a different order"
        )
        raise CHTNError(
            f"Cannot compare {what}: they were not scored on the identical query set ({detail}). "
            "Evaluate both on the same dataset and split."
        )


def _described(a: np.ndarray, b: np.ndarray, min_queries: int) -> PairedComparison:
    """The figures every comparison shares (means, difference, effect size, wins / ties / losses), with no interval
    and no test yet; checks that a and b are paired, finite and non-empty."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise CHTNError(f"Paired scores need two equal-length vectors, got shapes {a.shape} and {b.shape}.")
    if len(a) == 0:
        raise CHTNError("No queries to compare: the slice is empty.")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise CHTNError("Per-query scores must be finite numbers; some are NaN or infinite.")
    d, n = b - a, len(a)
    sd = float(np.std(d, ddof=1)) if n >= 2 else 0.0
    mean_a = float(a.mean())
    return PairedComparison(
        n=n,
        mean_a=mean_a,
        mean_b=float(b.mean()),
        delta=float(d.mean()),
        relative=float(d.mean() / mean_a) if mean_a else float("nan"),
        ci_low=float("nan"),
        ci_high=float("nan"),
        p_value=float("nan"),
        exact=False,
        effect_size=float(d.mean() / sd) if sd > 0 else float("nan"),
        wins=int((d > TIE).sum()),
        ties=int((np.abs(d) <= TIE).sum()),
        losses=int((d < -TIE).sum()),
        resamples=0,
        seed=0,
        min_queries=min_queries,
        units=n,
    )


def paired_comparison(
    a: np.ndarray,
    b: np.ndarray,
    resamples: int = RESAMPLES,
    seed: int = 0,
    min_queries: int = MIN_QUERIES,
    stream: int = 0,
) -> PairedComparison:
    """Mean difference B - A over paired per-query scores, with its bootstrap CI and randomization p-value.

    The resamples come from `default_rng([seed, stream])`: one seed, recorded, and a stream per slice.
    """
    base = _described(a, b, min_queries)
    d = np.asarray(b, dtype=np.float64) - np.asarray(a, dtype=np.float64)
    n = len(d)
    rng = np.random.default_rng([seed, stream])
    ci_low = ci_high = float("nan")
    if n >= 2 and np.ptp(d) > 0:
        ci_low, ci_high = _percentile_interval(_bootstrap(lambda i: d[i].mean(axis=1), n, resamples, rng))
    elif n >= 2:  # every query moved by the same amount: every resample has that mean
        ci_low = ci_high = float(d[0])
    exact = n <= EXACT_UP_TO
    if np.all(np.abs(d) <= TIE):
        p_value = 1.0  # no query changed: every sign flip gives the observed mean
    elif exact:
        p_value = _exact_sign_flip_p(d)
    else:
        p_value = _random_sign_flip_p(d, resamples, rng)
    return replace(base, ci_low=ci_low, ci_high=ci_high, p_value=p_value, exact=exact, resamples=resamples, seed=seed)


def mean_interval(
    values: np.ndarray, resamples: int = RESAMPLES, seed: int = 0, stream: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap 95% CI of the mean of one sample (NaN below 2 values; the value itself when all agree).

    The resamples come from `default_rng([seed, stream])`, drawn in batches, as in `paired_comparison`.
    """
    values = np.asarray(values, dtype=np.float64)
    if len(values) < 2:
        return float("nan"), float("nan")
    if np.ptp(values) == 0:
        return float(values[0]), float(values[0])
    rng = np.random.default_rng([seed, stream])
    return _percentile_interval(_bootstrap(lambda i: values[i].mean(axis=1), len(values), resamples, rng))


def batch_size(resamples: int, n: int) -> int:
    """Resamples drawn at once for n observations: at most _BATCH_DRAWS values in memory (scipy's `batch`)."""
    return max(1, min(resamples, _BATCH_DRAWS // max(n, 1)))


def _batches(resamples: int, n: int) -> Iterator[int]:
    """The sizes of the successive batches of resamples (the last one may be smaller)."""
    size = batch_size(resamples, n)
    for start in range(0, resamples, size):
        yield min(size, resamples - start)


def _bootstrap(
    statistic: Callable[[np.ndarray], np.ndarray], n: int, resamples: int, rng: np.random.Generator
) -> np.ndarray:
    """The bootstrap distribution of a statistic of n observations: per batch, `rng.integers(0, n, (batch, n))`
    draws one row of indices per resample (as scipy.stats.bootstrap does) and `statistic` maps the index rows to
    one value each."""
    return np.concatenate([statistic(rng.integers(0, n, (size, n))) for size in _batches(resamples, n)])


def _percentile_interval(distribution: np.ndarray) -> tuple[float, float]:
    """The percentile interval at CONFIDENCE (linear interpolation, as scipy's `quantile`)."""
    alpha = (1 - CONFIDENCE) / 2
    low, high = np.quantile(distribution, [alpha, 1 - alpha])
    return float(low), float(high)


def _random_sign_flip_p(x: np.ndarray, resamples: int, rng: np.random.Generator) -> float:
    """Two-sided randomization p of sum(x) = 0: the share of random sign patterns whose |sum| reaches the
    observed one, counting the observed pattern among them ((hits + 1) / (resamples + 1), as scipy does). Each
    pattern is one random bit per value, 8 drawn per byte; with signs s = 2 * bit - 1 the flipped sum is
    2 * (bits @ x) - sum(x), one matrix product per batch."""
    n, total = len(x), float(x.sum())
    observed = abs(total) * (1 - 1e-12)
    hits = 0
    for size in _batches(resamples, n):
        bits = np.unpackbits(rng.integers(0, 256, (size, (n + 7) // 8), dtype=np.uint8), axis=1, count=n)
        hits += int((np.abs(2 * (bits.astype(np.float64) @ x) - total) >= observed).sum())
    return (hits + 1) / (resamples + 1)


def cluster_comparison(
    a: np.ndarray,
    b: np.ndarray,
    clusters: np.ndarray,
    resamples: int = RESAMPLES,
    seed: int = 0,
    min_queries: int = MIN_QUERIES,
    stream: int = 0,
) -> PairedComparison:
    """Mean difference B - A with whole clusters (categories) as the unit: the percentile bootstrap resamples
    clusters with replacement (the mean over the queries they hold), and the randomization test flips the sign of
    each cluster's differences together, exactly when there are at most EXACT_UP_TO clusters.

    For one checkpoint per side: a category's queries move together, so resampling them one by one understates the
    spread.
    """
    base = _described(a, b, min_queries)
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    names, inverse = np.unique(np.asarray(clusters), return_inverse=True)
    if len(inverse) != len(a):
        raise CHTNError(f"One cluster per query is needed: {len(a)} queries, {len(inverse)} cluster labels.")
    k, d = len(names), b - a
    sums = np.bincount(inverse, weights=d, minlength=k)
    sizes = np.bincount(inverse, minlength=k).astype(np.float64)
    rng = np.random.default_rng([seed, stream])
    ci_low = ci_high = float("nan")
    if k >= 2:
        ci_low, ci_high = _percentile_interval(
            _bootstrap(lambda i: sums[i].sum(axis=1) / sizes[i].sum(axis=1), k, resamples, rng)
        )
    exact = k <= EXACT_UP_TO
    if np.all(np.abs(sums) <= TIE):
        p_value = 1.0
    elif exact:
        p_value = _exact_sign_flip_p(sums)
    else:
        p_value = _random_sign_flip_p(sums, resamples, rng)
    return replace(
        base,
        ci_low=ci_low,
        ci_high=ci_high,
        p_value=float(p_value),
        exact=exact,
        resamples=resamples,
        seed=seed,
        unit="clusters",
        units=k,
    )


def runs_comparison(
    a_runs: Sequence[np.ndarray], b_runs: Sequence[np.ndarray], min_queries: int = MIN_QUERIES
) -> PairedComparison:
    """B - A with training runs as the unit: each run's mean over the slice's queries is one observation, and
    Welch's t (`welch_test`) gives the two-sided p and the 95% interval of the difference of the sides' means. The only
    comparison that holds training-seed variance, so the only one that speaks of recipes; it needs at least two
    runs per side. Wins / ties / losses and the effect size are those of the per-query means over each side's runs.
    """
    a_runs = [np.asarray(x, dtype=np.float64) for x in a_runs]
    b_runs = [np.asarray(x, dtype=np.float64) for x in b_runs]
    if not a_runs or not b_runs or len({x.shape for x in a_runs + b_runs}) != 1:
        raise CHTNError("Runs compared across sides must score the identical query set: equal-length vectors.")
    per_query = _described(np.mean(a_runs, axis=0), np.mean(b_runs, axis=0), min_queries)
    means_a, means_b = [float(x.mean()) for x in a_runs], [float(x.mean()) for x in b_runs]
    delta = float(np.mean(means_b) - np.mean(means_a))
    ci_low = ci_high = p_value = float("nan")
    if min(len(a_runs), len(b_runs)) >= 2:
        if np.ptp(means_a) == 0 and np.ptp(means_b) == 0:  # no spread between runs: the difference is exact
            ci_low = ci_high = delta
            p_value = 1.0 if abs(delta) <= TIE else 0.0
        else:  # one side without spread (every run perfect on a category) is valid: Welch rests on the other's
            p_value, ci_low, ci_high = welch_test(np.array(means_a), np.array(means_b))
    return replace(
        per_query,
        mean_a=float(np.mean(means_a)),
        mean_b=float(np.mean(means_b)),
        delta=delta,
        relative=delta / float(np.mean(means_a)) if np.mean(means_a) else float("nan"),
        ci_low=ci_low,
        ci_high=ci_high,
        p_value=p_value,
        unit="runs",
        units=min(len(a_runs), len(b_runs)),
        runs=(len(a_runs), len(b_runs)),
    )


def welch_test(a: np.ndarray, b: np.ndarray) -> tuple[float, float, float]:
    """Welch's unequal-variance t-test of mean(b) - mean(a): its two-sided p and 95% interval, as
    `scipy.stats.ttest_ind(b, a, equal_var=False)` gives them (tests/test_stats.py checks it). Written on the t
    distribution of scipy.special because importing scipy.stats builds every distribution it has, 0.5 s on 2 cores,
    which Compare and Source bias paid before their first answer on a new server. Needs two values a side and some
    spread."""
    from scipy.special import stdtr, stdtrit  # the t distribution's CDF and its inverse

    share_a, share_b = np.var(a, ddof=1) / len(a), np.var(b, ddof=1) / len(b)  # each mean's squared standard error
    se = np.sqrt(share_a + share_b)
    df = (share_a + share_b) ** 2 / (share_a**2 / (len(a) - 1) + share_b**2 / (len(b) - 1))  # Welch-Satterthwaite
    delta = float(np.mean(b) - np.mean(a))
    half_width = float(stdtrit(df, 0.5 + CONFIDENCE / 2) * se)
    return float(2 * stdtr(df, -abs(delta) / se)), delta - half_width, delta + half_width


def median_difference_ci(
    a: np.ndarray, b: np.ndarray, resamples: int = RESAMPLES, seed: int = 0, stream: int = 0
) -> tuple[float, float]:
    """Percentile 95% CI of median(b) - median(a) by the paired bootstrap (queries resampled together), for figures
    such as the own pair's median rank, whose difference is not a mean of per-query differences. NaN below 2."""

    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if len(a) < 2 or np.isnan(a).any() or np.isnan(b).any():
        return float("nan"), float("nan")
    if np.ptp(a) == 0 and np.ptp(b) == 0:
        return float(b[0] - a[0]), float(b[0] - a[0])
    rng = np.random.default_rng([seed, stream])
    median_a, median_b = _resampled_medians(a), _resampled_medians(b)
    return _percentile_interval(_bootstrap(lambda i: median_b(i) - median_a(i), len(a), resamples, rng))


def _resampled_medians(x: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    """A function giving `np.median(x[indices], axis=1)` for a matrix of resampled indices, bit for bit. Written
    here because that median spends its time gathering and partitioning float64 values: partitioning each row's ranks
    in x (int32) and reading the middle order statistics back needs half the memory, and the whole interval takes
    0.09 s instead of 0.13 s at 400 queries and 10,000 resamples (drawing the indices is most of the rest). Exact, as
    ranking keeps order: the k-th smallest rank in a row is the rank of its k-th smallest value. x holds no NaN."""
    order = np.argsort(x, kind="stable")
    ranks = np.empty(len(x), dtype=np.int32)
    ranks[order] = np.arange(len(x), dtype=np.int32)
    ordered = x[order]

    def medians(indices: np.ndarray) -> np.ndarray:
        middle = [(indices.shape[1] - 1) // 2, indices.shape[1] // 2]  # one place twice when the count is odd
        return ordered[np.partition(ranks[indices], middle, axis=1)[:, middle]].mean(axis=1)  # as np.median

    return medians


def _exact_sign_flip_p(d: np.ndarray) -> float:
    """Two-sided p of the sign-flip test by full enumeration: the share of the 2^n sign patterns whose |sum| is at
    least the observed one. Written here because scipy's exact path walks the 2^n patterns in Python batches
    (seconds per slice at n = 20); doubling the array of partial sums once per query takes milliseconds."""
    sums = np.zeros(1)
    for value in d:
        sums = np.concatenate([sums + value, sums - value])
    observed = abs(float(d.sum()))
    return float(np.mean(np.abs(sums) >= observed * (1 - 1e-12)))


def format_p(p: float) -> str:
    """A p- or q-value as the pages and reports print it: three decimals, "< 0.001" below that (never "0.000"),
    "n/a" when undefined."""
    if not np.isfinite(p):
        return "n/a"
    return "< 0.001" if p < 0.001 else f"{p:.3f}"


def interval_label(units: Iterable[str]) -> str:
    """What the 95% intervals of comparisons with these units (`PairedComparison.unit`) are, for an axis or caption."""
    if set(units) == {"runs"}:
        return "95% CI across training runs (Welch)"
    return "95% CI over test queries (paired bootstrap)"


def adjust_p_values(p_values: Sequence[float] | np.ndarray, method: Literal["holm", "bh"]) -> np.ndarray:
    """Multiplicity-adjusted p-values: Holm (family-wise, for blocking rules) or Benjamini-Hochberg (FDR, flags).

    Both are written here, as `scipy.stats.false_discovery_control` gives BH (tests/test_stats.py checks it): scipy has
    no Holm, statsmodels (which does) is a heavy dependency for six lines, and importing scipy.stats for BH's three
    lines cost Source bias 0.5 s before its first answer (`welch_test`).
    """
    p = np.asarray(p_values, dtype=np.float64)
    if p.size == 0:
        return p
    if method not in ("holm", "bh"):
        raise CHTNError(f"Unknown multiplicity method {method!r}; use 'holm' or 'bh'.")
    order = np.argsort(p, kind="stable")
    m = len(p)
    if method == "bh":  # step-up: p_(i) m / i, then the running minimum from the largest p down
        scaled = p[order] * m / np.arange(1, m + 1)
        stepped = np.minimum(1.0, np.minimum.accumulate(scaled[::-1])[::-1])
    else:  # Holm's step-down: p_(i) (m - i + 1), then the running maximum from the smallest p up
        stepped = np.maximum.accumulate(np.minimum(1.0, (m - np.arange(m)) * p[order]))
    adjusted = np.empty_like(p)
    adjusted[order] = stepped
    return adjusted


def compare_slices(
    a: np.ndarray,
    b: np.ndarray,
    slices: dict[str, np.ndarray],
    method: Literal["holm", "bh"],
    resamples: int = RESAMPLES,
    seed: int = 0,
    min_queries: int = MIN_QUERIES,
) -> pd.DataFrame:
    """One comparison per named slice (a boolean mask over the queries), adjusted across the slices.

    `a` and `b` hold per-query scores, (n,) for one run or (runs, n) for several training runs of a side. With two
    or more runs on both sides each slice is compared across runs (`runs_comparison`); otherwise each side's runs are
    averaged per query and the slice's queries are resampled (`paired_comparison`). Each slice draws from its own
    stream, `default_rng([seed, crc32(name)])`, so its figures depend on the seed and its name only, not on which
    other slices were asked for. Empty slices are left out. Insufficient slices (too few queries or runs) are
    reported but take no part in the adjustment (they never flag on their own).
    """
    runs_a, runs_b = np.atleast_2d(np.asarray(a, dtype=np.float64)), np.atleast_2d(np.asarray(b, dtype=np.float64))
    across_runs = min(len(runs_a), len(runs_b)) >= 2
    rows = []
    for name, mask in slices.items():
        mask = np.asarray(mask, dtype=bool)
        if not mask.any():
            continue
        if across_runs:
            result = runs_comparison(list(runs_a[:, mask]), list(runs_b[:, mask]), min_queries)
        else:
            stream = zlib.crc32(name.encode())
            mean_a, mean_b = runs_a[:, mask].mean(axis=0), runs_b[:, mask].mean(axis=0)
            result = replace(
                paired_comparison(mean_a, mean_b, resamples, seed, min_queries, stream),
                runs=(len(runs_a), len(runs_b)),
            )
        rows.append({"slice": name, **result.to_dict()})
    frame = pd.DataFrame(rows)
    if frame.empty:
        return frame
    counted = ~frame["insufficient"]
    frame["p_adjusted"] = np.nan
    frame.loc[counted, "p_adjusted"] = adjust_p_values(frame.loc[counted, "p_value"].to_numpy(), method)
    frame["adjustment"] = method
    return frame
