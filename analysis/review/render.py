"""A review queue as files a meeting keeps: CSV and JSON of the items with their verdicts, notes and verdict
history, and a one-page self-contained HTML summary (counts by verdict and category, the reviewers' agreement, the
items still disputed and every note, each with the query's thumbnail). The page's downloads and
`chtn review export` write exactly these.

Notes are user text: verbatim in JSON, HTML-escaped in the summary (shown, never run), spreadsheet-safe in CSV
(:mod:`chtn.exports`).
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import NamedTuple

import pandas as pd

from analysis.outcomes import KINDS
from analysis.review.agreement import Agreement, agreement
from chtn.exports import csv_bytes
from chtn.images import thumbnail_uris

COLUMNS = {  # export column: source column of the queue table
    "position": "position",
    "query_id": "query_id",
    "direction": "direction",
    "category": "category",
    "error_kind": "kind",
    "severity": "severity",
    "ap": "ap",
    "own_pair_rank": "own_rank",
    "own_pair_tied_with": "own_tied_with",
    "top1_id": "top1_id",
    "top1_category": "top1_category",
    "top1_score": "top1_score",
    "change_since_last_reviewed": "change",
    "status": "status",
    "verdict": "verdict",
    "reviewers": "reviewers",
    "notes": "notes",
}


@dataclass(frozen=True)
class ReviewContext:
    """What a review export is about: written into every file so it stands on its own."""

    checkpoint: str  # content hash
    checkpoint_name: str
    dataset: str  # fingerprint
    dataset_path: str
    queue: str  # "all mis-retrieved" or "meeting queue <id> (spec ...)"
    store: str  # the review database, described
    generated_at: str  # ISO-8601 UTC
    code_version: str
    queue_id: str | None = None  # the meeting queue's id; None for all mis-retrievals

    @property
    def file_stem(self) -> str:
        """`review_<checkpoint>_<queue id or all-misretrievals>`, in characters safe in any file system, so that
        the exports of two checkpoints or two queues never overwrite each other in a downloads folder."""
        stem = f"review_{self.checkpoint_name}_{self.queue_id or 'all-misretrievals'}"
        return re.sub(r"[^A-Za-z0-9._-]+", "-", stem)


def export_table(queue: pd.DataFrame) -> pd.DataFrame:
    """The queue's columns as exported (one row per item; the verdicts are the current ones per reviewer)."""
    table = queue.reindex(columns=list(COLUMNS.values()))
    table.columns = list(COLUMNS)
    table["error_kind"] = table["error_kind"].map(lambda k: KINDS.get(k, k))
    return table.reset_index(drop=True)


def history_by_item(history: pd.DataFrame) -> dict[tuple[str, str], str]:
    """Each item's verdicts on this checkpoint, superseded ones too, oldest first (by id: the stores' order, whatever
    the clocks said): "2026-12-03 10:01 ada: model error · 2026-12-03 10:05 ada: label noise"."""
    if history.empty:
        return {}
    lines: dict[tuple[str, str], str] = {}
    for key, group in history.sort_values("id").groupby(["query_id", "direction"], sort=False):
        steps = [f"{pd.Timestamp(r.created_at):%Y-%m-%d %H:%M} {r.reviewer}: {r.verdict}" for r in group.itertuples()]
        lines[(str(key[0]), str(key[1]))] = " · ".join(steps)
    return lines


def image_columns(queue: pd.DataFrame, images: Sequence[Path]) -> pd.DataFrame:
    """query_image (a text query's own pair's image) and top1_image, as paths, from the split's images by row."""

    def paths(rows: pd.Series) -> list[str]:
        return [str(images[int(r)]) if images and pd.notna(r) else "" for r in rows.tolist()]

    return pd.DataFrame({"query_image": paths(queue["row"]), "top1_image": paths(queue["top1_row"])})


