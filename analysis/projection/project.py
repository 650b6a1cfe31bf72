"""The common space in two dimensions: images and texts in ONE projection (UMAP or PCA), never silently sampled.

Pure functions with a fixed seed and lazy heavy imports: umap-learn is imported only when a UMAP is computed, and
then in a worker process of its own (worker.py says why). Projections are cached on disk (`projections/` in the
feature-cache folder), keyed by a content hash of the points, their labels and the parameters, so the page reopens
instantly.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.projection.worker import in_worker
from chtn.errors import CHTNError
from chtn.hashing import default_cache_dir
from chtn.progress import Progress
from chtn.ranking import normalize_rows, top_k

METHODS = {"umap": "UMAP (umap-learn)", "pca": "PCA (instant)"}
METRICS = ("cosine", "euclidean")
MODALITIES = ("image", "text")


@dataclass(frozen=True)
class ProjectionParams:
    """Every field is part of the cache key."""

    method: str = "umap"  # one of METHODS
    n_neighbors: int = 15  # UMAP: size of the local neighbourhood (larger = more global structure)
    min_dist: float = 0.1  # UMAP: how tightly points may pack
    metric: str = "cosine"  # distance in the common space (cosine is what retrieval ranks by)
    seed: int = 0  # random_state: the same inputs give the same layout
    max_points: int = 20000  # above this many points, a stratified sample is projected (and the page says so)

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise CHTNError(f"Unknown projection method {self.method!r}; choose one of {sorted(METHODS)}.")
        if self.metric not in METRICS:
            raise CHTNError(f"Unknown metric {self.metric!r}; choose one of {list(METRICS)}.")
        if not (2 <= self.n_neighbors <= 200 and 0.0 <= self.min_dist <= 1.0 and self.max_points >= 10):
            raise CHTNError("n_neighbors must be 2-200, min_dist 0-1 and max_points at least 10.")


@dataclass
class Projection:
    """2-D coordinates of the projected points, which gallery row and modality each one is, and how it was made."""

    coords: np.ndarray  # (m, 2) float32
    rows: np.ndarray  # (m,) gallery row of each point
    modality: np.ndarray  # (m,) "image" or "text"
    total: int  # points before sampling (2 x gallery rows)
    seconds: float  # time to compute (0 when read from the cache)
    from_cache: bool = False

    @property
    def sampled(self) -> bool:
        return len(self.rows) < self.total

    def sampling_note(self, labels: np.ndarray, label_names: list[str]) -> str:
        """Plain words for the page: all points, or how many of how many, stratified how."""
        if not self.sampled:
            return f"All {self.total:,} points are shown ({self.total // 2:,} images and {self.total // 2:,} texts)."
        strata = len({(int(labels[r]), m) for r, m in zip(self.rows, self.modality)})
        return (
            f"Showing a sample of {len(self.rows):,} of {self.total:,} points, stratified by category and "
            f"modality ({strata} strata, each kept in proportion and none dropped). Raise the point limit "
            "to show more."
        )


def stratified_sample(labels: np.ndarray, modality: np.ndarray, limit: int, seed: int = 0) -> np.ndarray:
    """Sorted indices of at most `limit` points, each (label, modality) stratum kept in proportion to its size.

    Every stratum keeps at least one point (so no category or modality disappears), as long as `limit` is
    at least the number of strata. Deterministic for a seed.
    """
    n = len(labels)
    if n <= limit:
        return np.arange(n)
    keys = pd.Series(list(zip(np.asarray(labels).tolist(), np.asarray(modality).tolist())))
    groups = keys.groupby(keys).indices
    if limit < len(groups):
        raise CHTNError(
            f"A limit of {limit} points cannot keep all {len(groups)} category x modality strata; "
            "raise the point limit."
        )
    sizes = np.array([len(idx) for idx in groups.values()])
    quota = np.maximum(1, np.floor(sizes * limit / n)).astype(int)
    order = np.argsort(-(sizes * limit / n - np.floor(sizes * limit / n)))  # largest remainders first
    for i in order[: max(0, limit - quota.sum())]:
        quota[i] += 1
    rng = np.random.default_rng(seed)
    chosen = [rng.choice(idx, size=min(q, len(idx)), replace=False) for idx, q in zip(groups.values(), quota)]
    return np.sort(np.concatenate(chosen))


def project(points: np.ndarray, params: ProjectionParams) -> np.ndarray:
    """(n, 2) float32 layout of `points` with UMAP or PCA, deterministic for `params.seed`."""
    if len(points) < 3:
        raise CHTNError(f"At least 3 points are needed for a projection, got {len(points)}.")
    x = normalize_rows(points) if params.metric == "cosine" else np.asarray(points, dtype=np.float32)
    if params.method == "pca":
        return PrincipalPlane.fit(x).transform(x)
    return in_worker(_umap_layout, x, params)


@dataclass(frozen=True)
class PrincipalPlane:
    """The plane of the first two principal components: what sklearn's `PCA(n_components=2)` fits, with its sign
    convention (each axis's largest loading positive), so the figures are the same (tests/test_projection.py checks
    them against sklearn). Written with numpy's `eigh` because importing scikit-learn takes 0.7 s on 2 cores, and
    the PCA is what the shared space and Compare draw first on a server's first visit; the covariance route is
    the one sklearn's solver takes for tall data, O(n d^2) in time and O(d^2) beyond the points in memory."""

    mean: np.ndarray  # (d,) float64
    axes: np.ndarray  # (2, d) float64, orthonormal rows, largest variance first

    @classmethod
    def fit(cls, x: np.ndarray) -> PrincipalPlane:
        if x.ndim != 2 or x.shape[1] < 2:
            raise CHTNError(f"A PCA map needs points of at least 2 dimensions, got shape {x.shape}.")
        x = np.asarray(x, dtype=np.float64)
        mean = x.mean(axis=0)
        centred = x - mean
        _, vectors = np.linalg.eigh(centred.T @ centred)  # eigenvalues ascending
        axes = vectors[:, ::-1][:, :2].T
        strongest = np.argmax(np.abs(axes), axis=1)
        return cls(mean, axes * np.sign(axes[np.arange(2), strongest])[:, None])

    def transform(self, x: np.ndarray) -> np.ndarray:
        """(n, 2) float32 coordinates of `x` in the plane."""
        return ((np.asarray(x, dtype=np.float64) - self.mean) @ self.axes.T).astype(np.float32)


