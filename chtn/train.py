"""Training loop for CHTN on cached frozen-encoder features.

The image trunk is frozen by default (as the release freezes its conv layers), so training on its
cached features is exactly training the network, at a fraction of the cost. With
`encoder.finetune_stages` the inputs are the cached maps entering the trunk's last units instead, and
those units train with the network (chtn/finetune.py). Runs on CUDA with bf16
autocast when present, on CPU otherwise, and under `torchrun` as PyTorch DDP (NCCL on GPUs,
gloo on CPUs): every rank draws the same seeded global batch and trains on its slice of it.
"""

from __future__ import annotations

import json
import math
import os
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from chtn.checkpoint import save_checkpoint, update_header
from chtn.config import CHTNConfig
from chtn.domain import source_domain_fit
from chtn.errors import CHTNError
from chtn.evaluate import evaluate_embeddings
from chtn.finetune import FineTunedCHTN, TrunkTail
from chtn.losses import ensemble_loss
from chtn.model import CHTN, CHTNEnsemble, LinearBaseline, build_model
from chtn.shards import distributed_context


@dataclass
class FeatureSet:
    """Encoder features of pairs: image (n, d_img), text (n, d_txt), integer labels (n,)."""

    image: np.ndarray
    text: np.ndarray
    labels: np.ndarray


@dataclass
class TrainInputs:
    train: FeatureSet
    val: FeatureSet | None
    label_names: list[str]
    source_image: np.ndarray | None = None
    source_labels: np.ndarray | None = None
    source_label_names: list[str] = field(default_factory=list)
    image_tail: TrunkTail | None = None  # set when the trunk's last units train too: every image array above
    # then holds the trunk's prefix feature maps (chtn/finetune.py)


@dataclass
class TrainResult:
    best_path: Path
    history: list[dict[str, Any]]


def seed_everything(seed: int) -> None:
    np.random.seed(seed)
    torch.manual_seed(seed)


def build_optimizer(model: nn.Module, config: CHTNConfig) -> torch.optim.Optimizer:
    """Weights get weight decay; biases and norm parameters get lr x bias_lr_mult and no decay (release).

    Fine-tuned trunk units (`tail.*`) learn at lr x trunk_lr_mult, so the pretrained filters move slowly.
    """
    t = config.train
    groups = []
    for in_trunk in (False, True):
        named = [(n, p) for n, p in model.named_parameters() if n.startswith("tail.") == in_trunk]
        lr = t.lr * (t.trunk_lr_mult if in_trunk else 1.0)
        if named:
            groups += [
                {"params": [p for _, p in named if p.ndim > 1], "lr": lr, "weight_decay": t.weight_decay},
                {"params": [p for _, p in named if p.ndim <= 1], "lr": lr * t.bias_lr_mult, "weight_decay": 0.0},
            ]
    if t.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=t.lr, momentum=t.momentum)
    return torch.optim.AdamW(groups, lr=t.lr)


def build_scheduler(
    optimizer: torch.optim.Optimizer, config: CHTNConfig, total_steps: int
) -> torch.optim.lr_scheduler.LRScheduler | None:
    """Cosine decay to 0 over all steps, or None for the release's constant rate."""
    if config.train.lr_schedule == "constant":
        return None
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 0.5 * (1 + math.cos(math.pi * step / total_steps)))


def pooled_features(inputs: TrainInputs, images: np.ndarray) -> np.ndarray:
    """Trunk features of an image array of `inputs` (prefix maps go through the tail as it is now)."""
    return images if inputs.image_tail is None else inputs.image_tail.pool_maps(images)


def source_gate(inputs: TrainInputs, seed: int, log: Callable[[str], None]) -> tuple[float, dict[str, float]]:
    """Scale for the source terms (the source's domain relevance) and the record kept in the checkpoint."""

    assert inputs.source_image is not None  # called only when training with a source domain
    fit = source_domain_fit(
        pooled_features(inputs, inputs.source_image), pooled_features(inputs, inputs.train.image), seed=seed
    )
    log(
        f"source domain fit: a classifier tells source from target images with AUC {fit.auc:.3f}; "
        f"source terms scaled by {fit.relevance:.3f}"
    )
    return fit.relevance, {"auc": round(fit.auc, 4), "relevance": round(fit.relevance, 4)}


