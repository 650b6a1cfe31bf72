"""One-file checkpoints: CHTN weights + everything needed to use and describe them.

Format: safetensors (tensors + a str->str metadata header, no code execution possible). A `.pt`
file with the same two parts ({"state_dict": ..., "metadata": {...}}) is also read, with
`torch.load(weights_only=True)`. Tensors on any device are saved from CPU copies, so a GPU-trained
file loads on a CPU-only machine.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import subprocess
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from chtn import __version__
from chtn.config import CHTNConfig
from chtn.errors import CheckpointError, CHTNError
from chtn.offline import check_local_models

if TYPE_CHECKING:
    import torch

    from chtn.finetune import FineTunedCHTN
    from chtn.model import Head

FORMAT = "chtn-checkpoint/1"
TFIDF_IDF_KEY = "text_encoder.idf"
TRUNK_PREFIX = "trunk."  # checkpoint tensors of the fine-tuned trunk units, under their timm names


def code_version() -> str:
    """Package version plus the git commit when running from a checkout."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            cwd=Path(__file__).parent,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return f"{__version__}+{commit}" if commit else __version__


@dataclass(frozen=True, eq=False)
class Checkpoint:
    """A loaded checkpoint: its weights, config and metadata, and the model (eval mode, frozen, CPU) built from them.

    The model is built by `load_checkpoint`, which so checks that the weights fit the config (a `CheckpointError`
    otherwise), or, when told not to, by the first caller that needs it: the dashboard opens checkpoints without
    importing PyTorch (1.5-2.5 s of a new process), as its pages answer from stored embeddings. Everything else in
    the file is checked when it is read.

    Equal (and hashed) by content digest: two loads of the same file are the same checkpoint, so caches of things
    computed from it (`chtn.tower.create_tower`) are keyed by what it is, not by the object.
    """

    config: CHTNConfig
    meta: dict[str, Any]
    path: Path
    digest: str  # SHA-256 of the file: the cache key of everything computed from this checkpoint
    weights: dict[str, np.ndarray]  # the CHTN head's state dict, as stored
    trunk_weights: dict[str, np.ndarray] = field(default_factory=dict)  # fine-tuned trunk units (timm names)
    # The model, built once under the lock by whichever caller needs it first; dashboard sessions share it read-only.
    _built: list[Head] = field(default_factory=list, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    @property
    def model(self) -> Head:
        """The CHTN head (eval mode, frozen, CPU); `CheckpointError` if the weights do not fit the config."""
        with self._lock:
            if not self._built:
                self._built.append(_build_model(self.config, self.weights, self.path.name))
            return self._built[0]

    @property
    def trunk_state(self) -> dict[str, torch.Tensor]:
        """The fine-tuned trunk units as tensors (empty for a frozen trunk)."""
        import torch

        return {name: torch.from_numpy(array) for name, array in self.trunk_weights.items()}

    @property
    def label_names(self) -> list[str]:
        return self.meta["label_names"]

    @property
    def tfidf_state(self) -> tuple[list[str], np.ndarray] | None:
        vocabulary = self.meta.get("tfidf_vocabulary")
        return (vocabulary, self.meta["_tfidf_idf"]) if vocabulary else None

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Checkpoint) and other.digest == self.digest

    def __hash__(self) -> int:
        return hash(self.digest)

    def check_labels(self, labels: Sequence[str]) -> None:
        """Refuse data whose categories the model cannot output."""
        unknown = sorted(set(labels) - set(self.label_names))
        if unknown:
            raise CheckpointError(
                f"The data has {len(unknown)} categor{'y' if len(unknown) == 1 else 'ies'} this checkpoint was not "
                f"trained on: {unknown[:5]}{' ...' if len(unknown) > 5 else ''}. It knows {len(self.label_names)}: "
                f"{self.label_names[:5]} ... Pick the checkpoint trained for this dataset."
            )


