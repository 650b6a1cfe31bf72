"""Frozen-encoder features, extracted in batches and cached on disk.

The cache is one SQLite file: (encoder identity, content key) -> float32 vector. Keys are the SHA-1
of an image file's bytes or of a text, so the same image under another path, another dataset or
another run is never encoded twice, and a changed file is never served stale.

A dataset may ship its frozen image features as feature packs (`features.npz` or `<name>.features.npz`, written
by `write_feature_pack`) in its images' folder or the folder above it: a cache that lacks an image's vector takes
it from a pack made by the same trunk (identity) from the same bytes (key), before running the trunk. The sample
ships one for its pairs and one for each image-only source, so a fresh install encodes none of its images.
"""

from __future__ import annotations

import functools
import sqlite3
import threading
import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from chtn.cpus import tune_allocator
from chtn.encoders import IMAGE_SIZE, cached_image_trunk, cached_text_encoder, image_transform, module_device
from chtn.errors import CHTNError
from chtn.hashing import default_cache_dir, file_digest, text_key
from chtn.images import open_rgb
from chtn.progress import Progress, of_count


def pick_device(device: str | None = None) -> torch.device:
    return torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))


class FeatureCache:
    """Content-addressed vectors in SQLite (WAL mode: safe for the CLI and the app at the same time)."""

    def __init__(self, root: str | Path | None = None) -> None:
        self.root = Path(root) if root else default_cache_dir()
        self.root.mkdir(parents=True, exist_ok=True)
        self.path = self.root / "features.sqlite"
        with self._connect() as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(
                "CREATE TABLE IF NOT EXISTS features (encoder TEXT, key TEXT, vector BLOB, PRIMARY KEY (encoder, key))"
            )

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, timeout=60)

    def get(self, encoder: str, keys: Sequence[str], dtype: type = np.float32) -> dict[str, np.ndarray]:
        """Cached vectors of `keys` (absent keys are left out); `dtype` must be the one they were put with."""
        found: dict[str, np.ndarray] = {}
        unique = list(dict.fromkeys(keys))
        with self._connect() as db:
            for start in range(0, len(unique), 500):  # SQLite caps the number of bound parameters
                chunk = unique[start : start + 500]
                marks = ",".join("?" * len(chunk))
                for key, blob in db.execute(
                    f"SELECT key, vector FROM features WHERE encoder=? AND key IN ({marks})", [encoder, *chunk]
                ):
                    found[key] = np.frombuffer(blob, dtype=dtype)
        return found

    def put(self, encoder: str, items: dict[str, np.ndarray], dtype: type = np.float32) -> None:
        with self._connect() as db:
            db.executemany(
                "INSERT OR REPLACE INTO features VALUES (?, ?, ?)",
                [(encoder, k, np.ascontiguousarray(v, dtype=dtype).tobytes()) for k, v in items.items()],
            )


class _ImageFiles(torch.utils.data.Dataset):
    """Decoded, transformed images; a file that fails to decode yields its error message instead of a tensor,
    so that a DataLoader worker never dies with a traceback (the main process raises one clear error)."""

    def __init__(self, paths: Sequence[Path]) -> None:

        self.paths, self.transform = list(paths), image_transform()

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> torch.Tensor | str:

        try:
            return self.transform(open_rgb(self.paths[index]))
        except CHTNError as exc:
            return str(exc)
        except Exception as exc:  # noqa: BLE001 - any decoder failure inside a worker becomes one message
            return f"{self.paths[index]} cannot be decoded ({type(exc).__name__}: {exc})"


def _collate(items: list[torch.Tensor | str]) -> torch.Tensor | list[str]:
    """A batch of pixels, or the error messages of the files in it that failed (module level: workers pickle it)."""
    errors = [item for item in items if isinstance(item, str)]
    return errors if errors else torch.stack([item for item in items if isinstance(item, torch.Tensor)])


