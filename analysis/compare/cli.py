"""`chtn compare`: the Compare page's go/no-go gate, for CI. `register` is the `chtn.commands` entry point
(pyproject.toml): the core never imports `analysis`, `chtn.cli` asks the installed entry points for their commands.
"""

from __future__ import annotations

import argparse

from chtn.cli import add_data_options, add_out_option, add_review_db_option


def register(sub: argparse._SubParsersAction) -> None:
    """`chtn compare`: the go/no-go gate of a candidate checkpoint against a baseline, for CI pipelines."""
    p = sub.add_parser(
        "compare",
        help="compare a candidate checkpoint with a baseline and gate on the rule file: exit 0 GO, 1 NO-GO, "
        "2 invalid input or rule file, 3 internal error",
    )
    p.add_argument(
        "--baseline",
        required=True,
        nargs="+",
        help="the checkpoint in production (A), then optionally more training runs of its recipe (other seeds)",
    )
    p.add_argument(
        "--candidate",
        required=True,
        nargs="+",
        help="the checkpoint to ship (B), then optionally more training runs of its recipe: with 3 or more runs per "
        "side the block rule decides between the recipes; with fewer it says 'insufficient evidence'",
    )
    add_data_options(p, uses="its test split")
    p.add_argument(
        "--rule", default=None, help="go/no-go rule file (TOML, docs/conventions.md); default: the shipped rule"
    )
    add_out_option(p, writes="report.html, comparison.json, CSVs, BLESSED marker")
    p.add_argument("--strict", action="store_true", help="a warning is a NO-GO too")
    add_review_db_option(
        p, use="; its verdicts on the candidate's regressions and its decision log go into the report", fallback="none"
    )
    p.set_defaults(func="analysis.compare.commands:cmd_compare")
