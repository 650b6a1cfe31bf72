"""How many CPU threads torch uses: the cores this process may run on, not the machine's.

torch sizes its intra-op pool from the machine's cores. A container with a CPU quota, or a process pinned to a few
cores (`taskset`, a scheduler's cpuset), then runs more threads than it gets cores, and torch's threads wait on
each other at every operation: an epoch can take several times longer (docs/benchmarks.md, "CPU threads").
The count comes from, in order: `--threads` (every command), `$CHTN_THREADS` (also the dashboard's),
`$OMP_NUM_THREADS` (which torch itself reads), else the usable cores: the CPU affinity, capped by a cgroup quota.
The C library's allocator is tuned for tensors at the same time (:func:`tune_allocator`).
"""

from __future__ import annotations

import ctypes
import math
import os
import sys
from pathlib import Path

from chtn.errors import CHTNError

CGROUP = Path("/sys/fs/cgroup")
ENVIRONMENT = ("CHTN_THREADS", "OMP_NUM_THREADS")  # read in this order when --threads is not given


def cgroup_quota(root: Path = CGROUP) -> float | None:
    """The CPUs a cgroup quota grants this process (cgroup v2 `cpu.max`, else v1 `cpu.cfs_quota_us`), or None."""
    # No library reads the quota: os.cpu_count and sched_getaffinity ignore it (Python >= 3.13 neither).
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]
    except (OSError, ValueError):
        try:
            quota = (root / "cpu" / "cpu.cfs_quota_us").read_text().strip()
            period = (root / "cpu" / "cpu.cfs_period_us").read_text().strip()
        except OSError:
            return None
    if quota in ("max", "-1") or not quota.lstrip("-").isdigit() or not period.isdigit() or int(period) <= 0:
        return None
    return int(quota) / int(period)


def usable_cores(root: Path = CGROUP) -> tuple[int, str]:
    """The cores this process may use, and where that number comes from."""
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    quota = cgroup_quota(root)
    if quota is not None and math.ceil(quota) < affinity:
        return max(1, math.ceil(quota)), f"a cgroup CPU quota of {quota:g} of the {affinity} cores in its affinity"
    return affinity, f"{affinity} cores in its CPU affinity" + ("" if quota is None else f", quota {quota:g}")


def thread_count(requested: int | None, root: Path = CGROUP) -> tuple[int, str]:
    """The intra-op threads to use, and why: an explicit request, $CHTN_THREADS, $OMP_NUM_THREADS, else the cores."""
    for value, origin in ((requested, "--threads"), *((os.environ.get(v), f"${v}") for v in ENVIRONMENT)):
        if value is None or value == "":
            continue
        if not str(value).isdigit() or int(value) < 1:
            raise CHTNError(f"{origin} {value!r} is not a number of threads; give a whole number >= 1, e.g. 2.")
        return int(value), f"set by {origin}"
    cores, why = usable_cores(root)
    return cores, f"this process may use {why}"


# glibc's malloc returns a freed block of more than 128 KiB to the system at once and trims the heap above 128 KiB
# free, then raises both limits only as larger blocks come and go. A CNN's activations on a small CPU batch (6 MiB
# for the image trunk at batch 4) are then mapped and faulted in again at every layer: measured on 2 cores, the
# trunk encoded 97 img/s so, and 170 img/s with these limits (docs/benchmarks.md). No library sets them, hence
# mallopt through ctypes; elsewhere than glibc this does nothing.
_MMAP_THRESHOLD, _TRIM_THRESHOLD = 32 << 20, 128 << 20
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's <malloc.h> parameter numbers


def tune_allocator() -> bool:
    """Keep blocks up to 32 MiB on the heap and up to 128 MiB free at its top, for tensors allocated and freed
    every layer; whether the C library took the setting (glibc only). Process-wide and idempotent."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD)) and bool(mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD))


def set_torch_threads(requested: int | None = None) -> str:
    """Sizes torch's intra-op pool (`thread_count`) and returns the line that says so, for the log. Before torch is
    imported, through `$OMP_NUM_THREADS`, which torch reads when it is: the dashboard's server sizes it at start and
    imports torch only once its pages' first answers are ready (they do not need it)."""
    threads, why = thread_count(requested)
    if "torch" in sys.modules:  # loaded already: its pool is sized now
        import torch

        torch.set_num_threads(threads)
    else:  # `chtn validate`, `chtn --help` and the server's start do not load torch for this
        os.environ["OMP_NUM_THREADS"] = str(threads)
    tune_allocator()
    line = f"torch uses {threads} CPU thread{'s' if threads > 1 else ''} ({why}; --threads N or CHTN_THREADS=N sets it)"
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    if threads > 1 and load >= usable_cores()[0]:  # other work already fills the cores: threads would wait
        line += f". The machine is busy (load {load:.1f}): --threads 1 may be faster"
    return line