def _undecodable(errors: list[str]) -> CHTNError:
    return CHTNError(
        f"{errors[0].rstrip('.')}{f' (and {len(errors) - 1} more in the same batch)' if len(errors) > 1 else ''}. "
        "Replace or remove that file: `chtn validate` on the dataset that lists it names every such file, and "
        '--skip-invalid (the dashboard: "Skip invalid rows") leaves their rows out.'
    )


def _fill(keys: Sequence[str], cached: dict[str, np.ndarray], dim: int) -> np.ndarray:
    if not keys:  # np.stack refuses an empty list; callers (Tower._project) expect an empty (0, d) array
        return np.zeros((0, dim), np.float32)
    return np.stack([cached[k] for k in keys]).astype(np.float32)


# The image loader per device, measured on 2 CPU cores (docs/benchmarks.md, `python -m bench.bench_core --only
# throughput`): the trunk runs ~3x faster per image in batches of 4 than of 64 (~200 against ~63 img/s: a small
# batch's activations stay in the CPU's cache), and decoding in worker processes slows it, as they take the cores
# torch's threads use. End to end, 384 JPEGs: batch 4 decoded in-process 169 img/s, batch 4 with 2 workers 121, the
# former batch 64 with 2 workers 53, one image at a time 107. On a GPU, batches of 64 and 2 decoding workers.
CPU_BATCH, CPU_WORKERS, GPU_BATCH, GPU_WORKERS = 4, 0, 64, 2
# Features go to the cache every this many images (and when the run stops, also by an error or Ctrl-C), so an
# interrupted run resumes from there without a database commit per small batch.
CACHE_EVERY = 256


def loader_settings(device: torch.device, batch_size: int | None, num_workers: int | None) -> tuple[int, int]:
    """(batch size, decoding workers) for encoding images on ``device``: the given ones, else the measured
    defaults above."""
    on_cpu = device.type == "cpu"
    return (
        batch_size or (CPU_BATCH if on_cpu else GPU_BATCH),
        (CPU_WORKERS if on_cpu else GPU_WORKERS) if num_workers is None or num_workers < 0 else num_workers,
    )


def _encode_image_files(
    paths: Sequence[Path],
    cache: FeatureCache,
    identity: str,
    encode,
    dim: int,
    device: torch.device,
    batch_size: int | None,
    num_workers: int | None,
    progress: Progress | None,
    dtype: type = np.float32,
) -> np.ndarray:
    """(n, dim) vectors `encode(pixels)` of image files, from the cache or computed in batches on `device`
    (:func:`loader_settings`); what is computed reaches the cache as it goes, so a stopped run resumes."""
    keys = [file_digest(Path(p)) for p in paths]
    if "missing" in keys:
        missing = [str(p) for p, k in zip(paths, keys) if k == "missing"][:3]
        raise CHTNError(
            f"{keys.count('missing')} image file(s) cannot be read, e.g. {missing}: restore them or correct their "
            'rows. `chtn validate` on the dataset names each one, and --skip-invalid (the dashboard: "Skip invalid '
            'rows") leaves their rows out.'
        )
    cached = cache.get(identity, keys, dtype)
    todo = [(p, k) for p, k in zip(paths, keys) if k not in cached]
    todo = list({k: (p, k) for p, k in todo}.values())  # identical files are encoded once
    if todo:
        # Worker processes are forked; forking while other threads run torch or BLAS code (dashboard sessions
        # embedding at once) can kill a worker. Off the main thread, decode in-process: a 224 px JPEG decodes in
        # ~2 ms, small beside the trunk's forward pass, so little is lost.
        in_main_thread = threading.current_thread() is threading.main_thread()
        batch_size, num_workers = loader_settings(device, batch_size, num_workers)
        tune_allocator()  # small CPU batches: see chtn.cpus
        loader = torch.utils.data.DataLoader(
            _ImageFiles([p for p, _ in todo]),
            batch_size=batch_size,
            num_workers=num_workers if in_main_thread else 0,
            pin_memory=device.type == "cuda",
            persistent_workers=False,
            collate_fn=_collate,
        )
        done, fresh = 0, {}
        bar = tqdm(total=len(todo), desc=f"image features ({device.type})", unit="img", disable=progress is not None)
        try:
            for batch in loader:
                if isinstance(batch, list):
                    raise _undecodable(batch)
                batch = batch.to(device, non_blocking=True).to(memory_format=torch.channels_last)
                with (
                    torch.inference_mode(),
                    torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"),
                ):
                    vectors = encode(batch).float().cpu().numpy()
                fresh.update({todo[done + i][1]: vectors[i].astype(dtype) for i in range(len(vectors))})
                if len(fresh) >= CACHE_EVERY:
                    cache.put(identity, fresh, dtype)
                    cached.update(fresh)
                    fresh = {}
                done += len(vectors)
                bar.update(len(vectors))
                if progress:
                    progress(*of_count(done, len(todo), "Embedding images"))
        finally:
            if fresh:  # what was computed stays, whatever stopped the run
                cache.put(identity, fresh, dtype)
                cached.update(fresh)
            bar.close()
    if not keys:  # np.stack refuses an empty list
        return np.zeros((0, dim), dtype)
    return np.stack([cached[k] for k in keys])


