"""`chtn review queue|export`: the Review page's queue and exports. `register` is the `chtn.commands` entry point
(pyproject.toml): the core never imports `analysis`, `chtn.cli` asks the installed entry points for their commands.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    """`chtn review queue|export`: the Review page's meeting queue and its exports, for pipelines."""
    review = sub.add_parser("review", help="the meeting review queue: print it, or export it with verdicts and notes")
    actions = review.add_subparsers(dest="action", required=True, metavar="{queue,export}")

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--checkpoint", required=True)
        p.add_argument("--data", required=True, help="pairs manifest or Wikipedia-layout folder (its test split)")
        p.add_argument(
            "--review-db",
            "--db",
            dest="review_db",
            default=None,
            help="review database: an SQLite file or a PostgreSQL URL (default $CHTN_REVIEW_DB, else "
            "~/.local/share/chtn/review.sqlite)",
        )
        p.add_argument(
            "--skip-invalid", action="store_true", help="drop invalid rows (with a summary) instead of stopping"
        )
        p.add_argument("--cache-dir", default=None, help="cache folder (default $CHTN_CACHE_DIR or ~/.cache/chtn)")

    p = actions.add_parser("queue", help="print a meeting queue (the items everyone who opens its link sees)")
    common(p)
    p.add_argument(
        "--spec",
        default="",
        help="a queue id recorded in the review database, a .json file, or size=30,seed=0,strata=category+direction"
        "+kind,pick=random,directions=i2t+t2i,categories=...,kinds=wrong_top1+low_ap+pair_outranked (defaults: "
        "size 30, seed 0, all strata)",
    )
    p.add_argument("--format", choices=("table", "csv", "json"), default="table")
    p.set_defaults(func=cmd_review_queue)

    p = actions.add_parser("export", help="write the queue with verdicts and notes as CSV, JSON and an HTML summary")
    common(p)
    p.add_argument("--spec", default=None, help="a meeting queue (as for `review queue`); default: every mis-retrieval")
    p.add_argument("--out", required=True, help="output folder")
    p.set_defaults(func=cmd_review_export, out_is_folder=True)


def _review_inputs(args: argparse.Namespace):
    """(store, checkpoint, data, state, queue, queue description) as the Review page builds them."""
    from analysis.review import queue as rq
    from analysis.review.store import ReviewStore
    from analysis.review.workflow import open_queue, queue_title, review_state, spec_from_text
    from analysis.store import default_location
    from chtn.checkpoint import load_checkpoint
    from chtn.cli import checked_pairs
    from chtn.gallery import embed_split, evaluate_gallery

    store = ReviewStore(args.review_db or default_location())
    print(f"review database: {store.describe()}")
    checkpoint = load_checkpoint(args.checkpoint)
    data = checked_pairs(args, "test", checkpoint.label_names)
    cache_dir = Path(args.cache_dir) if args.cache_dir else None
    gallery = embed_split(checkpoint, data, "test", cache_dir=cache_dir)
    outcomes = rq.query_outcomes(gallery, evaluate_gallery(gallery, checkpoint.label_names), checkpoint.label_names)
    dataset = data.fingerprint()
    state = review_state(store, outcomes, dataset, checkpoint.digest)
    if args.spec is None:
        return store, checkpoint, data, state, rq.filter_table(rq.misretrievals(state.annotated)), "all mis-retrievals"
    spec, queue_id = spec_from_text(args.spec, store)
    queue_id = queue_id or spec.queue_id(checkpoint.digest, dataset)
    queue = open_queue(store, state.annotated, spec, queue_id, checkpoint.digest, dataset, "chtn review")
    return store, checkpoint, data, state, queue, f"meeting queue {queue_id} ({queue_title(store, queue_id, spec)})"


def cmd_review_queue(args: argparse.Namespace) -> int:
    from analysis.review.render import export_table

    _, _, _, state, queue, described = _review_inputs(args)
    print(f"{described}: {len(queue)} items; since the last reviewed checkpoint: {state.previous or 'none'}")
    table = export_table(queue)
    if args.format == "csv":
        from chtn.exports import csv_bytes

        print(csv_bytes(table).decode("utf-8"), end="")
    elif args.format == "json":
        print(table.to_json(orient="records", force_ascii=False, indent=1, double_precision=15))
    else:
        shown = table[["position", "query_id", "direction", "category", "error_kind", "severity", "ap", "status"]]
        print(shown.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    return 0


def cmd_review_export(args: argparse.Namespace) -> int:
    from datetime import UTC, datetime

    from analysis.review.render import ReviewContext, write_exports
    from chtn.checkpoint import code_version

    store, checkpoint, data, state, queue, described = _review_inputs(args)
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
    )
    history = store.verdicts(dataset, checkpoint.digest)
    written = write_exports(queue, state.current, history, context, Path(args.out))
    reviewed = int((queue["status"] != "unreviewed").sum())
    print(f"{described}: reviewed {reviewed} of {len(queue)}")
    print(f"wrote {len(written)} files to {args.out}: " + ", ".join(p.name for p in written))
    return 0
