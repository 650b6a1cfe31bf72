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
    p.add_argument("--checkpoint", required=True, help="a checkpoint trained with a source")
    p.add_argument(
        "--reference",
        default=None,
        help="checkpoint trained without the source on the same data (default: one found beside the checkpoint)",
    )
    p.add_argument("--data", required=True, help="pairs manifest or Wikipedia-layout folder (train and test splits)")
    p.add_argument("--source", default=None, help="the source images, when not where training recorded them")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--skip-invalid", action="store_true", help="drop invalid rows (with a summary) instead of stopping")
    p.add_argument("--cache-dir", default=None, help="cache folder (default $CHTN_CACHE_DIR or ~/.cache/chtn)")
    p.add_argument("--resamples", type=int, default=None, help="bootstrap/randomization resamples (default 10,000)")
    p.add_argument("--seed", type=int, default=0, help="seed of every resampling, permutation and subsample")
    p.set_defaults(func=cmd_bias, out_is_folder=True)  # checked writable before any work


def cmd_bias(args: argparse.Namespace) -> int:
    from analysis.bias import pick_reference
    from analysis.bias_render import gate_statement, write_report
    from analysis.bias_report import BiasSettings, bias_report, open_source
    from analysis.workspace import reference_candidates
    from chtn.checkpoint import load_checkpoint
    from chtn.cli import checked_pairs
    from chtn.errors import CHTNError

    resamples = BiasSettings().resamples if args.resamples is None else args.resamples
    if resamples < 100:
        raise CHTNError(f"--resamples must be at least 100 (10,000 is the convention), got {resamples}.")
    out = Path(args.out)
    checkpoint = load_checkpoint(args.checkpoint)
    source = open_source(checkpoint, args.source, args.data)  # a clear error when there is none or it is missing
    if args.reference:
        reference = load_checkpoint(args.reference)
    else:
        candidates = []
        for path in reference_candidates(Path(args.checkpoint)):
            try:
                candidates.append(load_checkpoint(path))
            except CHTNError:
                continue  # not a usable checkpoint: not a candidate
        reference = pick_reference(checkpoint, candidates)
        print(f"reference: {reference.path if reference else 'none found (pass --reference)'}")
    data = checked_pairs(args, None, checkpoint.label_names)
    cache_dir = Path(args.cache_dir) if args.cache_dir else None
    settings = BiasSettings(resamples=resamples, seed=args.seed)
    report = bias_report(
        checkpoint, data, reference, source, settings, cache_dir, progress=lambda step, _: print(step, flush=True)
    )
    print(gate_statement(report)[1])
    for note in report.notes:
        print(f"note: {note}")
    if "gain" in report.tables:
        counts = report.tables["gain"]["flag"].value_counts()
        print("transfer gain (category x direction): " + ", ".join(f"{n} {flag}" for flag, n in counts.items()))
    written = write_report(report, out, f"Source bias of {checkpoint.path.name}")
    print(f"wrote {len(written)} files to {out}: " + ", ".join(p.name for p in written))
    return 0
