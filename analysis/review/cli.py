"""`chtn review queue|export`: the Review page's queue and exports. `register` is the `chtn.commands` entry point
(pyproject.toml): the core never imports `analysis`, `chtn.cli` asks the installed entry points for their commands.
"""

from __future__ import annotations

import argparse

from chtn.cli import add_checkpoint_option, add_data_options, add_out_option, add_review_db_option


def register(sub: argparse._SubParsersAction) -> None:
    """`chtn review queue|export`: the Review page's meeting queue and its exports, for pipelines."""
    review = sub.add_parser("review", help="the meeting review queue: print it, or export it with verdicts and notes")
    actions = review.add_subparsers(dest="action", required=True, metavar="{queue,export}")

    def common(p: argparse.ArgumentParser) -> None:
        add_checkpoint_option(p)
        add_data_options(p, uses="its test split")
        add_review_db_option(p, fallback="~/.local/share/chtn/review.sqlite")

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
    p.set_defaults(func="analysis.review.commands:cmd_review_queue")

    p = actions.add_parser("export", help="write the queue with verdicts and notes as CSV, JSON and an HTML summary")
    common(p)
    p.add_argument("--spec", default=None, help="a meeting queue (as for `review queue`); default: every mis-retrieval")
    add_out_option(p, writes="review_queue.csv, review_queue.json, review_summary.html")
    p.set_defaults(func="analysis.review.commands:cmd_review_export")
