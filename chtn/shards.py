"""Evaluation shared out across the processes of a ``torchrun`` launch, through ``torch.distributed`` (the engine
training already uses: gloo on CPU, NCCL with one GPU per process).

Under ``torchrun --nproc_per_node N -m chtn <command> ...`` every process parses the same command line. Rank 0 runs
the command; every other rank serves evaluations (:func:`run`): it waits for the next split that rank 0 evaluates,
ranks its share of the query blocks and gathers the results with rank 0, until the command is over. So every
command that scores a split through :func:`evaluate` (``evaluate``, and through :func:`chtn.gallery.evaluate_gallery`
``compare``, ``bias`` and ``review``) is sharded with no per-rank code in it, and only the ranking is shared:
embedding, statistics and reports run once, on rank 0, which alone prints and writes. ``train`` is not run this way:
its processes train one model together (:mod:`chtn.train`).

The jobs travel as pickles between the processes of one launch (``broadcast_object_list``): arrays this code made,
never a user's file. PyTorch is imported by the functions of a launch only: outside one, :func:`evaluate` (every page
of the dashboard) ranks on the CPU without it.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, NoReturn

import numpy as np

from chtn.evaluate import EvaluationReport, evaluate_embeddings
from chtn.progress import Progress

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class _Job:
    """One split to evaluate: what :func:`chtn.evaluate.evaluate_embeddings` takes, less the device and progress."""

    image: np.ndarray
    text: np.ndarray
    labels: np.ndarray
    label_names: list[str]
    at_k: int | None
    block_queries: int | None


# This process's device while :func:`run` runs a command under torchrun (set once per process, by the CLI's entry
# point alone; the dashboard never launches under torchrun), else None: evaluations are not shared.
_launch_device: torch.device | None = None


def distributed_context() -> tuple[int, int]:
    """(rank, world size); initialises the process group when launched by torchrun."""
    import torch

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not torch.distributed.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        torch.distributed.init_process_group(backend)
    return (torch.distributed.get_rank() if world > 1 else 0), world


def shard_device(device: torch.device) -> torch.device:
    """This process's device: under torchrun on CUDA, the GPU of its local rank (initialising the process group);
    otherwise ``device`` itself (gloo processes share the CPU)."""
    import torch

    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)  # before the process group: NCCL binds each rank to its current GPU
    distributed_context()
    return device


def run(command: Callable[[], int], device: str | None) -> int:
    """Run ``command`` on rank 0 and serve its evaluations on every other rank (module docstring); the exit status
    is the command's on rank 0 and 0 elsewhere. ``device``: the command line's --device (None: CUDA when present),
    one GPU per process on CUDA."""
    import torch

    from chtn.features import pick_device

    global _launch_device
    _launch_device = shard_device(pick_device(device))  # initialises the process group
    # Every rank passes a barrier before any tears the group down: a rank that closed its connections while
    # another's last broadcast was still in flight made gloo's I/O thread abort that one ("terminate called without
    # an active exception", SIGABRT, now and then in CI). A serving rank that failed skips it (rank 0 then sees its
    # connection closed instead of waiting for it).
    try:
        if torch.distributed.get_rank() != 0:
            status = _serve()
            torch.distributed.barrier()
            return status
        try:
            return command()
        finally:
            _next_job(None)  # the command is over, also when it failed: the serving ranks stop
            torch.distributed.barrier()
    finally:
        torch.distributed.destroy_process_group()  # a group left to the interpreter's exit can abort it (SIGABRT)


def leave(status: int) -> NoReturn:
    """End a torchrun process with ``status`` once :func:`run` is over, without the interpreter's teardown.

    After the process group is destroyed, rank 0 still aborted now and then while the interpreter exited ("terminate
    called without an active exception", SIGABRT: a C++ thread of the launch's rendezvous store still joinable when
    the library is unloaded; 1 of 6 ``bias`` runs under load on 2 cores, measured). Every file the command wrote is
    closed by then, so the standard streams are flushed and the process ends here."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


def _serve() -> int:
    """A serving rank's loop: rank its share of each evaluation rank 0 announces, until rank 0 says it is done."""
    import torch

    served = 0
    while (job := _next_job(None)) is not None:
        evaluate_embeddings(
            job.image, job.text, job.labels, job.label_names, job.at_k, _launch_device, job.block_queries,
            sharded=True,
        )  # fmt: skip
        served += 1
    rank, world = torch.distributed.get_rank(), torch.distributed.get_world_size()
    print(f"chtn: rank {rank} of {world} ranked its share of {served} evaluation(s)", file=sys.stderr)
    return 0


def evaluate(
    image: np.ndarray,
    text: np.ndarray,
    labels: np.ndarray,
    label_names: Sequence[str],
    at_k: int | None = None,
    device: str | torch.device | None = None,
    block_queries: int | None = None,
    progress: Progress | None = None,
) -> EvaluationReport:
    """:func:`chtn.evaluate.evaluate_embeddings`, shared out across the launch's processes when :func:`run` runs
    the command (then on the launch's device per process), else in this process on ``device``."""
    if _launch_device is None:
        return evaluate_embeddings(image, text, labels, label_names, at_k, device, block_queries, progress)
    _next_job(_Job(image, text, np.asarray(labels), list(label_names), at_k, block_queries))
    return evaluate_embeddings(
        image, text, labels, label_names, at_k, _launch_device, block_queries, progress, sharded=True
    )


def _next_job(job: _Job | None) -> _Job | None:
    """Rank 0 sends ``job`` (None: the command is over); every rank returns what rank 0 sent."""
    import torch

    box: list[_Job | None] = [job]
    torch.distributed.broadcast_object_list(box, src=0)
    return box[0]