def queue_json(queue: pd.DataFrame, current: pd.DataFrame, history: pd.DataFrame, context: ReviewContext) -> str:
    """JSON document: the context, and per item its fields, current verdicts (one per reviewer) and the full
    append-only history of verdicts on this checkpoint. Notes verbatim."""

    def rows(frame: pd.DataFrame, query_id: str, direction: str) -> list[dict]:
        if frame.empty:
            return []
        picked = frame[(frame["query_id"] == query_id) & (frame["direction"] == direction)]
        return [
            {
                "verdict": r.verdict,
                "note": r.note,
                "reviewer": r.reviewer,
                "created_at": pd.Timestamp(r.created_at).isoformat(),
                "checkpoint": r.checkpoint,
                "queue_id": r.queue_id,
                "id": int(r.id),
            }
            for r in picked.itertuples()
        ]

    items = []
    for item, record in zip(queue.itertuples(), _records(export_table(queue))):
        record["current_verdicts"] = rows(current, item.query_id, item.direction)
        record["history"] = rows(history, item.query_id, item.direction)
        items.append(record)
    agreed = agreement(current, queue)
    document = {
        "context": context.__dict__,
        "counts": verdict_counts(queue),
        "agreement": agreement_record(agreed),
        "items": items,
    }
    return json.dumps(document, indent=2, ensure_ascii=False, default=_plain)


def _plain(value: object) -> object:
    """numpy scalars and booleans as JSON values."""
    return value.item() if hasattr(value, "item") else str(value)


def _records(frame: pd.DataFrame) -> list[dict]:
    """A table as JSON-ready rows: a missing value (NaN) is null, which JSON has, not NaN, which it has not."""
    return [
        {k: (None if isinstance(v, float) and pd.isna(v) else v) for k, v in r.items()}
        for r in frame.to_dict("records")
    ]


def agreement_record(agreed: Agreement) -> dict[str, object]:
    """The agreement figures as a JSON-ready mapping."""
    return {**asdict(agreed), "per_class": _records(agreed.per_class), "disputed": _records(agreed.disputed)}


def verdict_counts(queue: pd.DataFrame) -> dict[str, int]:
    """Items by outcome of the review: each verdict the reviewers agree on, disputed, unreviewed."""
    return {str(k): int(v) for k, v in _outcome(queue).value_counts().items()}


def _outcome(queue: pd.DataFrame) -> pd.Series:
    return queue["status"].where(queue["status"] != "reviewed", queue["verdict"].str.replace(r" ×\d+$", "", regex=True))


def category_counts(queue: pd.DataFrame) -> pd.DataFrame:
    """Category x review outcome item counts (with totals), for the meeting summary."""
    table = pd.crosstab(queue["category"], _outcome(queue), margins=True, margins_name="total")
    return table.rename_axis(index="category", columns=None).reset_index()


