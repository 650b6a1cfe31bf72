"""Retrieval explorer: pick a query (test item, free text or an uploaded image), see its top-k, judge them.

Every view is in the URL (checkpoint, direction, query, k, search), so a link pasted in a meeting reopens it: k and
the search are bound to their widgets, the direction and the query are written here.
Ranks, scores and tie groups come from chtn.ranking, as the Overview's (analysis.explorer.retrieve).
"""

import numpy as np
import streamlit as st

from analysis.explorer import (
    FREE_TEXT_MAX_CHARS,
    free_text_note,
    next_misretrieval,
    search_queries,
    top_tie_note,
    worst_query,
)
from analysis.workspace import store_upload, upload_key
from chtn.directions import DIRECTION_NAMES
from chtn.errors import CHTNError
from chtn.images import open_rgb
from chtn.ranking import TIE_LEGEND, describe_tie, own_pair_headline
from chtn.search import query_side, retrieve
from views.common import context, from_link, to_url
from views.links import attribution_link, free_text_attribution_link, upload_attribution_link

ctx = context()
data, gallery, names = ctx.gallery.data, ctx.gallery, ctx.label_names
TEST_ITEM, FREE_TEXT, UPLOAD = "Test item", "Free text", "Upload an image"

# The query is a test row picked with the buttons (Random, Worst, Next mis-retrieval) or from the list the search
# filters, not one widget's value, and the direction travels in the Explain links (never bound: see views.common), so
# the page writes both to the URL itself; a link's win over the session's, and open unfiltered unless they say so.
if (linked_direction := from_link("rx", "direction", DIRECTION_NAMES)) is not None:
    st.session_state.rx_direction = linked_direction
if (linked := from_link("rx", "query", data.ids)) is not None:  # a test item; a link's search is bound (below)
    st.session_state.update(rx_row=data.ids.index(linked), rx_source=TEST_ITEM, search="")
st.session_state.setdefault("rx_row", 0)


def _set_row(row: int | None) -> None:
    if row is None:
        st.toast("No mis-retrieval in this direction.")
    else:
        st.session_state.rx_row = row
        st.session_state.search = ""


st.title("Retrieval explorer")
source = st.radio(
    "Query from", [TEST_ITEM, FREE_TEXT, UPLOAD], horizontal=True, key="rx_source", persist_state="session"
)
top = st.columns([2, 2, 3])
if source == TEST_ITEM:
    direction = top[0].radio(
        "Direction",
        list(DIRECTION_NAMES),
        format_func=DIRECTION_NAMES.get,
        key="rx_direction",
        persist_state="session",
        horizontal=True,
    )
else:  # the query's modality sets it: shown as it is, the test items' choice kept for when they come back
    direction = "t2i" if source == FREE_TEXT else "i2t"
    top[0].radio(
        "Direction",
        [direction],
        format_func=DIRECTION_NAMES.get,
        key=f"rx_direction_{direction}",
        disabled=True,
        help="A text query searches the images; an image query searches the texts.",
    )
k = top[1].slider("Results (k)", 1, 50, 10, key="k", bind="query-params")
categories = top[2].multiselect(
    "Only these categories in the gallery", names, key="rx_categories", persist_state="session"
)
report_side = getattr(ctx.report, direction)

query, query_label, paired_row = None, None, None
if source == TEST_ITEM:
    pick = st.columns([3, 1, 1, 1])
    search = pick[0].text_input(
        "Search by id, title or category", key="search", bind="query-params", max_chars=200
    )  # a link from the Source bias page gives a category: its queries only
    matches = search_queries(gallery, search, names)
    if not matches:
        st.warning(f"No test item matches “{search}”.")
        st.stop()
    rng = np.random.default_rng()
    for column, label, icon, row in (
        (pick[1], "Random", ":material/casino:", int(rng.integers(len(gallery)))),
        (pick[2], "Worst", ":material/trending_down:", worst_query(ctx.report, direction)),
        (
            pick[3],
            "Next mis-retrieval",
            ":material/skip_next:",
            next_misretrieval(ctx.report, direction, st.session_state.rx_row),
        ),
    ):
        column.button(label, icon=icon, on_click=_set_row, args=(row,), width="stretch")
    row = st.session_state.rx_row if st.session_state.rx_row in matches else matches[0]
    row = st.selectbox(
        f"Query ({len(matches)} matching)",
        matches,
        index=matches.index(row),
        format_func=lambda r: f"{data.ids[r]} · {names[gallery.labels[r]]} · {data.texts[r]}",
    )
    st.session_state.rx_row = row
    to_url("rx", direction=direction, query=data.ids[row])
    query = query_side(gallery, direction)[0][row]
    query_label, paired_row = int(gallery.labels[row]), row
    left, right = st.columns([1, 4])
    left.image(str(data.image_paths[row]), width=160)
    right.markdown(
        f"**Query {'image' if direction == 'i2t' else 'text'}** · id `{data.ids[row]}` · "
        f"category **{names[query_label]}**  \n{data.texts[row]}"
    )
