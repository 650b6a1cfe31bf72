"""Review: the checkpoint's mis-retrieved queries as a queue the meeting walks through, one verdict per reviewer.

Everything that defines what is on screen is in the URL (checkpoint, meeting queue spec and id, item), so a pasted
link opens the same queue at the same item for everyone. Verdicts go to the review database (SQLite file or a
PostgreSQL URL): append-only, nothing overwritten. What the reviewer types is a draft in the session until the
database has it (analysis.review.drafts): moving on before a save finished, or a refused save, loses nothing.

The use cases (reading the review state, opening a queue, walking it, saving a verdict) are in
analysis.review.workflow; this page draws them, part by part, in the order of the screen (the end of this file).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import streamlit as st

from analysis import outcomes as oc
from analysis.review import queue as rq
from analysis.review import workflow as wf
from analysis.review.agreement import agreement
from analysis.review.drafts import SaveTarget, VerdictDesk
from analysis.review.render import ExportFile, ReviewContext, export_files
from analysis.review.store import MAX_REVIEWER_CHARS, VERDICTS, ReviewStore
from chtn.checkpoint import code_version
from chtn.directions import DIRECTION_NAMES
from chtn.errors import CHTNError
from chtn.ranking import TIE_LEGEND, describe_tie
from chtn.search import ResultView, query_side, retrieve
from views.common import Context, address, context, review_store, write_params
from views.links import attribution_link, explorer_link, review_link, space_link

ALL, MEETING = "All mis-retrievals", "Meeting queue"
REVIEWER_COOKIE = "chtn_reviewer"
LIVE_SECONDS = 5  # how often an item's verdicts are read again, so that other reviewers' appear by themselves


@dataclass
class Review:
    """What the parts of the page share: the checkpoint and data on screen, the review database (None when it cannot
    be used now, with the reason), every query's outcome and the reviewer's drafts."""

    ctx: Context
    store: ReviewStore | None
    store_error: str | None
    outcomes: pd.DataFrame
    desk: VerdictDesk
    dataset: str  # fingerprint
    checkpoint: str  # content hash

    def offline(self, reason: str) -> None:
        """The database opened but cannot be read now: go on without it, saying why nothing is saved."""
        self.store, self.store_error = None, reason


@dataclass(frozen=True)
class Queue:
    """The queue on screen: its items (1-based `position`), and the meeting queue's id and spec (None outside one)."""

    items: pd.DataFrame
    meeting: str | None = None
    spec: rq.QueueSpec | None = None


@st.cache_data(show_spinner="Ranking every query…", max_entries=8)
def outcomes(checkpoint_digest: str, fingerprint: str, label_names: list[str], _gallery, _report) -> pd.DataFrame:
    return oc.query_outcomes(_gallery, _report, label_names)


def open_review() -> Review:
    """The sidebar's checkpoint, data and review database opened, the title saying where verdicts go, and every
    query's outcome."""
    ctx = context()
    store, store_error = review_store()
    header(store, store_error)
    data = ctx.gallery.data
    dataset, checkpoint = data.fingerprint(), ctx.checkpoint.digest
    table = outcomes(checkpoint, dataset, ctx.label_names, ctx.gallery, ctx.report)
    return Review(ctx, store, store_error, table, VerdictDesk(st.session_state), dataset, checkpoint)


def your_name() -> str:
    """The reviewer's name, in the sidebar. The browser keeps it (a cookie of this site, never in the URL: a copied
    link must not carry one reviewer's name to another), so it is back after a reload or a new tab."""
    with st.sidebar:
        if "rv_reviewer" not in st.session_state:
            st.session_state["rv_reviewer"] = wf.reviewer_from_cookie(st.context.cookies.get(REVIEWER_COOKIE))
        name = st.text_input("Your name", key="rv_reviewer", max_chars=MAX_REVIEWER_CHARS)
        if name != wf.reviewer_from_cookie(st.context.cookies.get(REVIEWER_COOKIE)):
            remember(name)
    return name


