"""How far the reviewers agree: Krippendorff's alpha and Cohen's kappa over the items that two or more reviewers
judged, per queue and per verdict class, and the items still disputed.

Alpha (nominal, the `krippendorff` package) takes any number of reviewers and missing verdicts; kappa
(scikit-learn) is a two-reviewer statistic, given for each pair of reviewers that share two or more items and
averaged. Both are chance-corrected: 1 is full agreement, 0 what reviewers who picked at random with the same
frequencies would reach. Either is undefined (None, with the reason) when every verdict is the same class: nothing
then separates agreement from chance.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from itertools import combinations

import numpy as np
import pandas as pd

from analysis.review.store import VERDICTS

KEY = ["query_id", "direction"]


@dataclass(frozen=True)
class Agreement:
    """Agreement over the items with two or more reviewers' current verdicts."""

    items: int  # items judged by two or more reviewers
    reviewers: int  # distinct reviewers of those items
    alpha: float | None  # Krippendorff's alpha (nominal); None when undefined
    kappa: float | None  # Cohen's kappa, mean over reviewer pairs that share >= 2 items; None when undefined
    kappa_pairs: int  # the reviewer pairs averaged into `kappa`
    per_class: pd.DataFrame  # verdict, items (with it from at least one reviewer), alpha (that class against the rest)
    disputed: pd.DataFrame  # query_id, direction, verdicts ("alice: model error; bob: label noise")
    note: str  # what the figures rest on, or why they are missing

    def summary(self) -> str:
        """One line for a page, a CLI or a report."""
        if self.alpha is None:
            return self.note
        kappa = "" if self.kappa is None else f", Cohen's kappa {self.kappa:.2f} (mean of {self.kappa_pairs} pairs)"
        return f"Krippendorff's alpha {self.alpha:.2f}{kappa}: {self.note}"


def _alpha(codes: np.ndarray, domain: list[int]) -> float | None:
    """Nominal alpha of a reviewers x items matrix of class codes (NaN: no verdict); None when undefined."""
    import krippendorff  # lazy: only the agreement figures need it

    if len(np.unique(codes[~np.isnan(codes)])) < 2:  # one class only: expected disagreement is 0
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        value = float(krippendorff.alpha(reliability_data=codes, level_of_measurement="nominal", value_domain=domain))
    return value if np.isfinite(value) else None


def _kappa(matrix: pd.DataFrame) -> tuple[float | None, int]:
    """Mean Cohen's kappa over reviewer pairs with two or more shared items, and how many pairs it averages."""
    from sklearn.metrics import cohen_kappa_score  # lazy: only the agreement figures need it

    values = []
    for a, b in combinations(matrix.columns, 2):
        shared = matrix[[a, b]].dropna()
        if len(shared) < 2 or shared.stack().nunique() < 2:
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            value = cohen_kappa_score(shared[a], shared[b], labels=list(VERDICTS))
        if np.isfinite(value):
            values.append(float(value))
    return (float(np.mean(values)) if values else None), len(values)


def agreement(current: pd.DataFrame, items: pd.DataFrame | None = None) -> Agreement:
    """Agreement of the current verdicts (one row per reviewer and item: query_id, direction, reviewer, verdict),
    restricted to `items` (a queue's query_id/direction rows) when given."""
    verdicts = current[[*KEY, "reviewer", "verdict"]] if len(current) else pd.DataFrame()
    if items is not None and len(verdicts):
        verdicts = verdicts.merge(items[KEY].drop_duplicates(), on=KEY)
    matrix = pd.DataFrame()
    if len(verdicts):
        matrix = verdicts.pivot_table(index=KEY, columns="reviewer", values="verdict", aggfunc="last")
        matrix = matrix[matrix.notna().sum(axis=1) >= 2]
    if len(matrix) == 0:
        note = "No item has verdicts from two or more reviewers yet: agreement needs at least two per item."
        empty = pd.DataFrame(columns=["verdict", "items", "alpha"])
        return Agreement(0, 0, None, None, 0, empty, pd.DataFrame(columns=[*KEY, "verdicts"]), note)
    matrix = matrix.loc[:, matrix.notna().any()]
    codes = matrix.apply(lambda column: column.map({v: i for i, v in enumerate(VERDICTS)})).to_numpy(float).T
    alpha = _alpha(codes, list(range(len(VERDICTS))))
    kappa, pairs = _kappa(matrix)
    per_class = pd.DataFrame(
        [
            {
                "verdict": verdict,
                "items": int((matrix == verdict).any(axis=1).sum()),
                "alpha": _alpha(np.where(np.isnan(codes), np.nan, (codes == i).astype(float)), [0, 1]),
            }
            for i, verdict in enumerate(VERDICTS)
        ]
    )
    split = matrix[matrix.nunique(axis=1) > 1]
    disputed = pd.DataFrame(
        {
            "query_id": split.index.get_level_values("query_id"),
            "direction": split.index.get_level_values("direction"),
            "verdicts": ["; ".join(f"{r}: {v}" for r, v in row.dropna().items()) for _, row in split.iterrows()],
        }
    )
    n, reviewers = len(matrix), int(matrix.notna().any().sum())
    if alpha is None:
        note = (
            f"Every item with two or more reviewers ({n}) got the same verdict: agreement beyond chance is undefined."
        )
    else:
        note = f"{n} items judged by two or more of {reviewers} reviewers, {len(disputed)} disputed."
    return Agreement(n, reviewers, alpha, kappa, pairs, per_class, disputed, note)