def save_checkpoint(
    path: str | Path,
    model: Head | FineTunedCHTN,
    config: CHTNConfig,
    meta: dict[str, Any],
    tfidf: tuple[list[str], np.ndarray] | None = None,
    trunk_state: dict[str, torch.Tensor] | None = None,
) -> Path:
    """Write weights + metadata atomically (a crash never leaves a half-written best.safetensors).

    A fine-tuned trunk's units are stored next to CHTN's weights as `trunk.<timm name>` tensors, taken
    from a `FineTunedCHTN` or passed as `trunk_state` (re-saving a loaded checkpoint).
    """
    import torch
    from safetensors.torch import save_file

    from chtn.finetune import FineTunedCHTN

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    module: torch.nn.Module = getattr(model, "module", model)  # unwrap DDP
    if isinstance(module, FineTunedCHTN):
        trunk_state = module.tail.trunk_state()
        module = module.head
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in module.state_dict().items()}
    tensors.update({TRUNK_PREFIX + k: v.detach().to("cpu").contiguous() for k, v in (trunk_state or {}).items()})
    # The reserved fields win over `meta`, and load-time extras ("_tfidf_idf") are not re-written, so
    # `save_checkpoint(p, ckpt.model, ckpt.config, ckpt.meta, ckpt.tfidf_state)` re-saves a loaded checkpoint.
    header = {
        **{k: v for k, v in meta.items() if not k.startswith("_")},
        "format": FORMAT,
        "config": config.to_dict(),
        "code_version": code_version(),
        "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }
    header.pop("tfidf_vocabulary", None)  # only the `tfidf` argument writes the vocabulary (with its idf)
    if tfidf is not None:
        header["tfidf_vocabulary"] = list(tfidf[0])
        tensors[TFIDF_IDF_KEY] = torch.as_tensor(np.asarray(tfidf[1], dtype=np.float32))
    tmp = path.with_suffix(path.suffix + ".tmp")
    save_file(tensors, str(tmp), metadata={k: json.dumps(v) for k, v in header.items()})
    tmp.replace(path)
    return path


def _read_file(path: Path) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """The stored tensors as numpy arrays (bfloat16 widened to float32, as loading them into the float32 model does)
    and the header. A .safetensors file is read without PyTorch; a .pt file needs it."""
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="numpy") as handle:
                return {k: handle.get_tensor(k) for k in handle.keys()}, handle.metadata() or {}
        except TypeError:  # a dtype numpy lacks (bfloat16): PyTorch reads it
            with safe_open(str(path), framework="pt") as handle:
                tensors = {k: _as_array(handle.get_tensor(k), k, path.name) for k in handle.keys()}
                return tensors, handle.metadata() or {}
        except Exception as exc:  # safetensors raises its own error types for corrupt headers
            raise CheckpointError(
                f"{path.name} is not a readable safetensors file ({type(exc).__name__}: {exc}). "
                "It may be truncated or corrupt; re-download or re-train it."
            ) from None
    import torch

    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt zip, or a pickle that needs code (refused by weights_only)
        raise CheckpointError(
            f"{path.name} cannot be loaded safely ({type(exc).__name__}). Only weights-only "
            "files are accepted; CHTN checkpoints are .safetensors files."
        ) from None
    if not (isinstance(blob, dict) and isinstance(blob.get("state_dict"), dict)):
        raise CheckpointError(f"{path.name} is not a CHTN checkpoint (no state_dict/metadata).")
    tensors = {
        k: _as_array(v, k, path.name) if isinstance(v, torch.Tensor) else v for k, v in blob["state_dict"].items()
    }
    return tensors, blob.get("metadata", {})


def _as_array(tensor: torch.Tensor, key: object, name: str) -> np.ndarray:
    """A tensor as numpy holds it: floating point numpy lacks (bfloat16, float8) widened to float32."""
    import torch

    if tensor.is_floating_point() and tensor.dtype not in (torch.float16, torch.float32, torch.float64):
        tensor = tensor.float()
    try:
        return tensor.detach().cpu().numpy()
    except (RuntimeError, TypeError):  # a kind numpy cannot hold (quantized, sparse, complex32)
        raise CheckpointError(
            f"{name}: tensor {str(key)[:80]!r} is of a kind CHTN cannot read ({tensor.dtype}, {tensor.layout}); the "
            "file is damaged or was not written by `python -m chtn train`."
        ) from None


def _decode_header(raw: dict[str, Any], name: str = "checkpoint") -> dict[str, Any]:
    """JSON-decode each header value; foreign files (e.g. transformers' {"format": "pt"}) keep raw strings."""
    meta: dict[str, Any] = {}
    for key, value in (raw if isinstance(raw, dict) else {}).items():
        try:
            meta[key] = json.loads(value) if isinstance(value, str) else value
        except json.JSONDecodeError:
            meta[key] = value
        except RecursionError:  # json's parser recurses once per nesting level
            raise CheckpointError(
                f"{name}: its header field {str(key)[:40]!r} is nested too deeply to read; the file is damaged or "
                "was not written by `python -m chtn train`."
            ) from None
    return meta