def remember(name: str) -> None:
    """Store the name in this browser for a year (a first-party cookie the page script sets; JSON-quoted and with
    `<` escaped, so no name can close the script)."""
    value = json.dumps(name).replace("<", "\\u003c")
    st.html(
        f"<script>document.cookie = '{REVIEWER_COOKIE}=' + encodeURIComponent({value}) + "
        "'; path=/; max-age=31536000; SameSite=Strict';</script>",
        unsafe_allow_javascript=True,
    )


def header(store: ReviewStore | None, store_error: str | None) -> None:
    st.title("Review")
    if store:
        st.caption(f"Verdicts are saved to the {store.describe()} (change it in the sidebar).")
    else:
        st.error(f"**Verdicts cannot be saved now.** {store_error}", icon=":material/database:")


def save_typed_verdicts(review: Review) -> None:
    """The verdicts whose Save was pressed, saved before anything else: "saving…", then "saved #id"."""
    saving = st.empty()
    target = SaveTarget(review.dataset, review.checkpoint, review.ctx.checkpoint.path.stem, review.outcomes)
    last = wf.save_pending(
        review.desk,
        review.store,
        review.store_error or "",
        target,
        lambda pending: saving.info(f"Saving the verdict on {pending.label}…", icon=":material/hourglass_top:"),
    )
    if last:
        saving.success(
            f"Saved #{last.row_id}: {last.pending.draft.verdict} on {last.pending.label} by {last.pending.reviewer}.",
            icon=":material/check:",
        )
    else:
        saving.empty()


def read_state(review: Review) -> wf.ReviewState:
    """Every query with its verdict status; without verdicts, saying why, when the database cannot be read now."""
    state, error = wf.open_review_state(review.store, review.outcomes, review.dataset, review.checkpoint)
    if error:
        st.error(f"**Verdicts cannot be read now.** {error}", icon=":material/database:")
        review.offline(error)
    return state


def which_queue(review: Review, state: wf.ReviewState, reviewer: str) -> Queue:
    """All mis-retrievals (filtered), or the meeting queue the URL names (a new one is started with a form)."""
    queue_id = st.query_params.get("queue")
    mode = st.segmented_control(
        "Queue", [ALL, MEETING], default=MEETING if queue_id else ALL, key=f"rv_mode_{queue_id}", required=True
    )
    if mode == ALL:
        return Queue(queue_filters(review, state))
    if not queue_id:
        new_meeting_form(review)
    return meeting_queue(review, state, reviewer)


def new_meeting_form(review: Review) -> None:
    """The spec of a new meeting queue; the page waits here until it is submitted, then puts the queue in the URL."""
    with st.form("rv_spec"):
        st.markdown("**New meeting queue**: everyone who opens its link sees the same items in the same order.")
        cols = st.columns(4)
        size = cols[0].number_input("Items", 1, 10_000, 30)
        seed = cols[1].number_input("Seed", 0, 999_999, 0)
        strata = cols[2].multiselect("Strata", rq.STRATA, default=list(rq.STRATA))
        pick = cols[3].selectbox("Within a stratum", ["random", "severe"], format_func=lambda p: f"{p} first")
        cols = st.columns(3)
        directions = cols[0].multiselect("Directions", list(DIRECTION_NAMES), default=list(DIRECTION_NAMES))
        categories = cols[1].multiselect("Categories (none = all)", review.ctx.label_names)
        kinds = cols[2].multiselect("Error kinds (none = all)", list(oc.KINDS), format_func=oc.KINDS.get)
        start = st.form_submit_button("Start the meeting queue", type="primary", icon=":material/groups:")
    if not start:
        st.stop()
    try:
        spec = rq.QueueSpec(
            int(size), int(seed), tuple(strata), pick, tuple(directions), tuple(categories), tuple(kinds)
        )
    except CHTNError as exc:
        st.error(str(exc))
        st.stop()
    write_params(wf.start_meeting(spec, review.checkpoint, review.dataset))
    st.rerun()  # the queue's own run: the form is gone and the first item is on screen


