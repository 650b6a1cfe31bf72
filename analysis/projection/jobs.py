"""Projections computed in the background, one job per content key, shared by every dashboard session.

UMAP on a fresh server first waits for numba to compile umap-learn (tens of seconds, minutes on a busy
machine). The shared-space page therefore never computes it in the script run: it submits a job here, shows
an instant PCA meanwhile and polls. Several sessions asking for the same projection share one job; the
result goes to the projection disk cache (`analysis.projection.project.project_gallery`), where the page reads it.

Thread-safe: the registry's dictionary is guarded by a lock and jobs carry only their own immutable inputs.
Failed jobs are kept (every session sees the same error); finished ones are dropped, their result is on disk.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field

from analysis.projection.project import Projection


@dataclass(frozen=True)
class ProjectionJob:
    """One background projection: its content key, when it was submitted, and its future result."""

    key: str
    future: Future = field(compare=False)
    submitted: float = field(default_factory=time.monotonic)  # time.monotonic() at submission

    def done(self) -> bool:
        return self.future.done()

    def result(self) -> Projection:
        """The projection (raises what the computation raised); only call once `done()`."""
        return self.future.result()

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.submitted


class ProjectionJobs:
    """A registry of background projection jobs keyed by content; `workers` compute at a time (one by default:
    UMAP is CPU-bound, and a small server should keep cores for the sessions' own script runs).

    Each job runs in its own daemon thread (a stopping server does not wait for a UMAP nobody will see),
    queued on a semaphore.
    """

    def __init__(self, workers: int = 1) -> None:
        self._lock = threading.RLock()  # a job already done when submitted runs its callback in this thread
        self._jobs: dict[str, ProjectionJob] = {}
        self._slots = threading.BoundedSemaphore(workers)

    def submit(self, key: str, compute: Callable[[], Projection]) -> ProjectionJob:
        """The job for `key`: the running (or failed) one if there is one, else a new job running `compute()`."""
        with self._lock:
            job = self._jobs.get(key)
            if job is None:
                job = ProjectionJob(key, Future())
                self._jobs[key] = job
                job.future.add_done_callback(lambda future: self._finished(key, future))
                threading.Thread(
                    target=self._run, args=(job.future, compute), name=f"chtn-projection-{key[:8]}", daemon=True
                ).start()
            return job

    def running(self) -> list[str]:
        """Keys of the jobs not finished yet (queued or computing)."""
        with self._lock:
            return [key for key, job in self._jobs.items() if not job.done()]

    def _run(self, future: Future, compute: Callable[[], Projection]) -> None:
        with self._slots:
            if not future.set_running_or_notify_cancel():
                return
            try:
                result = compute()
            except BaseException as exc:  # noqa: BLE001 - handed to every session through the future
                future.set_exception(exc)
            else:
                future.set_result(result)

    def _finished(self, key: str, future: Future) -> None:
        if future.exception() is None:  # the result is in the disk cache now; a failure stays for everyone to see
            with self._lock:
                if self._jobs.get(key) is not None and self._jobs[key].future is future:
                    del self._jobs[key]
