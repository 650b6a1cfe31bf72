"""Review: the checkpoint's mis-retrieved queries as a queue the meeting walks through, one verdict per reviewer.

Everything that defines what is on screen is in the URL (checkpoint, meeting queue spec and id, item), so a pasted
link opens the same queue at the same item for everyone. Verdicts go to the review database (SQLite file or a
PostgreSQL URL): append-only, nothing overwritten. What the reviewer types is a draft in the session until the
database has it (analysis.review.drafts): moving on before a save finished, or a refused save, loses nothing.
"""

from datetime import UTC, datetime

import pandas as pd
import streamlit as st

from analysis import outcomes as oc
from analysis.review import queue as rq
from analysis.review.drafts import Draft, SaveTarget, VerdictDesk
from analysis.review.render import EXPORTS, ReviewContext, export_files
from analysis.review.store import VERDICTS
from analysis.review.workflow import history_lines, open_queue, queue_title, review_state
from analysis.store import StoreError
from chtn.checkpoint import code_version
from chtn.directions import DIRECTION_NAMES
from chtn.errors import CHTNError
from chtn.ranking import TIE_LEGEND, describe_tie, own_pair_headline
from chtn.search import query_side, retrieve
from views.common import context, review_store

ctx = context()
gallery, names, data = ctx.gallery, ctx.label_names, ctx.gallery.data
dataset, checkpoint = data.fingerprint(), ctx.checkpoint.digest
ALL, MEETING = "All mis-retrievals", "Meeting queue"
SPEC_KEYS = tuple(rq.QueueSpec.__dataclass_fields__)


@st.cache_data(show_spinner="Ranking every query…", max_entries=8)
def outcomes(checkpoint_digest: str, fingerprint: str, label_names: list[str], _gallery, _report) -> pd.DataFrame:
    return oc.query_outcomes(_gallery, _report, label_names)


store, store_error = review_store()
with st.sidebar:
    reviewer = st.text_input("Your name", key="rv_reviewer", persist_state="session", max_chars=200)

st.title("Review")
if store:
    st.caption(f"Verdicts are saved to the {store.describe()} (change it in the sidebar).")
else:
    st.error(f"**Verdicts cannot be saved now.** {store_error}", icon=":material/database:")

table_all = outcomes(checkpoint, dataset, names, gallery, ctx.report)
desk = VerdictDesk(st.session_state)
saving = st.empty()  # "saving…", then "saved #id": the verdicts whose Save was pressed, saved before anything else
target = SaveTarget(dataset, checkpoint, ctx.checkpoint.path.stem, table_all)
while waiting := desk.pending():
    saving.info(f"Saving the verdict on {waiting[0].label}…", icon=":material/hourglass_top:")
    desk.save_next(store, store_error or "", target)
if last := desk.last_saved():
    saving.success(
        f"Saved #{last.row_id}: {last.pending.draft.verdict} on {last.pending.label} by {last.pending.reviewer}.",
        icon=":material/check:",
    )
else:
    saving.empty()
try:
    state = review_state(store, table_all, dataset, checkpoint)
except StoreError as exc:  # opened, but unreadable now (e.g. the server went away): show the queue anyway
    st.error(f"**Verdicts cannot be read now.** {exc}", icon=":material/database:")
    store, store_error = None, str(exc)
    state = review_state(None, table_all, dataset, checkpoint)
current, previous_name = state.current, state.previous

# ---------------------------------------------------------------- which queue
params = st.query_params
queue_id = params.get("queue")
mode = st.segmented_control(
    "Queue", [ALL, MEETING], default=MEETING if queue_id else ALL, key=f"rv_mode_{queue_id}", required=True
)
spec, queue = None, None
if mode == MEETING and not queue_id:
    with st.form("rv_spec"):
        st.markdown("**New meeting queue**: everyone who opens its link sees the same items in the same order.")
        cols = st.columns(4)
        size = cols[0].number_input("Items", 1, 10_000, 30)
        seed = cols[1].number_input("Seed", 0, 999_999, 0)
        strata = cols[2].multiselect("Strata", rq.STRATA, default=list(rq.STRATA))
        pick = cols[3].selectbox("Within a stratum", ["random", "severe"], format_func=lambda p: f"{p} first")
        cols = st.columns(3)
        directions = cols[0].multiselect("Directions", list(DIRECTION_NAMES), default=list(DIRECTION_NAMES))
        categories = cols[1].multiselect("Categories (none = all)", names)
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
    queue_id = spec.queue_id(checkpoint, dataset)
    params.update(queue=queue_id, item="1", **spec.to_params())
if mode == MEETING:
    try:
        spec = rq.QueueSpec.from_params({k: params[k] for k in SPEC_KEYS if k in params})
        queue = open_queue(store, state.annotated, spec, queue_id, checkpoint, dataset, reviewer or "")
    except CHTNError as exc:  # a bad or foreign link; or the database refused to record the queue
        st.error(f"{exc}", icon=":material/link_off:")
        st.stop()
    st.caption(
        f"Meeting queue `{queue_id}` ({queue_title(store, queue_id, spec)}) · {len(queue)} items · share this page's "
        "address: it opens the same queue at the same item."
    )
