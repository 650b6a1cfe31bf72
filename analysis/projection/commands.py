"""The command behind `chtn project` (declared in `cli.py`; `chtn.cli` imports this module only when it runs)."""

from __future__ import annotations

import argparse
from pathlib import Path

from analysis.projection.project import ProjectionParams, project_gallery
from chtn.checkpoint import load_checkpoint
from chtn.data_commands import checked_pairs
from chtn.gallery import embed_split


def cmd_project(args: argparse.Namespace) -> int:
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
