"""`chtn project`: the shared-space map of a split, precomputed. `register` is the `chtn.commands` entry point
(pyproject.toml): the core never imports `analysis`, `chtn.cli` asks the installed entry points for their commands.
"""

from __future__ import annotations

import argparse

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
    p.set_defaults(func="analysis.projection.commands:cmd_project")
