"""Shared Streamlit glue: cached loading, the sidebar (checkpoint + dataset), and URL state.

URL state uses Streamlit's own mechanisms: a widget whose value is a URL parameter is bound to it
(`bind="query-params"`, the key being the parameter's name), and a page's other widgets keep their values for when
the user comes back with `persist_state="session"`. A page writes a parameter itself (`to_url`, read back with
`from_link`) only where no single widget's value is it (the checkpoint, a baseline, an explorer query, a review
item) or where a link from another page carries it: Streamlit drops from a page-switching link every parameter that
is bound on the page being left, so `direction`, which the explorer's links carry, is bound nowhere.

The entrypoint draws the sidebar's shared part (`sidebar`); pages call `context()`, which returns everything they
show or stops the page with a clear `st.error` (the sidebar stays usable, so the user can pick another file without
restarting).
"""

from __future__ import annotations

from collections.abc import Container, Mapping
from concurrent import futures
from dataclasses import dataclass
from functools import cached_property, partial
from pathlib import Path
from typing import NoReturn
from urllib.parse import urlsplit

import streamlit as st

from analysis import workspace as ws
from analysis.compare import decisions
from analysis.jobs import BackgroundJobs, Job, eta_text
from analysis.review.store import ReviewStore
from analysis.store import StoreError, default_location
from chtn import gallery as gal
from chtn.checkpoint import Checkpoint
from chtn.data import PairDataset
from chtn.errors import CHTNError
from chtn.evaluate import EvaluationReport
from chtn.progress import Progress, within
from chtn.validation import ValidationReport
from views.links import Link, Opened

OTHER_PATH, UPLOAD = "Other file (path)…", "Upload a file…"
SAMPLE_DATA, DATA_PATH = "Sample: fashion, 20 article types", "Manifest or Wikipedia folder (path)…"


@dataclass
class Context:
    checkpoint_ref: str  # what the URL carries: a sample name or a path
    checkpoint: Checkpoint
    data: PairDataset
    gallery: gal.Gallery
    report: EvaluationReport
    data_path: str  # the dataset file, resolved and confined (pages that need more than the test split: `all_rows`)
    skip_invalid: bool
    allowed: tuple[str, ...] | None  # $CHTN_ALLOWED_DIRS, as the dataset cache keys it

    @property
    def label_names(self) -> list[str]:
        return self.checkpoint.label_names

    @cached_property  # once per run: the pages build a link per card and per table row
    def opened(self) -> Opened:
        """What links carry: this checkpoint, and this dataset unless it is the sample."""
        sample = Path(self.data_path) == ws.SAMPLE_DATASET.resolve()
        return Opened(self.checkpoint_ref, None if sample else self.data_path, self.skip_invalid)


def address(link: Link) -> str:
    """The link as a full address to paste elsewhere: this server's scheme, host and base path (`server.baseUrlPath`),
    then the link. Not `st.context.url` itself, which keeps the current page's path (`/review`) when it was reached by
    st.navigation, and the link would name the page twice."""
    parts = urlsplit(st.context.url or "")
    if not parts.netloc:  # no browser (AppTest): the link from the server root
        return link.url
    prefix = str(st.get_option("server.baseUrlPath") or "").strip("/")
    return f"{parts.scheme}://{parts.netloc}{'/' + prefix if prefix else ''}{link.url}"


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


@st.cache_resource(show_spinner="Loading checkpoint…", max_entries=32)  # the sample ships 13; a few MB each
def _checkpoint(ref: str, mtime: float) -> Checkpoint:
    return ws.open_checkpoint(ref)


def _dataset(
    path: str, checkpoint: Checkpoint, skip_invalid: bool, allowed: tuple[str, ...] | None, split: str | None
) -> tuple[PairDataset, ValidationReport]:
    """The dataset file's rows (`split`, or None for all), validated for this checkpoint, through the shared cache."""
    return _read_dataset(
        path, _mtime(Path(path)), tuple(checkpoint.label_names), skip_invalid, allowed, split, checkpoint
    )


@st.cache_resource(show_spinner="Reading dataset…", max_entries=8)
def _read_dataset(
    path: str,
    mtime: float,
    label_names: tuple[str, ...],
    skip_invalid: bool,
    allowed: tuple[str, ...] | None,
    split: str | None,
    _checkpoint: Checkpoint,
) -> tuple[PairDataset, ValidationReport]:
    """Keyed by the checkpoint's label names, not by the checkpoint: the rows and their validation depend on those
    alone (the checkpoint appears only in the fix an error suggests, and errors are not cached), so the checkpoints
    that Compare and Source bias open on one dataset (a training run or three a side) read it once."""
    return ws.open_dataset(
        path, _checkpoint, skip_invalid, split, allowed=None if allowed is None else [Path(a) for a in allowed]
    )