def training_environment(device: torch.device, world: int, amp: bool) -> dict[str, Any]:
    """Where and how a run trains (the model card's "trained on"): hardware, precision, processes, versions.

    A go/no-go review needs to know whether a number came from a CPU or a GPU run, in float32 or bf16, with
    which library versions; none of this can be recovered from the weights afterwards.
    """
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU",
        "device_type": device.type,
        "precision": "bfloat16 autocast" if amp else "float32",
        "processes": world,  # DDP world size (torchrun); 1 = a single process
        "torch": torch.__version__,
        "cuda": torch.version.cuda,  # the CUDA torch was built with (None: a CPU-only build)
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": cores,  # cores this process may use
        "torch_threads": torch.get_num_threads(),
    }


def _batch_indices(n: int, batch: int, steps: int, rng: np.random.Generator) -> np.ndarray:
    """(steps, batch) indices walking through fresh permutations, so every pair is seen evenly."""
    need = steps * batch
    order = np.concatenate([rng.permutation(n) for _ in range(math.ceil(need / n))])
    return order[:need].reshape(steps, batch)


def check_trainable(config: CHTNConfig) -> None:
    """This trainer trains CHTN; the linear architecture is the baseline, fitted by `chtn baseline`."""
    if config.model.architecture != "chtn":
        raise CHTNError("model.architecture 'linear' is the built-in baseline: fit it with `chtn baseline`, not train.")


@torch.inference_mode()
def validation_map(
    model: CHTN | CHTNEnsemble | FineTunedCHTN,
    val: FeatureSet,
    label_names: list[str],
    device: torch.device,
    batch: int = 512,
) -> dict[str, float]:
    model.eval()

    def encode(encoder, array: np.ndarray) -> np.ndarray:  # in batches: a tail's activations are large
        return np.concatenate(
            [
                encoder(torch.from_numpy(array[i : i + batch]).to(device)).float().cpu().numpy()
                for i in range(0, len(array), batch)
            ]
        )

    image, text = encode(model.encode_image, val.image), encode(model.encode_text, val.text)
    summary = evaluate_embeddings(image, text, val.labels, label_names).summary()
    return {k: summary[k] for k in ("map_i2t", "map_t2i", "map_mean")}


def _pick_device(device: str | None) -> torch.device:
    """The given device, else this process's GPU under torchrun (LOCAL_RANK), else the CPU."""
    if device:
        return torch.device(device)
    return torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}" if torch.cuda.is_available() else "cpu")


def _resume(
    state_path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any, dev: torch.device
) -> tuple[int, float, list[dict[str, Any]]]:
    """Load `last.pt` into the model, optimizer and scheduler; (epochs done, best validation MAP, history)."""
    state = torch.load(state_path, map_location=dev, weights_only=True)
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    if scheduler is not None:
        scheduler.load_state_dict(state["scheduler"])
    return state["epoch"], state["best_map"], json.loads(state["history"])


@dataclass(frozen=True)
class _Epoch:
    """One epoch's batches: pair rows per step, and source rows per step (None without a source)."""

    number: int  # 0-based
    batches: np.ndarray
    source_batches: np.ndarray | None


def _run_epoch(
    ddp: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    tensors: dict[str, torch.Tensor],
    epoch: _Epoch,
    config: CHTNConfig,
    source_scale: float,
    amp: bool,
) -> dict[str, float]:
    """The optimisation steps of one epoch on this rank's share of each batch; the summed loss terms."""
    t, (rank, world) = config.train, distributed_context()
    dev = tensors["image"].device
    torch.manual_seed(t.seed * 1000 + epoch.number * world + rank)
    generator = torch.Generator().manual_seed(t.seed * 1000 + epoch.number)
    ddp.train()
    sums: dict[str, float] = {}
    steps = len(epoch.batches)
    bar = tqdm(range(steps), desc=f"epoch {epoch.number + 1}/{t.epochs}", leave=False, disable=rank != 0)
    for step in bar:
        idx = torch.from_numpy(epoch.batches[step][rank::world]).to(dev)
        src = (
            None if epoch.source_batches is None else torch.from_numpy(epoch.source_batches[step][rank::world]).to(dev)
        )
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=amp):
            outputs = ddp(tensors["image"][idx], tensors["text"][idx], None if src is None else tensors["source"][src])
        loss, terms = ensemble_loss(
            outputs,
            tensors["labels"][idx],
            config.loss,
            None if src is None else tensors["source_labels"][src],
            generator,
            source_scale,
        )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        for name, value in terms.items():
            sums[name] = sums.get(name, 0.0) + value
        bar.set_postfix({k: f"{v:.3f}" for k, v in terms.items()}, refresh=False)
    return sums