def meeting_queue(review: Review, state: wf.ReviewState, reviewer: str) -> Queue:
    """The meeting queue of the URL, or a clear error for a bad or foreign link (or a store that refused it)."""
    try:
        spec, items = wf.open_meeting(
            review.store, state.annotated, st.query_params.to_dict(), review.checkpoint, review.dataset, reviewer
        )
    except CHTNError as exc:
        st.error(f"{exc}", icon=":material/link_off:")
        st.stop()
    queue_id = st.query_params["queue"]
    st.subheader(f"Meeting queue: {wf.queue_title(review.store, queue_id, spec)}")
    link = review_link(review.ctx.opened, queue_id, wf.item_position(st.query_params.get("item"), len(items)))
    with st.popover("Copy link", icon=":material/link:"):
        st.caption("Everyone who opens it sees this queue, in this order, at this item (copy it with the icon).")
        st.code(address(link), language=None, wrap_lines=True)
    st.caption(f"Queue `{queue_id}` · {len(items)} items · its spec is in the link")
    return Queue(items, queue_id, spec)


def queue_filters(review: Review, state: wf.ReviewState) -> pd.DataFrame:
    """Outside a meeting: the mis-retrievals, by category, direction, verdict status, and changed only."""
    for key in (*rq.QueueSpec.__dataclass_fields__, "queue"):  # a meeting's link, left: its spec no longer applies
        st.query_params.pop(key, None)
    cols = st.columns([3, 2, 3, 2])
    categories = cols[0].multiselect("Categories", review.ctx.label_names, key="rv_categories")
    directions = cols[1].multiselect(
        "Directions", list(DIRECTION_NAMES), format_func=DIRECTION_NAMES.get, key="rv_directions"
    )
    statuses = cols[2].multiselect("Verdict status", rq.STATUSES, key="rv_statuses")
    changed = cols[3].toggle(
        "Changed only",
        key="rv_changed",
        disabled=state.previous is None,
        help="Only items whose outcome changed since the last reviewed checkpoint "
        f"({state.previous or 'none yet'}): new regressions first.",
    )
    return wf.all_misretrievals(state.annotated, categories, directions, statuses, changed)


def counts(review: Review, queue: Queue, previous: str | None) -> None:
    """Reviewed, unreviewed, disputed, new regressions; the page stops here when no item is left to show."""
    tally = wf.tally(queue.items, review.outcomes)
    cols = st.columns(5)
    cols[0].metric("Reviewed", f"{tally.reviewed:,} of {tally.total:,}")
    cols[1].metric("Unreviewed", f"{tally.unreviewed:,}")
    cols[2].metric("Disputed", tally.disputed, help="Reviewers' current verdicts on the item disagree.")
    cols[3].metric(
        "New regressions",
        tally.new_regressions,
        help=f"Retrieved well by the last reviewed checkpoint ({previous or 'none yet'}), mis-retrieved now.",
    )
    cols[4].metric("Mis-retrieved queries", f"{tally.mis_retrieved:,} of {tally.queries:,}")
    if queue.items.empty:
        st.info("No item matches: change the filters.")
        st.stop()


def go(to: int, leaving: tuple[str, str], label: str, meeting: str | None, length: int) -> None:
    """Navigation's callback: move to item `to`; what was typed on the item being left is saved first when it holds
    a verdict (VerdictDesk.save_on_leave)."""
    desk = VerdictDesk(st.session_state)
    if desk.widget_keys(*leaving)[0] in st.session_state:  # its form was drawn: something may be typed
        desk.save_on_leave(*leaving, label, meeting)
    # The item is a position in the queue, moved by four controls (J, K, U, the picker): not one widget's value,
    # so the page keeps it in the URL itself.
    write_params({"item": str(min(max(to, 1), length))})


