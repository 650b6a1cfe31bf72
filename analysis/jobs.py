"""Long computations in the background, one job per content key, shared by every dashboard session.

A page never runs a computation of minutes in its script run: it submits a job here, shows what it already has
(an instant PCA for the shared space, the transfer gain for source bias) and polls. Several sessions asking for the
same result share one job; the result goes to a disk cache keyed by content, where the page reads it next time.
Each job reports its progress (fraction and step, e.g. "Embedding images 1,200/2,600"), from which every session
shows the same count and an ETA.

Thread-safe: the registry's dictionary is guarded by a lock, a job's progress by its own, and jobs carry only
their own immutable inputs. Failed jobs are kept (every session sees the same error) until someone asks to try
again; finished ones are dropped, their result is on disk.
"""

from __future__ import annotations

import ast
import logging
import math
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from chtn.progress import Progress

T = TypeVar("T")
log = logging.getLogger(__name__)
_AST_LOCK = threading.RLock()  # re-entrant: a finalizer run by the GC inside one parse may parse again


def serialise_ast_parsing() -> None:
    """Let one thread at a time build an AST, on CPython 3.11 (idempotent; 3.12 and later need nothing).

    CPython 3.11 counts the AST constructor's recursion depth in interpreter-wide state, and the garbage collector
    can switch threads in the middle of a construction (CPython gh-106905): two threads parsing at once then fail
    with "SystemError: AST constructor recursion depth mismatch". A dashboard server parses in many threads:
    Streamlit compiles each page script, numpy reads every .npy header with `ast.literal_eval`, and background
    jobs load embeddings while sessions run. No library offers the lock, so it is wrapped around `ast.parse` here,
    which both of those call through the `ast` module's namespace. Parsing takes microseconds; the lock costs
    nothing a person notices.
    """
    if sys.version_info >= (3, 12) or getattr(ast.parse, "serialised", False):
        return
    parse = ast.parse

    def serialised_parse(*args, **kwargs):
        with _AST_LOCK:
            return parse(*args, **kwargs)

    serialised_parse.serialised = True  # type: ignore[attr-defined]
    ast.parse = serialised_parse


