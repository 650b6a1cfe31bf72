"""The source-bias report of one checkpoint on one dataset: every diagnostic per target category, computed once
and kept on disk (JSON, keyed by the content of everything it was computed from).

Shared by the "Source bias" page and `python -m chtn bias`, so the meeting sees what the CLI writes.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.bias.gain import confusions, resolve_source, transfer_gain
from analysis.bias.source_fit import capture, capture_summary, coverage, imagenet_prior, mmd_test
from analysis.projection.project import modality_gap
from analysis.stats import MIN_EFFECT, MIN_QUERIES, RESAMPLES
from chtn.checkpoint import Checkpoint
from chtn.data import PairDataset, SourceDataset, load_source
from chtn.directions import ARROWS
from chtn.domain import proxy_a_distance, source_domain_fit
from chtn.errors import CHTNError
from chtn.gallery import Gallery, embed_split, evaluate_gallery
from chtn.hashing import default_cache_dir
from chtn.progress import Progress, within

NO_SOURCE_NOTE = (
    "No source data: coverage, capture and domain discrepancy need the source images the checkpoint was trained with."
)
VERSION = 5  # bump when a diagnostic's definition changes: older cached reports are then recomputed


@dataclass(frozen=True)
class BiasSettings:
    """Every setting a number depends on; all are part of the cache key and stated in the report."""

    resamples: int = RESAMPLES  # paired bootstrap / randomization resamples of the transfer gain
    seed: int = 0  # seed of every resampling, permutation and subsample
    permutations: int = 500  # MMD permutation test
    k: int = 10  # top-k of the confusion table
    max_source_images: int = 500  # source images per category for MMD and the A-distance (seeded subsample)
    min_queries: int = MIN_QUERIES  # below this a category's gain is "insufficient evidence"
    min_effect: float = MIN_EFFECT  # a significant |ΔAP| below this is a "negligible effect", not helped / hurt


@dataclass
class BiasReport:
    """All diagnostics of one (checkpoint, reference, dataset, source, settings). Tables are per category; the gain
    alone also uses the other training runs of each side's recipe, when given."""

    checkpoint: str  # content hash
    reference: str | None  # content hash of the no-source reference, or None
    dataset: str  # fingerprint of the test split scored
    settings: BiasSettings
    source: dict | None  # path, fingerprint, images, classes; None when unavailable
    gate: dict | None  # the training's domain gate: auc, relevance (from the checkpoint)
    runs: list[str] = field(default_factory=list)  # content hashes of other training runs of the checkpoint's recipe
    reference_runs: list[str] = field(default_factory=list)  # ... and of the reference's recipe
    notes: list[str] = field(default_factory=list)  # what could not be shown, and why
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)  # gain, coverage, capture, discrepancy, ...

    def table(self, name: str) -> pd.DataFrame | None:
        return self.tables.get(name)

    def to_json(self) -> str:
        """Plain, valid JSON (never a pickle): tables in pandas' split layout, floats exact, NaN as null."""
        return json.dumps(
            {
                **{k: v for k, v in asdict(self).items() if k not in ("tables", "settings")},
                "settings": asdict(self.settings),
                "tables": {name: _table_to_dict(t) for name, t in self.tables.items()},
            },
            indent=1,
            allow_nan=False,
        )

    @classmethod
    def from_json(cls, text: str) -> BiasReport:
        raw = json.loads(text)
        tables = {
            name: pd.DataFrame(t["data"], index=t["index"], columns=t["columns"])
            for name, t in raw.pop("tables").items()
        }
        return cls(**{**raw, "settings": BiasSettings(**raw["settings"]), "tables": tables})


def _table_to_dict(table: pd.DataFrame) -> dict:
    """pandas' split layout with Python scalars (json writes floats exactly, unlike `to_json`) and NaN as None."""
    layout = table.to_dict(orient="split")
    layout["data"] = [[None if isinstance(v, float) and v != v else v for v in row] for row in layout["data"]]
    return layout


def _cache_key(parts: list[object]) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:20]


