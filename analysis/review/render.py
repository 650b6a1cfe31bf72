"""A review queue as files a meeting keeps: CSV and JSON of the items with their verdicts and notes, and a one-page
self-contained HTML summary (counts by verdict and category, every note). The page's downloads and
`chtn review export` write exactly these.

Notes are user text: verbatim in JSON, HTML-escaped in the summary (shown, never run), spreadsheet-safe in CSV
(:mod:`chtn.exports`).
"""

from __future__ import annotations

import html
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import pandas as pd

from analysis.outcomes import KINDS
from chtn.exports import csv_bytes

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
    for item, record in zip(queue.itertuples(), export_table(queue).to_dict("records")):
        record = {k: (None if isinstance(v, float) and pd.isna(v) else v) for k, v in record.items()}
        record["current_verdicts"] = rows(current, item.query_id, item.direction)
        record["history"] = rows(history, item.query_id, item.direction)
        items.append(record)
    document = {"context": context.__dict__, "counts": verdict_counts(queue), "items": items}
    return json.dumps(document, indent=2, ensure_ascii=False, default=_plain)


def _plain(value: object) -> object:
    """numpy scalars and booleans as JSON values."""
    return value.item() if hasattr(value, "item") else str(value)


def verdict_counts(queue: pd.DataFrame) -> dict[str, int]:
    """Items by outcome of the review: each verdict the reviewers agree on, disputed, unreviewed."""
    return {str(k): int(v) for k, v in _outcome(queue).value_counts().items()}


def _outcome(queue: pd.DataFrame) -> pd.Series:
    return queue["status"].where(queue["status"] != "reviewed", queue["verdict"].str.replace(r" ×\d+$", "", regex=True))


def category_counts(queue: pd.DataFrame) -> pd.DataFrame:
    """Category x review outcome item counts (with totals), for the meeting summary."""
    table = pd.crosstab(queue["category"], _outcome(queue), margins=True, margins_name="total")
    return table.rename_axis(index="category", columns=None).reset_index()


def summary_html(queue: pd.DataFrame, context: ReviewContext) -> str:
    """One self-contained page (no scripts, no external files): what was reviewed, counts by verdict and category,
    and every note, escaped."""
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
    parts = [
        "<h1>Meeting review summary</h1>",
        "<table class='meta'>" + "".join(f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>" for k, v in meta) + "</table>",
        f"<p><b>Reviewed {reviewed} of {len(queue)}</b> items.</p>",
        "<h2>By verdict</h2>",
        pd.DataFrame({"outcome": list(counts), "items": list(counts.values())}).to_html(index=False, border=0),
        "<h2>By category</h2>",
        category_counts(queue).to_html(index=False, border=0) if len(queue) else "<p>No items.</p>",
        "<h2>Notes</h2>",
    ]
    noted = queue[queue["notes"].astype(str).str.strip() != ""]
    if noted.empty:
        parts.append("<p>No notes.</p>")
    for item in noted.itertuples():
        heading = f"#{item.position} · {item.query_id} · {item.direction} · {item.category} · {item.verdict}"
        parts.append(f"<h3>{esc(heading)}</h3><pre>{esc(item.notes)}</pre>")
    style = (
        "body{font-family:sans-serif;margin:2em;max-width:1100px}table{border-collapse:collapse;font-size:13px}"
        "td,th{padding:2px 8px;border-bottom:1px solid #ddd;text-align:left}pre{white-space:pre-wrap;"
        "background:#f6f6f6;padding:.5em;font-size:13px}h3{font-size:14px;margin-bottom:.2em}"
    )
    return (
        "<!DOCTYPE html><html><head><meta charset='utf-8'>"
        "<meta http-equiv='Content-Security-Policy' content=\"default-src 'none'; style-src 'unsafe-inline'\">"
        f"<title>Meeting review · {esc(context.checkpoint_name)}</title><style>{style}</style></head>"
        f"<body>{''.join(parts)}</body></html>"
    )


class ExportFile(NamedTuple):
    """One export: its file name, what the page's button says, its MIME type and its bytes."""

    name: str
    label: str
    mime: str
    payload: bytes


def export_files(
    queue: pd.DataFrame, current: pd.DataFrame, history: pd.DataFrame, context: ReviewContext
) -> list[ExportFile]:
    """The queue as CSV (each row names the checkpoint and the queue), JSON and the HTML summary, named after the
    checkpoint and the queue (`ReviewContext.file_stem`)."""
    table = export_table(queue)
    table.insert(0, "queue_id", context.queue_id or "")
    table.insert(0, "checkpoint_hash", context.checkpoint)
    table.insert(0, "checkpoint", context.checkpoint_name)
    stem = context.file_stem
    document, summary = queue_json(queue, current, history, context), summary_html(queue, context)
    return [
        ExportFile(f"{stem}.csv", "Queue as CSV", "text/csv", csv_bytes(table)),
        ExportFile(f"{stem}.json", "Queue as JSON", "application/json", document.encode("utf-8")),
        ExportFile(f"{stem}_summary.html", "Meeting summary (HTML)", "text/html", summary.encode("utf-8")),
    ]


def write_exports(
    queue: pd.DataFrame, current: pd.DataFrame, history: pd.DataFrame, context: ReviewContext, out: Path
) -> list[Path]:
    """The three `export_files` under `out`; returns the files written."""
    out.mkdir(parents=True, exist_ok=True)
    files = export_files(queue, current, history, context)
    for file in files:
        (out / file.name).write_bytes(file.payload)
    return [out / file.name for file in files]
