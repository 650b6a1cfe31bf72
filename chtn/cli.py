"""The `chtn` command line (`python -m chtn`): the core's commands (validate, train, evaluate, embed, search) and
the commands that installed packages plug in (project, bias, review, compare: the dashboard layer's).

The plug-in contract. A plug-in is an entry point of the group `chtn.commands` (pyproject.toml) whose name is its
command and whose object is `register(subcommands)`. `build_parser` calls it with the sub-parser action of `chtn`
(`sub.add_parser(...)` makes a parser whose errors are `UsageError`s). `register` must:

- add one sub-parser named as its entry point (it may have sub-commands of its own: `chtn review queue|export`)
  and list that name in `PLUGIN_COMMANDS`, so that a Python without the entry point says how to install it;
- declare the options that commands share with the functions of this module, never by hand, so that a flag has
  one name, default and meaning everywhere: `add_data_options` (--data, --skip-invalid, --cache-dir),
  `add_split_option` (--split), `add_checkpoint_option` (--checkpoint), `add_out_option` (--out),
  `add_device_option` (--device) and `add_review_db_option` (--review-db, alias --db);
- set `func` to the command's dotted name, "package.module:function" (e.g. "analysis.bias.commands:cmd_bias"),
  a function `(args) -> int` returning the exit code. `main` imports that module only when the command runs, so
  `register`'s own module stays light (argparse and this module) and `chtn --help` imports neither torch nor pandas
  (tests/test_package.py checks), while the command's module imports what it uses at its top.

Before the command runs, `check_args` checks what the shared options carry (the device usable, --out writable); it
opens the data with `chtn.data_commands.checked_pairs` (validated; --skip-invalid drops the invalid rows) and raises
`CHTNError` for
anything the user can fix. Exit codes, the same for every command: 0 success (GO); 1 the finding the command is
there to report (invalid rows for `validate`, NO-GO for `compare`); 2 invalid input (a bad command line, a
`CHTNError`: the message names the input and the fix; for `compare` also evidence that cannot decide); 3 an internal
error (a bug: the traceback is printed) or a plug-in command this Python has not installed (`pip install -e .`; the
message says so), never 1 or 2, which a CI gate would read as a verdict or a bad rule file.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import tempfile
import traceback
from collections.abc import Callable, Sequence
from importlib.metadata import entry_points
from pathlib import Path
from typing import NoReturn

from chtn.config import PRESETS
from chtn.cpus import set_torch_threads
from chtn.directions import DIRECTIONS
from chtn.errors import CHTNError

TEXT_OPTIONS_HELP = """text features (--set encoder.FIELD=VALUE; chtn/config.py EncoderConfig):
  encoder.text=minilm+tfidf         minilm (English sentence model), tfidf, or minilm+tfidf (small's default)
  encoder.tfidf_analyzer=char_wb    word, char_wb (character n-grams inside words), char (across spaces:
                                    CJK and other unsegmented text), jieba (word n-grams, Chinese segmented
                                    by jieba) or jieba+char (both)
  encoder.tfidf_ngram=[2,4]         n-gram range (JSON list)
  encoder.tfidf_max_features=1000   TF-IDF vocabulary size
  encoder.text_choice=language      fixed: as set; language (default): as set unless most characters are CJK,
                                    then no MiniLM and the best on validation of TF-IDF char 1-3-grams (3,000
                                    terms), jieba word 1-2-grams (3,000) and both (5,000); validation: the best
                                    of the CJK ones, or else of (as set, MiniLM + char 1-3 TF-IDF, char 1-3
                                    TF-IDF alone). Validation trains each candidate on the training pairs minus
                                    20% carved from them and keeps the best MAP there (a short training each)
  encoder.text_choice_epochs=0      epochs per candidate with validation (0 = train.epochs)
The model card and the checkpoint's 'text_choice' metadata record what was used and why."""


def check_device(device: str | None) -> None:
    """Refuse a device string torch cannot use here, before any work (a typo must not fail after an hour)."""
    if device is None:
        return
    import torch

    forms = "cpu, cuda, cuda:N (N = GPU index) or mps"
    try:
        parsed = torch.device(device)
    except (RuntimeError, ValueError):
        raise CHTNError(f"--device {device!r} is not a device; use {forms}.") from None
    if parsed.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if not count:
            raise CHTNError(f"--device {device}: CUDA is not available on this machine; use --device cpu.")
        if parsed.index is not None and parsed.index >= count:
            raise CHTNError(f"--device {device}: this machine has {count} GPU(s) (cuda:0 to cuda:{count - 1}).")
    elif parsed.type == "mps":
        if not torch.backends.mps.is_available():
            raise CHTNError(f"--device {device}: Apple MPS is not available on this machine; use --device cpu.")
    elif parsed.type != "cpu":
        raise CHTNError(f"--device {device!r} is not supported; use {forms}.")


def _check_writable(out: str, folder: bool) -> None:
    """Make sure `--out` (a folder, or a file's folder) can be written before the computation starts."""
    path = Path(out)
    target = path if folder else path.parent
    if not folder and path.is_dir():
        raise CHTNError(f"--out {out} is a folder; give a file name (e.g. {path / 'embeddings.npz'}).")
    try:
        target.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=target):
            pass
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise CHTNError(f"Cannot write to --out {out} ({reason}); choose a folder you can write to.") from None