def bias_report(
    checkpoint: Checkpoint,
    data: PairDataset,
    reference: Checkpoint | None = None,
    source: SourceDataset | None = None,
    settings: BiasSettings = BiasSettings(),
    cache_dir: Path | None = None,
    progress: Progress | None = None,
    runs: Sequence[Checkpoint] = (),
    reference_runs: Sequence[Checkpoint] = (),
    read_images: bool = True,
) -> BiasReport:
    """The report, read from the disk cache or computed (with `progress(fraction, step)`) and stored there.

    `runs` and `reference_runs` are further training runs (other seeds) of the checkpoint's and the reference's
    recipes: with two or more on each side the transfer gain compares the recipes across runs (`transfer_gain`).
    Without `read_images`, only the tables the test split's embeddings give (transfer gain, confusions, modality
    gap): no image is read and no image model loaded, and `source` is not used. That is the dashboard's first
    answer, seconds on any split, while the rest computes in the background.
    """
    if reference is None:
        reference_runs = ()
    if not read_images:
        source = None
    checkpoint.check_labels(data.labels)
    # Class indices follow the checkpoint's label order (a dataset read without it is sorted by name).
    data = replace(data, label_names=list(checkpoint.label_names))
    path = report_path(checkpoint, data, reference, source, settings, cache_dir, runs, reference_runs, read_images)
    if path.exists():
        report = BiasReport.from_json(path.read_text(encoding="utf-8"))
        if source is not None and report.source:  # keyed by content: the same images, maybe read from elsewhere
            report.source["path"] = source.source  # (another clone, a moved folder): say where they are now
        return report
    sides = ([checkpoint, *runs], [reference, *reference_runs]) if reference else None
    report = _compute(
        sides or ([checkpoint], []), data, source, settings, cache_dir, progress or (lambda *_: None), read_images
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")  # private: concurrent writers never mix
    with os.fdopen(handle, "w", encoding="utf-8") as file:
        file.write(report.to_json())
    Path(tmp).replace(path)
    return report


def report_path(
    checkpoint: Checkpoint,
    data: PairDataset,
    reference: Checkpoint | None = None,
    source: SourceDataset | None = None,
    settings: BiasSettings = BiasSettings(),
    cache_dir: Path | None = None,
    runs: Sequence[Checkpoint] = (),
    reference_runs: Sequence[Checkpoint] = (),
    read_images: bool = True,
) -> Path:
    """Where `bias_report` keeps the report of these inputs: a content hash of everything it depends on."""
    key = _cache_key(
        [VERSION, checkpoint.digest, reference.digest if reference else None, data.split("test").fingerprint()]
        + [source.fingerprint() if source and read_images else None, asdict(settings)]
        + [[c.digest for c in runs], [c.digest for c in reference_runs if reference]]
        + ([] if read_images else ["embeddings only"])  # the full report keeps its key from before this flag
    )
    return (cache_dir or default_cache_dir()) / "bias" / f"{key}.json"


def open_source(checkpoint: Checkpoint, override: str | Path | None, data_path: str | Path | None) -> SourceDataset:
    """The checkpoint's source dataset, found as `gain.resolve_source` says, in its training class order."""
    names = (checkpoint.meta.get("source") or {}).get("label_names")
    source = load_source(resolve_source(checkpoint, override, data_path), names)
    expected = checkpoint.config.model.num_source_classes
    if expected and len(source.label_names) != expected:
        raise CHTNError(
            f"The source {source.source} has {len(source.label_names)} classes; {checkpoint.path.name}'s source "
            f"classifier has {expected}. Point at the source it was trained with."
        )
    return source


def _compute(
    sides: tuple[list[Checkpoint], list[Checkpoint]],
    data: PairDataset,
    source: SourceDataset | None,
    settings: BiasSettings,
    cache_dir: Path | None,
    progress: Progress,
    read_images: bool,
) -> BiasReport:
    """Every diagnostic of `sides[0][0]` (those of its test embeddings only, without `read_images`); the gain of its
    runs (`sides[0]`) against the reference's (`sides[1]`)."""
    checkpoint, names = sides[0][0], sides[0][0].label_names
    progress(0.0, "Embedding the test split")
    gallery = embed_split(checkpoint, data, "test", cache_dir=cache_dir)
    report = BiasReport(
        checkpoint.digest,
        sides[1][0].digest if sides[1] else None,
        gallery.data.fingerprint(),
        settings,
        None,
        checkpoint.meta.get("source_fit"),
        [c.digest for c in sides[0][1:]],
        [c.digest for c in sides[1][1:]],
    )
    tables = report.tables
    if sides[1]:
        tables["gain"] = _gain(sides, gallery, data, settings, cache_dir, progress)
        _note_insufficient(report, len(gallery))
    else:
        report.notes.append(
            "No reference checkpoint (same dataset and labels, trained without a source): the transfer gain, the "
            "direct evidence, cannot be shown. Train one with --source none and pick it as the reference."
        )
    tables["confusions"] = pd.concat(
        [
            confusions(query, other, gallery.labels, names, settings.k).assign(direction=ARROWS[d])
            for d, query, other in (("i2t", gallery.image, gallery.text), ("t2i", gallery.text, gallery.image))
        ],
        ignore_index=True,
    )
    tables["gap"] = modality_gap(gallery.image, gallery.text, gallery.labels, names).per_category
    if read_images:
        _image_diagnostics(report, checkpoint, gallery, data, source, settings, cache_dir, progress)
    return report


def _image_diagnostics(
    report: BiasReport,
    checkpoint: Checkpoint,
    gallery: Gallery,
    data: PairDataset,
    source: SourceDataset | None,
    settings: BiasSettings,
    cache_dir: Path | None,
    progress: Progress,
) -> None:
    """Add to `report` what needs the images through the encoders: the ImageNet prior and, with the source, coverage,
    capture and the domain discrepancy."""
    # Here, not at the top: the encoders import PyTorch (seconds), which the first answer (the test embeddings) does
    # not need.
    from chtn.encoders import cached_image_trunk, imagenet_class_names
    from chtn.features import FeatureCache, image_features
    from chtn.tower import create_tower

    tables, names, cache = report.tables, checkpoint.label_names, FeatureCache(cache_dir)
    progress(0.3, "ImageNet prior of the target images")
    frozen = cached_image_trunk(checkpoint.config.encoder.image_model, checkpoint.config.encoder.image_weights or None)
    target_frozen, target_logits = image_features(gallery.data.image_paths, cache, frozen)
    tables["prior"] = imagenet_prior(target_logits, gallery.labels, names, imagenet_class_names())
    if source is None:
        report.notes.append(NO_SOURCE_NOTE)
        return
    report.source = {
        "path": source.source,
        "fingerprint": source.fingerprint(),
        "images": len(source),
        "classes": len(source.label_names),
    }
    progress(0.4, "Source image features")
    source_frozen = image_features(source.image_paths, cache, frozen, progress=within(progress, 0.4, 0.55))[0]
    tables["coverage"] = coverage(
        target_frozen, gallery.labels, names, source_frozen, source.label_index, source.label_names
    )
    tower = create_tower(checkpoint)
    tuned = bool(checkpoint.trunk_weights)
    target_own = tower.image_features(gallery.data.image_paths, cache)[0] if tuned else target_frozen
    source_own = tower.image_features(source.image_paths, cache)[0] if tuned else source_frozen
    if checkpoint.config.model.has_source:
        matrix = capture(tower.source_probabilities(target_own), gallery.labels, names, source.label_names)
        tables["capture"] = matrix
        tables["capture_summary"] = capture_summary(matrix)
    progress(0.6, "Domain discrepancy per category")
    train_paths = data.split("train").image_paths
    p_target = None
    if train_paths:  # the gate was fitted against the training images, as here
        train_frozen = image_features(train_paths, cache, frozen, progress=within(progress, 0.6, 0.65))[0]
        p_target = source_domain_fit(source_frozen, train_frozen, seed=settings.seed).source_p_target
    else:
        report.notes.append(
            "The dataset has no training rows: how target-like the gate found each source class is not shown."
        )
    tables["discrepancy"] = _discrepancy(
        tables["coverage"],
        gallery.labels,
        names,
        source,
        (target_frozen, source_frozen),
        tower.image_activations(target_own),
        tower.image_activations(source_own, source=True),
        p_target,
        checkpoint,
        settings,
        progress,
    )


def _gain(
    sides: tuple[list[Checkpoint], list[Checkpoint]],
    gallery: Gallery,
    data: PairDataset,
    settings: BiasSettings,
    cache_dir: Path | None,
    progress: Progress,
) -> pd.DataFrame:
    """The transfer gain of the checkpoint's runs (first) against the reference's runs (second); `gallery` is the
    first run's test split, embedded already."""
    names, every = sides[0][0].label_names, [*sides[0], *sides[1]]
    reports = [evaluate_gallery(gallery, names, cache_dir)]
    for number, run in enumerate(every[1:], start=1):
        progress(0.05 + 0.25 * number / len(every), f"Transfer gain: ranking the test split with {run.path.name}")
        reports.append(evaluate_gallery(embed_split(run, data, "test", cache_dir=cache_dir), names, cache_dir))
    model, reference = reports[: len(sides[0])], reports[len(sides[0]) :]
    s = settings
    return transfer_gain(model, reference, s.resamples, s.seed, s.min_queries, s.min_effect)


def _note_insufficient(report: BiasReport, queries: int) -> None:
    """Say once, plainly, when no category of the gain holds evidence either way."""
    gain = report.tables["gain"]
    if len(gain) and gain["insufficient"].all():
        categories = gain["category"].nunique()
        report.notes.append(
            f"Insufficient evidence: the test split has {queries} queries in {categories} categor"
            f"{'y' if categories == 1 else 'ies'}; the transfer gain needs at least two categories and "
            f"{report.settings.min_queries} queries in a category and direction, so no category is flagged either "
            "way. Use a larger test split."
        )


def _discrepancy(
    coverage_table: pd.DataFrame,
    target_labels: np.ndarray,
    names: list[str],
    source: SourceDataset,
    trunk: tuple[np.ndarray, np.ndarray],
    target_layers: tuple[np.ndarray, np.ndarray],
    source_layers: tuple[np.ndarray, np.ndarray],
    p_target: np.ndarray | None,
    checkpoint: Checkpoint,
    settings: BiasSettings,
    progress: Progress,
) -> pd.DataFrame:
    """Per category, against the source class covering it best (`coverage` rank 1): MMD with its permutation
    p-value in the frozen trunk's features and at fc6/fc7, the proxy A-distance, and how target-like the
    training's domain gate found that class's images."""
    loss = checkpoint.config.loss
    multipliers = loss.mmd_kernels if loss.mmd_estimator == "quadratic" else (1.0,)
    best = coverage_table[coverage_table["rank"] == 1].set_index("category")["source class"]
    source_index = {name: j for j, name in enumerate(source.label_names)}
    rng = np.random.default_rng(settings.seed)
    rows = []
    for done, (name, source_class) in enumerate(best.items()):
        progress(0.6 + 0.4 * done / max(len(best), 1), f"Domain discrepancy: {name}")
        target_rows = np.flatnonzero(target_labels == names.index(name))
        source_rows = np.flatnonzero(source.label_index == source_index[source_class])
        if len(source_rows) > settings.max_source_images:
            source_rows = np.sort(rng.choice(source_rows, settings.max_source_images, replace=False))
        row = {"category": name, "matched source class": source_class, "source images used": len(source_rows)}
        for layer, (t, s) in zip(
            ("trunk", "fc6", "fc7"), (trunk, (target_layers[0], source_layers[0]), (target_layers[1], source_layers[1]))
        ):
            test = mmd_test(s[source_rows], t[target_rows], multipliers, settings.permutations, settings.seed)
            row[f"MMD² {layer}"], row[f"MMD p {layer}"] = test.mmd2, test.p_value
        enough = len(target_rows) >= 2 and len(source_rows) >= 2
        row["A-distance"] = (
            proxy_a_distance(trunk[1][source_rows], trunk[0][target_rows], seed=settings.seed)
            if enough
            else float("nan")
        )
        row["gate P(target)"] = float(p_target[source_rows].mean()) if p_target is not None else float("nan")
        rows.append(row)
    return pd.DataFrame(rows)