else:
    for key in (*SPEC_KEYS, "queue"):
        params.pop(key, None)
    cols = st.columns([3, 2, 3, 2])
    categories = cols[0].multiselect("Categories", names, key="rv_categories")
    directions = cols[1].multiselect(
        "Directions", list(DIRECTION_NAMES), format_func=DIRECTION_NAMES.get, key="rv_directions"
    )
    statuses = cols[2].multiselect("Verdict status", rq.STATUSES, key="rv_statuses")
    changed = cols[3].toggle(
        "Changed only",
        key="rv_changed",
        disabled=previous_name is None,
        help="Only items whose outcome changed since the last reviewed checkpoint "
        f"({previous_name or 'none yet'}): new regressions first.",
    )
    queue = rq.filter_table(oc.misretrievals(state.annotated), categories, directions, statuses, changed)

# ---------------------------------------------------------------- counts and navigation
tally = rq.counts(queue)
cols = st.columns(5)
cols[0].metric("Reviewed", f"{tally['reviewed'] + tally['disputed']} of {tally['total']}")
cols[1].metric("Unreviewed", tally["unreviewed"])
cols[2].metric("Disputed", tally["disputed"], help="Reviewers' current verdicts on the item disagree.")
cols[3].metric(
    "New regressions",
    int((queue["change"] == "new regression").sum()) if len(queue) else 0,
    help=f"Retrieved well by the last reviewed checkpoint ({previous_name or 'none yet'}), mis-retrieved now.",
)
cols[4].metric("Mis-retrieved queries", f"{int(table_all['mis_retrieved'].sum())} of {len(table_all)}")
if queue.empty:
    st.info("No item matches: change the filters.")
    st.stop()

item_text = params.get("item", "1")
position = int(item_text) if item_text.isdecimal() and len(item_text) < 7 else 1
position = min(max(position, 1), len(queue))


leaving = queue.iloc[position - 1]


def go(to: int) -> None:
    """Move to item `to`; what was typed on this item is saved first when it holds a verdict (VerdictDesk)."""
    query_id, direction = leaving["query_id"], leaving["direction"]
    if desk.widget_keys(query_id, direction)[0] in st.session_state:  # its form was drawn: something may be typed
        label = f"#{position} · query {query_id} ({direction})"
        desk.save_on_leave(query_id, direction, label, queue_id if mode == MEETING else None)
    st.query_params["item"] = str(min(max(to, 1), len(queue)))


nav = st.columns([1, 1, 1.6, 4.4])
nav[0].button(
    "Previous",
    icon=":material/arrow_back:",
    shortcut="K",
    on_click=go,
    args=(position - 1,),
    disabled=position == 1,
    help="Keyboard: K",
)
nav[1].button(
    "Next",
    icon=":material/arrow_forward:",
    shortcut="J",
    on_click=go,
    args=(position + 1,),
    disabled=position == len(queue),
    help="Keyboard: J",
)
unreviewed = queue.index[(queue["status"] == "unreviewed") & (queue["position"] > position)]
nav[2].button(
    "Next unreviewed",
    icon=":material/skip_next:",
    shortcut="U",
    help="Keyboard: U",
    on_click=go,
    args=(int(queue.loc[unreviewed[0], "position"]) if len(unreviewed) else position,),
    disabled=not len(unreviewed),
)
choice = nav[3].selectbox(
    "Item",
    queue["position"].tolist(),
    index=position - 1,
    label_visibility="collapsed",
    format_func=lambda p: (
        lambda r: (
            f"#{p} · {r.query_id} · {DIRECTION_NAMES[r.direction]} · {r.category} · {r.status}"
            + (" · unsaved draft" if desk.draft(r.query_id, r.direction) else "")
        )
    )(queue.iloc[p - 1]),
)
if choice != position:
    go(choice)
    st.rerun()
st.query_params["item"] = str(position)
item = queue.iloc[position - 1]
where = dict(zip(zip(queue["query_id"], queue["direction"]), queue["position"]))
elsewhere = [key for key in desk.unsaved() if key != (item["query_id"], item["direction"])]
if elsewhere:
    st.caption(
        "Unsaved drafts, kept in this browser session until you save them: "
        + ", ".join(f"#{where[k]}" if k in where else f"{k[0]} ({k[1]}, not in this queue)" for k in elsewhere)
    )
for (query_id, direction), error in desk.errors().items():
    if (query_id, direction) != (item["query_id"], item["direction"]):
        st.error(f"The verdict on {query_id} ({direction}) was not saved. {error}", icon=":material/database:")

