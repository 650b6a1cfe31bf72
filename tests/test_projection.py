"""Shared-space projection: sampling, determinism, caching, two checkpoints in one frame, modality gap."""

from __future__ import annotations

import sys
import time

import numpy as np
import pandas as pd
import pytest

from analysis.projection.project import (
    PrincipalPlane,
    ProjectionParams,
    modality_gap,
    project,
    project_gallery,
    project_two,
    stratified_sample,
)
from chtn.errors import CHTNError
from tests.conftest import CHECKPOINTS, PAIRS

FAST = ProjectionParams(n_neighbors=10)
# UMAP's numba code compiles once per UMAP worker process (tens of seconds of CPU), which each test process keeps: one
# xdist worker runs every test that fits a UMAP (`--dist loadgroup`, pyproject.toml), so it is compiled once, not once
# per xdist worker.
pytestmark = pytest.mark.xdist_group("umap")


@pytest.fixture(scope="module")
def gallery():
    """The sample's real test split (400 pairs) embedded by the fashion-source checkpoint."""
    from analysis.workspace import open_checkpoint, open_dataset
    from chtn.gallery import embed_split

    checkpoint = open_checkpoint(str(CHECKPOINTS / "chtn_fashion_source.safetensors"))
    return embed_split(checkpoint, open_dataset(PAIRS, checkpoint)[0]), checkpoint.label_names


def test_stratified_sample_keeps_every_category_and_modality_in_proportion():
    labels = np.repeat(np.arange(5), [400, 300, 200, 90, 10])
    modality = np.tile(np.array(["image", "text"]), 500)
    keep = stratified_sample(labels, modality, 100, seed=3)
    assert len(keep) == 100 and len(set(keep)) == 100
    kept = {(int(labels[i]), modality[i]) for i in keep}
    assert kept == {(c, m) for c in range(5) for m in ("image", "text")}  # no stratum dropped
    counts = np.bincount(labels[keep], minlength=5)
    assert counts[0] == pytest.approx(40, abs=2) and counts[4] >= 2  # proportional, small ones kept
    assert np.array_equal(keep, stratified_sample(labels, modality, 100, seed=3))  # deterministic
    assert np.array_equal(stratified_sample(labels, modality, 5000), np.arange(1000))  # under the limit: all
    with pytest.raises(CHTNError, match="strata"):
        stratified_sample(labels, modality, 4)


@pytest.mark.parametrize("shape", [(800, 20), (60, 8), (6, 30), (3, 2)], ids=["tall", "small", "wide", "least"])
def test_principal_plane_is_sklearns_pca(shape):
    """The PCA map is sklearn's PCA(n_components=2) (solver and sign convention included), fitted and applied to new
    points, for tall, small and wide data."""
    from sklearn.decomposition import PCA

    rng = np.random.default_rng(shape[0])
    x = (rng.normal(size=shape) * np.linspace(3, 1, shape[1])).astype(np.float32)  # distinct variances: one answer
    other = rng.normal(size=(7, shape[1])).astype(np.float32)
    reference = PCA(n_components=2).fit(x)
    plane = PrincipalPlane.fit(x)
    np.testing.assert_allclose(plane.transform(x), reference.transform(x), atol=1e-4)
    np.testing.assert_allclose(plane.transform(other), reference.transform(other), atol=1e-4)
    assert plane.transform(x).dtype == np.float32
    with pytest.raises(CHTNError, match="at least 2 dimensions"):
        PrincipalPlane.fit(x[:, :1])


def test_umap_and_pca_are_deterministic_for_a_seed(gallery):
    g, _ = gallery
    points = np.concatenate([g.image, g.text])
    first, again = project(points, FAST), project(points, FAST)
    assert first.shape == (800, 2) and first.dtype == np.float32
    assert np.array_equal(first, again)
    pca = project(points, ProjectionParams(method="pca"))
    assert pca.shape == (800, 2) and np.array_equal(pca, project(points, ProjectionParams(method="pca")))
    with pytest.raises(CHTNError, match="method"):
        ProjectionParams(method="tsne")


def test_projection_separates_categories(gallery):
    """A trained common space puts each category's items together: a point's layout neighbours share its label."""
    from sklearn.neighbors import KNeighborsClassifier

    g, _ = gallery
    coords = project(np.concatenate([g.image, g.text]), FAST)
    labels = np.concatenate([g.labels, g.labels])
    accuracy = KNeighborsClassifier(5).fit(coords[::2], labels[::2]).score(coords[1::2], labels[1::2])
    assert accuracy > 0.6, accuracy  # 20 categories: chance is 0.05


