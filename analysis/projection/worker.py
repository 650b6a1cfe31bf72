"""Every UMAP fit runs in one worker process at a low CPU priority, never in the calling process.

Why a process: on its first use in a process, numba compiles umap-learn's code (15-40 s on 2 cores) while holding
the GIL, and UMAP's compiled neighbour and layout code keeps it for seconds at a time. In the dashboard's server that
stalls every session: while a 10,000-point UMAP fitted in the server's process, one piece of page work in twenty
waited over 3 s (`python -m bench.bench_projection`, docs/projection_benchmark.md). A child process leaves the
server's interpreter free, and at nice 10 the pages get the cores first. One worker, started on first use and kept,
because its compiled code is what every later fit reuses; any thread may submit to it.

It is spawned, not forked: a fork of the multi-threaded server could copy a lock that another thread holds.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
from collections.abc import Callable
from concurrent.futures import CancelledError, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import TypeVar

from chtn.errors import CHTNError

T = TypeVar("T")
NICE = 10  # how much lower than its parent the worker's CPU priority is (Unix)

_lock = threading.Lock()
_pool: ProcessPoolExecutor | None = None


def _lower_priority(nice: int) -> None:
    """The worker's initializer: lower its own CPU priority (Unix only; elsewhere it runs at its parent's)."""
    if hasattr(os, "nice"):
        os.nice(nice)


def in_worker(fn: Callable[..., T], *args: object) -> T:
    """`fn(*args)` in the worker process, started here on first use. `fn` must be a module-level function, its
    arguments and result picklable (our own arrays and parameters: nothing the user supplied is unpickled).

    A worker that died (killed for memory, say) or was stopped is a `CHTNError`; the next call starts a new one.
    """
    global _pool
    with _lock:
        if _pool is None:
            _pool = ProcessPoolExecutor(
                1, mp_context=multiprocessing.get_context("spawn"), initializer=_lower_priority, initargs=(NICE,)
            )
        pool = _pool
    try:
        return pool.submit(fn, *args).result()
    except KeyboardInterrupt:  # a command stopped by Ctrl-C: do not wait at exit for the fit to finish
        stop()
        raise
    except (BrokenProcessPool, CancelledError) as exc:  # it died, or `stop` ended it
        with _lock:
            if _pool is pool:
                _pool = None
        raise CHTNError(
            "The UMAP worker process stopped before it finished (out of memory, or the server is stopping?). Try "
            "again, or choose PCA or a lower point limit."
        ) from exc


def stop() -> None:
    """End the worker now, abandoning a fit in progress (its callers get the `CHTNError` above): at server shutdown
    and on Ctrl-C. Python's exit would otherwise wait for the fit, minutes for a large UMAP. The next call starts a
    new worker."""
    global _pool
    with _lock:
        pool, _pool = _pool, None
    if pool is None:
        return
    for process in list(pool._processes.values()):  # Python 3.14 has terminate_workers(); 3.11 and later have this
        process.terminate()
    pool.shutdown(wait=False, cancel_futures=True)