# ---------------------------------------------------------------- the item
direction, row = item["direction"], int(item["row"])
query = query_side(gallery, direction)[0][row]
view = retrieve(gallery, direction, query, 10, names, None, int(gallery.labels[row]), row)
left, right = st.columns([1, 3])
left.image(str(data.image_paths[row]), width=180)
left.caption("The query image" if direction == "i2t" else "The query text's own image (its pair)")
own_tie = describe_tie(*view.paired_tie) if view.paired_tie else ""
right.markdown(
    f"**#{position} · {DIRECTION_NAMES[direction]}** · query `{item['query_id']}` · **{item['category']}** · "
    f"{oc.KINDS.get(item['kind'], item['kind'] or 'retrieved well')} · severity {item['severity']:.2f}  \n"
    f"AP {item['ap']:.3f} · its own pair: {own_pair_headline(view.paired_rank, view.paired_tie)}"
    f"{f' (#{view.paired_rank} in gallery order)' if own_tie else ''} · "
    f"top-1 is *{item['top1_category']}* · since {previous_name or 'no earlier reviewed checkpoint'}: "
    f"**{item['change']}**"
)
right.text(data.texts[row])
links = right.columns(2)
links[0].page_link(
    "views/space.py",
    label="Show on the shared-space map",
    icon=":material/scatter_plot:",
    query_params={
        "checkpoint": ctx.checkpoint_ref,
        "point": item["query_id"],
        "modality": "image" if direction == "i2t" else "text",
    },
)
links[1].page_link(
    "views/explorer.py",
    label="Open in the retrieval explorer",
    icon=":material/manage_search:",
    query_params={"checkpoint": ctx.checkpoint_ref, "direction": direction, "query": item["query_id"]},
)

results, verdict_col = st.columns([3, 2])
with results:
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
            cells[2].page_link(
                "views/attribution.py",
                label="Why?",
                icon=":material/insights:",
                query_params={
                    "checkpoint": ctx.checkpoint_ref,
                    "direction": direction,
                    "query": item["query_id"],
                    "result": result.id,
                    "contrast": "0" if result.relevant else "1",
                },
            )

with verdict_col:
    mine = (
        current[(current["query_id"] == item["query_id"]) & (current["direction"] == direction)]
        if len(current)
        else current
    )
    query_id = item["query_id"]
    own_rows = mine[mine["reviewer"] == reviewer] if reviewer and len(mine) else pd.DataFrame()
    stored = Draft(own_rows.iloc[-1]["verdict"], own_rows.iloc[-1]["note"]) if len(own_rows) else None
    desk.prefill(query_id, direction, stored)  # the unsaved draft, else this reviewer's current verdict
    verdict_key, note_key = desk.widget_keys(query_id, direction)
    keep = dict(on_change=desk.keep_draft, args=(query_id, direction))
    # The labels name the item: while a rerun is on its way, the previous item's form may still be on screen, and
    # what is typed there belongs to that item; the label says which one it is.
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
        args=(
            query_id,
            direction,
            f"#{position} · query {query_id} ({direction})",
            queue_id if mode == MEETING else None,
        ),
        help="Keyboard: Ctrl+Enter. Moving on (J, K, U, the picker) saves a chosen verdict too, before anything else.",
    )
    if desk.error(query_id, direction):
        st.error(desk.error(query_id, direction))
    elif desk.draft(query_id, direction):
        st.caption("Unsaved draft: kept in this browser session until you save it.")
    elif desk.saved_id(query_id, direction) is not None:
        st.caption(f"Saved as #{desk.saved_id(query_id, direction)} in the review database.")
    st.markdown("**Verdicts on this checkpoint**")
    if len(mine) == 0:
        st.caption("None yet.")
    for r in mine.itertuples():
        st.markdown(f"**{r.verdict}** — {r.reviewer}, {pd.Timestamp(r.created_at):%Y-%m-%d %H:%M} UTC")
        if r.note:
            st.text(r.note if len(r.note) <= 2000 else r.note[:2000] + f"… ({len(r.note):,} characters in all)")
    lines = history_lines(store.query_history(dataset, item["query_id"], direction), checkpoint) if store else []
    if lines:
        st.markdown("**On other checkpoints of this dataset**  \n" + "  \n".join(lines))

# ---------------------------------------------------------------- exports
st.divider()
review_context = ReviewContext(
    checkpoint,
    ctx.checkpoint.path.stem,
    dataset,
    ctx.data_path,
    f"meeting queue {queue_id} ({queue_title(store, queue_id, spec)})" if mode == MEETING else "all mis-retrievals",
    store.describe() if store else f"none ({store_error})",
    datetime.now(UTC).isoformat(timespec="seconds"),
    code_version(),
)
try:
    history = store.verdicts(dataset, checkpoint) if store else pd.DataFrame()
except StoreError as exc:
    st.warning(f"The JSON file below lacks the verdict history: {exc}", icon=":material/database:")
    history = pd.DataFrame()
# Built on every run (small files), not when clicked: a file's address is a hash of its content, so a click never
# reruns the page nor waits, and a second click at once still finds its file (a deferred download's generator is
# forgotten by the next rerun, so a quick second click found nothing).
files = export_files(queue, current, history, review_context)
exports = st.columns(3)
for column, (name, label, mime) in zip(exports, EXPORTS):
    column.download_button(label, files[name], name, mime, icon=":material/download:", on_click="ignore")