def navigation(review: Review, queue: Queue) -> pd.Series:
    """Previous, Next, Next unreviewed (J, K, U) and the item picker; returns the item on screen."""
    items = queue.items
    position = wf.item_position(st.query_params.get("item"), len(items))
    leaving = items.iloc[position - 1]
    key = (leaving["query_id"], leaving["direction"])
    moving = (key, wf.item_label(position, *key), queue.meeting, len(items))
    nav = st.columns([1, 1, 1.6, 4.4])
    nav[0].button(
        "Previous",
        icon=":material/arrow_back:",
        shortcut="K",
        on_click=go,
        args=(position - 1, *moving),
        disabled=position == 1,
        help="Keyboard: K",
    )
    nav[1].button(
        "Next",
        icon=":material/arrow_forward:",
        shortcut="J",
        on_click=go,
        args=(position + 1, *moving),
        disabled=position == len(items),
        help="Keyboard: J",
    )
    unreviewed = wf.next_unreviewed(items, position)
    nav[2].button(
        "Next unreviewed",
        icon=":material/skip_next:",
        shortcut="U",
        help="Keyboard: U",
        on_click=go,
        args=(unreviewed or position, *moving),
        disabled=unreviewed is None,
    )

    labels = wf.choice_labels(items, lambda query_id, direction: review.desk.draft(query_id, direction) is not None)
    choice = nav[3].selectbox(
        "Item",
        items["position"].tolist(),
        index=position - 1,
        label_visibility="collapsed",
        format_func=lambda p: labels[p - 1],
    )
    if choice != position:
        go(choice, *moving)
        st.rerun()
    write_params({"item": str(position)})
    return items.iloc[position - 1]


def unsaved_elsewhere(review: Review, queue: Queue, item: pd.Series) -> None:
    """Drafts and refused saves on other items, so none is forgotten."""
    here = (item["query_id"], item["direction"])
    elsewhere = wf.drafts_elsewhere(review.desk.unsaved(), here, queue.items)
    if elsewhere:
        st.caption("Unsaved drafts, kept in this browser session until you save them: " + ", ".join(elsewhere))
    for (query_id, direction), error in review.desk.errors().items():
        if (query_id, direction) != here:
            st.error(f"The verdict on {query_id} ({direction}) was not saved. {error}", icon=":material/database:")


def item_panel(review: Review, item: pd.Series, previous: str | None) -> ResultView:
    """The query (its image, heading and text) with links to the map and the explorer; returns its top 10."""
    ctx, direction, row = review.ctx, item["direction"], int(item["row"])
    gallery = ctx.gallery
    query = query_side(gallery, direction)[0][row]
    view = retrieve(gallery, direction, query, 10, ctx.label_names, None, int(gallery.labels[row]), row)
    left, right = st.columns([1, 3])
    left.image(str(gallery.data.image_paths[row]), width=180)
    left.caption("The query image" if direction == "i2t" else "The query text's own image (its pair)")
    right.markdown(wf.item_headline(item, view.paired_rank or 0, view.paired_tie, previous))
    right.text(gallery.data.texts[row])
    to_map = space_link(ctx.opened, point=item["query_id"], modality="image" if direction == "i2t" else "text")
    to_explorer = explorer_link(ctx.opened, direction, item["query_id"])
    links = right.columns(2)
    links[0].page_link(
        to_map.page, label="Show on the shared-space map", icon=":material/scatter_plot:", query_params=to_map.params
    )
    links[1].page_link(
        to_explorer.page,
        label="Open in the retrieval explorer",
        icon=":material/manage_search:",
        query_params=to_explorer.params,
    )
    return view


def top_results(review: Review, item: pd.Series, view: ResultView) -> None:
    """The query's top 10, each with its score, tie group, relevance and a "Why?" link."""
    direction, row = item["direction"], int(item["row"])
    st.markdown(f"**Top {len(view.table)} {'texts' if direction == 'i2t' else 'images'}**")
    st.caption(TIE_LEGEND)
    for result in view.table.itertuples():
        with st.container(border=True):
            cells = st.columns([1, 4, 1]) if direction == "t2i" else st.columns([0.01, 5, 1])
            if direction == "t2i":
                cells[0].image(result.image, width=72)
            tie = describe_tie(result.tied_with, result.tie_first, result.tie_last)
            mark = ":green[relevant]" if result.relevant else ":red[not relevant]"
            own = " · **its pair**" if result.row == row else ""
            cells[1].markdown(
                f"**#{result.rank}** · {result.score:.4f}{' · ' + tie if tie else ''} · {mark}{own} · "
                f"*{result.category}*"
            )
            cells[1].text(result.text[:300])
            why = attribution_link(
                review.ctx.opened, direction, item["query_id"], result.id, contrast=not result.relevant
            )
            cells[2].page_link(why.page, label="Why?", icon=":material/insights:", query_params=why.params)