def _umap(params: ProjectionParams, n: int):
    import umap  # lazy, and only in the UMAP worker process (worker.py): importing umap-learn compiles numba code

    return umap.UMAP(
        n_components=2,
        n_neighbors=min(params.n_neighbors, n - 1),
        min_dist=params.min_dist,
        metric=params.metric,
        random_state=params.seed,
        n_jobs=1,  # what a seed implies (umap-learn would say so on the console at every fit)
    )


def _umap_layout(x: np.ndarray, params: ProjectionParams) -> np.ndarray:
    """(n, 2) float32 UMAP of `x`; runs in the UMAP worker."""
    return _umap(params, len(x)).fit_transform(x).astype(np.float32)


def _umap_aligned(x_a: np.ndarray, x_b: np.ndarray, params: ProjectionParams) -> tuple[np.ndarray, np.ndarray]:
    """The UMAP fitted on `x_a`, and `x_b` placed in it by `transform`; runs in the UMAP worker."""
    reducer = _umap(params, len(x_a)).fit(x_a)
    placed = reducer.transform(x_b) if len(x_b) else np.empty((0, 2))
    return reducer.embedding_.astype(np.float32), placed.astype(np.float32)


@dataclass(frozen=True)
class _Prepared:
    """A gallery's points in projection order, which of them are projected, and where their layout is cached."""

    points: np.ndarray
    rows: np.ndarray
    modality: np.ndarray
    keep: np.ndarray
    key: str
    path: Path


def _prepare(
    image: np.ndarray, text: np.ndarray, labels: np.ndarray, params: ProjectionParams, cache_dir: Path | None
) -> _Prepared:
    points = np.concatenate([image, text])
    rows = np.concatenate([np.arange(len(image)), np.arange(len(text))])
    modality = np.array(["image"] * len(image) + ["text"] * len(text))
    keep = stratified_sample(np.concatenate([labels, labels]), modality, params.max_points, params.seed)
    key = _cache_key(points, labels, params)
    return _Prepared(
        points, rows, modality, keep, key, (cache_dir or default_cache_dir()) / "projections" / f"{key}.npz"
    )


def projection_key(image: np.ndarray, text: np.ndarray, labels: np.ndarray, params: ProjectionParams) -> str:
    """The content key of a gallery's projection (points, labels, parameters): what its cache file is named by."""
    return _cache_key(np.concatenate([image, text]), labels, params)


def cached_projection(
    image: np.ndarray, text: np.ndarray, labels: np.ndarray, params: ProjectionParams, cache_dir: Path | None = None
) -> Projection | None:
    """The projection from the disk cache, or None when it has not been computed yet (never computes)."""
    prep = _prepare(image, text, labels, params, cache_dir)
    return _read(prep)