def test_gallery_projection_is_cached_and_says_when_it_samples(gallery, tmp_path):
    g, names = gallery
    full = project_gallery(g.image, g.text, g.labels, ProjectionParams(method="pca"), tmp_path)
    assert not full.sampled and not full.from_cache and len(full.rows) == 800
    assert "All 800 points" in full.sampling_note(g.labels, names)
    assert list(full.modality[:400]) == ["image"] * 400 and list(full.rows[400:]) == list(range(400))
    again = project_gallery(g.image, g.text, g.labels, ProjectionParams(method="pca"), tmp_path)
    assert again.from_cache and np.array_equal(again.coords, full.coords)
    steps = []
    sampled = project_gallery(
        g.image,
        g.text,
        g.labels,
        ProjectionParams(method="pca", max_points=200),
        tmp_path,
        progress=lambda f, m: steps.append(f),
    )
    assert sampled.sampled and len(sampled.rows) == 200 and steps == [0.0, 1.0]
    note = sampled.sampling_note(g.labels, names)
    assert "200 of 800" in note and "40 strata" in note  # 20 categories x 2 modalities, all kept


def test_two_checkpoints_share_coordinates_and_identical_ones_match(gallery):
    g, _ = gallery
    a = np.concatenate([g.image, g.text])
    coords_a, coords_b = project_two(a, a.copy(), FAST)
    assert np.array_equal(coords_a, coords_b)
    assert np.array_equal(coords_a, project_two(a, a, FAST)[0])  # deterministic reference layout
    changed = a.copy()
    changed[:10] = changed[400:410]  # ten images now embed like texts of other pairs
    _, moved = project_two(a, changed, FAST)
    assert np.array_equal(moved[10:], coords_a[10:]) and not np.allclose(moved[:10], coords_a[:10])
    pca_a, pca_b = project_two(a, a.copy(), ProjectionParams(method="pca"))
    assert np.array_equal(pca_a, pca_b)
    with pytest.raises(CHTNError, match="same items"):
        project_two(a, a[:5], FAST)


def test_modality_gap_is_zero_for_identical_embeddings_and_measured_otherwise(gallery):
    g, names = gallery
    same = modality_gap(g.image, g.image.copy(), g.labels, names)
    assert same.centroid_distance == pytest.approx(0.0, abs=1e-6)
    assert (same.per_category["centroid distance"].abs() < 1e-6).all() and len(same.per_category) == 20
    real = modality_gap(g.image, g.text, g.labels, names)
    assert 0.0 < real.centroid_distance < 1.5 and 0.0 < real.cross_modal_nn < same.cross_modal_nn
    # the saturated softmax space has exact duplicates: their ties are averaged, not broken by row order
    assert 0.5 < same.cross_modal_nn < 1.0
    distinct = np.random.default_rng(0).normal(size=(50, 8))  # no duplicates: each twin is the nearest
    assert modality_gap(distinct, distinct.copy(), np.arange(50) % 5, list("abcde")).cross_modal_nn == 1.0
    shifted = modality_gap(g.image, g.text + 5.0 * np.eye(g.text.shape[1])[0], g.labels, names)
    assert shifted.centroid_distance > real.centroid_distance and shifted.cross_modal_nn < real.cross_modal_nn


def test_cli_precomputes_what_the_page_reads(capsys, gallery, tmp_path):
    from chtn.cli import main

    args = [
        "project",
        "--checkpoint",
        str(CHECKPOINTS / "chtn_fashion_source.safetensors"),
        "--data",
        str(PAIRS),
        "--method",
        "pca",
        "--max-points",
        "300",
        "--cache-dir",
        str(tmp_path),
    ]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "sample of 300 of 800 points" in out and "cached: 300 points" in out
    g, _ = gallery
    page = project_gallery(g.image, g.text, g.labels, ProjectionParams(method="pca", max_points=300), tmp_path)
    assert page.from_cache and len(page.rows) == 300  # the page's defaults find the precomputed layout
    assert main(args) == 0 and "already cached" in capsys.readouterr().out
    assert main([*args[:-4], "--max-points", "20", "--cache-dir", str(tmp_path)]) == 2  # fewer than 40 strata
    assert "strata" in capsys.readouterr().err