def _check_tensors(tensors: dict[Any, Any], name: str) -> None:
    """Every stored value is a tensor and every floating-point tensor is finite (a NaN weight ranks nothing)."""
    for key, value in tensors.items():
        if not isinstance(key, str):
            raise CheckpointError(f"{name}: its state_dict has a key {str(key)[:80]!r} that is not a tensor name.")
        if not isinstance(value, np.ndarray):
            raise CheckpointError(
                f"{name}: its state_dict entry {str(key)[:80]!r} is a {type(value).__name__}, not a tensor; the "
                "file is damaged or was not written by `python -m chtn train`."
            )
        if value.dtype.kind in "fc" and not bool(np.isfinite(value).all()):
            raise CheckpointError(
                f"{name}: tensor {str(key)[:80]!r} holds NaN or infinite values (training diverged, or the file is "
                "damaged); use an earlier checkpoint or re-train with a lower learning rate."
            )


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_strings(value: object, distinct: bool = False) -> bool:
    """A list of non-empty strings (all different with `distinct`)."""
    return (
        isinstance(value, list)
        and all(isinstance(v, str) and v.strip() for v in value)
        and (not distinct or len(set(value)) == len(value))
    )


# The header fields this code reads, each with the test its value must pass and the form it should have.
# Extra fields (written by a newer version) are kept unread.
HEADER_SCHEMA: dict[str, tuple[Any, str]] = {
    "label_names": (lambda v: _is_strings(v, distinct=True), "a list of distinct, non-empty category names"),
    "tfidf_vocabulary": (
        lambda v: v is None or (isinstance(v, list) and all(isinstance(t, str) for t in v) and len(set(v)) == len(v)),
        "a list of distinct strings (the TF-IDF terms)",
    ),
    "encoders": (
        lambda v: v is None or (isinstance(v, dict) and all(isinstance(x, str) for x in v.values())),
        "an object of strings",
    ),
    "dataset": (lambda v: v is None or isinstance(v, dict), "an object"),
    "metrics": (
        lambda v: (
            v is None
            or (isinstance(v, dict) and all(_is_number(v[k]) for k in ("val_map_mean", "best_epoch") if k in v))
        ),
        "an object (val_map_mean and best_epoch numbers)",
    ),
    "source": (
        lambda v: (
            v is None
            or (
                isinstance(v, dict)
                and isinstance(v.get("path"), str)
                and _is_strings(v.get("label_names"))
                and _is_number(v.get("n_images", 0))
            )
        ),
        "null or an object with path and label_names (and the number n_images)",
    ),
    "source_fit": (
        lambda v: v is None or (isinstance(v, dict) and _is_number(v.get("relevance")) and _is_number(v.get("auc"))),
        "null or an object with the numbers relevance and auc",
    ),
    "preset": (lambda v: isinstance(v, str), "a string"),
    "created_at": (lambda v: isinstance(v, str), "a string"),
    "code_version": (lambda v: isinstance(v, str), "a string"),
}


def _check_header(meta: dict[str, Any], name: str) -> None:
    """Each header field this code reads has the type it needs, or a `CheckpointError` names the field."""
    for key, (valid, form) in HEADER_SCHEMA.items():
        if key in meta and key != "label_names" and not valid(meta[key]):
            raise CheckpointError(
                f"{name}: its {key!r} header should be {form}, got {type(meta[key]).__name__}; the file is damaged "
                "or was not written by `python -m chtn train`."
            )