def check_args(args: argparse.Namespace) -> None:
    """Every argument checked before any work: counts positive, the device usable, the output writable, the
    query text valid UTF-8."""
    for flag, name, what in (
        ("-k", "k", "results"),
        ("--at-k", "at_k", "results"),
        ("--block-queries", "block_queries", "queries"),
    ):
        value = getattr(args, name, None)
        if value is not None and value < 1:
            raise CHTNError(f"{flag} must be a positive number of {what} (1 or more), got {value}.")
    check_device(getattr(args, "device", None))
    text = getattr(args, "text", None)
    if text is not None:
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise CHTNError(
                f"--text is not valid UTF-8 (an undecodable byte at character {exc.start + 1}); pass the query "
                "as UTF-8 text (check the terminal's locale, e.g. LANG=C.UTF-8)."
            ) from None
    if getattr(args, "out", None):
        _check_writable(args.out, folder=getattr(args, "out_is_folder", False))


def _show(value: str) -> int | None:
    """`--show`: a positive number of offenders per problem, or 'all'."""
    if value == "all":
        return None
    if not value.isdigit() or int(value) < 1:
        raise argparse.ArgumentTypeError(f"expected a positive number or 'all', got {value!r}")
    return int(value)


class UsageError(Exception):
    """argparse's complaint about a command line, raised instead of printing the usage block and exiting: `main`
    turns it into one `error:` line and exit 2, as for any other bad input."""


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are `UsageError`s (its sub-parsers are of this class too)."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: {message}")


DESCRIPTION = (
    "CHTN image<->text retrieval: the core's commands and those the installed dashboard layer plugs in. Bad input "
    "prints one error line (exit 2), not a traceback."
)

# The shared options of the plug-in contract (module docstring): each flag is declared here once, for the core's
# commands and the plug-ins alike.

DATA_HELP = "pairs manifest (.csv/.jsonl: id,image,text,label,split) or Wikipedia-layout folder"
SKIP_INVALID_HELP = "drop invalid rows (with a summary) instead of stopping"


def add_data_options(
    parser: argparse.ArgumentParser, *, uses: str, cache: bool = True, skip_invalid_help: str = SKIP_INVALID_HELP
) -> None:
    """--data (required; `uses` says which of its splits the command reads), --skip-invalid (`checked_pairs` applies
    it) and, unless `cache` is False, --cache-dir."""
    parser.add_argument("--data", required=True, help=f"{DATA_HELP}; uses {uses}")
    parser.add_argument("--skip-invalid", action="store_true", help=skip_invalid_help)
    if cache:
        parser.add_argument(
            "--cache-dir",
            default=None,
            help="cache folder of features, embeddings and projections (default $CHTN_CACHE_DIR or ~/.cache/chtn)",
        )


def add_split_option(parser: argparse.ArgumentParser, *, all_splits: bool = False) -> None:
    """--split, default test; with `all_splits` the value 'all' stands for every row (the command maps it)."""
    parser.add_argument(
        "--split", default="test", help="a split of --data" + (", or all" if all_splits else "") + " (default test)"
    )


def add_checkpoint_option(
    parser: argparse.ArgumentParser,
    *,
    many: bool = False,
    required: bool = True,
    help: str = "a checkpoint written by `chtn train` (.safetensors or .pt)",
) -> None:
    """--checkpoint: one file, or with `many` one or more (a list)."""
    parser.add_argument("--checkpoint", required=required, default=None, nargs="+" if many else None, help=help)


def add_out_option(
    parser: argparse.ArgumentParser, *, folder: bool = True, required: bool = True, writes: str = ""
) -> None:
    """--out, a folder or (folder=False) a file; `check_args` makes sure it can be written before any work (the
    `out_is_folder` default set here tells it which)."""
    kind = "output folder" if folder else "output file"
    parser.add_argument("--out", required=required, default=None, help=f"{kind}: {writes}" if writes else kind)
    parser.set_defaults(out_is_folder=folder)