def test_scatter_and_thumbnails_for_the_page(gallery, tmp_path):
    from analysis.projection.project import points_table
    from analysis.projection.render import WEBGL_ABOVE, scatter_figure
    from chtn.images import thumbnail_uris

    g, names = gallery
    projection = project_gallery(g.image, g.text, g.labels, ProjectionParams(method="pca"), tmp_path)
    correct = np.zeros(len(g.labels), bool)
    table = points_table(projection, g.data.ids, g.data.texts, g.labels, names, correct, ~correct)
    assert set(table.outcome[table.modality == "image"]) == {"mis-retrieved"}
    figure = scatter_figure(table, "category")
    assert len(table) <= WEBGL_ABOVE and all(t.type == "scatter" for t in figure.data)  # SVG: drawn at once
    large = pd.concat([table] * (WEBGL_ABOVE // len(table) + 1), ignore_index=True)
    assert all(t.type == "scattergl" for t in scatter_figure(large, "category").data)  # WebGL above the threshold
    legend = [t.name for t in figure.data if t.showlegend]
    assert sorted(legend) == sorted(names) == sorted({t.legendgroup for t in figure.data})  # one entry per category
    assert len({t.marker.color for t in figure.data}) == 20  # a colour of its own for each category
    assert all(len({t.marker.color for t in figure.data if t.name == name}) == 1 for name in names)
    drawn = {(t.marker.symbol, modality) for t in figure.data for modality in t.customdata[:, 1]}
    assert drawn == {("circle", "image"), ("diamond", "text")}  # ● images, ◆ texts
    points = np.concatenate([t.customdata[:, :2] for t in figure.data])  # what a selection reports: (row, modality)
    assert sorted(map(tuple, points)) == sorted(zip(table.row, table.modality))  # each item once
    assert figure.layout.margin.t >= 40  # room above the plot for the toolbar: it does not cover the legend
    mixed = table.assign(outcome=np.where(np.arange(len(table)) % 3 == 0, "top-1 correct", "mis-retrieved"))
    outcome = {t.name: t.marker.color for t in scatter_figure(mixed, "outcome").data}
    assert outcome == {"mis-retrieved": "#d62728", "top-1 correct": "#c7c7c7"}  # red against grey
    not_an_image = tmp_path / "notes.jpg"
    not_an_image.write_text("not a picture")
    uris = thumbnail_uris([g.data.image_paths[0], None, not_an_image])
    assert uris[0].startswith("data:image/jpeg;base64,") and uris[1] is None and uris[2] is None


def test_background_umap_is_one_job_per_key_shared_by_sessions_and_lands_in_the_disk_cache(gallery, tmp_path):
    """Eight sessions asking at once for the same UMAP start ONE computation; its result is the deterministic
    layout, read back from the disk cache afterwards; the registry then holds nothing running."""
    import threading

    from analysis.jobs import BackgroundJobs
    from analysis.projection.project import cached_projection, projection_key

    g, _ = gallery
    points = (g.image, g.text, g.labels)
    assert cached_projection(*points, FAST, tmp_path) is None
    gate, calls = threading.Event(), []

    def compute(progress):
        calls.append(threading.get_ident())
        progress(0.5, "Projecting 800 points")
        gate.wait()  # still running while every session submits
        return project_gallery(*points, FAST, tmp_path)

    jobs = BackgroundJobs()
    key = projection_key(*points, FAST)
    assert jobs.get(key) is None  # looking starts nothing
    found = []
    sessions = [threading.Thread(target=lambda: found.append(jobs.submit(key, compute))) for _ in range(8)]
    for session in sessions:
        session.start()
    for session in sessions:
        session.join()
    assert len(found) == 8 and all(job is found[0] for job in found) and jobs.running() == [key]
    assert jobs.get(key) is found[0]
    assert not found[0].done()
    while found[0].progress.snapshot()[1] == "queued":
        time.sleep(0.01)
    fraction, step, _ = found[0].progress.snapshot()  # every session reads the job's own progress
    assert (fraction, step) == (0.5, "Projecting 800 points")
    workers = [t for t in threading.enumerate() if t.name == f"chtn-job-{key[:8]}"]
    assert len(workers) == 1 and workers[0].daemon  # a stopping server does not wait for it
    gate.set()
    result = found[0].future.result()
    assert len(calls) == 1 and not result.from_cache
    assert np.array_equal(result.coords, project(np.concatenate([g.image, g.text]), FAST))
    stored = cached_projection(*points, FAST, tmp_path)
    assert stored is not None and stored.from_cache and np.array_equal(stored.coords, result.coords)
    assert jobs.running() == [] and jobs.get(key) is None  # done: the disk cache has it


def test_a_failed_background_job_stays_for_every_session_to_see_until_someone_tries_again(gallery, tmp_path):
    from analysis.jobs import BackgroundJobs

    g, _ = gallery
    jobs = BackgroundJobs()
    rows = [1]

    def few(progress):
        return project_gallery(g.image[: rows[0]], g.text[: rows[0]], g.labels[: rows[0]], FAST, tmp_path)

    job = jobs.submit("few", few)  # 2 points
    with pytest.raises(CHTNError, match="At least 3 points"):
        job.future.result()
    assert isinstance(job.error(), CHTNError)
    assert jobs.submit("few", few) is job and job.done()  # not retried behind the sessions' backs
    assert jobs.get("few") is job  # what a page shows
    rows[0] = 20  # the cause is gone (a transient fault, or fixed input); a session asks to try again
    jobs.retry("few")
    again = jobs.submit("few", few)
    assert again is not job
    assert again.future.result(timeout=120).coords.shape == (40, 2) and again.error() is None
    jobs.retry("few")  # a succeeded or unknown job: nothing to forget, nothing raised


def compiled_numba() -> dict[str, int]:
    """How many signatures each numba function of umap-learn and pynndescent has compiled in the calling process
    (the probe below runs it in the UMAP worker)."""
    from numba.core.registry import CPUDispatcher

    return {
        f"{name}.{attr}": len(obj.signatures)
        for name, mod in list(sys.modules.items())
        if name.startswith(("umap", "pynndescent"))
        for attr, obj in vars(mod).items()
        if isinstance(obj, CPUDispatcher)
    }


WARM_UP_PROBE = """
import json, sys
import numpy as np
from analysis.projection.project import ProjectionParams, project, warm_up_umap
from analysis.projection.worker import in_worker
from tests.test_projection import compiled_numba

warm_up_umap()
before = in_worker(compiled_numba)
project(np.load(sys.argv[1]), ProjectionParams())
after = in_worker(compiled_numba)
print(json.dumps({"umap here": "umap" in sys.modules, "new": {k: [before.get(k, 0), n] for k, n in after.items()
                                                             if before.get(k, 0) != n}}))
"""


def _probe(script: str, *args: str) -> dict:
    """Run `script` in a fresh Python process from the repository (a five-minute limit: a hang fails the test) and
    return the JSON it printed last."""
    import json
    import os
    import subprocess

    from tests.conftest import ROOT

    done = subprocess.run(
        [sys.executable, "-W", "ignore", "-c", script, *args],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_warm_up_compiles_all_the_numba_code_a_sample_umap_needs(gallery, tmp_path):
    """What app.py runs at server start: afterwards the sample's UMAP (page defaults) compiles nothing more.
    A fresh process. It shares numba's disk cache with the rest of the session: a signature loaded from that cache
    is counted like one compiled, so a warm cache cannot hide one that the warm-up leaves out."""
    g, _ = gallery
    np.save(tmp_path / "points.npy", np.concatenate([g.image, g.text]))
    assert _probe(WARM_UP_PROBE, str(tmp_path / "points.npy")) == {"umap here": False, "new": {}}


WORKER_PROBE = """
import json, os, signal, threading, time
from analysis.projection import worker
from chtn.errors import CHTNError

pid = worker.in_worker(os.getpid)
seen = {"own process": pid == os.getpid(), "kept": worker.in_worker(os.getpid) == pid,
        "nicer by": worker.in_worker(os.nice, 0) - os.nice(0)}
os.kill(pid, signal.SIGKILL)
try:
    worker.in_worker(os.getpid)
except CHTNError as exc:
    seen["error"] = str(exc)
seen["replaced"] = worker.in_worker(os.getpid) not in (pid, os.getpid())

def fit():  # a fit of ten minutes, abandoned by stop (at server stop, or Ctrl-C)
    try:
        worker.in_worker(time.sleep, 600)
    except CHTNError as exc:
        seen["abandoned"] = str(exc)

pid = worker.in_worker(os.getpid)
waiting = threading.Thread(target=fit)
waiting.start()
while not worker._pool._pending_work_items:  # submitted
    time.sleep(0.01)
worker.stop()
waiting.join()
time.sleep(0.5)
seen["gone"] = not os.path.exists(f"/proc/{pid}") or open(f"/proc/{pid}/stat").read().split()[2] == "Z"
print(json.dumps(seen))
"""


def test_the_umap_worker_is_one_kept_low_priority_process_a_dead_one_is_replaced_and_stop_ends_a_fit():
    """A fresh process (killing the worker here would throw away this test worker's compiled UMAP). Its exit with
    a ten-minute fit abandoned is prompt: the probe's time limit fails the test otherwise."""
    import os

    seen = _probe(WORKER_PROBE)
    assert seen["own process"] is False and seen["kept"] is True and seen["replaced"] is True
    assert seen["nicer by"] == min(10, 19 - os.nice(0))  # niceness stops at 19
    assert "worker process stopped" in seen["error"] and "Try again" in seen["error"]
    assert "worker process stopped" in seen["abandoned"] and seen["gone"] is True  # and this process exited at once
