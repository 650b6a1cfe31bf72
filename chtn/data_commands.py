"""The commands that read data only: `chtn validate`, and `checked_pairs`, with which every command (the plug-ins'
too) opens its data. No torch here, so validating a dataset starts at once; `chtn.cli` imports this module only
when a command runs."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from chtn.data import MANIFEST_SUFFIXES, PairDataset, load_pairs, load_source, save_pairs
from chtn.errors import CHTNError
from chtn.validation import ensure_valid, load_checked_pairs, validate_pairs, validate_source


def checked_pairs(args: argparse.Namespace, split: str | None, label_names: Sequence[str] | None = None) -> PairDataset:
    """The rows a command uses (`split`; None = all), validated: stop with the report, or with --skip-invalid
    drop the invalid rows and print what was skipped. The plug-ins open their data this way too (the plug-in
    contract, module docstring)."""

    data, report = load_checked_pairs(args.data, split, label_names, args.skip_invalid)
    if not report.ok:
        print(f"--skip-invalid: {report.skipped_note('dataset' if split is None else f'{split} split')}")
    elif report.warnings:
        print(report.summary())
    return data


def _writable(path: str) -> Path:
    """An output file whose folder exists, checked before any work (a typo costs nothing)."""
    out = Path(path)
    if not out.parent.resolve().is_dir() or out.is_dir():
        raise CHTNError(f"Cannot write {out}: {out.parent} is not an existing folder (or {out} is one).")
    return out


def cmd_validate(args: argparse.Namespace) -> int:

    problems_csv = _writable(args.problems_csv) if args.problems_csv else None
    clean = _writable(args.write_clean) if args.write_clean else None
    if clean and clean.suffix not in MANIFEST_SUFFIXES:
        raise CHTNError(f"--write-clean {clean}: give a .csv or .jsonl file name.")
    label_names = None
    if args.checkpoint:  # chtn.checkpoint imports torch (seconds): only then, so validate alone starts at once
        from chtn.checkpoint import load_checkpoint

        label_names = load_checkpoint(args.checkpoint).label_names
    pairs = load_pairs(args.data, label_names)
    report = validate_pairs(pairs, label_names)
    print(f"target {args.data}: {report.summary(args.show)}")
    if problems_csv:
        table = report.table()
        try:
            table.to_csv(problems_csv, index=False)
        except OSError as exc:
            raise CHTNError(f"Cannot write {problems_csv} ({exc.strerror}); choose a writable folder.") from None
        print(f"wrote {len(table)} problems and warnings to {problems_csv}")
    if clean:
        if not (report.ok or args.skip_invalid):
            raise CHTNError(f"{len(report.bad_rows)} rows are invalid; add --skip-invalid to write the others.")
        kept = ensure_valid(pairs, report, skip_invalid=True)
        save_pairs(kept, clean)
        print(f"wrote {len(kept)} valid rows to {clean}")
    elif args.skip_invalid and not report.ok:
        print(f"--skip-invalid: {len(pairs) - len(report.bad_rows)} of {len(pairs)} rows are valid.")
    ok = report.ok or args.skip_invalid
    if args.source:
        source_report = validate_source(load_source(args.source))
        print(f"source {args.source}: {source_report.summary(args.show)}")
        ok = ok and (source_report.ok or args.skip_invalid)
    return 0 if ok else 1
