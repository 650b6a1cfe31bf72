"""The commands behind `chtn review queue|export` (declared in `cli.py`; `chtn.cli` imports this module only when
one of them runs)."""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from pathlib import Path

from analysis import outcomes as oc
from analysis.review import queue as rq
from analysis.review.agreement import agreement
from analysis.review.render import ReviewContext, export_table, write_exports
from analysis.review.store import ReviewStore
from analysis.review.workflow import open_queue, queue_title, review_state, spec_from_text
from analysis.store import default_location
from chtn.checkpoint import code_version, load_checkpoint
from chtn.data_commands import checked_pairs
from chtn.exports import csv_bytes
from chtn.gallery import embed_split, evaluate_gallery


def _status(line: str) -> None:
    """A status line goes to stderr: stdout carries only the queue (CSV and JSON parse as printed)."""
    print(line, file=sys.stderr)


def _review_inputs(args: argparse.Namespace):
    """(store, checkpoint, data, state, queue, queue description, meeting queue id or None) as the Review page
    builds them."""
    store = ReviewStore(args.review_db or default_location())
    _status(f"review database: {store.describe()}")
    checkpoint = load_checkpoint(args.checkpoint)
    data = checked_pairs(args, "test", checkpoint.label_names)
    cache_dir = Path(args.cache_dir) if args.cache_dir else None
    gallery = embed_split(checkpoint, data, "test", cache_dir=cache_dir)
    report = evaluate_gallery(gallery, checkpoint.label_names, cache_dir)
    outcomes = oc.query_outcomes(gallery, report, checkpoint.label_names)
    dataset = data.fingerprint()
    state = review_state(store, outcomes, dataset, checkpoint.digest)
    if args.spec is None:
        queue = rq.filter_table(oc.misretrievals(state.annotated))
        return store, checkpoint, data, state, queue, "all mis-retrievals", None
    spec, queue_id = spec_from_text(args.spec, store)
    queue_id = queue_id or spec.queue_id(checkpoint.digest, dataset)
    queue = open_queue(store, state.annotated, spec, queue_id, checkpoint.digest, dataset, "chtn review")
    described = f"meeting queue {queue_id} ({queue_title(store, queue_id, spec)})"
    return store, checkpoint, data, state, queue, described, queue_id


def cmd_review_queue(args: argparse.Namespace) -> int:
    _, _, _, state, queue, described, _ = _review_inputs(args)
    _status(f"{described}: {len(queue)} items; since the last reviewed checkpoint: {state.previous or 'none'}")
    table = export_table(queue)
    if args.format == "csv":
        print(csv_bytes(table).decode("utf-8"), end="")
    elif args.format == "json":
        print(table.to_json(orient="records", force_ascii=False, indent=1, double_precision=15))
    else:
        shown = table[["position", "query_id", "direction", "category", "error_kind", "severity", "ap", "status"]]
        print(shown.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    return 0


def cmd_review_export(args: argparse.Namespace) -> int:
    store, checkpoint, data, state, queue, described, queue_id = _review_inputs(args)
    dataset = data.fingerprint()
    context = ReviewContext(
        checkpoint.digest,
        checkpoint.path.stem,
        dataset,
        str(data.source),
        described,
        store.describe(),
        datetime.now(UTC).isoformat(timespec="seconds"),
        code_version(),
        queue_id,
    )
    history = store.verdicts(dataset, checkpoint.digest)
    written = write_exports(queue, state.current, history, context, Path(args.out), data.image_paths)
    reviewed = int((queue["status"] != "unreviewed").sum())
    _status(f"{described}: reviewed {reviewed} of {len(queue)}; {agreement(state.current, queue).summary()}")
    print(f"wrote {len(written)} files to {args.out}: " + ", ".join(p.name for p in written))
    return 0
