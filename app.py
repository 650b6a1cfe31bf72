"""CHTN review dashboard: `streamlit run app.py` opens the embedded sample, no configuration needed.

This file is the server (Streamlit's `st.App`, which `streamlit run` serves); dashboard.py is the script each session
runs (page configuration, navigation, sidebar) and views/ holds its pages. At start, before anyone opens a page, a
background thread warms the process up, so that the first person to open any page does not wait for what every
process must do once. First, at once (`head_start`), what the pages' first answers need: their modules (not PyTorch:
they read stored embeddings) and the sample checkpoint, test split, embeddings and evaluation, in the second or so
that a first page's browser spends loading Streamlit's files. Then (`warm_up`) PyTorch, timm, transformers,
scikit-learn and Captum (about 6 s on 2 cores in all), the sample checkpoint's encoders and one attribution, and the
UMAP worker process, which compiles umap-learn's numba code (15-40 s more, at low priority, outside the server's
interpreter). These later steps step aside while any session's script is running or a page is loading (on 2 cores
the two would take turns on the interpreter lock): a page opened during them waits only for what it needs itself.
`CHTN_WARM_UP=0` turns it off (servers that start often, tests). The console says when each part is done.
"""

import importlib
import logging
import os
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import streamlit as st
from starlette.middleware import Middleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from analysis.jobs import SCRIPT_RUNS, serialise_ast_parsing
from analysis.projection.worker import stop as stop_umap_worker

WARM_UP = "CHTN_WARM_UP"
STOPPING = threading.Event()  # set while the server stops: a warm-up step it cuts short (the UMAP worker) did not fail


# What every page's first answer needs (not PyTorch: the pages answer from stored embeddings), taken at once, without
# stepping aside: a page opened in a new server's first seconds needs the same and would wait for it in its own script
# run; here it is done while that page's browser loads Streamlit's files (about 1.2 s in which the server is idle).
HEAD_START_IMPORTS = ("views.common", "plotly.express")
# What embedding, explaining and the pages' later parts import, one at a time, so that the warm-up can step aside
# between them (seconds in all): a page opened meanwhile waits only for what it needs itself.
WARM_IMPORTS = (
    "scipy.special",  # Compare's and Source bias's Welch test
    "torch",
    "timm",
    "transformers",
    "captum.attr",
    "analysis.attribution.explainer",
    "sklearn.metrics",  # Review's agreement (Cohen's kappa)
)


def head_start() -> float:
    """Import what the pages' first answers import and open the dashboard's defaults through the caches that sessions
    share (the sample checkpoint, its test split, embeddings and evaluation), without stepping aside: see
    HEAD_START_IMPORTS. Returns the seconds taken."""
    started = time.perf_counter()
    for module in HEAD_START_IMPORTS:  # here, not at the top: the server answers requests only once app.py is imported
        importlib.import_module(module)
    from views.common import open_defaults

    open_defaults()
    return time.perf_counter() - started


def warm_up(step_aside: Callable[[], object] = lambda: None) -> float:
    """Import what embedding and explaining import, open the dashboard's defaults (from the shared caches once
    `head_start` has run), then explain the sample's first pair with Grad-CAM and the text's Layer IG into a
    throwaway folder (the first run of those code paths costs seconds; the shared attribution cache gets nothing a
    session did not ask for). `step_aside()` is called before each step (the server's waits while sessions' script
    runs are under way). Returns the seconds taken."""
    started = time.perf_counter()
    for module in WARM_IMPORTS:
        step_aside()
        importlib.import_module(module)
    from analysis.attribution.explainer import PairExplainer
    from analysis.attribution.types import Settings, explainer_items
    from views.common import open_defaults

    step_aside()
    checkpoint, gallery = open_defaults()
    image, text = explainer_items(gallery.data.ids, gallery.data.texts, gallery.data.image_paths, 0)
    with tempfile.TemporaryDirectory(prefix="chtn-warm-up-") as scratch:
        step_aside()
        explainer = PairExplainer(checkpoint, cache_dir=Path(scratch))
        for query, result in ((image, text), (text, image)):
            step_aside()
            explainer.explain(query, result, Settings())
    return time.perf_counter() - started


