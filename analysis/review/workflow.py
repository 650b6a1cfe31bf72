"""The review workflow over a store: what the Review page and `chtn review` share between the queue logic
(:mod:`analysis.review.queue`) and the database (:mod:`analysis.review.store`).

A meeting queue is recorded in the store with its item list the first time it is opened; from then on its link
opens that list, in that order, whatever changes in the code that builds queues.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from analysis.review import queue as rq
from analysis.review.store import ReviewStore
from chtn.errors import CHTNError
from chtn.files import read_bounded

MAX_SPEC_BYTES = 100_000  # a queue spec is a short JSON object; a larger file was given by mistake
SPEC_FILE_FIX = 'Give a JSON file holding one object such as {"size": 30, "seed": 0}.'


@dataclass(frozen=True)
class ReviewState:
    """A checkpoint's queries with their review status, as one reviewer's screen or an export sees them."""

    annotated: pd.DataFrame  # review_queue.annotate: every query, status, change since `previous`
    current: pd.DataFrame  # the store's current verdicts on this checkpoint (latest per reviewer)
    previous: str | None  # "name (hash)" of the last reviewed other checkpoint of the dataset, None if none


def review_state(store: ReviewStore | None, outcomes: pd.DataFrame, dataset: str, checkpoint: str) -> ReviewState:
    """Outcomes joined with the store's verdicts and the last reviewed other checkpoint's snapshot."""
    if store is None:
        return ReviewState(rq.annotate(outcomes, pd.DataFrame()), pd.DataFrame(), None)
    current = store.current_verdicts(dataset, checkpoint)
    reviewed = store.reviewed_checkpoints(dataset)
    reviewed = reviewed[reviewed["checkpoint"] != checkpoint]
    previous, name = None, None
    if len(reviewed):
        last = reviewed.iloc[0]
        previous, name = (
            store.outcomes(dataset, last["checkpoint"]),
            f"{last['checkpoint_name']} ({last['checkpoint'][:8]})",
        )
    return ReviewState(rq.annotate(outcomes, current, previous), current, name)


def open_queue(
    store: ReviewStore | None,
    annotated: pd.DataFrame,
    spec: rq.QueueSpec,
    queue_id: str,
    checkpoint: str,
    dataset: str,
    created_by: str = "",
) -> pd.DataFrame:
    """The meeting queue `queue_id`: the stored item list when the store has it; otherwise built from `spec`
    (which must give that id on this checkpoint and dataset) and recorded. `CHTNError` when the link does not fit."""
    stored = store.queue(queue_id) if store is not None else None
    if stored is not None:
        if stored["checkpoint"] != checkpoint or stored["dataset"] != dataset:
            raise CHTNError(_OTHER.format(queue_id=queue_id))
        return rq.queue_from_items(annotated, stored["spec"]["items"])
    if spec.queue_id(checkpoint, dataset) != queue_id:
        raise CHTNError(_OTHER.format(queue_id=queue_id))
    queue = rq.meeting_queue(annotated, spec)
    if store is not None:
        items = [[q, d] for q, d in zip(queue["query_id"], queue["direction"])]
        store.save_queue(
            queue_id,
            dataset=dataset,
            checkpoint=checkpoint,
            spec={"spec": asdict(spec), "items": items},
            created_by=created_by,
        )
    return queue


def queue_title(store: ReviewStore | None, queue_id: str, spec: rq.QueueSpec) -> str:
    """What a meeting queue is, in words: its recorded title (e.g. "regressions of B") or its spec."""
    stored = store.queue(queue_id) if store is not None else None
    return (stored or {}).get("spec", {}).get("title") or spec.describe()


_OTHER = (
    "The meeting queue {queue_id} was made for another checkpoint or dataset, or its spec was edited: open it with "
    "the checkpoint and dataset it was made for, or start a new queue."
)


def spec_from_text(text: str, store: ReviewStore | None) -> tuple[rq.QueueSpec, str | None]:
    """`--spec` of the CLI: a queue id recorded in the store (-> its spec and id), a JSON file, or inline
    `size=30,seed=0,strata=category+direction` / JSON text (-> the spec, no id yet)."""
    text = text.strip()
    if store is not None and (stored := store.queue(text)) is not None:
        fields: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in stored["spec"]["spec"].items()}
        return rq.QueueSpec(**fields), text  # QueueSpec checks the stored values
    if text.endswith(".json"):
        try:
            text = read_bounded(Path(text), MAX_SPEC_BYTES, "The queue spec file", SPEC_FILE_FIX).decode("utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise CHTNError(f"Cannot read the queue spec file {text}: {exc}.") from None
    return rq.QueueSpec.parse(text), None


def history_lines(history: pd.DataFrame, checkpoint: str) -> list[str]:
    """Other checkpoints' current verdicts on one query (`store.query_history`, newest first), grouped:
    "label noise — 2 reviewers, checkpoint 0abe07f6 (chtn_no_source)"."""
    earlier = history[history["checkpoint"] != checkpoint].drop_duplicates(["checkpoint", "reviewer"])
    lines = []
    for (digest, name, verdict), group in earlier.groupby(["checkpoint", "checkpoint_name", "verdict"], sort=False):
        count = len(group)
        lines.append(f"{verdict} — {count} reviewer{'s' if count > 1 else ''}, checkpoint {digest[:8]} ({name})")
    return lines


def regressions_queue(store: ReviewStore, queries: pd.DataFrame, dataset: str, baseline: str, candidate: str) -> str:
    """Record the candidate's regressions (queries it broke, largest AP loss first) as a meeting queue of the
    candidate, "regressions of B", and return its id (a content hash: recording it again changes nothing)."""
    broken = queries[queries["change"] == "broken"].sort_values("ap_change", kind="stable")
    items = [[q, d] for q, d in zip(broken["query_id"], broken["direction"])]
    queue_id = hashlib.sha256(json.dumps(["regressions", dataset, baseline, candidate, items]).encode()).hexdigest()
    spec = {"spec": asdict(rq.QueueSpec(size=max(len(items), 1))), "items": items, "title": "regressions of B"}
    store.save_queue(queue_id[:12], dataset=dataset, checkpoint=candidate, spec=spec, created_by=f"compare {baseline}")
    return queue_id[:12]
