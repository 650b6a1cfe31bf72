"""The Compare page's use cases over the review database, without Streamlit: what the two checkpoints are, the
review evidence on the candidate's regressions, recording the team's go/no-go decision, and the tables the page
shows beside them. The page only draws what these return, so tests reach every decision without a browser.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd

from analysis.compare.decisions import RepeatedDecision, save_decision
from analysis.compare.figures import Outcome
from analysis.compare.rules import rules_table
from analysis.review.store import ReviewStore
from analysis.store import StoreError
from chtn.checkpoint import Checkpoint, code_version

LOG_COLUMNS = ["id", "decision", "deciders", "rationale", "override_reason", "gate", "created_at", "superseded_by"]


@dataclass(frozen=True)
class Pair:
    """What a comparison is between: the dataset (fingerprint) and both checkpoints (content hashes and names)."""

    dataset: str
    baseline: str
    candidate: str
    baseline_name: str
    candidate_name: str


@dataclass(frozen=True)
class DecisionForm:
    """What the room filled in: the decision (None: none chosen yet), the override's reason, who decided, and why."""

    decision: str | None
    override_reason: str = ""
    deciders: str = ""
    rationale: str = ""


@dataclass(frozen=True)
class Recorded:
    """How recording a decision ended. "recorded": `record` is the stored row; "repeated": it is the comparison's
    current decision already, nothing was added; "refused": nothing was stored, the text stays in the form."""

    outcome: Literal["recorded", "repeated", "refused"]
    message: str
    record: dict | None = None


def decision_record(pair: Pair, form: DecisionForm, outcome: Outcome, review_counts: dict[str, int]) -> dict:
    """The `decisions` row of a decision on this comparison: the form, and the evidence it was taken on (the rule
    file, every rule's figures, the gate's summary, the reviewers' verdict counts on the regressions)."""
    rules = outcome.rules
    return dict(
        dataset=pair.dataset,
        baseline=pair.baseline,
        candidate=pair.candidate,
        baseline_name=pair.baseline_name,
        candidate_name=pair.candidate_name,
        decision=form.decision,
        override_reason=form.override_reason,
        deciders=form.deciders,
        rationale=form.rationale,
        rule_source=rules.source,
        rule_text=rules.text,
        rule_sha256=rules.sha256,
        resamples=outcome.comparison.resamples,
        seed=outcome.comparison.seed,
        gate=outcome.decision.summary,
        rules=rules_table(outcome.results).to_dict("records"),
        review_counts=review_counts,
        code_version=code_version(),
    )


def record_decision(
    store: ReviewStore | None,
    store_error: str | None,
    pair: Pair,
    form: DecisionForm,
    outcome: Outcome,
    review_counts: dict[str, int],
) -> Recorded:
    """Record a decision: append it to the review database (`decisions.save_decision`, append-only: a later decision
    supersedes). Never raises for what the room can fix: no database, no decision chosen, a missing reason or
    deciders, a database error (all "refused"), or the same decision recorded twice ("repeated")."""
    if store is None:
        return Recorded("refused", f"Not recorded: {store_error} Your text is still in the form.")
    if form.decision is None:
        return Recorded("refused", "Not recorded: choose a decision.")
    try:
        record = save_decision(store, **decision_record(pair, form, outcome, review_counts))
    except RepeatedDecision as exc:  # refused, not failed: the record the room wanted is there
        return Recorded("repeated", f"**Not recorded again.** {exc}")
    except StoreError as exc:
        return Recorded("refused", f"**Not recorded.** {exc} Your text is still in the form.")
    return Recorded("recorded", "Decision recorded", record)


def trained_on_other_data(one: Checkpoint, other: Checkpoint) -> bool:
    """Whether two checkpoints record different training datasets (fingerprints); False when one does not say."""
    first, second = ((c.meta.get("dataset") or {}).get("fingerprint") for c in (one, other))
    return bool(first and second and first != second)


def training_data_note(baseline: Checkpoint, candidate: Checkpoint, split: str) -> str | None:
    """What to know when A and B were trained on different datasets: both are scored on this test split, so one of
    them on data it was not trained for. None when they were trained on the same (or a checkpoint does not say)."""
    if not trained_on_other_data(baseline, candidate):
        return None
    a, b = ((c.meta.get("dataset") or {}) for c in (baseline, candidate))
    return (
        f"**A and B were trained on different datasets:** A `{baseline.path.stem}` on {a.get('path', '?')}, B "
        f"`{candidate.path.stem}` on {b.get('path', '?')}. Both are scored on the test split of {split}; pick a "
        "baseline trained on B's dataset in the sidebar to compare models of the same data."
    )


def concerned_checkpoint(change: str, baseline: str, candidate: str) -> str:
    """The checkpoint that mis-retrieves the queries of a change: the baseline for those B fixed or made better, the
    candidate for those it broke or made worse (what the explorer and attribution links open)."""
    return baseline if change in ("fixed", "better") else candidate


def review_evidence(counts: dict[str, int]) -> str:
    """The review queue's verdicts on B's regressions, in words, as the decision form shows them."""
    return "Verdicts of the review queue on B's regressions: " + (
        ", ".join(f"{k} {v}" for k, v in counts.items()) or "none yet"
    )


def decision_log(decisions: list[dict]) -> pd.DataFrame:
    """The comparison's decisions (newest first) as the page lists them: what was decided, by whom, why, and which
    later decision superseded each."""
    return pd.DataFrame(decisions, columns=LOG_COLUMNS)


def aligned_points(
    coords_a: np.ndarray, coords_b: np.ndarray, ids: Sequence[str], labels: Sequence[int], label_names: Sequence[str]
) -> pd.DataFrame:
    """Both checkpoints' projections of the test split (images, then texts, in A's coordinates) as one table: where
    each item is for A and for B, with its id, modality and category."""
    n = len(ids)
    return pd.DataFrame(
        {
            "x_a": coords_a[:, 0],
            "y_a": coords_a[:, 1],
            "x_b": coords_b[:, 0],
            "y_b": coords_b[:, 1],
            "id": list(ids) * 2,
            "modality": ["image"] * n + ["text"] * n,
            "category": [label_names[label] for label in labels] * 2,
        }
    )
