"""The command behind `chtn bias` (declared in `cli.py`; `chtn.cli` imports this module only when it runs)."""

from __future__ import annotations

import argparse
from pathlib import Path

from analysis.bias.gain import pick_reference
from analysis.bias.render import flags_statement, gate_statement, runs_statement, write_report
from analysis.bias.report import BiasSettings, bias_report, open_source
from analysis.stats import MAX_RESAMPLES
from analysis.workspace import check_one_recipe, recipe_runs, reference_candidates
from chtn.checkpoint import Checkpoint, load_checkpoint
from chtn.data_commands import checked_pairs
from chtn.errors import CHTNError


def cmd_bias(args: argparse.Namespace) -> int:
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
        progress=lambda _, step: print(step, flush=True),
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
