"""CHTN review dashboard: `streamlit run app.py` opens the embedded sample, no configuration needed.

This file is the server (Streamlit's `st.App`, which `streamlit run` serves); dashboard.py is the script each session
runs (page configuration, navigation, sidebar) and views/ holds its pages. At start, before anyone opens a page, a
background thread warms the process up (`warm_up`), so that the first person to open any page does not wait for what
every process must do once: import PyTorch, timm, transformers, scikit-learn and Captum (about 6 s on 2 cores), load
the sample checkpoint's encoders, open the sample's test split, run one attribution, and compile umap-learn's numba
code (15-40 s more, at low priority). A page opened during the warm-up waits only for what it needs and is not yet
done. `CHTN_WARM_UP=0` turns it off (servers that start often, tests). The console says when each part is done.
"""

import logging
import os
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import streamlit as st

from analysis.jobs import serialise_ast_parsing

WARM_UP = "CHTN_WARM_UP"


def warm_up() -> float:
    """Open the dashboard's defaults through the caches that sessions share, then explain the sample's first pair with
    Grad-CAM and the text's Layer IG into a throwaway folder (the first run of those code paths costs seconds; the
    shared attribution cache gets nothing a session did not ask for). Returns the seconds taken."""
    # Imported here, not at the top: the server answers requests only once this module is imported, and these
    # imports take seconds (they are what the warm-up is for).
    from analysis.attribution.explainer import PairExplainer, explainer_items
    from analysis.attribution.types import Settings
    from views.common import open_defaults

    started = time.perf_counter()
    checkpoint, gallery = open_defaults()
    image, text = explainer_items(gallery.data.ids, gallery.data.texts, gallery.data.image_paths, 0)
    with tempfile.TemporaryDirectory(prefix="chtn-warm-up-") as scratch:
        explainer = PairExplainer(checkpoint, cache_dir=Path(scratch))
        explainer.explain(image, text, Settings())
        explainer.explain(text, image, Settings())
    return time.perf_counter() - started


def _warm_up_server(warm: bool) -> None:
    """The start-up thread: torch's CPU threads sized (chtn/cpus.py: $CHTN_THREADS, else the usable cores), then, if
    `warm`, the pages' encoders and data, then UMAP (low priority); each part said on the console. A failure is
    said and does not stop the server: the pages do the same work when opened."""
    from analysis.projection.project import warm_up_umap
    from chtn.cpus import set_torch_threads
    from chtn.errors import CHTNError

    try:
        print(f"chtn: {set_torch_threads()}", file=sys.stderr, flush=True)
    except CHTNError as exc:  # a bad $CHTN_THREADS: said, and torch keeps its own count
        print(f"chtn: {exc}", file=sys.stderr, flush=True)
    for what, step in (
        ()
        if not warm
        else (
            ("encoders, the sample and one attribution ready", warm_up),
            ("UMAP compiled for the shared space", lambda: warm_up_umap(nice=10)),
        )
    ):
        try:
            seconds = step()
        except Exception as exc:  # noqa: BLE001 -- a warm-up must never take the server down; the page will say
            print(f"chtn: warm-up step failed ({what}): {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
            continue
        print(f"chtn: {what} in {seconds:.1f} s", file=sys.stderr, flush=True)


@asynccontextmanager
async def lifespan(_app: st.App) -> AsyncIterator[None]:
    """Server start: the start-up thread begins (the warm-up unless CHTN_WARM_UP=0); the server answers at once."""
    serialise_ast_parsing()  # before any background thread: sessions and the warm-up parse at once (CPython 3.11)
    warm = os.environ.get(WARM_UP, "1") != "0"
    if warm:
        # The warm-up calls the pages' shared caches outside any session on purpose; Streamlit would warn of the
        # missing session ("can be ignored") on the console each time.
        logging.getLogger("streamlit.runtime.scriptrunner_utils.script_run_context").addFilter(
            lambda _record: threading.current_thread().name != "chtn-warm-up"
        )
    threading.Thread(target=_warm_up_server, args=(warm,), name="chtn-warm-up", daemon=True).start()
    yield


app = st.App("dashboard.py", lifespan=lifespan)
