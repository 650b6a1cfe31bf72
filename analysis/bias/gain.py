"""Source-bias diagnostics per target category: did the image-only source help, hurt, or never cover it?

The direct evidence is the transfer gain: per category and direction, AP of the checkpoint minus AP of a
reference trained without the source (the negative-transfer gap of Wang et al., CVPR 2019), with a paired
bootstrap CI, a randomization p-value and Benjamini-Hochberg flags (`analysis.stats`). Coverage, capture,
domain discrepancy and the ImageNet prior (`analysis.bias.source_fit`) are indicative proxies beside it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.stats import MIN_EFFECT, MIN_QUERIES, RESAMPLES, compare_slices
from chtn.checkpoint import Checkpoint
from chtn.directions import DIRECTIONS
from chtn.errors import CHTNError
from chtn.evaluate import EvaluationReport
from chtn.ranking import top_k

FDR = 0.10  # Benjamini-Hochberg level of the bias page's exploratory flags (docs/conventions.md)
HELPED, HURT, NO_EFFECT, INSUFFICIENT = "helped", "negative transfer", "no detectable effect", "insufficient evidence"
NEGLIGIBLE = "negligible effect"  # significant after BH, but |ΔAP| below the minimum practical effect
FLAGS = (HELPED, HURT, NEGLIGIBLE, NO_EFFECT, INSUFFICIENT)


def transfer_gain(
    model: EvaluationReport | Sequence[EvaluationReport],
    reference: EvaluationReport | Sequence[EvaluationReport],
    resamples: int = RESAMPLES,
    seed: int = 0,
    min_queries: int = MIN_QUERIES,
    min_effect: float = MIN_EFFECT,
) -> pd.DataFrame:
    """Per category and direction: ΔAP = AP(model) - AP(reference) over the category's queries, with its CI,
    p-value, BH q-value across categories x directions, and a flag.

    Flags, in this order: fewer than `min_queries` queries is **insufficient evidence**; q above `FDR` is **no
    detectable effect**; a significant |ΔAP| below `min_effect` is a **negligible effect** (with hundreds of
    queries a +0.002 change can be significant, and is still nothing a team acts on); otherwise **helped** or
    **negative transfer** by the sign. The CI is per slice and unadjusted; the flag uses the BH-adjusted q.

    Each side may be several training runs of its recipe (one report per run, all on the same split). With two or
    more runs on both sides a category's ΔAP is tested across runs (Welch's t on each run's mean AP), so the flags
    compare the recipes, training-seed variance included; otherwise they compare these checkpoints only.

    All reports must come from the same ranking code on the identical query set (same split, same order);
    queries without a relevant item (AP undefined) are left out of every run. Queries of a single category are
    insufficient evidence throughout (each ranking is perfect).
    """
    models = [model] if isinstance(model, EvaluationReport) else list(model)
    references = [reference] if isinstance(reference, EvaluationReport) else list(reference)
    first = models[0]
    if any(r.label_names != first.label_names for r in [*models, *references]):
        raise CHTNError(
            "The checkpoint and the reference know different categories; pick a reference trained on this label set."
        )
    a, b, labels, directions = [], [], [], []
    for direction in DIRECTIONS:
        sides = [getattr(r, direction) for r in [*models, *references]]
        mine = sides[0]
        if any(s.ap.shape != mine.ap.shape or not np.array_equal(s.query_labels, mine.query_labels) for s in sides):
            raise CHTNError("The checkpoint and the reference were not scored on the identical query set.")
        defined = np.logical_and.reduce([np.isfinite(s.ap) for s in sides])
        a.append(np.stack([getattr(r, direction).ap[defined] for r in references]))
        b.append(np.stack([getattr(r, direction).ap[defined] for r in models]))
        labels.append(mine.query_labels[defined])
        directions += [direction] * int(defined.sum())
    labels_all, directions_all = np.concatenate(labels), np.array(directions)
    masks = {
        f"{name}|{direction}": (labels_all == index) & (directions_all == direction)
        for direction in DIRECTIONS
        for index, name in enumerate(first.label_names)
    }
    frame = compare_slices(np.hstack(a), np.hstack(b), masks, "bh", resamples, seed, min_queries)
    if len(set(labels_all)) < 2:  # one category: every item is relevant to every query, every AP is 1
        frame["insufficient"] = True
        frame["p_adjusted"] = np.nan
    significant = frame["p_adjusted"].le(FDR) & ~frame["insufficient"]
    practical = frame["delta"].abs() >= min_effect
    frame["flag"] = np.select(
        [
            frame["insufficient"],
            significant & ~practical,
            significant & (frame["delta"] > 0),
            significant & (frame["delta"] < 0),
        ],
        [INSUFFICIENT, NEGLIGIBLE, HELPED, HURT],
        NO_EFFECT,
    )
    frame[["category", "direction"]] = frame.pop("slice").str.rsplit("|", n=1, expand=True)
    frame = frame.rename(columns={"mean_a": "AP reference", "mean_b": "AP model", "delta": "ΔAP"})
    leading = ["category", "direction", "n", "AP model", "AP reference", "ΔAP", "ci_low", "ci_high", "p_value"]
    leading += ["p_adjusted", "flag"]
    return frame[leading + [c for c in frame.columns if c not in leading]]


def confusions(
    query: np.ndarray, gallery: np.ndarray, labels: np.ndarray, label_names: Sequence[str], k: int = 10
) -> pd.DataFrame:
    """Where each category's queries land: the share of rank-1 results and of top-k results in each category.

    Long format: query category, retrieved category, `rank-1 share`, `top-k share` (each query category's
    shares sum to 1). Ranks are the one ranking module's (stable ties), so a tie at rank 1 counts as the
    ranking orders it, as everywhere else in the product.
    """
    k = min(k, len(gallery))
    rows = top_k(query, gallery, k).indices
    retrieved = labels[rows]  # (n_queries, k)
    n = len(label_names)
    first = np.zeros((n, n))
    within = np.zeros((n, n))
    np.add.at(first, (labels, retrieved[:, 0]), 1.0)
    np.add.at(within, (np.repeat(labels, k), retrieved.ravel()), 1.0)
    counts = np.bincount(labels, minlength=n)[:, None]
    first = np.divide(first, counts, out=np.zeros_like(first), where=counts > 0)
    within = np.divide(within, counts * k, out=np.zeros_like(within), where=counts > 0)
    present = [i for i in range(n) if counts[i, 0] > 0]
    return pd.DataFrame(
        [
            {
                "query category": label_names[i],
                "retrieved category": label_names[j],
                "rank-1 share": first[i, j],
                f"top-{k} share": within[i, j],
            }
            for i in present
            for j in range(n)
        ]
    )


def pick_reference(checkpoint: Checkpoint, candidates: Sequence[Checkpoint]) -> Checkpoint | None:
    """The no-source CHTN that fits this one: same dataset fingerprint and label set, trained without a source (the
    first such candidate; never the built-in baseline, which is another model, not CHTN without a source), or None."""
    dataset = (checkpoint.meta.get("dataset") or {}).get("fingerprint")
    for candidate in candidates:
        if candidate == checkpoint or candidate.meta.get("source") or candidate.config.model.has_source:
            continue
        if candidate.config.model.architecture != "chtn":
            continue
        if (
            candidate.label_names == checkpoint.label_names
            and (candidate.meta.get("dataset") or {}).get("fingerprint") == dataset
        ):
            return candidate
    return None


def resolve_source(
    checkpoint: Checkpoint, override: str | Path | None = None, data_path: str | Path | None = None
) -> Path:
    """Where the checkpoint's source images are: `override`, else the path its training recorded, taken as the
    training command did (relative to the folder it ran in), tried from here, the checkpoint's folders and the
    dataset's folders. Raises a message naming every place looked at and how to point at it."""
    source = checkpoint.meta.get("source") or {}
    if not source and not checkpoint.config.model.has_source:
        raise CHTNError(
            f"{checkpoint.path.name} was trained without a source domain; source-bias diagnostics need a "
            "checkpoint trained with --source."
        )
    if override:
        path = Path(override).expanduser()
        if not path.exists():
            raise CHTNError(
                f"The source given ({path}) does not exist; point at the manifest or folder used in training."
            )
        return path
    if not source.get("path"):
        raise CHTNError(
            f"{checkpoint.path.name} does not record where its source images are; point at them with --source "
            "(CLI) or the sidebar's source path."
        )
    recorded = Path(str(source["path"]))
    if recorded.is_absolute():
        tried = [recorded]
    else:
        bases = [Path.cwd(), *checkpoint.path.resolve().parents]
        if data_path:
            bases += list(Path(data_path).resolve().parents)
        tried = [base / recorded for base in dict.fromkeys(bases)]
    for path in tried:
        if path.exists():
            return path
    raise CHTNError(
        f"The source this checkpoint was trained with ({recorded}) was not found (looked in the current folder, "
        f"the checkpoint's and the dataset's folders). Point at it with --source (CLI) or the sidebar's source "
        "path. Without it, coverage, capture and domain discrepancy cannot be shown; the transfer gain can."
    )
