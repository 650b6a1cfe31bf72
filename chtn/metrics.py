"""The retrieval metrics, named once for the project: the evaluation summary, the comparison's figures, rule files,
pages and reports all use these names and labels.

A metric without a direction (``map``, ``pair_recall@k``) is, per query, the mean of its I->T and T->I values;
the own pair's median rank exists per direction only.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from chtn.directions import ARROWS, DIRECTIONS, Direction

RECALL_AT = (1, 10)  # the k of the own-pair recall@k figures


@dataclass(frozen=True)
class Metric:
    """One metric: its name in rule files, figures and JSON (e.g. ``map_i2t``), what it measures in words, its
    direction (None: the mean of both), and which way is better."""

    name: str
    measure: str  # e.g. "MAP", "own-pair recall@1"
    direction: Direction | None
    higher_is_better: bool = True

    def label(self, arrows: Mapping[str, str] = ARROWS) -> str:
        """E.g. "MAP I->T"; `arrows=DIRECTION_NAMES` gives the dashboard's "MAP Image → Text"."""
        return f"{self.measure} {arrows[self.direction]}" if self.direction else self.measure

    def headline(self) -> str:
        """The label with what a reader must know to read the number: mean of directions, lower is better."""
        label = self.label() + (" (mean of directions)" if self.direction is None else "")
        return label + ("" if self.higher_is_better else " (lower is better)")


def _family(name: str, measure: str, *, mean: bool = True, higher_is_better: bool = True) -> list[Metric]:
    """The metric's direction mean (if it has one), then one per direction."""
    directional = [Metric(f"{name}_{d}", measure, d, higher_is_better) for d in DIRECTIONS]
    return ([Metric(name, measure, None, higher_is_better)] if mean else []) + directional


# In the order headline tables show them.
METRICS: dict[str, Metric] = {
    metric.name: metric
    for metric in (
        *_family("map", "MAP"),
        *(m for k in RECALL_AT for m in _family(f"pair_recall@{k}", f"own-pair recall@{k}")),
        *_family("pair_median_rank", "own-pair median rank", mean=False, higher_is_better=False),
    )
}