def load_checkpoint(path: str | Path, build_model: bool = True) -> Checkpoint:
    """Load a CHTN checkpoint on CPU, or raise `CheckpointError` saying what is wrong and what to do.

    `build_model=False` leaves the model to be built on first use, and with it the check that the weights fit the
    config, so the load imports no PyTorch: the dashboard, whose pages answer from stored embeddings. Commands build
    it here, so a damaged file is named before any other work starts.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"Checkpoint not found: {path}.")
    if path.suffix not in (".safetensors", ".pt", ".pth"):
        raise CheckpointError(f"{path.name}: unsupported checkpoint type; use a .safetensors (or .pt) file.")
    tensors, raw = _read_file(path)
    meta = _decode_header(raw, path.name)
    if meta.get("format") != FORMAT:
        raise CheckpointError(
            f"{path.name} is not a CHTN checkpoint (no '{FORMAT}' header); it may be another "
            "model's weights. Train one with `python -m chtn train`."
        )
    try:
        if not isinstance(meta.get("config"), dict):
            raise CHTNError("the 'config' header is missing or not a JSON object")
        config = CHTNConfig.from_dict(meta["config"])
    except (CHTNError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{path.name} has a config this version cannot read: {exc}") from None
    labels = meta.get("label_names")
    if not (isinstance(labels, list) and len(labels) == config.model.num_classes):
        raise CheckpointError(
            f"{path.name}: its 'label_names' header does not list the model's "
            f"{config.model.num_classes} categories; the file is damaged or was not written by "
            "`python -m chtn train`."
        )
    if not HEADER_SCHEMA["label_names"][0](labels):
        raise CheckpointError(
            f"{path.name}: its 'label_names' header should be {HEADER_SCHEMA['label_names'][1]}; got "
            f"{[x for x in labels if not (isinstance(x, str) and x.strip()) or labels.count(x) > 1][:3]}. The file "
            "is damaged or was not written by `python -m chtn train`."
        )
    _check_header(meta, path.name)
    try:
        check_local_models(config.encoder.image_model, config.encoder.image_weights, config.encoder.text_model_dir)
    except CHTNError as exc:
        raise CheckpointError(f"{path.name}: {exc}") from None
    _check_tensors(tensors, path.name)
    idf = tensors.pop(TFIDF_IDF_KEY, None)
    trunk = {k[len(TRUNK_PREFIX) :]: tensors.pop(k) for k in [k for k in tensors if k.startswith(TRUNK_PREFIX)]}
    if bool(trunk) != (config.encoder.finetune_stages > 0):
        raise CheckpointError(
            f"{path.name}: its config says {config.encoder.finetune_stages} fine-tuned trunk "
            f"stage(s) but the file holds {len(trunk)} trunk tensors; the file is damaged "
            "or was edited."
        )
    vocabulary = meta.get("tfidf_vocabulary")
    if config.encoder.uses_tfidf or vocabulary or idf is not None:
        sizes = (
            len(vocabulary) if isinstance(vocabulary, list) else None,
            None if idf is None else idf.size,
            config.model.text_dim if config.encoder.text == "tfidf" else None,
        )
        if not (vocabulary and idf is not None and sizes[0] == sizes[1] and sizes[2] in (None, sizes[0])):
            raise CheckpointError(
                f"{path.name}: its TF-IDF text encoder is incomplete (vocabulary, idf and text "
                f"width sizes {sizes}); the file is damaged or was edited."
            )
        meta["_tfidf_idf"] = idf
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    checkpoint = Checkpoint(config, meta, path, digest, tensors, trunk)
    if build_model:
        checkpoint.model  # noqa: B018 -- the property builds the model and checks the weights
    return checkpoint


def _build_model(config: CHTNConfig, weights: dict[str, np.ndarray], name: str) -> Head:
    """The model the config describes with the stored weights, frozen for inference, or a `CheckpointError` saying
    the weights do not fit."""
    import torch

    from chtn.model import build_model

    try:
        model = build_model(config.model)
        model.load_state_dict({key: torch.from_numpy(array) for key, array in weights.items()})
    except (RuntimeError, TypeError, ValueError) as exc:
        # torch's first line is only "Error(s) in loading state_dict for CHTN:"; the details follow it
        lines = [line.strip().rstrip(".") for line in str(exc).splitlines() if line.strip()] or [type(exc).__name__]
        details = lines[0] if len(lines) == 1 else lines[1] + (f"; and {len(lines) - 2} more" if len(lines) > 2 else "")
        raise CheckpointError(
            f"{name}: weights do not match its config ({details}). The file is damaged or "
            "was edited; re-train or re-download it."
        ) from None
    model.eval().requires_grad_(False)  # inference only; shared read-only by every dashboard session
    return model


def update_header(path: str | Path, fields: dict[str, Any]) -> Path:
    """Replace or add metadata fields of a saved .safetensors checkpoint in place (atomically), weights untouched.

    Training stamps facts known only at its end (the wall time) on the checkpoint it kept earlier.
    """
    from safetensors import safe_open
    from safetensors.torch import save_file

    path = Path(path)
    with safe_open(str(path), framework="pt") as handle:
        tensors, header = {k: handle.get_tensor(k) for k in handle.keys()}, dict(handle.metadata() or {})
    header.update({k: json.dumps(v) for k, v in fields.items()})
    tmp = path.with_suffix(path.suffix + ".tmp")
    save_file(tensors, str(tmp), metadata=header)
    tmp.replace(path)
    return path
