"""The built-in simple baseline (`chtn baseline`): what CHTN must beat on the same rows and the same frozen features.

Two classic models, each fitted in seconds on a CPU by scikit-learn and stored as a `LinearBaseline` checkpoint that
every page and command opens like a CHTN one:

- **softmax**: a linear softmax (multinomial logistic regression) classifier per modality into the dataset's labels;
  images and texts meet as class probabilities, as CHTN's release does.
- **cca**: canonical correlation analysis of the paired image and text features (after PCA, since both are wider
  than a few hundred training pairs); images and texts meet as canonical variates.

Each one's setting (the softmax's regularisation C, CCA's number of components) is chosen on the validation pairs
carved from training, never on the test split, by the same MAP that CHTN's training keeps its best epoch by.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from chtn.checkpoint import save_checkpoint
from chtn.config import CHTNConfig
from chtn.errors import CHTNError
from chtn.evaluate import evaluate_embeddings
from chtn.model import LinearBaseline
from chtn.splits import stratified_split
from chtn.text_choice import VALIDATION_FRACTION
from chtn.train import FeatureSet, TrainInputs

KINDS = ("softmax", "cca")
C_GRID = (0.001, 0.01, 0.1, 1.0, 10.0)  # inverse regularisation strengths tried for the softmax classifiers
PCA_DIMS = 64  # width each modality is reduced to before CCA (at most the training pairs - 1)

Affine = tuple[np.ndarray, np.ndarray]  # (weight (out, in), bias (out,)) of y = weight @ x + bias


def affine_map(transform: Callable[[np.ndarray], np.ndarray], dim: int) -> Affine:
    """The weight and bias of an affine `transform` of `dim`-wide rows, read off its values at 0 and at each basis
    vector: scikit-learn's fitted pipelines (scaling, PCA, a decision function, CCA) are affine but keep their
    parameters in attributes that differ by estimator, some private."""
    points = np.vstack([np.zeros((1, dim)), np.eye(dim)])
    values = np.asarray(transform(points), dtype=np.float64)
    bias = values[0]
    return (values[1:] - bias).T, bias


def common_space(features: np.ndarray, weight_bias: Affine, softmax: bool) -> np.ndarray:
    """Rows of features mapped by a fitted baseline: class probabilities (softmax) or CCA components, float32 as the
    checkpoint's LinearBaseline computes them."""
    scores = torch.as_tensor(features @ weight_bias[0].T + weight_bias[1], dtype=torch.float32)
    return (scores.softmax(-1) if softmax else scores).numpy()


def _validation_map(image: Affine, text: Affine, val: FeatureSet, names: list[str], softmax: bool) -> float:
    image_rows, text_rows = common_space(val.image, image, softmax), common_space(val.text, text, softmax)
    return float(evaluate_embeddings(image_rows, text_rows, val.labels, names).mean_map)


