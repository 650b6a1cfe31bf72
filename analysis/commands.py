"""Dashboard-layer commands of the `chtn` CLI, plugged in through the `chtn.commands` entry point.

The core package never imports `analysis`: `chtn.cli` asks the installed entry points for extra commands,
and each one adds its sub-parser here.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_project_command(sub: argparse._SubParsersAction) -> None:
    """`chtn project`: precompute the shared-space projection of a split, so the dashboard opens it from the cache."""
    p = sub.add_parser("project", help="precompute the dashboard's shared-space projection (UMAP/PCA) of a split")
    p.add_argument("--data", required=True, help="pairs manifest or Wikipedia-layout folder")
    p.add_argument("--skip-invalid", action="store_true", help="drop invalid rows (with a summary) instead of stopping")
    p.add_argument("--cache-dir", default=None, help="cache folder (default $CHTN_CACHE_DIR or ~/.cache/chtn)")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--split", default="test")
    p.add_argument("--method", choices=("umap", "pca"), default="umap")
    p.add_argument("--n-neighbors", type=int, default=15)
    p.add_argument("--min-dist", type=float, default=0.1)
    p.add_argument("--metric", choices=("cosine", "euclidean"), default="cosine")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-points", type=int, default=20000, help="above this, a stratified sample is projected")
    p.set_defaults(func=cmd_project)


def cmd_project(args: argparse.Namespace) -> int:
    from analysis.projection import ProjectionParams, project_gallery
    from chtn.checkpoint import load_checkpoint
    from chtn.cli import checked_pairs
    from chtn.gallery import embed_split

    checkpoint = load_checkpoint(args.checkpoint)
    cache_dir = Path(args.cache_dir) if args.cache_dir else None
    data = checked_pairs(args, args.split, checkpoint.label_names)
    gallery = embed_split(checkpoint, data, args.split, cache_dir=cache_dir)
    params = ProjectionParams(args.method, args.n_neighbors, args.min_dist, args.metric, args.seed, args.max_points)
    projection = project_gallery(
        gallery.image,
        gallery.text,
        gallery.labels,
        params,
        cache_dir,
        progress=lambda fraction, message: print(message, flush=True),
    )
    print(projection.sampling_note(gallery.labels, checkpoint.label_names))
    print("already cached" if projection.from_cache else f"cached: {len(projection.rows):,} points")
    return 0


def add_bias_command(sub: argparse._SubParsersAction) -> None:
    """`chtn bias`: the source-bias report of a checkpoint (the dashboard's "Source bias" page) as files."""
    p = sub.add_parser(
        "bias", help="per-category source-bias report (transfer gain, coverage, capture, discrepancy) as CSV/JSON/HTML"
    )
    p.add_argument(
        "--checkpoint",
        required=True,
        nargs="+",
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
    p.add_argument("--data", required=True, help="pairs manifest or Wikipedia-layout folder (train and test splits)")
    p.add_argument("--source", default=None, help="the source images, when not where training recorded them")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--skip-invalid", action="store_true", help="drop invalid rows (with a summary) instead of stopping")
    p.add_argument("--cache-dir", default=None, help="cache folder (default $CHTN_CACHE_DIR or ~/.cache/chtn)")
    p.add_argument("--resamples", type=int, default=None, help="bootstrap/randomization resamples (default 10,000)")
    p.add_argument("--seed", type=int, default=0, help="seed of every resampling, permutation and subsample")
    p.add_argument(
        "--min-effect",
        type=float,
        default=None,
        help="minimum practical |ΔAP| for 'helped' / 'negative transfer' (default 0.01; smaller: 'negligible effect')",
    )
    p.set_defaults(func=cmd_bias, out_is_folder=True)  # checked writable before any work


def cmd_bias(args: argparse.Namespace) -> int:
    from analysis.bias import pick_reference
    from analysis.bias_render import flags_statement, gate_statement, runs_statement, write_report
    from analysis.bias_report import BiasSettings, bias_report, open_source
    from analysis.stats import MAX_RESAMPLES
    from analysis.workspace import check_one_recipe, recipe_runs, reference_candidates
    from chtn.checkpoint import Checkpoint, load_checkpoint
    from chtn.cli import checked_pairs
    from chtn.errors import CHTNError

    resamples = BiasSettings().resamples if args.resamples is None else args.resamples
    if not 100 <= resamples <= MAX_RESAMPLES:
        raise CHTNError(
            f"--resamples must be from 100 to {MAX_RESAMPLES:,} (10,000 is the convention), got {resamples}."
        )
    min_effect = BiasSettings().min_effect if args.min_effect is None else args.min_effect
    if not 0 <= min_effect < 1:
        raise CHTNError(f"--min-effect is a change of AP, from 0 to below 1 (0.01 by default), got {min_effect}.")
    out = Path(args.out)
    checkpoint, *runs = [load_checkpoint(path) for path in args.checkpoint]
    source = open_source(checkpoint, args.source, args.data)  # a clear error when there is none or it is missing
    check_one_recipe([checkpoint, *runs], "--checkpoint")
    reference: Checkpoint | None
    if args.reference:
        reference, *reference_runs = [load_checkpoint(path) for path in args.reference]
        check_one_recipe([reference, *reference_runs], "--reference")
    else:
        candidates = []
        for path in reference_candidates(checkpoint.path):
            try:
                candidates.append(load_checkpoint(path))
            except CHTNError:
                continue  # not a usable checkpoint: not a candidate
        reference = pick_reference(checkpoint, candidates)
        reference_runs = recipe_runs(reference, candidates) if reference and runs else []
        found = [str(c.path) for c in [reference, *reference_runs] if c]
        print(f"reference: {', '.join(found) or 'none found (pass --reference)'}")
    data = checked_pairs(args, None, checkpoint.label_names)
    cache_dir = Path(args.cache_dir) if args.cache_dir else None
    settings = BiasSettings(resamples=resamples, seed=args.seed, min_effect=min_effect)
    report = bias_report(
        checkpoint,
        data,
        reference,
        source,
        settings,
        cache_dir,
        progress=lambda step, _: print(step, flush=True),
        runs=runs,
        reference_runs=reference_runs,
    )
    print(gate_statement(report)[1])
    for note in report.notes:
        print(f"note: {note}")
    if "gain" in report.tables:
        counts = report.tables["gain"]["flag"].value_counts()
        print("transfer gain (category x direction): " + ", ".join(f"{n} {flag}" for flag, n in counts.items()))
        print(runs_statement(report))
        print(flags_statement(report))
    written = write_report(report, out, f"Source bias of {checkpoint.path.name}")
    print(f"wrote {len(written)} files to {out}: " + ", ".join(p.name for p in written))
    return 0


def add_review_command(sub: argparse._SubParsersAction) -> None:
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
    from analysis import review_queue as rq
    from analysis.review import open_queue, queue_title, review_state, spec_from_text
    from analysis.review_store import ReviewStore, default_location
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
    from analysis.review_render import export_table

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

    from analysis.review_render import ReviewContext, write_exports
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


def add_compare_command(sub: argparse._SubParsersAction) -> None:
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

    from analysis.compare import Evaluated, check_comparable, compare_checkpoints, insufficient_statement
    from analysis.compare_render import ReportContext, report_document, write_outputs
    from analysis.gate_rules import read_rules
    from analysis.review import regression_review
    from analysis.review_store import ReviewStore
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
    store = ReviewStore(location) if location else None
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