EVALUATION_WAIT_SECONDS = 2.0  # an evaluation done by then (the sample's: milliseconds) opens in the same run
POLL_SECONDS = 2.0  # how often a page waiting for its evaluation reads the job's progress


@st.cache_resource(show_spinner=False)
def evaluation_jobs() -> BackgroundJobs[None]:
    """One registry per server: every session that opens the same checkpoint and dataset waits for one job."""
    return BackgroundJobs()


class _NotPrepared(Exception):
    """The split's embeddings or evaluation are not on disk yet (st.cache_resource caches no exception)."""


@st.cache_resource(show_spinner=False, max_entries=8)
def _opened_gallery(
    checkpoint_digest: str, fingerprint: str, _checkpoint: Checkpoint, _data: PairDataset
) -> tuple[gal.Gallery, EvaluationReport]:
    """The embedded test split and its evaluation, read from the disk caches and shared read-only by every session
    (keyed by content); raises _NotPrepared while they are not there."""
    if not gal.split_is_embedded(_checkpoint, _data):
        raise _NotPrepared
    gallery = gal.embed_split(_checkpoint, _data, "test")
    report = gal.stored_evaluation(gallery, _checkpoint.label_names)
    if report is None:
        raise _NotPrepared
    return gallery, report


def _prepare(checkpoint: Checkpoint, data: PairDataset, progress: Progress) -> None:
    """The background job's work: embed the test split (unless it is on disk) and evaluate it, into the caches."""
    embedded = gal.split_is_embedded(checkpoint, data)
    gallery = gal.embed_split(checkpoint, data, "test", None if embedded else within(progress, 0, 0.5))
    gal.evaluate_gallery(gallery, checkpoint.label_names, progress=within(progress, 0.5 * (not embedded), 1))


@st.fragment(run_every=POLL_SECONDS)
def _wait_for_evaluation(job: Job[None]) -> None:
    """The evaluation job's count and ETA, the same for every session; once it is done the page reruns."""
    if job.done():
        st.rerun(scope="app")
    fraction, _, _ = job.progress.snapshot()
    st.progress(fraction, text=f"Evaluating the test split: {eta_text(job)}")


def _gallery(checkpoint: Checkpoint, data: PairDataset) -> tuple[gal.Gallery, EvaluationReport]:
    """The test split's embeddings and evaluation: from the shared cache when they are on disk. Otherwise one
    background job per checkpoint and dataset, shared by every session that asks, computes them (minutes for a
    100,000-item split on a CPU) while the page shows its progress and ETA and stops; it fills in by itself."""
    fingerprint = data.fingerprint()
    try:
        return _opened_gallery(checkpoint.digest, fingerprint, checkpoint, data)
    except _NotPrepared:
        pass
    jobs = evaluation_jobs()
    job = jobs.submit(f"{checkpoint.digest}-{fingerprint}", partial(_prepare, checkpoint, data))
    futures.wait([job.future], timeout=EVALUATION_WAIT_SECONDS)
    if not job.done():
        st.info(
            f"**Evaluating {checkpoint.path.name} on {len(data.split('test')):,} test items**, once for everyone "
            "who opens this checkpoint and dataset: every query ranked over the whole gallery. The page opens by "
            "itself when it is done; later opens read the result from disk.",
            icon=":material/hourglass_top:",
        )
        _wait_for_evaluation(job)
        st.stop()
    error = job.error()
    if isinstance(error, CHTNError):  # a problem with the input: said like any other, and tried afresh on the
        jobs.retry(job.key)  # next open (after the fix the user makes)
        raise error
    if error is not None:
        job_failed(jobs, job, "Evaluating the test split")
        st.stop()
    return _opened_gallery(checkpoint.digest, fingerprint, checkpoint, data)


_PAGE, _CAME_FROM = "_page", "_came_from"


def track_page(url_path: str) -> None:
    """Called by the entrypoint at the start of every run: which page ran before this one, for `new_visit`."""
    st.session_state[_CAME_FROM] = st.session_state.get(_PAGE)
    st.session_state[_PAGE] = url_path


def new_visit(url_path: str) -> bool:
    """Whether this run of the page `url_path` comes from another page (a link, the sidebar, the browser's Back)
    rather than from a click on the page itself. Not "is my widget's state gone": Streamlit drops the state of a left
    page's widgets only when the next page's run ends, and a quick Back interrupts that run."""
    return st.session_state.get(_CAME_FROM) != url_path


