"""What the dashboard opens: the sample or a user's checkpoint and dataset, uploads, the model card and the
Overview's per-category figures.

The embedded split itself (cached on disk) is `chtn.gallery`, shared with the CLI.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.stats import RESAMPLES, mean_interval
from chtn.checkpoint import Checkpoint, load_checkpoint
from chtn.data import PairDataset
from chtn.data_commands import validate_command
from chtn.directions import DIRECTION_NAMES, DIRECTIONS
from chtn.errors import CHTNError
from chtn.evaluate import EvaluationReport
from chtn.hashing import default_cache_dir
from chtn.validation import ValidationReport, load_checked_pairs

ROOT = Path(__file__).resolve().parents[1]
SAMPLE_DATASET = ROOT / "sample_data" / "fashion" / "pairs.csv"
SAMPLE_CHECKPOINTS = {
    "chtn_fashion_source": ROOT / "sample_data" / "checkpoints" / "chtn_fashion_source.safetensors",
    "chtn_no_source": ROOT / "sample_data" / "checkpoints" / "chtn_no_source.safetensors",
    "chtn_cifar_source": ROOT / "sample_data" / "checkpoints" / "chtn_cifar_source.safetensors",
}
DEFAULT_CHECKPOINT = "chtn_fashion_source"


ALLOWED_DIRS_ENV = "CHTN_ALLOWED_DIRS"
OUTSIDE = (
    "This server opens files only inside the folders it was configured with ({env}); {path!r} is not one of "
    "them. Use a shipped sample, upload the file, or ask whoever runs the server to add its folder."
)


def allowed_dirs(environ: dict[str, str] | None = None) -> list[Path] | None:
    """The folders a team server lets the dashboard open ($CHTN_ALLOWED_DIRS, os.pathsep-separated), resolved;
    None (no confinement) when the variable is unset or empty."""
    value = (os.environ if environ is None else environ).get(ALLOWED_DIRS_ENV, "")
    folders = [Path(part).expanduser().resolve() for part in value.split(os.pathsep) if part.strip()]
    return folders or None


def confine(path: str | Path, allowed: Sequence[Path] | None, cache_dir: Path | None = None) -> Path:
    """`path` (a user's sidebar entry or a `?checkpoint=` link) resolved, or a `CHTNError`.

    A NUL byte is refused always. With `allowed` folders (a team server), the resolved path (symlinks followed,
    `..` collapsed) must lie inside one of them, the shipped samples or the uploads folder; outside paths get one
    message, whether or not the file exists, so a link cannot probe the server's disk.
    """
    text = str(path)
    if "\x00" in text:
        raise CHTNError("The path contains a NUL byte (\\x00), which no file name can hold; check the link or entry.")
    if allowed is None:
        return Path(text).expanduser()
    try:
        resolved = Path(text).expanduser().resolve()
    except (OSError, RuntimeError, ValueError):  # a name too long or not encodable, a symlink loop
        raise CHTNError(OUTSIDE.format(env=ALLOWED_DIRS_ENV, path=text)) from None
    roots = [*allowed, (ROOT / "sample_data").resolve(), ((cache_dir or default_cache_dir()) / "uploads").resolve()]
    if not any(resolved.is_relative_to(root) for root in roots):
        raise CHTNError(OUTSIDE.format(env=ALLOWED_DIRS_ENV, path=text))
    return resolved


def confine_images(data: PairDataset, allowed: Sequence[Path] | None, cache_dir: Path | None = None) -> None:
    """Every image a dataset lists lies inside the allowed folders (a manifest could name any file on the server).
    Checked before validation, which would tell existing and missing files apart."""
    for image in data.image_paths:
        try:
            confine(image, allowed, cache_dir)
        except CHTNError:
            raise CHTNError(
                f"The dataset {data.source} lists images outside the folders this server opens "
                f"({ALLOWED_DIRS_ENV}), e.g. {str(image)!r}; keep the images next to the manifest."
            ) from None


def resolve_checkpoint(choice: str) -> Path:
    """A sample checkpoint name or a file path -> the file path (not yet loaded)."""
    return SAMPLE_CHECKPOINTS.get(choice, Path(choice).expanduser())


def store_upload(name: str, payload: bytes, cache_dir: Path | None = None) -> Path:
    """Keep an uploaded file under the cache folder: a content-hash folder (same bytes, same path) holding
    the file under its own name, so messages about it name the file the user chose."""
    safe_name = Path(name).name or "upload"
    folder = (cache_dir or default_cache_dir()) / "uploads" / hashlib.sha256(payload).hexdigest()[:16]
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / safe_name
    if not path.exists():
        path.write_bytes(payload)
    return path


def upload_key(path: Path) -> str:
    """What a link carries to find an upload kept by :func:`store_upload` again: its content-hash folder's name."""
    return path.parent.name


def stored_upload(key: str, cache_dir: Path | None = None) -> Path | None:
    """The upload kept under ``key`` (:func:`upload_key`), or None when the key is not one (a link's value is
    untrusted: only a 16-hex-digit folder under the cache's uploads, holding one file, is accepted)."""
    if not re.fullmatch(r"[0-9a-f]{16}", key):
        return None
    folder = (cache_dir or default_cache_dir()) / "uploads" / key
    files = sorted(folder.iterdir()) if folder.is_dir() else []
    return files[0] if len(files) == 1 and files[0].is_file() else None


def reference_candidates(checkpoint_path: Path) -> list[Path]:
    """Checkpoints beside this one, in a `replicates/` folder beside it (or the folder it is a replicate of), and the
    best checkpoints and built-in baselines of sibling runs (runs/*/best.safetensors, runs/*/baseline_*.safetensors)."""
    folder = checkpoint_path.resolve().parent
    found = [
        *sorted(folder.glob("*.safetensors")),
        *sorted((folder / "replicates").glob("*.safetensors")),
        *(sorted(folder.parent.glob("*.safetensors")) if folder.name == "replicates" else []),
        *sorted(folder.parent.glob("*/best.safetensors")),
        *sorted(folder.parent.glob("*/baseline_*.safetensors")),
    ]
    return [p for p in dict.fromkeys(found) if p != checkpoint_path.resolve()]


def recipe_key(checkpoint: Checkpoint) -> str:
    """What makes two checkpoints runs of one recipe: the same config but for the training seed, the same labels, and
    the same training data and source (fingerprints)."""
    config = dataclasses.asdict(checkpoint.config)
    config["train"].pop("seed", None)
    meta = checkpoint.meta
    parts = [config, checkpoint.label_names, (meta.get("dataset") or {}).get("fingerprint")]
    parts.append((meta.get("source") or {}).get("fingerprint"))
    return json.dumps(parts, sort_keys=True, default=str)


def recipe_runs(checkpoint: Checkpoint, candidates: Sequence[Checkpoint]) -> list[Checkpoint]:
    """The other training runs of this checkpoint's recipe among `candidates` (other seeds, same everything else)."""
    key = recipe_key(checkpoint)
    return [c for c in dict.fromkeys(candidates) if c != checkpoint and recipe_key(c) == key]


def run_names(runs: Sequence[Checkpoint]) -> str:
    """The runs as a page lists them: each file's name, with its folder where the name is `chtn train`'s (`best`,
    `last`), which every run shares: `run_a/best`, not `best` twice."""
    return ", ".join(
        f"`{run.path.parent.name}/{run.path.stem}`" if run.path.stem in ("best", "last") else f"`{run.path.stem}`"
        for run in runs
    )


def check_one_recipe(runs: Sequence[Checkpoint], side: str) -> None:
    """Refuse a side whose runs are not distinct training runs of one recipe: the same file twice would count one
    run as two, and runs of another config or data would mix recipes into one side's variance."""
    first = runs[0]
    for run in runs[1:]:
        if sum(r.digest == run.digest for r in runs) > 1:
            raise CHTNError(f"{side}: {run.path} is given twice (same content); give each training run once.")
        if recipe_key(run) != recipe_key(first):
            raise CHTNError(
                f"{side}: {run.path.name} is not a run of {first.path.name}'s recipe (its config, labels, training "
                "data or source differ, not just the seed). Give only runs that differ in train.seed."
            )


def open_checkpoint(choice: str) -> Checkpoint:
    """The dashboard's checkpoint, its model built when a page first needs it (most answer from stored embeddings)."""
    return load_checkpoint(resolve_checkpoint(choice), build_model=False)


def skip_hint(path: str | Path, checkpoint: Checkpoint) -> str:
    """The dashboard's way out of invalid rows, with a command that lists them all and works as printed."""
    listing = validate_command(Path(path).resolve(), checkpoint.path.resolve(), "--show", "all")  # any folder
    return f'tick "Skip invalid rows" in the sidebar to open the rest (`{listing}` lists every offender)'


def open_dataset(
    path: str | Path,
    checkpoint: Checkpoint,
    skip_invalid: bool = False,
    split: str | None = "test",
    allowed: Sequence[Path] | None = None,
) -> tuple[PairDataset, ValidationReport]:
    """The split the dashboard explores (None: every row), validated for this checkpoint as the CLI validates it.

    Invalid rows are a `DataValidationError` naming them and the sidebar choice, or with `skip_invalid` are
    dropped; the report returned says what was skipped (`bad_rows`, `skipped_note`). With `allowed` folders (a
    team server), every image must lie inside them, checked before validation looks at any file.
    """
    return load_checked_pairs(
        path,
        split,
        checkpoint.label_names,
        skip_invalid,
        skip_hint(path, checkpoint),
        lambda data: confine_images(data, allowed),
    )


def other_training_data(checkpoint: Checkpoint, opened: str | Path) -> str | None:
    """What a page says when the dataset open is not the one the checkpoint was trained on (its recorded path, taken
    from the current folder as `chtn train` was run, exists and is another file): its figures are then on rows it did
    not learn from. None when it is the same, or the recorded one is not found here."""
    recorded = (checkpoint.meta.get("dataset") or {}).get("path")
    if not recorded or not Path(recorded).exists() or Path(recorded).resolve() == Path(opened).resolve():
        return None
    return (
        f"**{checkpoint.path.name} was trained on {recorded}**, and the dataset open here is {opened}: its figures are "
        "on another dataset's test split. To see it on its own data, give that path under Dataset in the sidebar."
    )


def trained_on(provenance: object) -> str:
    """ "CPU (2 cores) · float32 · 1 process · torch 2.x · 412 s · seed 0", or "unknown" for checkpoints
    written before training recorded it (each missing part is "?")."""
    if not isinstance(provenance, dict) or not provenance:
        return "unknown (not recorded by the code that trained this checkpoint)"

    def part(key: str, form: str) -> str:
        value = provenance.get(key)
        if value is None or isinstance(value, (dict, list)):  # missing, or a damaged header's wrong shape
            return "?"
        try:
            return form.format(value)
        except (TypeError, ValueError):  # e.g. text where seconds belong: say so, never fail the model card
            return "?"

    device = part("device", "{}")
    if provenance.get("device_type") == "cpu" and provenance.get("cpu_count") is not None:
        device += f" ({provenance['cpu_count']} cores)"
    processes = provenance.get("processes")
    torch_version = part("torch", "torch {}")
    if provenance.get("device_type") == "cuda":
        torch_version += f" (CUDA {provenance.get('cuda', '?')}, cuDNN {provenance.get('cudnn', '?')})"
    resumed = provenance.get("resumed_from_epoch")
    wall = part("wall_seconds", "{:.0f} s") + (f" (resumed at epoch {resumed})" if resumed else "")
    return " · ".join(
        [
            device,
            part("precision", "{}"),
            "?" if processes is None else f"{processes} process{'es' if processes != 1 else ''}",
            torch_version,
            wall,
            part("seed", "seed {}"),
        ]
    )


def text_features_choice(choice: object) -> str:
    """How the text features were chosen (`chtn.text_choice`), or "unknown" for older checkpoints. The record comes
    from a checkpoint's header, which may be damaged: a field of the wrong type is shown as "?", never raised on."""
    if not isinstance(choice, dict) or "mode" not in choice:
        return "unknown (not recorded: set as configured)"
    features = choice.get("features", "?")
    if choice["mode"] == "fixed":
        return f"{features} (as configured)"
    candidates = choice.get("candidates")
    scores = ", ".join(
        f"{c.get('name')} {c.get('val_map')}"
        for c in (candidates if isinstance(candidates, list) else [])
        if isinstance(c, dict)
    )
    validated = (
        f"chosen on validation: {choice.get('chosen')}; MAP on {choice.get('n_val', '?')} pairs "
        f"carved from the training pairs: {scores or '?'}"
    )
    if choice["mode"] == "language":
        share = choice.get("cjk_share")
        shown = f"{share:.0%}" if isinstance(share, int | float) and not isinstance(share, bool) else "?"
        if candidates is not None:  # CJK text: TF-IDF candidates scored on validation
            return f"{features} (language rule: {shown} CJK characters, {validated})"
        how = "switched to character n-grams" if choice.get("chosen") != "configured" else "kept as configured"
        return f"{features} (language rule: {shown} CJK characters, {how})"
    return f"{features} ({validated})"


def model_card(checkpoint: Checkpoint) -> dict[str, object]:
    """The facts a reviewer asks first: what was trained, on what, from which source, when, by which code."""
    meta, config = checkpoint.meta, checkpoint.config
    source = meta.get("source")
    dataset = meta.get("dataset") or {}
    metrics = meta.get("metrics") or {}
    return {
        "file": checkpoint.path.name,
        "content hash": checkpoint.digest,
        "created at": meta.get("created_at", "unknown"),
        "code version": meta.get("code_version", "unknown"),
        "preset": meta.get("preset", "custom"),
        "training data": f"{dataset.get('path', '?')} ({dataset.get('n_train', '?')} train / "
        f"{dataset.get('n_val', '?')} val / {dataset.get('n_test', '?')} test pairs)",
        "source domain": "none (no-source ablation)"
        if not source
        else f"{source['path']} ({source.get('n_images', '?')} images, {len(source['label_names'])} classes)",
        "source domain fit": "n/a"
        if not meta.get("source_fit")
        else f"relevance {meta['source_fit']['relevance']:.2f} (domain classifier AUC "
        f"{meta['source_fit']['auc']:.2f}; source terms scaled by the relevance)",
        "categories": len(checkpoint.label_names),
        "image encoder": (meta.get("encoders") or {}).get("image", "?"),
        "image trunk": "frozen (release)"
        if not config.encoder.finetune_stages
        else f"last {config.encoder.finetune_stages} unit(s) fine-tuned with CHTN (deviation)",
        "text encoder": (meta.get("encoders") or {}).get("text", "?"),
        "text features": text_features_choice(meta.get("text_choice")),
        "common representation": f"{config.model.common} "
        f"({'release' if config.model.common == 'softmax' else 'deviation'})",
        "widths": f"hidden {config.model.hidden_dim}, shared {config.model.shared_dim}"
        + (f"; ensemble of {config.model.ensemble} (outputs averaged)" if config.model.ensemble > 1 else ""),
        "MMD estimator": config.loss.mmd_estimator,
        "trained on": trained_on(meta.get("provenance")),
        "software": "unknown"
        if not isinstance(meta.get("provenance"), dict)
        else f"Python {meta['provenance'].get('python', '?')} · {meta['provenance'].get('platform', '?')}",
        "best epoch": metrics.get("best_epoch", "?"),
        "validation MAP": round(metrics["val_map_mean"], 4) if "val_map_mean" in metrics else "n/a",
    }


def category_ap(report: EvaluationReport, resamples: int = RESAMPLES, seed: int = 0) -> pd.DataFrame:
    """Mean AP per category and direction with its percentile bootstrap 95% CI over the category's queries, one
    row per (category, direction), categories sorted by their mean AP over both directions, lowest first (where
    to look first). Queries without an AP (no relevant item) are left out, as MAP leaves them out."""
    rows = []
    for d in DIRECTIONS:
        result = getattr(report, d)
        for label, name in enumerate(report.label_names):
            ap = np.asarray(result.ap)[np.asarray(result.query_labels) == label]
            ap = ap[~np.isnan(ap)]
            low, high = mean_interval(ap, resamples, seed, stream=label)
            mean = float(ap.mean()) if len(ap) else float("nan")
            rows.append(
                {"category": name, "direction": DIRECTION_NAMES[d], "AP": mean, "low": low, "high": high, "n": len(ap)}
            )
    table = pd.DataFrame(rows)
    order = table.groupby("category", sort=False)["AP"].mean().sort_values(kind="stable").index
    return table.set_index("category").loc[order].reset_index()
