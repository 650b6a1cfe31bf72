"""`chtn project`: the shared-space map of a split, precomputed. `register` is the `chtn.commands` entry point
(pyproject.toml): the core never imports `analysis`, `chtn.cli` asks the installed entry points for their commands.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from chtn.cli import add_checkpoint_option, add_data_options, add_split_option


def register(sub: argparse._SubParsersAction) -> None:
    """`chtn project`: precompute the shared-space projection of a split, so the dashboard opens it from the cache."""
    p = sub.add_parser("project", help="precompute the dashboard's shared-space projection (UMAP/PCA) of a split")
    add_data_options(p, uses="the split --split names")
    add_checkpoint_option(p)
    add_split_option(p)
    p.add_argument("--method", choices=("umap", "pca"), default="umap")
    p.add_argument("--n-neighbors", type=int, default=15)
    p.add_argument("--min-dist", type=float, default=0.1)
    p.add_argument("--metric", choices=("cosine", "euclidean"), default="cosine")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-points", type=int, default=20000, help="above this, a stratified sample is projected")
    p.set_defaults(func=cmd_project)


def cmd_project(args: argparse.Namespace) -> int:
    from analysis.projection.project import ProjectionParams, project_gallery
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