class NoteRequests:
    """ASGI middleware: each browser request but the health check tells the work that steps aside (the warm-up, the
    pages' background jobs) that a page may be loading, when it comes and, for a file, again once it is sent (plotly's
    code, 4.7 MB, takes the browser a second to fetch on a busy server, and more to run)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        noted = scope["type"] in ("http", "websocket") and not scope["path"].endswith("/_stcore/health")
        if noted:
            SCRIPT_RUNS.requested()
        await self.app(scope, receive, send)
        if noted and scope["type"] == "http":  # a websocket ends with its session: nothing loads then
            SCRIPT_RUNS.requested()


PLOT_FIRST_PAGES = ("space",)  # the url_path (dashboard.py) of each page whose main answer is a plot: see PreloadCharts


def _plotly_chunk() -> str | None:
    """The file name of Streamlit's chart code for plotly (a hashed bundle chunk of the installed version), or None
    if this version has no single one."""
    found = sorted((Path(st.__file__).parent / "static" / "static" / "js").glob("PlotlyChart.*.js"))
    return found[0].name if len(found) == 1 else None


class PreloadCharts:
    """ASGI middleware: the HTML of a page whose main answer is a plot (the shared space's map) tells the browser to
    fetch plotly's chart code (4.7 MB) as it loads.

    Streamlit fetches that code only once the script has sent its first plot, a second or more into opening the
    page, and on a first visit the browser then spent about a second fetching it before it could draw. A
    `modulepreload` link fetches and compiles it alongside Streamlit's own code, while the server is still idle, and
    runs none of it: the map drawn 0.9 s sooner on a server warmed up (docs/app_benchmark.md). Not for the other
    pages: their answer is text, which Compare's came 0.5 s later with it when the server was busy starting.
    Streamlit's HTML has no hook for this (st.html comes too late, with the script), hence the few lines here.
    Without a single such chunk in the installed Streamlit, pages are served as they are."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        chunk = _plotly_chunk()
        self.link = f'<link rel="modulepreload" crossorigin href="./static/js/{chunk}">\n'.encode() if chunk else b""
        self.pages = PLOT_FIRST_PAGES if chunk else ()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = scope.get("headers", [])
        navigation = any(k == b"accept" and b"text/html" in v for k, v in headers)  # a page, not a file or an API
        page = scope.get("path", "").rstrip("/").rsplit("/", 1)[-1]  # under any base URL path
        if scope["type"] != "http" or scope["method"] != "GET" or not navigation or page not in self.pages:
            await self.app(scope, receive, send)
            return
        scope = {**scope, "headers": [(k, v) for k, v in headers if k != b"accept-encoding"]}  # 8 kB; patched plain
        start: Message | None = None  # an HTML answer's head, held back until its body is complete
        body = b""

        async def patched(message: Message) -> None:
            nonlocal start, body
            if message["type"] == "http.response.start" and message["status"] == 200 and _is_html(message):
                start = message
            elif message["type"] == "http.response.body" and start is not None:
                body += message.get("body", b"")
                if not message.get("more_body", False):
                    body = body.replace(b"</head>", self.link + b"</head>", 1)
                    headers = [(k, v) for k, v in start["headers"] if k.lower() != b"content-length"]
                    await send({**start, "headers": [*headers, (b"content-length", str(len(body)).encode())]})
                    await send({"type": "http.response.body", "body": body})
            else:
                await send(message)

        await self.app(scope, receive, patched)


def _is_html(start: Message) -> bool:
    return any(k.lower() == b"content-type" and v.startswith(b"text/html") for k, v in start["headers"])


def _warm_up_server(warm: bool) -> None:
    """The start-up thread: torch's CPU threads sized (chtn/cpus.py: $CHTN_THREADS, else the usable cores), then, if
    `warm`, what the pages' first answers need (at once), the other imports, the encoders and one attribution, then
    the UMAP worker (a process at low priority); each part said on the console, and each step after the first taken
    when no session's script is running and no page is loading. A failure is said and does not stop
    the server: the pages do the same work when opened."""
    from analysis.projection.project import warm_up_umap
    from chtn.cpus import set_torch_threads
    from chtn.errors import CHTNError

    try:
        print(f"chtn: {set_torch_threads()}", file=sys.stderr, flush=True)
    except CHTNError as exc:  # a bad $CHTN_THREADS: said, and torch keeps its own count
        print(f"chtn: {exc}", file=sys.stderr, flush=True)
    steps = (  # (what is ready, the step, whether it steps aside first)
        ("the pages' first answers ready", head_start, False),  # at once: a page opened now needs the same
        ("encoders, the sample and one attribution ready", lambda: warm_up(SCRIPT_RUNS.step_aside), True),
        ("UMAP compiled for the shared space", warm_up_umap, True),
    )
    for what, step, aside in steps if warm else ():
        if aside:
            SCRIPT_RUNS.step_aside()
        try:
            seconds = step()
        except Exception as exc:  # noqa: BLE001 -- a warm-up must never take the server down; the page will say
            if STOPPING.is_set():  # the server ended the step's work on its way out: nothing to report
                return
            print(f"chtn: warm-up step failed ({what}): {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
            continue
        print(f"chtn: {what} in {seconds:.1f} s", file=sys.stderr, flush=True)


@asynccontextmanager
async def lifespan(_app: st.App) -> AsyncIterator[None]:
    """Server start: the start-up thread begins (the warm-up unless CHTN_WARM_UP=0); the server answers at once.
    Server stop: the UMAP worker process ends."""
    serialise_ast_parsing()  # before any background thread: sessions and the warm-up parse at once (CPython 3.11)
    STOPPING.clear()
    warm = os.environ.get(WARM_UP, "1") != "0"
    if warm:
        # The warm-up calls the pages' shared caches outside any session on purpose; Streamlit would warn of the
        # missing session ("can be ignored") on the console each time.
        logging.getLogger("streamlit.runtime.scriptrunner_utils.script_run_context").addFilter(
            lambda _record: threading.current_thread().name != "chtn-warm-up"
        )
    threading.Thread(target=_warm_up_server, args=(warm,), name="chtn-warm-up", daemon=True).start()
    yield
    STOPPING.set()
    stop_umap_worker()  # server stop: a UMAP fit in progress would otherwise hold up the exit


app = st.App("dashboard.py", lifespan=lifespan, middleware=[Middleware(NoteRequests), Middleware(PreloadCharts)])