def add_device_option(parser: argparse.ArgumentParser) -> None:
    """--device; `check_args` refuses one that torch cannot use here before any work."""
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda when present)")


def add_review_db_option(parser: argparse.ArgumentParser, *, use: str = "", fallback: str) -> None:
    """--review-db (alias --db), default None. The flag only: the plug-in resolves the location ($CHTN_REVIEW_DB,
    then `fallback`) with the review store, which the core does not import."""
    parser.add_argument(
        "--review-db",
        "--db",
        dest="review_db",
        default=None,
        help=f"review database: an SQLite file or a PostgreSQL URL{use} (default $CHTN_REVIEW_DB, else {fallback})",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="chtn", description=DESCRIPTION)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("validate", help="check a dataset (and a source) before training; list what to fix")
    add_data_options(
        p, uses="every split", cache=False, skip_invalid_help="exit 0 when valid rows remain; needed by --write-clean"
    )
    p.add_argument("--source", default=None, help="source images: manifest (image,label) or folder per class")
    add_checkpoint_option(p, required=False, help="also report labels this checkpoint does not know")
    p.add_argument("--show", type=_show, default=5, help="offenders listed per problem: a number (default 5) or all")
    p.add_argument("--problems-csv", default=None, metavar="PATH", help="write every offender (problem,row,id,...)")
    p.add_argument("--write-clean", default=None, metavar="PATH", help="write the valid rows as a .csv/.jsonl manifest")
    p.set_defaults(func="chtn.data_commands:cmd_validate")

    p = sub.add_parser(
        "train",
        help="train CHTN; writes best.safetensors, last.pt, metrics.jsonl",
        epilog=TEXT_OPTIONS_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_data_options(p, uses="every split")
    add_device_option(p)
    p.add_argument(
        "--source", default=None, help="source images: manifest (image,label) or folder per class; 'none' = ablation"
    )
    p.add_argument(
        "--preset",
        default="small",
        choices=sorted(PRESETS),
        help="config preset: small (CPU/sample; default), ensemble (small x 3 averaged), finetune "
        "(ensemble + the trunk's head conv trained), finetune2 (finetune with the last block stage trained too; "
        "the benchmark preset) or paper (the release)",
    )
    p.add_argument("--config", default=None, help="JSON file with config sections overriding the preset")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE", help="override one field")
    add_out_option(p, writes="best.safetensors, last.pt, metrics.jsonl")
    p.add_argument("--resume", action="store_true", help="continue from OUT/last.pt")
    p.set_defaults(func="chtn.commands:cmd_train")

    p = sub.add_parser(
        "baseline",
        help="train the built-in simple baselines (linear softmax per modality; CCA) on CHTN's rows and features",
    )
    add_data_options(p, uses="the train split (val chooses each baseline's setting)")
    add_device_option(p)
    p.add_argument(
        "--preset",
        default="small",
        choices=sorted(PRESETS),
        help="the CHTN preset whose encoders give the features (default small, as `chtn train`); only its encoder "
        "section matters",
    )
    p.add_argument("--config", default=None, help="JSON file with config sections overriding the preset")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE", help="override one field")
    p.add_argument("--kind", choices=["softmax", "cca", "both"], default="both", help="which baseline (default both)")
    add_out_option(p, writes="baseline_softmax.safetensors, baseline_cca.safetensors")
    p.set_defaults(func="chtn.commands:cmd_baseline")

    p = sub.add_parser("search", help="top-k results of one query over a split (as the dashboard's explorer)")
    add_data_options(p, uses="the split --split names")
    add_device_option(p)
    add_checkpoint_option(p)
    add_split_option(p)
    query = p.add_mutually_exclusive_group(required=True)
    query.add_argument("--query-id", help="id of an item of the split (its image or text is the query)")
    query.add_argument("--text", help="free text: searches the images")
    query.add_argument("--image", help="an image file: searches the texts")
    p.add_argument("--direction", choices=DIRECTIONS, default="i2t", help="with --query-id")
    p.add_argument("-k", type=int, default=10)
    p.add_argument("--category", action="append", default=[], help="only this category in the gallery (repeatable)")
    p.set_defaults(func="chtn.commands:cmd_search")

    p = sub.add_parser("evaluate", help="MAP I->T / T->I on a split; per-category and per-query CSV")
    add_data_options(p, uses="the split --split names")
    add_device_option(p)
    add_checkpoint_option(p)
    add_split_option(p)
    add_out_option(p, required=False, writes="per_category.csv, per_query.csv, summary.json (default: print only)")
    p.add_argument("--at-k", type=int, default=None, help="report MAP@k instead of MAP over the full ranking")
    p.add_argument(
        "--block-queries",
        type=int,
        default=None,
        help="queries ranked at a time, and the unit torchrun shares out (default: 4M scores per block)",
    )
    p.set_defaults(func="chtn.commands:cmd_evaluate")

    p = sub.add_parser("embed", help="write common-space embeddings of a split to .npz")
    add_data_options(p, uses="the split --split names")
    add_device_option(p)
    add_checkpoint_option(p)
    add_split_option(p, all_splits=True)
    add_out_option(p, folder=False, writes=".npz with ids, labels, image and text embeddings")
    p.set_defaults(func="chtn.commands:cmd_embed")
    for plugin in entry_points(group="chtn.commands"):  # e.g. `project`, from the dashboard layer
        plugin.load()(sub)
    add_threads_option(parser)
    return parser


def _threads(value: str) -> int:
    """`--threads`: a positive number of CPU threads."""
    if not value.isdigit() or int(value) < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of threads >= 1, got {value!r}")
    return int(value)


def add_threads_option(parser: argparse.ArgumentParser) -> None:
    """--threads on every command that runs (the leaves of the sub-command tree, plug-ins' included)."""
    groups = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]  # argparse has no public walk
    if not groups:
        parser.add_argument(
            "--threads",
            type=_threads,
            default=None,
            help="CPU threads for torch (default $CHTN_THREADS, $OMP_NUM_THREADS, else the cores this process may use)",
        )
    for group in groups:
        for child in dict.fromkeys(group.choices.values()):  # an alias maps to the same parser
            add_threads_option(child)


