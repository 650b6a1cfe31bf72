"""The core's commands that load a model: `chtn train|baseline|evaluate|embed|search` (`chtn validate` is in
`chtn.data_commands`). `chtn.cli` declares the parser and imports this module only when one of them runs (by the
dotted name its parser sets), so `chtn --help` never imports torch."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from chtn import shards
from chtn.baseline import KINDS, train_baselines
from chtn.checkpoint import load_checkpoint
from chtn.config import load_config
from chtn.data import load_source
from chtn.data_commands import checked_pairs
from chtn.errors import CHTNError
from chtn.exports import write_csv
from chtn.features import FeatureCache, pick_device
from chtn.gallery import embed_split
from chtn.images import open_rgb
from chtn.ranking import TIE_TOLERANCE, describe_tie
from chtn.search import query_side, retrieve
from chtn.tower import create_tower
from chtn.train import check_trainable, train
from chtn.train_inputs import build_train_inputs
from chtn.validation import ensure_valid, validate_source


def _load_valid_data(args: argparse.Namespace):
    """Every pair (training uses all splits) and the source images, validated."""

    pairs = checked_pairs(args, None)
    source = None
    if args.source and args.source != "none":
        source = load_source(args.source)
        report = validate_source(source)
        source = ensure_valid(source, report, args.skip_invalid, "source dataset")
        if not report.ok:
            print(f"--skip-invalid: {report.skipped_note('source dataset')}", file=sys.stderr)
    return pairs, source


def _parse_overrides(items: Sequence[str]) -> dict[str, dict[str, Any]]:
    """`section.field=value` pairs (value parsed as JSON when it can be) -> nested dict."""
    overrides: dict[str, dict[str, Any]] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        section, dot, name = key.partition(".")
        if not sep or not dot:
            raise CHTNError(f"--set expects section.field=value (e.g. train.epochs=20), got {item!r}.")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        overrides.setdefault(section, {})[name] = value
    return overrides


@contextlib.contextmanager
def _rank_zero_reports() -> Iterator[None]:
    """Standard output for rank 0 alone: under torchrun every process runs the command, one reports."""
    quiet = int(os.environ.get("RANK", "0")) != 0
    with open(os.devnull, "w") if quiet else contextlib.nullcontext(sys.stdout) as out, contextlib.redirect_stdout(out):
        yield


def cmd_train(args: argparse.Namespace) -> int:

    config = load_config(args.preset, args.config, _parse_overrides(args.set))
    check_trainable(config)  # before any feature is extracted
    # Under torchrun every process runs this command; only rank 0 reports (validation, the text choice, the best
    # checkpoint), as the training loop's own progress bars do. Errors still reach stderr from every rank.
    with _rank_zero_reports():
        print(args.torch_threads)
        pairs, source = _load_valid_data(args)
        config, inputs, meta, tfidf = build_train_inputs(
            config, pairs, source, FeatureCache(args.cache_dir), args.device
        )
        meta["preset"] = args.preset
        result = train(config, inputs, args.out, meta, tfidf, resume=args.resume, device=args.device)
        print(f"best checkpoint: {result.best_path}")
    return 0


def cmd_baseline(args: argparse.Namespace) -> int:
    """The simple baselines on the rows and frozen features `chtn train` with the same preset would use, each a
    checkpoint that every page and command opens (chtn/baseline.py)."""
    config = load_config(args.preset, args.config, _parse_overrides(args.set))
    if config.encoder.finetune_stages:  # a fine-tuning preset: its frozen features are those of its trunk as shipped
        config = dataclasses.replace(config, encoder=dataclasses.replace(config.encoder, finetune_stages=0))
    pairs = checked_pairs(args, None)
    config, inputs, meta, tfidf = build_train_inputs(config, pairs, None, FeatureCache(args.cache_dir), args.device)
    kinds = KINDS if args.kind == "both" else (args.kind,)
    train_baselines(config, inputs, args.out, {**meta, "preset": args.preset}, tfidf, kinds)
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    """MAP and own-pair figures of one split. The embeddings come from `chtn.gallery.embed_split`, exactly as the
    dashboard gets them (the checkpoint's shipped file when its key matches, else the on-disk cache, else computed
    once): the CLI and the dashboard read the same bytes, so they print the same figures on any CPU. Under
    `torchrun --nproc_per_node N` the N processes rank a share of the queries each (one GPU each on CUDA) and
    rank 0 reports (`chtn.shards`)."""
    checkpoint = load_checkpoint(args.checkpoint)
    data = checked_pairs(args, args.split, checkpoint.label_names)
    cache_dir = Path(args.cache_dir) if args.cache_dir else None
    device = pick_device(args.device)  # under torchrun, rank 0 runs this on its own device (chtn.shards)
    gallery = embed_split(checkpoint, data, args.split, cache_dir=cache_dir, device=str(device))
    labels, names = gallery.labels, checkpoint.label_names
    report = shards.evaluate(gallery.image, gallery.text, labels, names, args.at_k, device, args.block_queries)
    summary = report.summary()
    print(
        f"{summary['metric']} on {len(data)} {args.split} pairs (query set = gallery, cosine, stable ties): "
        f"I->T {summary['map_i2t']:.4f}  T->I {summary['map_t2i']:.4f}  mean {summary['map_mean']:.4f}"
    )
    for d, arrow in (("i2t", "I->T"), ("t2i", "T->I")):
        print(
            f"own pair {arrow}: recall@1 {summary[f'pair_recall@1_{d}']:.4f}  recall@10 "
            f"{summary[f'pair_recall@10_{d}']:.4f}  median rank {summary[f'pair_median_rank_{d}']:g} "
            f"(gallery-order tie-break: {summary[f'pair_median_stable_rank_{d}']:g})"
        )
    print(f"own-pair tie rule: {summary['pair_tie_rule']}")
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        write_csv(report.per_category(), out / "per_category.csv")
        write_csv(report.per_query(data.ids, data.texts), out / "per_query.csv")
        (out / "summary.json").write_text(
            json.dumps(
                {**summary, "checkpoint": str(args.checkpoint), "data": str(args.data), "split": args.split}, indent=2
            )
        )
        print(f"wrote {out}/per_category.csv, per_query.csv, summary.json")
    return 0


def cmd_embed(args: argparse.Namespace) -> int:

    checkpoint = load_checkpoint(args.checkpoint)
    data = checked_pairs(args, None if args.split == "all" else args.split, checkpoint.label_names)
    image, text = create_tower(checkpoint, args.device).embed_pairs(data, FeatureCache(args.cache_dir))
    np.savez_compressed(args.out, ids=np.array(data.ids), labels=np.array(data.labels), image=image, text=text)
    print(f"wrote {len(data)} image and text embeddings ({image.shape[1]}-d) to {args.out}")
    return 0


def _check_query(args: argparse.Namespace, ids: list[str], names: list[str]) -> None:
    """The query and the category filter of `chtn search`, checked against the split and the checkpoint."""
    unknown = sorted(set(args.category) - set(names))
    if unknown:
        raise CHTNError(
            f"Unknown categor{'y' if len(unknown) == 1 else 'ies'} {unknown}; this checkpoint knows {names}."
        )
    if args.query_id is not None and args.query_id not in ids:
        raise CHTNError(f"No {args.split} item has id {args.query_id!r}.")
    if args.query_id is None and args.text is not None and not args.text.strip():
        raise CHTNError("The query text is empty; give some words to search the images with.")
    if args.query_id is None and args.text is None:
        open_rgb(args.image)  # a clear message for a missing or non-image file


def cmd_search(args: argparse.Namespace) -> int:
    """Top-k of one query over a split: `chtn.search`, exactly what the dashboard's explorer shows."""

    checkpoint = load_checkpoint(args.checkpoint)
    pairs = checked_pairs(args, args.split, checkpoint.label_names)
    _check_query(args, pairs.ids, checkpoint.label_names)  # before any model is loaded or anything embedded
    cache_dir = Path(args.cache_dir) if args.cache_dir else None
    gallery = embed_split(checkpoint, pairs, args.split, cache_dir=cache_dir, device=args.device)
    names = checkpoint.label_names
    tower, cache = create_tower(checkpoint, args.device), FeatureCache(args.cache_dir)
    label = row = None
    if args.query_id is not None:
        row = gallery.data.ids.index(args.query_id)
        direction, label = args.direction, int(gallery.labels[row])
        query = query_side(gallery, direction)[0][row]
    elif args.text is not None:
        direction, query = "t2i", tower.embed_texts([args.text], cache)[0]
    else:
        direction, query = "i2t", tower.embed_images([Path(args.image)], cache)[0]
    view = retrieve(gallery, direction, query, args.k, names, args.category, label, row)
    table = view.table.assign(tie_ranks=[f"{a}-{b}" for a, b in zip(view.table.tie_first, view.table.tie_last)])
    columns = ["rank", "id", "score", "tied_with", "tie_ranks", "category"]
    columns += (["relevant"] if label is not None else []) + ["text"]
    print(table[columns].to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    print(
        f"tied_with: other items with the result's score to four decimals (the same multiple of {TIE_TOLERANCE:g}; "
        "tie_ranks: the ranks they span)"
    )
    if view.paired_rank is not None:
        tie = describe_tie(*view.paired_tie) if view.paired_tie is not None else ""
        print(f"its own pair ranks #{view.paired_rank} of {view.n_allowed}" + (f", {tie}" if tie else ""))
    return 0