def _read(prep: _Prepared) -> Projection | None:
    if not prep.path.exists():
        return None
    with np.load(prep.path, allow_pickle=False) as stored:
        coords = stored["coords"]
    return Projection(coords, prep.rows[prep.keep], prep.modality[prep.keep], len(prep.points), 0.0, from_cache=True)


def project_gallery(
    image: np.ndarray,
    text: np.ndarray,
    labels: np.ndarray,
    params: ProjectionParams,
    cache_dir: Path | None = None,
    progress: Progress | None = None,
) -> Projection:
    """Images and texts of a gallery in one projection; sampled (stratified) only above `params.max_points`.

    `progress(fraction, message)` is called before and after the computation (the page shows it).
    """
    prep = _prepare(image, text, labels, params, cache_dir)
    found = _read(prep)
    if found is not None:
        return found
    if progress:
        progress(0.0, f"Projecting {len(prep.keep):,} points with {METHODS[params.method]}…")
    started = time.perf_counter()
    coords = project(prep.points[prep.keep], params)
    seconds = time.perf_counter() - started
    prep.path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(dir=prep.path.parent, suffix=".tmp.npz")  # private: concurrent writers never mix
    with os.fdopen(handle, "wb") as file:
        np.savez(file, coords=coords)
    Path(tmp).replace(prep.path)
    if progress:
        progress(1.0, f"Projected in {seconds:.1f} s.")
    return Projection(coords, prep.rows[prep.keep], prep.modality[prep.keep], len(prep.points), seconds)


UMAP_WARMED = threading.Event()  # set once `warm_up_umap` has finished in this process (or failed)


def warm_up_umap() -> float:
    """Start the UMAP worker and fit a small array in it, so numba compiles UMAP's code now and not on a user's
    first visit.

    The same code path as a gallery of up to 4,096 points (exact neighbours, cosine). The calling thread only waits
    (the worker, at a low priority, does the work). Returns the seconds taken.
    """
    started = time.perf_counter()
    # well-separated clusters, like a trained softmax space: UMAP's neighbour graph then falls apart into
    # components, whose layout path (float64 centroid distances) a single blob would leave uncompiled
    rng = np.random.default_rng(0)
    points = np.repeat(np.eye(20, dtype=np.float32)[:5], 40, axis=0) + rng.random((200, 20), dtype=np.float32) * 0.01
    try:
        project(points, ProjectionParams())
    finally:
        UMAP_WARMED.set()
    return time.perf_counter() - started


def _cache_key(points: np.ndarray, labels: np.ndarray, params: ProjectionParams) -> str:
    digest = hashlib.sha256(np.ascontiguousarray(points, dtype=np.float32).tobytes())
    digest.update(np.ascontiguousarray(labels, dtype=np.int64).tobytes())  # the sample depends on them
    digest.update(json.dumps({"params": asdict(params), "shape": list(points.shape), "version": 1}).encode())
    return digest.hexdigest()[:32]


def project_two(a: np.ndarray, b: np.ndarray, params: ProjectionParams) -> tuple[np.ndarray, np.ndarray]:
    """Layouts of the same items under checkpoints A and B in the SAME coordinates: fit on A, transform B.

    Why fit-A-transform-B and not umap's AlignedUMAP: AlignedUMAP optimises both layouts jointly, so
    adding B moves A away from the layout the user has already seen on A's own page, and its result
    depends on both inputs. Fitting on A keeps A's map fixed (the reference of a go/no-go comparison)
    and places B's points where A's map would put them. Points whose embedding did not change keep
    their coordinates exactly, so identical checkpoints give identical layouts.
    """
    if a.shape != b.shape:
        raise CHTNError(f"Both checkpoints must embed the same items: shapes {a.shape} and {b.shape} differ.")
    x_a = normalize_rows(a) if params.metric == "cosine" else np.asarray(a, dtype=np.float32)
    x_b = normalize_rows(b) if params.metric == "cosine" else np.asarray(b, dtype=np.float32)
    if params.method == "pca":
        plane = PrincipalPlane.fit(x_a)
        return plane.transform(x_a), plane.transform(x_b)
    moved = ~np.all(x_a == x_b, axis=1)
    coords_a, placed = in_worker(_umap_aligned, x_a, x_b[moved], params)
    coords_b = coords_a.copy()
    coords_b[moved] = placed
    return coords_a, coords_b


