"""The review workflow over a store: the use cases of the Review page and `chtn review` between the queue logic
(:mod:`analysis.review.queue`), the drafts (:mod:`analysis.review.drafts`) and the database
(:mod:`analysis.review.store`): reading the review state, opening a queue, walking it, saving the verdicts typed.

A meeting queue is recorded in the store with its item list the first time it is opened; from then on its link
opens that list, in that order, whatever changes in the code that builds queues.

No Streamlit here: the page only draws what these functions return, so tests reach every decision without a browser.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pandas as pd

from analysis import outcomes as oc
from analysis.review import queue as rq
from analysis.review.drafts import Draft, PendingVerdict, SaveResult, SaveTarget, VerdictDesk
from analysis.review.store import MAX_REVIEWER_CHARS, ReviewStore
from analysis.store import StoreError
from chtn.directions import DIRECTION_NAMES
from chtn.errors import CHTNError
from chtn.files import read_bounded
from chtn.ranking import describe_tie, own_pair_headline

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


def open_review_state(
    store: ReviewStore | None, outcomes: pd.DataFrame, dataset: str, checkpoint: str
) -> tuple[ReviewState, str | None]:
    """`review_state`, or when the store opened but cannot be read now (e.g. the server went away) the state
    without verdicts and the reason: the queue is still shown, and the page says why nothing can be saved."""
    try:
        return review_state(store, outcomes, dataset, checkpoint), None
    except StoreError as exc:
        return review_state(None, outcomes, dataset, checkpoint), str(exc)


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


def start_meeting(spec: rq.QueueSpec, checkpoint: str, dataset: str) -> dict[str, str]:
    """The URL parameters of a new meeting queue on this checkpoint and dataset, at its first item: the link everyone
    in the meeting opens (the queue id is a hash of the spec, so the same spec gives the same link)."""
    return {"queue": spec.queue_id(checkpoint, dataset), "item": "1", **spec.to_params()}


def open_meeting(
    store: ReviewStore | None,
    annotated: pd.DataFrame,
    params: Mapping[str, str],
    checkpoint: str,
    dataset: str,
    created_by: str = "",
) -> tuple[rq.QueueSpec, pd.DataFrame]:
    """The meeting queue a link names (`queue` and the spec's parameters): its spec and items, recorded in the store
    the first time (`open_queue`). `CHTNError` for a bad spec, a link made for another checkpoint or dataset, or a
    store that refused to record it."""
    spec = rq.QueueSpec.from_params(params)
    return spec, open_queue(store, annotated, spec, str(params.get("queue", "")), checkpoint, dataset, created_by)


def all_misretrievals(
    annotated: pd.DataFrame,
    categories: Sequence[str] = (),
    directions: Sequence[str] = (),
    statuses: Sequence[str] = (),
    changed_only: bool = False,
) -> pd.DataFrame:
    """The queue outside a meeting: every mis-retrieved query passing the filters (`queue.filter_table`)."""
    return rq.filter_table(oc.misretrievals(annotated), categories, directions, statuses, changed_only)


def queue_title(store: ReviewStore | None, queue_id: str, spec: rq.QueueSpec) -> str:
    """What a meeting queue is, in words: its recorded title (e.g. "regressions of B") or its spec."""
    stored = store.queue(queue_id) if store is not None else None
    return (stored or {}).get("spec", {}).get("title") or spec.describe()


def queue_name(store: ReviewStore | None, queue_id: str | None, spec: rq.QueueSpec | None) -> str:
    """Which queue an export holds: "meeting queue <id> (<title>)", or "all mis-retrievals" outside a meeting."""
    if queue_id is None or spec is None:
        return "all mis-retrievals"
    return f"meeting queue {queue_id} ({queue_title(store, queue_id, spec)})"


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


def item_record(store: ReviewStore | None, dataset: str, query_id: str, direction: str) -> tuple[pd.DataFrame, str]:
    """Every checkpoint's verdict rows on one item, newest first (`store.query_history`), or an empty table and the
    reason when there is no store or it cannot be read now."""
    if store is None:
        return pd.DataFrame(), "no review database"
    try:
        return store.query_history(dataset, query_id, direction), ""
    except StoreError as exc:
        return pd.DataFrame(), str(exc)


def current_on(record: pd.DataFrame, checkpoint: str) -> pd.DataFrame:
    """The current verdict (latest row) of each reviewer of an item on `checkpoint`, from its `item_record`."""
    if record.empty:
        return record
    return record[record["checkpoint"] == checkpoint].drop_duplicates("reviewer").sort_values("id")


def trail_lines(record: pd.DataFrame, checkpoint: str) -> list[str]:
    """An item's verdicts on `checkpoint`, oldest first, a changed one marked as replaced; empty when no reviewer
    changed their verdict (the current verdicts then say it all)."""
    rows = record[record["checkpoint"] == checkpoint].sort_values("id") if len(record) else record
    if rows.empty or len(rows) == rows["reviewer"].nunique():
        return []
    latest = set(rows.drop_duplicates("reviewer", keep="last")["id"])
    return [
        f"{pd.Timestamp(r.created_at):%Y-%m-%d %H:%M} UTC · {r.reviewer}: {r.verdict}"
        + ("" if r.id in latest else " (replaced)")
        for r in rows.itertuples()
    ]


def regressions_queue(store: ReviewStore, queries: pd.DataFrame, dataset: str, baseline: str, candidate: str) -> str:
    """Record the candidate's regressions (queries it broke, largest AP loss first) as a meeting queue of the
    candidate, "regressions of B", and return its id (a content hash: recording it again changes nothing)."""
    broken = queries[queries["change"] == "broken"].sort_values("ap_change", kind="stable")
    items = [[q, d] for q, d in zip(broken["query_id"], broken["direction"])]
    queue_id = hashlib.sha256(json.dumps(["regressions", dataset, baseline, candidate, items]).encode()).hexdigest()
    spec = {"spec": asdict(rq.QueueSpec(size=max(len(items), 1))), "items": items, "title": "regressions of B"}
    store.save_queue(queue_id[:12], dataset=dataset, checkpoint=candidate, spec=spec, created_by=f"compare {baseline}")
    return queue_id[:12]


@dataclass(frozen=True)
class Tally:
    """The counts at the top of the Review page."""

    reviewed: int  # reviewed or disputed: someone gave a verdict
    total: int  # items in the queue
    unreviewed: int
    disputed: int
    new_regressions: int  # retrieved well by the last reviewed checkpoint, mis-retrieved now
    mis_retrieved: int  # over every query of the checkpoint, not only the queue's
    queries: int


def tally(queue: pd.DataFrame, outcomes: pd.DataFrame) -> Tally:
    """The queue's items by verdict status and change, and the checkpoint's mis-retrieved queries in all."""
    counts = rq.counts(queue)
    return Tally(
        reviewed=counts["reviewed"] + counts["disputed"],
        total=counts["total"],
        unreviewed=counts["unreviewed"],
        disputed=counts["disputed"],
        new_regressions=int((queue["change"] == "new regression").sum()) if len(queue) else 0,
        mis_retrieved=int(outcomes["mis_retrieved"].sum()),
        queries=len(outcomes),
    )


def item_position(text: str | None, length: int) -> int:
    """The URL's `item` (1-based) within a queue of `length` items: clamped into it; anything but a short whole
    number opens the first item (a link is never an error)."""
    position = int(text) if text is not None and text.isdecimal() and len(text) < 7 else 1
    return min(max(position, 1), max(length, 1))


def next_unreviewed(queue: pd.DataFrame, position: int) -> int | None:
    """The position of the first unreviewed item after `position`, None when none is left."""
    later = queue[(queue["status"] == "unreviewed") & (queue["position"] > position)]
    return int(later["position"].iloc[0]) if len(later) else None


def item_label(position: int, query_id: str, direction: str) -> str:
    """How messages name an item: "#3 · query 1234 (i2t)"."""
    return f"#{position} · query {query_id} ({direction})"


CHOICE_COLUMNS = ("position", "query_id", "direction", "category", "status")  # what `choice_label` reads


def choice_labels(items: pd.DataFrame, has_draft: Callable[[str, str], bool]) -> list[str]:
    """Every item's label in the picker, in queue order, from one pass over the five columns it shows (a queue of all
    mis-retrievals holds tens of thousands of items at scale, and the page draws the picker on every click)."""
    rows = zip(*(items[column].tolist() for column in CHOICE_COLUMNS))
    return [choice_label(dict(zip(CHOICE_COLUMNS, row)), has_draft(row[1], row[2])) for row in rows]


def choice_label(item: Mapping[str, Any], unsaved: bool) -> str:
    """An item in the picker: "#3 · 1234 · Image → Text · Heels · unreviewed", flagged when it holds a draft."""
    direction = DIRECTION_NAMES[item["direction"]]
    text = f"#{item['position']} · {item['query_id']} · {direction} · {item['category']} · {item['status']}"
    return text + (" · unsaved draft" if unsaved else "")


def drafts_elsewhere(unsaved: Sequence[tuple[str, str]], here: tuple[str, str], queue: pd.DataFrame) -> list[str]:
    """The other items holding an unsaved draft, by their position in this queue ("#3"), or by query id and
    direction when this queue does not hold them."""
    others = [key for key in unsaved if key != here]
    if not others:  # the usual case: no need to index a queue of thousands
        return []
    where = dict(zip(zip(queue["query_id"], queue["direction"]), queue["position"]))
    return [f"#{where[k]}" if k in where else f"{k[0]} ({k[1]}, not in this queue)" for k in others]


def item_headline(
    item: pd.Series, paired_rank: int, paired_tie: tuple[int, int, int] | None, previous: str | None
) -> str:
    """The item's heading (Markdown): position, direction, query, category, error kind, severity, AP, where its own
    pair ranks (a tie group as its range) and what changed since the last reviewed checkpoint."""
    kind = oc.KINDS.get(item["kind"], item["kind"] or "retrieved well")
    gallery_order = f" (#{paired_rank} in gallery order)" if paired_tie and describe_tie(*paired_tie) else ""
    return (
        f"**#{item['position']} · {DIRECTION_NAMES[item['direction']]}** · query `{item['query_id']}` · "
        f"**{item['category']}** · {kind} · severity {item['severity']:.2f}  \n"
        f"AP {item['ap']:.3f} · its own pair: {own_pair_headline(paired_rank, paired_tie)}{gallery_order} · "
        f"top-1 is *{item['top1_category']}* · since {previous or 'no earlier reviewed checkpoint'}: "
        f"**{item['change']}**"
    )


def item_verdicts(current: pd.DataFrame, query_id: str, direction: str) -> pd.DataFrame:
    """The current verdicts (one per reviewer) on one item."""
    if current.empty:
        return current
    return current[(current["query_id"] == query_id) & (current["direction"] == direction)]


def reviewer_verdict(verdicts: pd.DataFrame, reviewer: str) -> Draft | None:
    """This reviewer's current verdict on the item as a draft (what the form shows), None when they gave none."""
    if not reviewer or verdicts.empty:
        return None
    own = verdicts[verdicts["reviewer"] == reviewer]
    return Draft(own.iloc[-1]["verdict"], own.iloc[-1]["note"]) if len(own) else None