def verdict_form(review: Review, queue: Queue, item: pd.Series, reviewer: str, verdicts: pd.DataFrame) -> None:
    """The reviewer's verdict and note on the item (their unsaved draft, else their current verdict) and Save."""
    desk, query_id, direction = review.desk, item["query_id"], item["direction"]
    desk.prefill(query_id, direction, wf.reviewer_verdict(verdicts, reviewer))
    verdict_key, note_key = desk.widget_keys(query_id, direction)
    # Not persist_state: every change is copied into the item's draft (VerdictDesk), which outlives the widgets, a
    # rerun cut short and a save refused, and which the Save button and moving on both read.
    keep = dict(on_change=desk.keep_draft, args=(query_id, direction))
    # The labels name the item: while a rerun is on its way, the previous item's form may still be on screen, and
    # what is typed there belongs to that item; the label says which one it is.
    position = int(item["position"])
    st.radio(f"Verdict on #{position} · query {query_id}", VERDICTS, index=None, key=verdict_key, **keep)
    st.text_area(
        f"Notes on #{position} · query {query_id}",
        key=note_key,
        height=120,
        placeholder="What the room agreed, and why",
        **keep,
    )
    st.button(
        "Save verdict",
        type="primary",
        icon=":material/save:",
        shortcut="Ctrl+Enter",
        on_click=desk.request_save,
        args=(query_id, direction, wf.item_label(position, query_id, direction), queue.meeting),
        help="Keyboard: Ctrl+Enter. Moving on (J, K, U, the picker) saves a chosen verdict too, before anything else.",
    )
    if desk.error(query_id, direction):
        st.error(desk.error(query_id, direction))
    elif desk.draft(query_id, direction):
        st.caption("Unsaved draft: kept in this browser session until you save it.")
    elif desk.saved_id(query_id, direction) is not None:
        st.caption(f"Saved as #{desk.saved_id(query_id, direction)} in the review database.")


@st.fragment(run_every=LIVE_SECONDS)
def verdicts_so_far(online: bool, dataset: str, checkpoint: str, query_id: str, direction: str) -> None:
    """Every reviewer's current verdict on the item, its verdict history when one was changed, and the verdicts it
    got on other checkpoints: read again every few seconds (this part only), so that what other reviewers save
    appears without a click and without disturbing what is being typed. Plain arguments: a fragment keeps a copy
    of them for its reruns, and the store (shared, with its locks) is fetched again instead."""
    store = review_store()[0] if online else None
    record, error = wf.item_record(store, dataset, query_id, direction)
    current = wf.current_on(record, checkpoint)
    st.markdown("**Verdicts on this checkpoint**")
    if error and store is not None:
        st.caption(f"Cannot be read now: {error}")
    elif len(current) == 0:
        st.caption("None yet.")
    for r in current.itertuples():
        st.markdown(f"**{r.verdict}** — {r.reviewer}, {pd.Timestamp(r.created_at):%Y-%m-%d %H:%M} UTC")
        if r.note:
            st.text(wf.note_excerpt(r.note))
    trail = wf.trail_lines(record, checkpoint)
    if trail:
        st.markdown("**History on this checkpoint**  \n" + "  \n".join(trail))
    lines = wf.history_lines(record, checkpoint) if len(record) else []
    if lines:
        st.markdown("**On other checkpoints of this dataset**  \n" + "  \n".join(lines))
    st.caption(f"Refreshed every {LIVE_SECONDS} s.")


