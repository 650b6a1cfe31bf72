"""`chtn bias`: the Source bias page's report as files. `register` is the `chtn.commands` entry point (pyproject.toml):
the core never imports `analysis`, `chtn.cli` asks the installed entry points for their commands.
"""

from __future__ import annotations

import argparse

from chtn.cli import add_checkpoint_option, add_data_options, add_out_option


def register(sub: argparse._SubParsersAction) -> None:
    """`chtn bias`: the source-bias report of a checkpoint (the dashboard's "Source bias" page) as files."""
    p = sub.add_parser(
        "bias", help="per-category source-bias report (transfer gain, coverage, capture, discrepancy) as CSV/JSON/HTML"
    )
    add_checkpoint_option(
        p,
        many=True,
        help="a checkpoint trained with a source, then optionally other training runs (seeds) of its recipe: the "
        "report is the first one's, the transfer gain compares the runs",
    )
    p.add_argument(
        "--reference",
        default=None,
        nargs="+",
        help="checkpoint(s) trained without the source on the same data, one per training run (default: one found "
        "beside the checkpoint, with its other runs when --checkpoint gives several)",
    )
    add_data_options(p, uses="its train and test splits")
    p.add_argument("--source", default=None, help="the source images, when not where training recorded them")
    add_out_option(p, writes="a CSV per table, report.json, report.html")
    p.add_argument("--resamples", type=int, default=None, help="bootstrap/randomization resamples (default 10,000)")
    p.add_argument("--seed", type=int, default=0, help="seed of every resampling, permutation and subsample")
    p.add_argument(
        "--min-effect",
        type=float,
        default=None,
        help="minimum practical |ΔAP| for 'helped' / 'negative transfer' (default 0.01; smaller: 'negligible effect')",
    )
    p.set_defaults(func="analysis.bias.commands:cmd_bias")