PACK = "features.npz"  # a dataset's shipped image features (or `<name>.features.npz`), beside or above its images


def write_feature_pack(
    paths: Sequence[Path], cache: FeatureCache, out: Path, trunk=None, dtype: type = np.float32
) -> Path:
    """Write the frozen trunk's pooled features of image files as a feature pack (see the module docstring).

    float32 keeps them exactly as the trunk computed them (what a model trains on); float16 halves the file where
    that precision is all its readers need (source diagnostics: centroids, MMD, domain classifiers, ImageNet
    prior). The ImageNet logits are left out: the trunk's classifier recomputes them.
    """
    trunk = trunk or cached_image_trunk()
    unique = dict(zip((file_digest(Path(p)) for p in paths), paths))
    pooled, _ = image_features(list(unique.values()), cache, trunk)
    np.savez_compressed(out, encoder=np.array(trunk.identity), keys=np.array(list(unique)), pooled=pooled.astype(dtype))
    return out


@functools.lru_cache(maxsize=8)
def _read_pack(path: str, mtime_ns: int, size: int) -> tuple[str, dict[str, int], np.ndarray]:
    """(encoder identity, key -> row, read-only pooled features) of a feature pack; memoised per file version
    (immutable values: sessions share them). Never unpickles: only string and number arrays are read."""
    try:
        with np.load(path, allow_pickle=False) as pack:
            encoder, keys, pooled = str(pack["encoder"]), [str(k) for k in pack["keys"]], pack["pooled"]
        if pooled.ndim != 2 or len(keys) != len(pooled) or pooled.dtype.kind != "f":
            raise ValueError(f"{len(keys)} keys for pooled features of shape {pooled.shape} and type {pooled.dtype}")
    except (OSError, EOFError, ValueError, KeyError, TypeError, zipfile.BadZipFile) as error:  # TypeError: an .npy
        raise CHTNError(
            f"{path} is not a readable feature pack ({error}). Delete it (the images are then encoded instead) "
            "or write it again with chtn.features.write_feature_pack."
        ) from None
    pooled.setflags(write=False)
    return encoder, {key: row for row, key in enumerate(keys)}, pooled


def _packs_near(paths: Sequence[Path]) -> list[Path]:
    """The feature packs in the folders of `paths` or the folders above them."""
    folders = {Path(p).parent for p in paths}
    folders |= {folder.parent for folder in folders}
    candidates = {pack for folder in folders for pack in (folder / PACK, *folder.glob(f"*.{PACK}"))}
    return sorted(pack for pack in candidates if pack.is_file())