def cached_project_two(
    a: np.ndarray, b: np.ndarray, params: ProjectionParams, cache_dir: Path | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`project_two`, cached on disk by the content of both point sets and the parameters (a UMAP of two
    checkpoints takes seconds to minutes on a CPU; the Compare page asks for it on every visit)."""
    digest = hashlib.sha256(np.ascontiguousarray(a, dtype=np.float32).tobytes())
    digest.update(np.ascontiguousarray(b, dtype=np.float32).tobytes())
    digest.update(json.dumps({"params": asdict(params), "shape": list(a.shape), "aligned": 1}).encode())
    path = (cache_dir or default_cache_dir()) / "projections" / f"aligned-{digest.hexdigest()[:32]}.npz"
    if path.exists():
        with np.load(path, allow_pickle=False) as stored:
            return stored["a"], stored["b"]
    coords_a, coords_b = project_two(a, b, params)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp.npz")  # private: concurrent writers never mix
    with os.fdopen(handle, "wb") as file:
        np.savez(file, a=coords_a, b=coords_b)
    Path(tmp).replace(path)
    return coords_a, coords_b


@dataclass
class ModalityGap:
    """How far apart images and texts sit in the common space."""

    centroid_distance: float  # between the L2-normalised image and text centroids
    cross_modal_nn: float  # share of items whose nearest neighbour (cosine) is of the other modality
    per_category: pd.DataFrame  # category, images, texts, centroid distance, cross-modal NN fraction


def modality_gap(image: np.ndarray, text: np.ndarray, labels: np.ndarray, label_names: list[str]) -> ModalityGap:
    """Centroid distance of the two modalities overall and per category, and the cross-modal nearest-neighbour rate.

    0 and 0.5 (balanced sets) mean the modalities are mixed; a large distance and a rate near 0 mean images
    and texts live in separate regions, however well the pairs rank.
    """
    img, txt = normalize_rows(image), normalize_rows(text)
    points = np.concatenate([img, txt])
    is_text = np.r_[np.zeros(len(img), bool), np.ones(len(txt), bool)]
    crossed = _cross_modal_nearest(points, is_text)
    all_labels = np.concatenate([labels, labels])
    rows = []
    for c in np.unique(labels):
        mask = labels == c
        both = all_labels == c
        rows.append(
            {
                "category": label_names[c],
                "images": int(mask.sum()),
                "texts": int(mask.sum()),
                "centroid distance": _centroid_distance(img[mask], txt[mask]),
                "cross-modal NN": float(crossed[both].mean()),
            }
        )
    table = pd.DataFrame(rows).sort_values("centroid distance", ascending=False, ignore_index=True)
    return ModalityGap(_centroid_distance(img, txt), float(crossed.mean()), table)


def _cross_modal_nearest(points: np.ndarray, is_text: np.ndarray, ties: int = 16) -> np.ndarray:
    """Per point, the share of its nearest neighbours (itself excluded) that are of the other modality.

    A saturated softmax space holds many exact duplicates, so "the" nearest neighbour is often a tie; ties
    (up to `ties` of them) are averaged instead of being broken by row order, which would favour images.
    """
    found = top_k(points, points, min(ties + 1, len(points)), normalized=True)
    own = found.indices == np.arange(len(points))[:, None]
    scores = np.where(own, -np.inf, found.scores)
    tied = scores >= scores.max(1, keepdims=True) - 1e-6
    other = is_text[found.indices] != is_text[:, None]
    return (tied & other).sum(1) / tied.sum(1)


def _centroid_distance(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a.mean(0) - b.mean(0)))


COLOUR_BY = {"category": "category", "modality": "modality", "outcome": "as a query: top-1 correct / mis-retrieved"}


def points_table(
    projection: Projection,
    ids: list[str],
    texts: list[str],
    labels: np.ndarray,
    label_names: list[str],
    top1_i2t: np.ndarray,
    top1_t2i: np.ndarray,
) -> pd.DataFrame:
    """One row per projected point: coordinates, id, modality, category, title and its outcome as a query."""
    rows, modality = projection.rows, projection.modality
    correct = np.where(modality == "image", top1_i2t[rows], top1_t2i[rows])
    return pd.DataFrame(
        {
            "x": projection.coords[:, 0],
            "y": projection.coords[:, 1],
            "row": rows,
            "id": [ids[r] for r in rows],
            "modality": modality,
            "category": [label_names[labels[r]] for r in rows],
            "title": [texts[r][:80] for r in rows],
            "outcome": np.where(correct, "top-1 correct", "mis-retrieved"),
        }
    )


def selection_counts(selected: pd.DataFrame) -> pd.DataFrame:
    """Per-category counts of a selection, split by modality, largest first."""
    if selected.empty:
        return pd.DataFrame(columns=["category", "image", "text", "total"])
    counts = selected.pivot_table(index="category", columns="modality", values="row", aggfunc="count", fill_value=0)
    counts = counts.reindex(columns=list(MODALITIES), fill_value=0)
    counts["total"] = counts.sum(axis=1)
    return counts.sort_values("total", ascending=False).reset_index().rename_axis(None, axis=1)