def recipe_runs_checkbox(effect: str) -> bool:
    """ "Use the other training runs of each recipe", on by default; `effect` says what the runs change on this page.
    Bound to `?runs=` (Streamlit's query-parameter binding: `runs=false` when off), so it is kept across pages and a
    link opens with it."""
    legacy_flag("runs")
    return st.checkbox(
        "Use the other training runs of each recipe",
        value=True,
        key="runs",
        bind="query-params",
        help="Checkpoints of the same config and data but another training seed, found beside each checkpoint (and "
        f"in a replicates/ folder). {effect}",
    )


def legacy_flag(key: str) -> None:
    """A link written before the flag `key` was bound to its widget says `?key=1` or `?key=0`; the binding reads only
    true/false and would drop it, opening the page with the default. Give its value to the widget instead (before
    the widget is drawn; the binding then writes it back as true/false)."""
    if (old := st.query_params.get(key)) in ("0", "1"):
        st.session_state[key] = old == "1"


def write_params(params: Mapping[str, str]) -> None:
    """Write URL parameters, but only those whose value changes. Each write is a message that Streamlit's frontend
    (1.67) turns into a browser history entry under the address then on screen, and in the first moments of a page
    reached by a link that is still the page being left (the new address is set once React has drawn the new page):
    an unchanged parameter written there made Back land on the page left with this page's parameters and without
    its own, the shared space's drawn region for one."""
    changed = {name: value for name, value in params.items() if st.query_params.get(name) != value}
    if changed:
        st.query_params.update(changed)


def from_link(page: str, name: str, valid: Container[str]) -> str | None:
    """The URL's `name` when a link (or the browser's history) brought a value that this page did not write itself
    (`to_url`): the value to open with. None when the URL holds what the page last wrote, nothing, or an invalid
    value. For parameters that are not one widget's value (bound widgets need none of this)."""
    value = st.query_params.get(name)
    if value is None or value not in valid or value == st.session_state.get(f"_{page}_url_{name}"):
        return None
    return value


def to_url(page: str, **params: str) -> None:
    """Write URL parameters that are not one widget's value, remembered so that `from_link` tells them from a
    link's."""
    write_params(params)
    for name, value in params.items():
        st.session_state[f"_{page}_url_{name}"] = value


def _checkpoint_choice() -> str | None:
    """Sidebar widgets for the checkpoint; returns a sample name or a path (None until one is given).

    The URL's `checkpoint` is either widget's value (a sample name, or a path typed under "Other file"), so no
    single widget can be bound to it: a link gives their first value, and `context` writes it back on every run."""
    url = st.query_params.get("checkpoint", ws.DEFAULT_CHECKPOINT)
    options = [*ws.SAMPLE_CHECKPOINTS, OTHER_PATH, UPLOAD]
    choice = st.selectbox(
        "Checkpoint",
        options,
        index=options.index(url if url in ws.SAMPLE_CHECKPOINTS else OTHER_PATH),
        key="sb_checkpoint",
        help="A sample checkpoint, a .safetensors/.pt file on this machine, or an upload.",
    )
    if choice == OTHER_PATH:
        return (
            st.text_input(
                "Checkpoint path",
                value="" if url in ws.SAMPLE_CHECKPOINTS else url,
                key="sb_checkpoint_path",
                persist_state="session",  # kept while a sample is chosen
                placeholder="runs/x/best.safetensors",
            )
            or None
        )
    if choice == UPLOAD:
        upload = st.file_uploader("Checkpoint file", type=["safetensors", "pt"], key="sb_checkpoint_upload")
        return str(ws.store_upload(upload.name, upload.getvalue())) if upload else None
    return choice


def _dataset_choice() -> str:
    """Sidebar widgets for the dataset; returns its file or folder ("" until a path is given). A link's `data` (see
    `context`) is their first value, as `checkpoint` is the checkpoint widgets'."""
    linked = st.query_params.get("data")
    choice = st.selectbox("Dataset", [SAMPLE_DATA, DATA_PATH], index=1 if linked else 0, key="sb_dataset")
    if choice == DATA_PATH:
        return (
            st.text_input(
                "Dataset path",
                value=linked or "",
                key="sb_dataset_path",
                persist_state="session",  # kept while the sample is chosen
                placeholder="data/pairs.csv or a Wikipedia-layout folder",
            )
            or ""
        )
    return str(ws.SAMPLE_DATASET)


