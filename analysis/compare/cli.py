"""`chtn compare`: the Compare page's go/no-go gate, for CI. `register` is the `chtn.commands` entry point
(pyproject.toml): the core never imports `analysis`, `chtn.cli` asks the installed entry points for their commands.
"""

from __future__ import annotations

import argparse
from pathlib import Path


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
    p.add_argument("--data", required=True, help="pairs manifest or Wikipedia-layout folder (its test split)")
    p.add_argument(
        "--rule", default=None, help="go/no-go rule file (TOML, docs/conventions.md); default: the shipped rule"
    )
    p.add_argument("--out", required=True, help="output folder: report.html, comparison.json, CSVs, BLESSED marker")
    p.add_argument("--strict", action="store_true", help="a warning is a NO-GO too")
    p.add_argument(
        "--review-db",
        "--db",
        dest="review_db",
        default=None,
        help="review database whose verdicts on the candidate's regressions and decision log go into the report "
        "(default: $CHTN_REVIEW_DB if set, else none)",
    )
    p.add_argument("--skip-invalid", action="store_true", help="drop invalid rows (with a summary) instead of stopping")
    p.add_argument("--cache-dir", default=None, help="cache folder (default $CHTN_CACHE_DIR or ~/.cache/chtn)")
    p.set_defaults(func=cmd_compare, out_is_folder=True)


def cmd_compare(args: argparse.Namespace) -> int:
    """Exit 0 GO, 1 NO-GO (pytest's convention, docs/conventions.md); invalid input is exit 2 and a crash exit 3,
    both from `chtn.cli.main`."""
    import os
    from datetime import UTC, datetime

    from analysis.compare.decisions import SCHEMA, regression_review
    from analysis.compare.figures import Evaluated, check_comparable, compare_checkpoints, insufficient_statement
    from analysis.compare.render import ReportContext, report_document, write_outputs
    from analysis.compare.rules import read_rules
    from analysis.review.store import ReviewStore
    from analysis.workspace import check_one_recipe
    from chtn.checkpoint import code_version, load_checkpoint
    from chtn.cli import checked_pairs
    from chtn.errors import CHTNError
    from chtn.gallery import embed_split, evaluate_gallery

    rules = read_rules(Path(args.rule) if args.rule else None)  # a bad rule file is exit 2 before any work
    runs_a, runs_b = [load_checkpoint(p) for p in args.baseline], [load_checkpoint(p) for p in args.candidate]
    check_one_recipe(runs_a, "--baseline")
    check_one_recipe(runs_b, "--candidate")
    baseline, candidate = runs_a[0], runs_b[0]
    for path, checkpoint in zip([*args.baseline, *args.candidate], [*runs_a, *runs_b]):
        check_comparable(baseline.label_names, checkpoint.label_names, args.baseline[0], path)
    data = checked_pairs(args, "test", candidate.label_names)
    checked_pairs(args, "test", baseline.label_names)  # the dataset must fit both checkpoints
    cache_dir = Path(args.cache_dir) if args.cache_dir else None

    def evaluated(checkpoint) -> Evaluated:
        gallery = embed_split(checkpoint, data, "test", cache_dir=cache_dir)
        return Evaluated(checkpoint.path.stem, gallery, evaluate_gallery(gallery, checkpoint.label_names))

    print(f"comparing on {len(data)} test queries ({rules.stats.resamples:,} resamples, seed {rules.stats.seed})")
    outcome = compare_checkpoints([evaluated(c) for c in runs_a], [evaluated(c) for c in runs_b], rules, args.strict)
    print(outcome.comparison.statement())
    if outcome.comparison.figures["insufficient"].all():  # no slice holds evidence: neither GO nor NO-GO
        raise CHTNError(insufficient_statement(outcome.comparison))
    location = args.review_db or os.environ.get("CHTN_REVIEW_DB")
    store = ReviewStore(location, also=(SCHEMA,)) if location else None
    try:
        decisions, notes, counts = regression_review(
            store, outcome.comparison.queries, data.fingerprint(), baseline.digest, candidate.digest
        )
    finally:
        if store is not None:
            store.close()
    context = ReportContext(
        baseline.path.stem, baseline.digest, candidate.path.stem, candidate.digest, str(data.source),
        data.fingerprint(), args.strict, datetime.now(UTC).isoformat(timespec="seconds"), code_version(),
    )  # fmt: skip
    document = report_document(outcome, context, decisions, notes, counts)
    written = write_outputs(outcome, document, Path(args.out))
    for result in outcome.results:
        if result.status in ("fail", "warn", "insufficient evidence"):
            print(f"{result.status}: {result.reason}")
    print(f"wrote {len(written)} files to {args.out}: " + ", ".join(p.name for p in written))
    print(outcome.decision.summary)
    return outcome.decision.exit_code