def _classifier(features: np.ndarray, labels: np.ndarray, classes: int, c: float) -> Affine:
    """A multinomial logistic regression on standardised features, as an affine map to all `classes` scores (a
    class with no training pair gets a score far below the others)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    model = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=2000))
    model.fit(features, labels)
    weight, bias = affine_map(model.decision_function, features.shape[1])
    full_weight, full_bias = np.zeros((classes, features.shape[1])), np.full(classes, -1e4)
    seen = model.classes_.astype(int)
    if len(seen) == 2:  # scikit-learn's binary decision function is one score: that of the second class
        full_weight[seen[1]], full_bias[seen[1]], full_bias[seen[0]] = weight[:, 0], bias[0], 0.0
    else:
        full_weight[seen], full_bias[seen] = weight, bias
    return full_weight, full_bias


def softmax_maps(train: FeatureSet, classes: int, c: float) -> tuple[Affine, Affine]:
    """The image and the text classifier of the training pairs, both with inverse regularisation `c`."""
    return _classifier(train.image, train.labels, classes, c), _classifier(train.text, train.labels, classes, c)


def fit_softmax(
    train: FeatureSet, val: FeatureSet, names: list[str], grid: Sequence[float] = C_GRID
) -> tuple[Affine, Affine, dict[str, Any]]:
    """Image and text classifiers with the C of `grid` (shared by both) that gives the best validation MAP."""
    tried = {}
    for c in grid:
        image, text = softmax_maps(train, len(names), c)
        tried[c] = (_validation_map(image, text, val, names, softmax=True), image, text)
    best = max(tried, key=lambda c: tried[c][0])
    return tried[best][1], tried[best][2], {"C": best, "val_map": {str(c): tried[c][0] for c in tried}}


def cross_validated_c(pairs: FeatureSet, names: list[str], seed: int, folds: int = 5) -> tuple[float, dict[str, float]]:
    """The C with the best mean validation MAP over stratified folds of `pairs`, and each C's mean.

    For few pairs per category (a k=5 cell carves one pair per category for a single validation split), one carved
    split chooses C on 20 noisy pairs; folds score every pair once, so the choice reads all of them.
    """
    from sklearn.model_selection import StratifiedKFold

    folds = min(folds, int(np.bincount(pairs.labels).min()))
    scores: dict[float, list[float]] = {c: [] for c in C_GRID}
    splitter = StratifiedKFold(folds, shuffle=True, random_state=seed)
    for fit_rows, val_rows in splitter.split(pairs.labels, pairs.labels):
        fit, val = (FeatureSet(pairs.image[r], pairs.text[r], pairs.labels[r]) for r in (fit_rows, val_rows))
        for c in C_GRID:
            scores[c].append(_validation_map(*softmax_maps(fit, len(names), c), val, names, softmax=True))
    means = {c: float(np.mean(s)) for c, s in scores.items()}
    return max(means, key=means.__getitem__), {f"{c:g}": means[c] for c in C_GRID}


def fit_cca(
    train: FeatureSet, val: FeatureSet, names: list[str], grid: Sequence[int] | None = None
) -> tuple[Affine, Affine, dict[str, Any]]:
    """PCA of each modality, then CCA, with the number of components of `grid` (default: half, once and twice the
    number of categories) that gives the best validation MAP."""
    from sklearn.cross_decomposition import CCA
    from sklearn.decomposition import PCA
    from sklearn.preprocessing import StandardScaler

    n = len(train.labels)
    dims = min(PCA_DIMS, n - 1, train.image.shape[1], train.text.shape[1])
    image_scaler, text_scaler = StandardScaler().fit(train.image), StandardScaler().fit(train.text)
    reduce_image = PCA(dims, random_state=0).fit(image_scaler.transform(train.image))
    reduce_text = PCA(dims, random_state=0).fit(text_scaler.transform(train.text))
    x = reduce_image.transform(image_scaler.transform(train.image))
    y = reduce_text.transform(text_scaler.transform(train.text))
    tried = {}
    classes = len(names)
    for components in sorted({min(k, dims) for k in grid or (classes // 2, classes, 2 * classes)} - {0}):
        cca = CCA(components, max_iter=1000).fit(x, y)

        def image_side(rows: np.ndarray, cca=cca) -> np.ndarray:
            return cca.transform(reduce_image.transform(image_scaler.transform(rows)))

        def text_side(rows: np.ndarray, cca=cca) -> np.ndarray:
            reduced = reduce_text.transform(text_scaler.transform(rows))
            return cca.transform(np.zeros((len(rows), dims)), reduced)[1]

        image = affine_map(image_side, train.image.shape[1])
        text = affine_map(text_side, train.text.shape[1])
        tried[components] = (_validation_map(image, text, val, names, softmax=False), image, text)
    best = max(tried, key=lambda k: tried[k][0])
    meta = {"components": best, "pca_dims": dims, "val_map": {str(k): tried[k][0] for k in tried}}
    return tried[best][1], tried[best][2], meta


FITS = {"softmax": fit_softmax, "cca": fit_cca}


def baseline_module(config: CHTNConfig, image: Affine, text: Affine, kind: str) -> tuple[CHTNConfig, LinearBaseline]:
    """The fitted maps as a checkpointable module and the config that rebuilds it."""
    model = dataclasses.replace(
        config.model,
        architecture="linear",
        common="softmax" if kind == "softmax" else "fc9",
        shared_dim=image[0].shape[0],
        num_source_classes=0,
        ensemble=1,
    )
    config = dataclasses.replace(config, model=model)
    module = LinearBaseline(model)
    with torch.no_grad():
        for layer, (weight, bias) in ((module.image, image), (module.text, text)):
            layer.weight.copy_(torch.as_tensor(weight, dtype=torch.float32))
            layer.bias.copy_(torch.as_tensor(bias, dtype=torch.float32))
    return config, module.eval()


def train_baselines(
    config: CHTNConfig,
    inputs: TrainInputs,
    out_dir: str | Path,
    meta: dict[str, Any],
    tfidf: tuple[list[str], np.ndarray] | None = None,
    kinds: tuple[str, ...] = KINDS,
    log: Callable[[str], None] = print,
) -> dict[str, Path]:
    """Fit each baseline on the training pairs, choose its setting on the validation pairs, and write
    `<out_dir>/baseline_<kind>.safetensors` with the same metadata as a CHTN checkpoint of these rows."""
    if config.encoder.finetune_stages:
        raise CHTNError("The baseline uses the frozen trunk's features: set encoder.finetune_stages to 0.")
    fit, val, carved = _fit_and_validation(inputs, config.train.seed)
    written = {}
    for kind in kinds:
        image, text, choice = FITS[kind](fit, val, inputs.label_names)
        setting = choice["C"] if kind == "softmax" else choice["components"]
        if carved:  # the setting chosen, fitted again on every training pair: the rows CHTN trained on
            image, text, refit = FITS[kind](inputs.train, val, inputs.label_names, (setting,))
            choice = {**choice, "carved_val": carved}
            if kind == "cca":  # the refit's PCA may be wider: it saw more pairs
                choice["pca_dims"] = refit["pca_dims"]
        kind_config, module = baseline_module(config, image, text, kind)
        path = Path(out_dir) / f"baseline_{kind}.safetensors"
        save_checkpoint(path, module, kind_config, {**meta, "preset": f"baseline-{kind}", "baseline": choice}, tfidf)
        best = choice["val_map"][str(setting)]
        log(f"baseline {kind}: validation MAP {best:.4f} ({_said(kind, choice)}) -> {path}")
        written[kind] = path
    return written


def _fit_and_validation(inputs: TrainInputs, seed: int) -> tuple[FeatureSet, FeatureSet, int]:
    """The pairs to fit on and those to choose the setting on: the training and the 'val' rows, or, for a dataset
    without 'val' rows (the Wikipedia layout has none), a per-category 20% carved from the training pairs (their
    count is the third value, 0 otherwise), the rest fitted on, as `chtn train`'s text choice does."""
    if inputs.val is not None and len(inputs.val.labels) >= 2:
        return inputs.train, inputs.val, 0
    train = inputs.train
    held = stratified_split(train.labels.tolist(), VALIDATION_FRACTION, seed)
    if held.sum() < 2 or len(set(train.labels[held].tolist())) < 2:
        raise CHTNError(
            f"The baseline chooses its setting on validation pairs: this dataset has no 'val' rows and its "
            f"{len(train.labels)} training pairs are too few to carve 20% of each category from. Give it more "
            "training pairs, or mark some as 'val' in a manifest's split column."
        )
    fit, val = (FeatureSet(train.image[rows], train.text[rows], train.labels[rows]) for rows in (~held, held))
    return fit, val, int(held.sum())


def _said(kind: str, choice: dict[str, Any]) -> str:
    where = (
        f"on {choice['carved_val']} validation pairs carved from the training pairs, then fitted on all of them"
        if choice.get("carved_val")
        else "on validation pairs"
    )
    if kind == "softmax":
        return f"C = {choice['C']:g}, chosen from {', '.join(f'{c:g}' for c in C_GRID)} {where}"
    return f"{choice['components']} components after PCA to {choice['pca_dims']}, chosen {where}"