class JobProgress:
    """The latest `progress(fraction, step)` of a job, readable from any thread, with the time since it started."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._fraction, self._step = 0.0, "queued"
        self._started: float | None = None

    def __call__(self, fraction: float, step: str) -> None:
        with self._lock:
            if self._started is None:
                self._started = time.monotonic()
            self._fraction, self._step = min(max(float(fraction), 0.0), 1.0), step

    def snapshot(self) -> tuple[float, str, float | None]:
        """(fraction done, current step, estimated seconds left or None while too early to say)."""
        with self._lock:
            fraction, step, started = self._fraction, self._step, self._started
        if started is None or fraction < 0.05:
            return fraction, step, None
        elapsed = time.monotonic() - started
        return fraction, step, elapsed * (1 - fraction) / fraction


STEP_ASIDE_SECONDS = 30.0  # the longest work steps aside for script runs before it goes on regardless
PAGE_LOAD_SECONDS = 1.5  # after a browser's last request, how long its page may still be loading (files, session)


class ScriptRuns:
    """How many sessions' script runs are under way in this server, and when a browser last asked it for something,
    so that work nobody waits for yet (app.py's start-up warm-up; a job whose page draws an interim answer meanwhile)
    steps aside for them: on 2 cores the two would otherwise take turns on the interpreter lock, and the person who
    opened a page would wait for both. A page's script run starts only once the browser has loaded the page's files
    and opened its session (about a second), hence the requests. Thread-safe: state guarded by a condition."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._count = 0
        self._last_request = -math.inf

    @contextmanager
    def running(self) -> Iterator[None]:
        """Around one script run (it may end by st.stop or st.rerun: those are exceptions)."""
        with self._changed:
            self._count += 1
        try:
            yield
        finally:
            with self._changed:
                self._count -= 1
                self._changed.notify_all()

    def requested(self) -> None:
        """A browser asked the server for something (app.py's middleware): a page may be loading."""
        with self._changed:
            self._last_request = time.monotonic()

    def wait_idle(self, timeout: float, quiet: float = 0.0) -> bool:
        """Block until no script run is under way and no browser has asked for anything for `quiet` seconds, for at
        most `timeout` seconds; True when that holds."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                now = time.monotonic()
                loading = self._last_request + quiet - now
                if self._count == 0 and loading <= 0:
                    return True
                if now >= deadline:
                    return False
                self._changed.wait(min(deadline - now, loading) if self._count == 0 else deadline - now)

    def step_aside(self) -> None:
        """What work nobody waits on yet calls before each step: wait for the script runs under way to end and the
        pages loading to load, for at most STEP_ASIDE_SECONDS (busy servers still get it done)."""
        self.wait_idle(STEP_ASIDE_SECONDS, PAGE_LOAD_SECONDS)


SCRIPT_RUNS = ScriptRuns()  # the server's one counter: dashboard.py counts its runs; app.py's warm-up and jobs read it


@dataclass(frozen=True)
class Job(Generic[T]):
    """One background computation: its content key, its progress, when it was submitted, and its future result."""

    key: str
    future: Future = field(compare=False)
    progress: JobProgress = field(default_factory=JobProgress, compare=False)
    submitted: float = field(default_factory=time.monotonic)  # time.monotonic() at submission

    def done(self) -> bool:
        return self.future.done()

    def result(self) -> T:
        """The result (raises what the computation raised); only call once `done()`."""
        return self.future.result()

    def error(self) -> BaseException | None:
        """What the computation raised, or None (also while it runs)."""
        return self.future.exception() if self.future.done() else None

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.submitted


class BackgroundJobs(Generic[T]):
    """A registry of background jobs keyed by content; `workers` compute at a time (one by default: the work is
    CPU-bound, and a small server should keep cores for the sessions' own script runs). With `step_aside`, a job
    starts once no session's script run is under way and no page is loading (at most STEP_ASIDE_SECONDS later), and
    waits the same way each time it reports progress: for jobs whose page draws an interim answer meanwhile, which
    the job's imports and work would otherwise slow down on 2 cores, as they would any page opened while it runs.
    The browser may still be fetching what it draws that answer with (plotly's code, on a first visit).

    Each job runs in its own daemon thread (a stopping server does not wait for a result nobody will see), queued
    on a semaphore.
    """

    def __init__(self, workers: int = 1, step_aside: bool = False) -> None:
        self._lock = threading.RLock()  # a job already done when submitted runs its callback in this thread
        self._jobs: dict[str, Job[T]] = {}
        self._slots = threading.BoundedSemaphore(workers)
        self._step_aside = step_aside  # start once no script run is under way and no page loads (see ScriptRuns)

    def submit(self, key: str, compute: Callable[[Progress], T]) -> Job[T]:
        """The job for `key`: the running (or failed) one if there is one, else a new job running
        `compute(progress)`, whose progress calls every session reads from `job.progress`."""
        with self._lock:
            job = self._jobs.get(key)
            if job is None:
                job = Job(key, Future())
                self._jobs[key] = job
                job.future.add_done_callback(lambda future: self._finished(key, future))
                threading.Thread(target=self._run, args=(job, compute), name=f"chtn-job-{key[:8]}", daemon=True).start()
            return job

    def get(self, key: str) -> Job[T] | None:
        """The running (or failed) job for `key`, without starting one."""
        with self._lock:
            return self._jobs.get(key)

    def retry(self, key: str) -> None:
        """Forget the failed job for `key`, so that the next `submit` computes it again (a running one stays)."""
        with self._lock:
            job = self._jobs.get(key)
            if job is not None and job.error() is not None:
                del self._jobs[key]

    def running(self) -> list[str]:
        """Keys of the jobs not finished yet (queued or computing)."""
        with self._lock:
            return [key for key, job in self._jobs.items() if not job.done()]

    def _run(self, job: Job[T], compute: Callable[[Progress], T]) -> None:
        if self._step_aside:  # the page that submitted it is still drawing its first answer: let it finish first
            SCRIPT_RUNS.step_aside()
        with self._slots:
            if not job.future.set_running_or_notify_cancel():
                return
            try:
                result = compute(_stepping_aside(job.progress) if self._step_aside else job.progress)
            except BaseException as exc:  # noqa: BLE001 - handed to every session through the future
                log.exception("background job %s failed", job.key)  # the traceback, for the server's log
                job.future.set_exception(exc)
            else:
                job.future.set_result(result)

    def _finished(self, key: str, future: Future) -> None:
        if future.exception() is None:  # the result is in the disk cache now; a failure stays for everyone to see
            with self._lock:
                if self._jobs.get(key) is not None and self._jobs[key].future is future:
                    del self._jobs[key]


def _stepping_aside(progress: JobProgress) -> Progress:
    """`progress`, which also steps aside each time the job reports (a batch of images, a category): a page opened or
    used meanwhile gets the cores until it has drawn. On 2 cores, a page opened while Source bias's image diagnostics
    ran took 6.6 s instead of 2.6 s; a job's work between two reports takes tenths of a second."""

    def report(fraction: float, step: str) -> None:
        progress(fraction, step)
        SCRIPT_RUNS.step_aside()

    return report


def eta_text(job: Job) -> str:
    """ "Step 1,200/2,600 · 46% · about 40 s left (running 35 s)", the same words for every session."""
    fraction, step, left = job.progress.snapshot()
    remaining = "estimating the time left" if left is None else f"about {left:,.0f} s left"
    return f"{step} · {fraction:.0%} · {remaining} (running {job.elapsed:,.0f} s)"