@dataclass(frozen=True)
class Choice:
    """What the sidebar's shared part asks for: the checkpoint (a sample name or a path; None until one is given), the
    dataset file ("" until one is given), and whether to skip invalid rows."""

    checkpoint: str | None
    data_path: str
    skip_invalid: bool


def sidebar(review_database: bool) -> None:
    """The sidebar's shared part, drawn by the entrypoint (dashboard.py) before the page: Streamlit ties a widget to the
    page that draws it, so only the entrypoint's widgets keep their values on every page (a page's own widgets keep
    theirs with `persist_state`, for that page). The checkpoint and dataset, and with `review_database` (the pages
    that save to it) the review database's location."""
    with st.sidebar:
        st.subheader("Model and data")
        st.session_state[_CHOICE] = Choice(
            _checkpoint_choice(),
            _dataset_choice(),
            st.checkbox(
                "Skip invalid rows",
                value=st.query_params.get("skip") == "true",  # a link's, as `data`
                key="sb_skip_invalid",
                help="Open the dataset without the rows that fail validation (the page says which were skipped).",
            ),
        )
        if review_database:
            st.subheader("Review database")
            st.text_input(
                "Location",
                value=default_location(),
                key="rv_db",
                persist_state="session",  # kept while pages without it are shown
                help="An SQLite file path or a PostgreSQL URL (postgresql://user@host/db). Default: $CHTN_REVIEW_DB, "
                "else ~/.local/share/chtn/review.sqlite.",
            )


_CHOICE = "sb_choice"


def as_markdown(text: str) -> str:
    """Plain multi-line text (a validation summary, an error) as markdown that keeps its line breaks. An unindented
    line after indented ones (a heading after a list of findings) starts a new paragraph: without the blank line,
    markdown would continue the list's last item with it."""
    lines = text.split("\n")
    kept = [lines[0]]
    for before, line in zip(lines, lines[1:]):
        if before.startswith(" ") and line and not line.startswith(" "):
            kept.append("")
        kept.append(line)
    return "  \n".join(kept)


def context() -> Context:
    """The sidebar's checkpoint and dataset, loaded. Shows a clear error and stops the page when something cannot be
    opened (the sidebar stays usable)."""
    choice: Choice = st.session_state[_CHOICE]
    ref, data_path, skip_invalid = choice.checkpoint, choice.data_path, choice.skip_invalid
    if not ref:
        st.info("Choose a checkpoint in the sidebar.")
        st.stop()
    if not data_path:
        st.info("Give a dataset path in the sidebar.")
        st.stop()
    try:
        checkpoint, data, checked, data_file, allowed_key = _open(ref, data_path, skip_invalid)
    except CHTNError as exc:
        _cannot_open(exc)
    if not checked.ok:
        st.warning(as_markdown(checked.skipped_note("test split")), icon=":material/warning:")
    if note := ws.other_training_data(checkpoint, data_file):
        st.info(note, icon=":material/dataset:")
    try:  # after the warnings: they stay on screen while a large split's evaluation runs
        gallery, report = _gallery(checkpoint, data)
    except CHTNError as exc:
        _cannot_open(exc)
    ctx = Context(ref, checkpoint, data, gallery, report, str(data_file), skip_invalid, allowed_key)
    params = ctx.opened.params  # see _checkpoint_choice and _dataset_choice: not one widget's value
    for name in ("data", "skip"):
        if name not in params and name in st.query_params:
            del st.query_params[name]
    write_params(params)
    return ctx


def _open(
    ref: str, data_path: str, skip_invalid: bool
) -> tuple[Checkpoint, PairDataset, ValidationReport, Path, tuple[str, ...] | None]:
    """The checkpoint and the dataset's test split, confined and read through the shared caches; `CHTNError` if they
    cannot be. Returns them with the validation report, the confined dataset file and the allowed folders' key."""
    allowed = ws.allowed_dirs()  # $CHTN_ALLOWED_DIRS on a team server: sidebar paths and links stay inside
    checkpoint_path = ws.confine(ws.resolve_checkpoint(ref), allowed)
    data_file = ws.confine(data_path, allowed)
    checkpoint = _checkpoint(str(checkpoint_path), _mtime(checkpoint_path))
    allowed_key = None if allowed is None else tuple(map(str, allowed))
    data, checked = _dataset(str(data_file), checkpoint, skip_invalid, allowed_key, "test")
    return checkpoint, data, checked, data_file, allowed_key