def _take_from_packs(paths: Sequence[Path], cache: FeatureCache, trunk) -> None:
    """Put into `cache` the vectors (pooled features + recomputed ImageNet logits) that nearby packs made by
    `trunk` hold for `paths` and the cache lacks."""
    packs = _packs_near(paths)
    if not packs:
        return
    keys = {file_digest(Path(p)) for p in paths} - {"missing"}
    keys -= set(cache.get(trunk.identity, list(keys)))
    for pack in packs:
        stat = pack.stat()
        encoder, rows, pooled = _read_pack(str(pack), stat.st_mtime_ns, stat.st_size)
        found = [key for key in keys if key in rows] if encoder == trunk.identity else []
        if not found:
            continue
        features = torch.from_numpy(pooled[[rows[key] for key in found]].astype(np.float32))
        with torch.inference_mode():
            logits = trunk.imagenet_logits(features.to(module_device(trunk))).float().cpu().numpy()
        cache.put(trunk.identity, dict(zip(found, np.concatenate([features.numpy(), logits], 1))))
        keys -= set(found)


def image_features(
    paths: Sequence[Path],
    cache: FeatureCache,
    trunk=None,
    batch_size: int | None = None,
    num_workers: int | None = None,
    progress: Progress | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(pooled features (n, d), ImageNet logits (n, 1000)) of image files, from the cache or the trunk.

    Runs on the device the trunk lives on (the trunk is shared: it is never moved). The ImageNet
    logits are cached with the features: the source-bias diagnostics read them. Vectors a nearby feature pack
    holds for this trunk are taken from it instead of running the trunk. ``batch_size`` and ``num_workers`` (None:
    the device's measured defaults, :func:`loader_settings`) set the loader.
    """

    trunk = trunk or cached_image_trunk()
    _take_from_packs(paths, cache, trunk)
    dim = trunk.feature_dim + int(getattr(trunk, "logit_dim", 1000))
    both = _encode_image_files(
        paths,
        cache,
        trunk.identity,
        lambda x: torch.cat(trunk(x), 1),
        dim,
        module_device(trunk),
        batch_size,
        num_workers,
        progress,
    )
    return both[:, : trunk.feature_dim], both[:, trunk.feature_dim :]


def trunk_prefix_maps(
    paths: Sequence[Path],
    cache: FeatureCache,
    trunk,
    stages: int,
    batch_size: int | None = None,
    num_workers: int | None = None,
    progress: Progress | None = None,
) -> np.ndarray:
    """(n, C, h, w) float16 feature maps entering the trunk's last `stages` units (inputs of fine-tuning)."""

    device = module_device(trunk)
    with torch.inference_mode():
        shape = tuple(trunk.forward_prefix(torch.zeros(1, 3, IMAGE_SIZE, IMAGE_SIZE, device=device), stages).shape[1:])
    flat = _encode_image_files(
        paths,
        cache,
        f"{trunk.identity}/prefix{stages}",
        lambda x: trunk.forward_prefix(x, stages).flatten(1),
        int(np.prod(shape)),
        device,
        batch_size,
        num_workers,
        progress,
        np.float16,
    )
    return flat.reshape(len(flat), *shape)


def transformer_text_features(
    texts: Sequence[str], cache: FeatureCache, encoder=None, batch_size: int = 128, progress: Progress | None = None
) -> np.ndarray:
    """Sentence embeddings (n, d) of texts, from the cache or the encoder (on the device it lives on)."""

    encoder = encoder or cached_text_encoder()
    keys = [text_key(t) for t in texts]
    cached = cache.get(encoder.identity, keys)
    todo = list({k: t for t, k in zip(texts, keys) if k not in cached}.items())
    device = module_device(encoder)
    for start in tqdm(
        range(0, len(todo), batch_size),
        desc=f"text features ({device.type})",
        unit="batch",
        disable=progress is not None or not todo,
    ):
        chunk = todo[start : start + batch_size]
        tokens = {k: v.to(device) for k, v in encoder.tokenize([t for _, t in chunk]).items()}
        with torch.inference_mode():
            vectors = encoder(tokens["input_ids"], tokens["attention_mask"]).float().cpu().numpy()
        fresh = {key: vectors[i] for i, (key, _) in enumerate(chunk)}
        cache.put(encoder.identity, fresh)
        cached.update(fresh)
        if progress:
            progress(*of_count(min(start + batch_size, len(todo)), len(todo), "Embedding texts"))
    return _fill(keys, cached, encoder.feature_dim)