def train(
    config: CHTNConfig,
    inputs: TrainInputs,
    out_dir: str | Path,
    meta: dict[str, Any],
    tfidf: tuple[list[str], np.ndarray] | None = None,
    resume: bool = False,
    device: str | None = None,
    log: Callable[[str], None] = print,
) -> TrainResult:
    """Train, validate every epoch, keep `best.safetensors` (by validation MAP) and `last.pt` for resume."""
    started_run = time.perf_counter()
    rank, world = distributed_context()
    t = config.train
    meta = dict(meta)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    dev = _pick_device(device)
    seed_everything(t.seed)
    use_source = inputs.source_image is not None and config.model.num_source_classes > 0
    if t.batch_size % world or t.batch_size // world < 2:
        raise CHTNError(f"batch_size {t.batch_size} must split into >= 2 pairs per each of {world} processes.")

    n = len(inputs.train.labels)
    steps = max(math.ceil(n / t.batch_size), t.min_steps_per_epoch)
    check_trainable(config)
    head = build_model(config.model)
    assert not isinstance(head, LinearBaseline)  # for the type checker: refused above
    model = (head if inputs.image_tail is None else FineTunedCHTN(head, inputs.image_tail)).to(dev)
    ddp = torch.nn.parallel.DistributedDataParallel(model) if world > 1 else model
    optimizer = build_optimizer(model, config)
    scheduler = build_scheduler(optimizer, config, t.epochs * steps)
    history: list[dict[str, Any]] = []
    start_epoch, best_map = 0, -math.inf
    state_path, best_path = out / "last.pt", out / "best.safetensors"
    if resume and state_path.exists():
        start_epoch, best_map, history = _resume(state_path, model, optimizer, scheduler, dev)
        log(f"resumed from {state_path} at epoch {start_epoch}")

    tensors = {
        name: torch.from_numpy(arr).to(dev)
        for name, arr in (("image", inputs.train.image), ("text", inputs.train.text), ("labels", inputs.train.labels))
    }
    if use_source:
        tensors["source"] = torch.from_numpy(inputs.source_image).to(dev)
        tensors["source_labels"] = torch.from_numpy(inputs.source_labels).to(dev)
    source_scale = 1.0
    if use_source and config.loss.source_fit == "gated":
        source_scale, meta["source_fit"] = source_gate(inputs, t.seed, log)
    amp = t.amp and dev.type == "cuda"
    meta["provenance"] = {**training_environment(dev, world, amp), "seed": t.seed}
    for number in range(start_epoch, t.epochs):
        started = time.perf_counter()
        rng = np.random.default_rng([t.seed, number])  # same batches on every rank and after a resume
        batches = _batch_indices(n, t.batch_size, steps, rng)
        source_batches = (
            rng.integers(0, len(inputs.source_labels), size=(steps, t.source_batch_size))
            if use_source and inputs.source_labels is not None
            else None
        )
        epoch = _Epoch(number, batches, source_batches)
        sums = _run_epoch(ddp, optimizer, scheduler, tensors, epoch, config, source_scale, amp)
        record: dict[str, Any] = {
            "epoch": number + 1,
            "steps": steps,
            "world_size": world,
            **{f"loss_{k}": v / steps for k, v in sums.items()},
        }
        if rank != 0:
            continue
        if inputs.val is not None:
            record.update(
                {f"val_{k}": v for k, v in validation_map(model, inputs.val, inputs.label_names, dev).items()}
            )
        record["seconds"] = round(time.perf_counter() - started, 3)
        history.append(record)
        with (out / "metrics.jsonl").open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")
        score = record.get("val_map_mean", float(number))  # no validation split: the last epoch is kept
        if score > best_map:
            best_map = score
            save_checkpoint(best_path, model, config, {**meta, "metrics": {"best_epoch": number + 1, **record}}, tfidf)
        torch.save(
            {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "epoch": number + 1,
                "scheduler": scheduler.state_dict() if scheduler is not None else {},
                "best_map": best_map,
                "history": json.dumps(history),
            },
            state_path,
        )
        shown = {k: round(v, 4) for k, v in record.items() if k.startswith(("loss_", "val_"))}
        log(f"epoch {number + 1}/{t.epochs} {shown}")
    if rank == 0 and best_path.exists():  # the wall time is known only now: stamp it on the kept checkpoint
        provenance = {
            **meta["provenance"],
            "wall_seconds": round(time.perf_counter() - started_run, 1),  # this call: set-up, epochs, validation
            "epochs_run": t.epochs - start_epoch,
            "resumed_from_epoch": start_epoch,  # 0 = trained from scratch in this call
        }
        update_header(best_path, {"provenance": provenance})
    if world > 1:
        torch.distributed.barrier()
    return TrainResult(best_path, history)