def summary_html(
    queue: pd.DataFrame,
    current: pd.DataFrame,
    history: pd.DataFrame,
    context: ReviewContext,
    images: Sequence[Path] = (),
) -> str:
    """One self-contained page (no scripts, no external files): what was reviewed, counts by verdict and category,
    the reviewers' agreement, the items still disputed and every note with its verdict history, each item with the
    query's thumbnail (embedded). User text is escaped."""
    esc = html.escape
    meta = [
        ("Checkpoint", f"{context.checkpoint_name} ({context.checkpoint})"),
        ("Dataset", f"{context.dataset_path} (fingerprint {context.dataset})"),
        ("Queue", context.queue),
        ("Review database", context.store),
        ("Generated", f"{context.generated_at} · code {context.code_version}"),
    ]
    counts = verdict_counts(queue)
    reviewed = len(queue) - counts.get("unreviewed", 0)
    agreed = agreement(current, queue)
    parts = [
        "<h1>Meeting review summary</h1>",
        "<table class='meta'>" + "".join(f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>" for k, v in meta) + "</table>",
        f"<p><b>Reviewed {reviewed} of {len(queue)}</b> items.</p>",
        "<h2>By verdict</h2>",
        pd.DataFrame({"outcome": list(counts), "items": list(counts.values())}).to_html(index=False, border=0),
        "<h2>By category</h2>",
        category_counts(queue).to_html(index=False, border=0) if len(queue) else "<p>No items.</p>",
        "<h2>Agreement between reviewers</h2>",
        f"<p>{esc(agreed.summary())}</p>",
    ]
    if agreed.items:
        per_class = agreed.per_class.assign(alpha=agreed.per_class["alpha"].map(_figure))
        parts.append(per_class.to_html(index=False, border=0, escape=True))
    histories = history_by_item(history)
    disputed = queue[queue["status"] == "disputed"]
    noted = queue[(queue["notes"].astype(str).str.strip() != "") & (queue["status"] != "disputed")]
    listed = pd.concat([disputed, noted])  # only these get a thumbnail: a queue may hold 100,000 items
    thumbs = thumbnail_uris([images[int(r)] for r in listed["row"].tolist()] if images else [None] * len(listed))
    entries = [_item_html(item, thumb, histories) for (_, item), thumb in zip(listed.iterrows(), thumbs)]
    parts.append(f"<h2>Still disputed ({len(disputed)})</h2>")
    parts += entries[: len(disputed)] or ["<p>None.</p>"]
    parts.append("<h2>Notes on the other items</h2>")  # a disputed item's notes are with it above
    parts += entries[len(disputed) :] or ["<p>None.</p>"]
    style = (
        "body{font-family:sans-serif;margin:2em;max-width:1100px}table{border-collapse:collapse;font-size:13px}"
        "td,th{padding:2px 8px;border-bottom:1px solid #ddd;text-align:left}pre{white-space:pre-wrap;"
        "background:#f6f6f6;padding:.5em;font-size:13px}h3{font-size:14px;margin-bottom:.2em}"
        ".item{display:flex;gap:12px;align-items:flex-start}.item img{width:64px;border-radius:4px}"
        ".history{color:#555;font-size:12px}"
    )
    return (
        "<!DOCTYPE html><html><head><meta charset='utf-8'>"
        "<meta http-equiv='Content-Security-Policy' content=\"default-src 'none'; style-src 'unsafe-inline'; "
        'img-src data:">'
        f"<title>Meeting review · {esc(context.checkpoint_name)}</title><style>{style}</style></head>"
        f"<body>{''.join(parts)}</body></html>"
    )


def _figure(value: float | None) -> str:
    return "undefined" if value is None or pd.isna(value) else f"{value:.2f}"


def _item_html(item: pd.Series, thumb: str | None, histories: dict[tuple[str, str], str]) -> str:
    """One item of the summary: its thumbnail, heading, verdict history and notes (escaped)."""
    esc = html.escape
    heading = f"#{item['position']} · {item['query_id']} · {item['direction']} · {item['category']} · {item['verdict']}"
    picture = f"<img src='{thumb}' alt='query {esc(str(item['query_id']))}'>" if thumb else ""
    trail = histories.get((str(item["query_id"]), str(item["direction"])), "")
    body = f"<h3>{esc(heading)}</h3>" + (f"<div class='history'>History: {esc(trail)}</div>" if trail else "")
    if str(item["notes"]).strip():
        body += f"<pre>{esc(str(item['notes']))}</pre>"
    return f"<div class='item'>{picture}<div>{body}</div></div>"


class ExportFile(NamedTuple):
    """One export: its file name, what the page's button says, its MIME type and its bytes."""

    name: str
    label: str
    mime: str
    payload: bytes


def export_files(
    queue: pd.DataFrame,
    current: pd.DataFrame,
    history: pd.DataFrame,
    context: ReviewContext,
    images: Sequence[Path] = (),
) -> list[ExportFile]:
    """The queue as CSV (each row names the checkpoint and the queue, the query's and the top-1's image paths, and
    the item's verdict history), JSON and the HTML summary, named after the checkpoint and the queue
    (`ReviewContext.file_stem`). `images`: the split's image paths by row (empty: no pictures)."""
    table = pd.concat([export_table(queue), image_columns(queue.reset_index(drop=True), images)], axis=1)
    histories = history_by_item(history)
    table["verdict_history"] = [
        histories.get((str(q), str(d)), "") for q, d in zip(table["query_id"], table["direction"])
    ]
    table.insert(0, "queue_id", context.queue_id or "")
    table.insert(0, "checkpoint_hash", context.checkpoint)
    table.insert(0, "checkpoint", context.checkpoint_name)
    stem = context.file_stem
    document = queue_json(queue, current, history, context)
    summary = summary_html(queue, current, history, context, images)
    return [
        ExportFile(f"{stem}.csv", "Queue as CSV", "text/csv", csv_bytes(table)),
        ExportFile(f"{stem}.json", "Queue as JSON", "application/json", document.encode("utf-8")),
        ExportFile(f"{stem}_summary.html", "Meeting summary (HTML)", "text/html", summary.encode("utf-8")),
    ]


def write_exports(
    queue: pd.DataFrame,
    current: pd.DataFrame,
    history: pd.DataFrame,
    context: ReviewContext,
    out: Path,
    images: Sequence[Path] = (),
) -> list[Path]:
    """The three `export_files` under `out`; returns the files written."""
    out.mkdir(parents=True, exist_ok=True)
    files = export_files(queue, current, history, context, images)
    for file in files:
        (out / file.name).write_bytes(file.payload)
    return [out / file.name for file in files]
