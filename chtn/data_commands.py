"""The commands that read data only: `chtn validate`, and `checked_pairs`, with which every command (the plug-ins'
too) opens its data. No torch here, so validating a dataset starts at once; `chtn.cli` imports this module only
when a command runs."""

from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

from chtn.checkpoint import load_checkpoint
from chtn.data import MANIFEST_SUFFIXES, PairDataset, load_pairs, load_source, save_pairs
from chtn.errors import CHTNError
from chtn.validation import ensure_valid, load_checked_pairs, validate_pairs, validate_source


def checked_pairs(args: argparse.Namespace, split: str | None, label_names: Sequence[str] | None = None) -> PairDataset:
    """The rows a command uses (`split`; None = all), validated: stop with the report, or with --skip-invalid
    drop the invalid rows and print what was skipped. The plug-ins open their data this way too (the plug-in
    contract, module docstring)."""

    data, report = load_checked_pairs(args.data, split, label_names, args.skip_invalid)
    if not report.ok:  # on stderr: standard output is the command's result (`review queue --format csv` parses)
        what = "dataset" if split is None else f"{split} split"
        print(f"--skip-invalid: {report.skipped_note(what)}", file=sys.stderr)
    elif report.warnings:
        print(report.summary(), file=sys.stderr)
    return data


def _output_file(path: str) -> Path:
    """An output file, its folder made if missing, before any work (so the command fails early, not at the end)."""
    out = Path(path)
    if out.is_dir():
        raise CHTNError(f"Cannot write {out}: it is a folder; give a file name inside it.")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CHTNError(f"Cannot write {out}: cannot make the folder {out.parent} ({exc.strerror}).") from None
    return out


def clean_manifest_path(data: str) -> Path:
    """Where `validate`'s suggested next step writes the valid rows: beside the dataset, named after it."""
    source = Path(data)
    return source.with_name(f"{source.stem if source.is_file() else source.name}.clean.csv")


def command_line(command: str, *args: str | Path) -> str:
    """`python -m chtn <command> <args>`, quoted for a shell: a command that a printed fix names, which works when
    copied as it stands (tests run each one)."""
    return shlex.join(["python", "-m", "chtn", command, *map(str, args)])


def validate_command(data: str | Path, checkpoint: str | Path | None, *flags: str) -> str:
    """`python -m chtn validate` on this dataset (and checkpoint's labels) with `flags`."""
    return command_line("validate", "--data", data, *(("--checkpoint", checkpoint) if checkpoint else ()), *flags)


def next_step(data: str, checkpoint: str | None, valid: int, total: int) -> str:
    """What to run to go on without the invalid rows: a command that works as printed (tests run it)."""
    command = validate_command(data, checkpoint, "--skip-invalid", "--write-clean", str(clean_manifest_path(data)))
    return (
        f"next: to go on with the {valid} valid of {total} rows, write them to a clean manifest and give it to the "
        f"commands and the dashboard in place of {data}:\n  {command}\n"
        'or pass --skip-invalid to every command (the dashboard: tick "Skip invalid rows").'
    )


def cmd_validate(args: argparse.Namespace) -> int:

    problems_csv = _output_file(args.problems_csv) if args.problems_csv else None
    clean = _output_file(args.write_clean) if args.write_clean else None
    if clean and clean.suffix not in MANIFEST_SUFFIXES:
        raise CHTNError(f"--write-clean {clean}: give a .csv or .jsonl file name.")
    label_names = None
    if args.checkpoint:  # its categories only: the model is not built, so no torch is imported
        label_names = load_checkpoint(args.checkpoint, build_model=False).label_names
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
    if not report.ok and not clean:
        print(next_step(args.data, args.checkpoint, len(pairs) - len(report.bad_rows), len(pairs)))
    ok = report.ok or args.skip_invalid
    if args.source:
        source_report = validate_source(load_source(args.source))
        print(f"source {args.source}: {source_report.summary(args.show)}")
        ok = ok and (source_report.ok or args.skip_invalid)
    return 0 if ok else 1