def open_defaults() -> tuple[Checkpoint, gal.Gallery]:
    """What a session that opens the dashboard with the sidebar's defaults reads first (the sample checkpoint, the
    sample's test split, its embeddings and evaluation), through the same shared caches, outside any session: the
    server's warm-up (app.py) calls it, so the first page does not wait for it."""
    checkpoint, data, *_ = _open(ws.DEFAULT_CHECKPOINT, str(ws.SAMPLE_DATASET), skip_invalid=False)
    fingerprint = data.fingerprint()
    try:
        return checkpoint, _opened_gallery(checkpoint.digest, fingerprint, checkpoint, data)[0]
    except _NotPrepared:  # a fresh install: the sample's evaluation is not on disk yet
        _prepare(checkpoint, data, lambda fraction, text: None)
    return checkpoint, _opened_gallery(checkpoint.digest, fingerprint, checkpoint, data)[0]


def _cannot_open(exc: CHTNError) -> NoReturn:
    st.error(as_markdown(f"**Cannot open this model/data.** {exc}"), icon=":material/error:")
    st.stop()


def all_rows(ctx: Context) -> PairDataset:
    """Every row of the dataset, validated and confined like the test split, read once through the shared cache
    (the Source bias page needs the training images too); raises `CHTNError` as `context` would."""
    return _dataset(ctx.data_path, ctx.checkpoint, ctx.skip_invalid, ctx.allowed, None)[0]


def other_checkpoint(ref: str, ctx: Context) -> tuple[Checkpoint, gal.Gallery, EvaluationReport]:
    """A second checkpoint (a sample name or a path, confined like the sidebar's) on the same dataset file,
    validated for its own labels, embedded and evaluated through the shared caches; `CHTNError` if it cannot be."""
    path = ws.confine(ws.resolve_checkpoint(ref), ws.allowed_dirs())
    checkpoint = _checkpoint(str(path), _mtime(path))
    data, _ = _dataset(ctx.data_path, checkpoint, ctx.skip_invalid, ctx.allowed, "test")
    return (checkpoint, *_gallery(checkpoint, data))


@st.cache_resource(show_spinner=False, max_entries=16)
def _nearby(digest: str, path: str, _this: Checkpoint) -> list[Checkpoint]:
    """The sample's checkpoints and those beside this one, loaded (read-only, shared by every session; keyed by the
    path too: the same file copied elsewhere has other neighbours)."""
    found = []
    for path in [*ws.SAMPLE_CHECKPOINTS.values(), *ws.reference_candidates(_this.path)]:
        try:
            found.append(_checkpoint(str(path), _mtime(path)))  # shared: Compare and Source bias ask for both sides
        except CHTNError:
            continue  # not a readable checkpoint: not a candidate
    return found


def nearby_checkpoints(checkpoint: Checkpoint) -> list[Checkpoint]:
    """Checkpoints that may serve as a reference or as other runs of this one's recipe: the sample's, those beside
    it, in a `replicates/` folder, and sibling training runs."""
    return _nearby(checkpoint.digest, str(checkpoint.path.resolve()), checkpoint)


@st.cache_resource(show_spinner=False, max_entries=4)
def _review_store(location: str) -> ReviewStore:
    """One store per database for every session (an SQLAlchemy engine is thread-safe), with the Compare page's
    decisions as well as the verdicts; failures are not cached."""
    return ReviewStore(location, also=(decisions.SCHEMA,))


def review_store() -> tuple[ReviewStore | None, str | None]:
    """The sidebar's "Review database" (`sidebar`, kept across pages) opened: (store, None), or (None, the reason)
    when it cannot be; the page says so and keeps working, unsaved input stays in its form."""
    location = str(st.session_state.get("rv_db") or "")
    try:
        return _review_store(location.strip() or default_location()), None
    except StoreError as exc:
        return None, str(exc)


def job_failed(jobs: BackgroundJobs, job: Job, what: str) -> None:
    """A failed background job, said once for everyone who opens it, with a button that computes it again: an
    input problem (CHTNError) carries its own fix; anything else is a fault here, whose traceback is in the
    server's log."""
    exc = job.error()
    if isinstance(exc, CHTNError):
        reason = str(exc)
    else:
        reason = f"`{type(exc).__name__}: {exc}`. This is a fault in CHTN, not in your data; the server's log has its "
        reason += "traceback."
    st.error(as_markdown(f"**{what} failed.** {reason}"), icon=":material/error:")
    if st.button("Try again", key=f"job_retry_{job.key}", icon=":material/refresh:"):
        jobs.retry(job.key)
        st.rerun()
