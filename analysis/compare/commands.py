"""The command behind `chtn compare` (declared in `cli.py`; `chtn.cli` imports this module only when it runs)."""

from __future__ import annotations

import argparse
import os
from datetime import UTC, datetime
from pathlib import Path

from analysis.compare.decisions import SCHEMA, regression_review
from analysis.compare.figures import Evaluated, check_comparable, compare_checkpoints, insufficient_statement
from analysis.compare.render import ReportContext, report_document, write_outputs
from analysis.compare.rules import read_rules
from analysis.review.store import ReviewStore
from analysis.store import DB_ENV
from analysis.workspace import check_one_recipe
from chtn.checkpoint import code_version, load_checkpoint
from chtn.data_commands import checked_pairs
from chtn.errors import CHTNError
from chtn.gallery import embed_split, evaluate_gallery


def cmd_compare(args: argparse.Namespace) -> int:
    """Exit 0 GO, 1 NO-GO (pytest's convention, docs/conventions.md); invalid input is exit 2 and a crash exit 3,
    both from `chtn.cli.main`."""
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
        return Evaluated(checkpoint.path.stem, gallery, evaluate_gallery(gallery, checkpoint.label_names, cache_dir))

    print(f"comparing on {len(data)} test queries ({rules.stats.resamples:,} resamples, seed {rules.stats.seed})")
    outcome = compare_checkpoints([evaluated(c) for c in runs_a], [evaluated(c) for c in runs_b], rules, args.strict)
    print(outcome.comparison.statement())
    if outcome.comparison.figures["insufficient"].all():  # no slice holds evidence: neither GO nor NO-GO
        raise CHTNError(insufficient_statement(outcome.comparison))
    location = args.review_db or os.environ.get(DB_ENV)
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
    written = write_outputs(outcome, document, Path(args.out), data)
    for result in outcome.results:
        if result.status in ("fail", "warn", "insufficient evidence"):
            print(f"{result.status}: {result.reason}")
    print(f"wrote {len(written)} files to {args.out}: " + ", ".join(p.name for p in written))
    print(outcome.decision.summary)
    return outcome.decision.exit_code