def agreement_panel(review: Review, queue: Queue, current: pd.DataFrame) -> None:
    """Krippendorff's alpha and Cohen's kappa over the queue's items with two or more reviewers, per verdict class,
    and the items still disputed, each a link to it."""
    agreed = agreement(current, queue.items)
    with st.expander(
        f"Agreement between reviewers · {agreed.items} items with two or more", expanded=bool(agreed.items)
    ):
        st.caption(agreed.summary())
        if not agreed.items:
            return
        cols = st.columns(3)
        cols[0].metric("Krippendorff's alpha", "—" if agreed.alpha is None else f"{agreed.alpha:.2f}")
        cols[1].metric(
            "Cohen's kappa",
            "—" if agreed.kappa is None else f"{agreed.kappa:.2f}",
            help=f"Mean over the {agreed.kappa_pairs} reviewer pairs that share two or more items.",
        )
        cols[2].metric("Disputed", len(agreed.disputed))
        st.dataframe(
            agreed.per_class,
            hide_index=True,
            column_config={
                "alpha": st.column_config.NumberColumn(
                    "alpha (this class against the rest)",
                    format="%.2f",
                    help="None where no item got this verdict: alpha is undefined then (as in the meeting summary).",
                )
            },
        )
        positions = dict(zip(zip(queue.items["query_id"], queue.items["direction"]), queue.items["position"]))
        for row in agreed.disputed.itertuples():
            position = int(positions[(row.query_id, row.direction)])
            to = review_link(review.ctx.opened, queue.meeting, position)
            st.page_link(to.page, label=f"#{position} · {row.query_id} ({row.direction}): {row.verdicts}",
                         query_params=to.params)  # fmt: skip


@st.cache_data(show_spinner=False, max_entries=16)
def _export_files(
    queue: pd.DataFrame,
    current: pd.DataFrame,
    history: pd.DataFrame,
    context: ReviewContext,
    _images: Sequence[Path],  # the dataset's, which `context.dataset` (its fingerprint) already keys
) -> list[ExportFile]:
    """The export files, built once per content (seconds for a queue of thousands of mis-retrievals), stamped with
    the time they were built."""
    stamped = replace(context, generated_at=datetime.now(UTC).isoformat(timespec="seconds"))
    return export_files(queue, current, history, stamped, _images)


def exports(review: Review, queue: Queue, current: pd.DataFrame) -> None:
    """The queue with its verdicts as CSV, JSON and an HTML summary."""
    st.divider()
    review_context = ReviewContext(
        review.checkpoint,
        review.ctx.checkpoint.path.stem,
        review.dataset,
        review.ctx.data_path,
        wf.queue_name(review.store, queue.meeting, queue.spec),
        review.store.describe() if review.store else f"none ({review.store_error})",
        "",  # stamped when the files are built
        code_version(),
        queue.meeting,
    )
    history, error = wf.verdict_history(review.store, review.dataset, review.checkpoint)
    if error:
        st.warning(f"The JSON file below lacks the verdict history: {error}", icon=":material/database:")
    # Built on every run (small files), not when clicked: a file's address is a hash of its content, so a click
    # never reruns the page nor waits, and a second click at once still finds its file (a deferred download's
    # generator is forgotten by the next rerun, so a quick second click found nothing).
    files = _export_files(queue.items, current, history, review_context, review.ctx.gallery.data.image_paths)
    for column, file in zip(st.columns(3), files):
        column.download_button(
            file.label, file.payload, file.name, file.mime, icon=":material/download:", on_click="ignore"
        )


review = open_review()
reviewer = your_name()
save_typed_verdicts(review)
state = read_state(review)
queue = which_queue(review, state, reviewer)
counts(review, queue, state.previous)
agreement_panel(review, queue, state.current)
item = navigation(review, queue)
unsaved_elsewhere(review, queue, item)
view = item_panel(review, item, state.previous)
verdicts = wf.item_verdicts(state.current, item["query_id"], item["direction"])
results_column, verdict_column = st.columns([3, 2])
with results_column:
    top_results(review, item, view)
with verdict_column:
    verdict_form(review, queue, item, reviewer, verdicts)
    verdicts_so_far(review.store is not None, review.dataset, review.checkpoint, item["query_id"], item["direction"])
exports(review, queue, state.current)