# The dashboard layer's commands, registered through the `chtn.commands` entry points of the installed package
# (pyproject.toml). Named here, never imported, so that a checkout run without `pip install -e .` can say so.
PLUGIN_COMMANDS = ("project", "bias", "review", "compare")


def installed_plugins() -> set[str]:
    """The commands that installed packages add (entry point group `chtn.commands`)."""
    return {plugin.name for plugin in entry_points(group="chtn.commands")}


def missing_plugin(argv: Sequence[str]) -> str | None:
    """The dashboard command `argv` asks for when this Python does not have it installed, else None."""
    command = next((arg for arg in argv if not arg.startswith("-")), None)
    return command if command in PLUGIN_COMMANDS and command not in installed_plugins() else None


def load_command(target: str) -> Callable[[argparse.Namespace], int]:
    """The command function a parser names as "package.module:function", imported now (see the plug-in contract)."""
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


def main(argv: Sequence[str] | None = None) -> int:
    for stream in (sys.stdout, sys.stderr):  # a file name or text that is not valid Unicode prints as \udcff
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
    argv = sys.argv[1:] if argv is None else list(argv)
    if command := missing_plugin(argv):  # a broken install, not bad input: exit 3, never 2 (a bad rule file) or 1
        print(
            f"error: `chtn {command}` comes from the installed CHTN package (entry point group chtn.commands), and "
            f"this Python ({sys.executable}) does not have it installed. From the checkout's folder run "
            '`pip install -e ".[test]"` (or `pip install -e .`), then run the command again.',
            file=sys.stderr,
        )
        return 3
    try:
        args = build_parser().parse_args(argv)
    except UsageError as exc:
        message, prog = str(exc), str(exc).split(":")[0]
        dash = " (a value that starts with '-' is written --option=VALUE)" if "expected one argument" in message else ""
        print(f"error: {message}{dash}; `{prog} --help` lists the options.", file=sys.stderr)
        return 2
    try:
        check_args(args)
        run_command = load_command(args.func)
        if "torch" in sys.modules:  # the command's module uses torch: size its thread pool first (chtn/cpus.py)
            args.torch_threads = set_torch_threads(args.threads)
        if args.command != "train" and int(os.environ.get("WORLD_SIZE", "1")) > 1:  # torchrun: see chtn.shards
            from chtn import shards  # torch: only when launched so

            shards.leave(shards.run(lambda: run_command(args), getattr(args, "device", None)))
        return run_command(args)
    except CHTNError as exc:  # the input is at fault: the message names it and the fix
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except Exception:  # noqa: BLE001 - anything else is a bug: exit 3, never 1, which `compare` uses for NO-GO
        traceback.print_exc()
        print(
            f"error: internal error in chtn {args.command} (a bug: please report it with the traceback above)",
            file=sys.stderr,
        )
        return 3