def reviewer_from_cookie(value: object) -> str:
    """The name the browser kept (URL-encoded in its cookie), cut to the name field's length; "" when none (or when
    the value is not text: Streamlit's AppTest has no browser and answers with a stand-in object)."""
    return unquote(value).strip()[:MAX_REVIEWER_CHARS] if isinstance(value, str) else ""


def note_excerpt(note: str, limit: int = 2000) -> str:
    """A stored note as the page shows it: whole up to `limit` characters, else cut, saying how long it is."""
    return note if len(note) <= limit else note[:limit] + f"… ({len(note):,} characters in all)"


def save_pending(
    desk: VerdictDesk,
    store: ReviewStore | None,
    store_error: str,
    target: SaveTarget,
    announce: Callable[[PendingVerdict], None] = lambda pending: None,
) -> SaveResult | None:
    """Save a verdict: store every verdict whose Save was pressed (or that was left with a verdict chosen), oldest
    first, before anything else is drawn; `announce` is told which one is being saved. Returns the latest save this
    session completed (a run cut short by the next key press leaves it for the next run to report)."""
    while waiting := desk.pending():
        announce(waiting[0])
        desk.save_next(store, store_error, target)
    return desk.last_saved()


def verdict_history(store: ReviewStore | None, dataset: str, checkpoint: str) -> tuple[pd.DataFrame, str | None]:
    """Every verdict on this checkpoint, superseded ones too (what the JSON export keeps), or an empty table and the
    reason when the store cannot give it."""
    if store is None:
        return pd.DataFrame(), None
    try:
        return store.verdicts(dataset, checkpoint), None
    except StoreError as exc:
        return pd.DataFrame(), str(exc)