elif source == FREE_TEXT:
    from chtn.tower import create_tower

    text = st.text_input(
        "Describe what you are looking for",
        key="rx_free_text",
        max_chars=FREE_TEXT_MAX_CHARS,
        placeholder="e.g. black leather wallet for men",
    )
    if not text.strip():
        st.info("Type a text to search the test images with it.")
        st.stop()
    tower = create_tower(ctx.checkpoint)
    note = free_text_note(text, tower)
    if note:
        st.warning(note, icon=":material/content_cut:")
    query = tower.embed_texts([text])[0]
else:
    from chtn.tower import create_tower

    upload = st.file_uploader(
        "An image to search the test texts with", type=["jpg", "jpeg", "png", "webp"], key="rx_upload"
    )
    if upload is None:
        st.info("Upload an image to search the test texts with it.")
        st.stop()
    try:
        picture = open_rgb(upload, name=upload.name)  # 8-bit RGB whatever the file held (16-bit PNG, palette, ...)
        path = store_upload(upload.name, upload.getvalue())
        query = create_tower(ctx.checkpoint).embed_images([path])[0]
    except CHTNError as exc:
        st.error(str(exc), icon=":material/error:")
        st.stop()
    st.image(picture, width=160)  # the decoded picture: Streamlit cannot re-encode every mode the file may hold

view = retrieve(gallery, direction, query, k, names, categories, query_label, paired_row)
stats = st.columns(3)
if paired_row is not None:
    stats[0].metric(
        "Query AP", f"{report_side.ap[paired_row]:.3f}", help="Over the whole test gallery (no category filter)."
    )
    stats[1].metric("Its own pair", own_pair_headline(view.paired_rank, view.paired_tie))
    if view.paired_tie is not None:
        stats[1].caption(
            f"#{view.paired_rank} in gallery order; {describe_tie(*view.paired_tie)}"
            if view.paired_tie[0] > 0
            else "no other item has its score to four decimals"
        )
stats[2].metric("Gallery searched", f"{view.n_allowed} {'texts' if direction == 'i2t' else 'images'}")

st.subheader(f"Top {len(view.table)} {'texts' if direction == 'i2t' else 'images'}")
if tie_note := top_tie_note(view.table):
    st.info(tie_note, icon=":material/drag_handle:")
st.caption(TIE_LEGEND)
for start in range(0, len(view.table), 5):
    cells = st.columns(5)
    for cell, item in zip(cells, view.table.iloc[start : start + 5].itertuples()):
        mark = (
            ""
            if item.relevant is None
            else (
                ":green[:material/check_circle: relevant]" if item.relevant else ":red[:material/cancel: not relevant]"
            )
        )
        own = " · **its pair**" if item.row == paired_row else ""
        with cell.container(border=True):
            if direction == "t2i":
                st.image(item.image, width="stretch")
            tie = describe_tie(item.tied_with, item.tie_first, item.tie_last)
            st.markdown(
                f"**#{item.rank}** · {item.score:.4f}{' · ' + tie if tie else ''} · {mark}{own}  \n"
                f"*{item.category}*  \n{item.text}"
            )
            if paired_row is not None:
                explain = attribution_link(
                    ctx.opened, direction, data.ids[paired_row], item.id, contrast=item.relevant is False
                )
            elif source == FREE_TEXT:
                explain = free_text_attribution_link(ctx.opened, text, item.id)
            else:  # the uploaded image, by the key it is kept under on this server
                explain = upload_attribution_link(ctx.opened, upload_key(path), item.id)
            st.page_link(explain.page, label="Explain", icon=":material/insights:", query_params=explain.params)
