"""Shared space: images and texts of the test split in one UMAP (or PCA) map; select a region to list it.

Do images and texts of a category meet, which categories collapse into each other, where are the mistakes?
The full split is projected unless it exceeds the point limit; then the page says how it was sampled.
A UMAP not in the disk cache is computed in the background (numba compiles umap-learn on a server's first
use): the page shows the instant PCA meanwhile, says so, and switches to the UMAP by itself when it is ready. The
computation starts at the page's first poll, once the browser has drawn the interim map: on a first visit the browser
spends seconds starting plotly and drawing, and a fit started at once took a second from it on 2 cores.
"""

from collections.abc import Callable
from dataclasses import replace

import streamlit as st

from analysis.jobs import BackgroundJobs
from analysis.projection import region
from analysis.projection.project import (
    COLOUR_BY,
    METHODS,
    METRICS,
    Projection,
    ProjectionParams,
    cached_projection,
    modality_gap,
    points_table,
    project_gallery,
    projection_key,
    selection_counts,
)
from analysis.projection.render import scatter_figure
from chtn.directions import DIRECTION_NAMES
from chtn.errors import CHTNError
from chtn.hashing import default_cache_dir
from chtn.images import thumbnail_uris
from chtn.progress import Progress
from views.common import context, job_failed, new_visit, write_params
from views.links import attribution_link, explorer_link

ctx = context()
gallery, names, report = ctx.gallery, ctx.label_names, ctx.report
data = gallery.data

THUMBNAILS = 300  # image thumbnails in the selection table (the first ones; the rest show ids only)
_INTERIM = "_sp_interim"  # the UMAP whose interim PCA this session's browser was sent: its first poll starts it
_JOB = "_sp_job"  # the UMAP job this session's poll waits for
_DRAWN = "_sp_drawn"  # the region drawn on the map during this visit (its URL parameter), until cleared
_LAST = "_sp_last"  # the region this session last had on this page, drawn or opened: reopened on coming back
POLL_SECONDS = 2.0  # how often a page showing the interim PCA checks whether its UMAP is ready


@st.cache_resource(show_spinner=False)
def projection_jobs() -> BackgroundJobs[Projection]:
    """One registry per server: every session asking for the same UMAP shares its background job, which starts once
    the page has drawn the interim PCA."""
    return BackgroundJobs(step_aside=True)


@st.fragment(run_every=POLL_SECONDS)
def wait_for(key: str, compute: Callable[[Progress], Projection]) -> None:
    """Start the UMAP once this browser has the interim map (the poll after the page's run: a run of the page sets
    `_INTERIM` when it ends), say for how long it has computed, and rerun the page to show it once done. Every
    session asking for the same UMAP shares its job."""
    if st.session_state.get(_INTERIM) != key:  # within the page's own run: the browser has not drawn it yet
        st.caption("UMAP starts computing in the background in a moment; this map switches when it is ready.")
        return
    job = st.session_state.get(_JOB)
    if job is None or job.key != key:  # held by the session: a job done is gone from the registry, its UMAP on disk
        job = st.session_state[_JOB] = projection_jobs().submit(key, compute)
    if job.done():
        del st.session_state[_JOB]
        st.rerun(scope="app")
    st.caption(f"UMAP computing in the background for {job.elapsed:.0f} s; this map switches when it is ready.")


@st.cache_data(show_spinner=False, max_entries=32)
def thumbnails(paths: tuple) -> list:
    return thumbnail_uris(paths)


@st.cache_data(show_spinner=False, max_entries=8)
def cached_gap(digest: str, fingerprint: str):
    """Once per checkpoint and dataset: every lasso selection reruns the page, and the gap needs a k-NN pass."""
    return modality_gap(gallery.image, gallery.text, gallery.labels, names)


def forget_region() -> None:
    """No selection any more: neither in the URL nor kept for this session."""
    st.query_params.pop("region", None)
    st.session_state.pop(_LAST, None)


def chosen_points(table, event, shown_on: str) -> tuple:
    """The items selected on the map, and whether they were reopened rather than drawn on this visit: from the URL
    (`region`: its shape and the projection it was drawn on, not its items) or, when the URL has none, the region
    this session last had on this page.

    A drawn box or lasso goes into the URL, so a link or the browser's Back reopens the same selection. The session
    keeps it too, as the page's parameters are kept: coming back through the sidebar reopens it, and so does Back
    when Streamlit (1.67) filed the next page's parameters under this page's address (a history entry it writes
    when a page changes the URL in the first moments after a page switch). Clearing a selection drawn on this visit
    clears it; a region of another projection selects nothing. An empty selection event alone clears nothing: a
    chart drawn again (after Back, say) reports one by itself."""
    if new_visit("space"):
        st.session_state.pop(_DRAWN, None)
    drawn = region.from_selection(event.selection, shown_on) if event else None
    if drawn is not None:
        write_params({"region": (param := drawn.param())})
        st.session_state[_DRAWN] = st.session_state[_LAST] = param
    elif st.session_state.pop(_DRAWN, None) is not None:  # the selection drawn on this visit was cleared
        forget_region()
    else:
        in_url = st.query_params.get("region")
        kept = in_url or st.session_state.get(_LAST)
        if (linked := region.parse(kept)) is not None and linked.on == shown_on:
            write_params({"region": kept})
            st.session_state[_LAST] = kept
            return table[linked.contains(table.x.to_numpy(), table.y.to_numpy())], True
        if linked is not None and in_url:
            st.caption("The link's selection was drawn on another projection (method or parameters); draw it again.")
    picked = (  # the focus ring (no customdata) is not an item
        {(int(p["customdata"][0]), p["customdata"][1]) for p in event.selection.points if "customdata" in p}
        if event
        else set()
    )
    return table[[(r, m) in picked for r, m in zip(table.row, table.modality)]], False


st.title("Shared space")
st.caption(
    "Common representations of the test split, images (●) and texts (◆) in one projection. Drag a lasso "
    "or a box over the map to list the items in it."
)

with st.expander("Projection parameters", expanded=False):
    cols = st.columns(6)
    method = cols[0].selectbox(
        "Method", list(METHODS), format_func=METHODS.get, key="sp_method", persist_state="session"
    )
    neighbors = cols[1].number_input(
        "n_neighbors", 2, 200, 15, key="sp_neighbors", disabled=method != "umap", persist_state="session"
    )
    min_dist = cols[2].number_input(
        "min_dist", 0.0, 1.0, 0.1, step=0.05, key="sp_min_dist", disabled=method != "umap", persist_state="session"
    )
    metric = cols[3].selectbox("Metric", list(METRICS), key="sp_metric", persist_state="session")
    seed = cols[4].number_input("Seed", 0, 10_000, 0, key="sp_seed", persist_state="session")
    limit = cols[5].number_input(
        "Point limit",
        100,
        1_000_000,
        20_000,
        step=1000,
        key="sp_limit",
        persist_state="session",
        help="Above this many points a stratified sample is shown.",
    )

pending = None
on_screen = method  # the method on screen: PCA stands in while the UMAP computes, or when it failed
try:
    params = ProjectionParams(method, int(neighbors), float(min_dist), metric, int(seed), int(limit))
    points = (gallery.image, gallery.text, gallery.labels)
    projection = cached_projection(*points, params) if method == "umap" else None
    if method == "umap" and projection is None:
        job = projection_jobs().get(key := projection_key(*points, params))  # started by a poll (wait_for)
        if job is not None and job.done() and job.error() is None:
            projection = job.result()
        elif job is not None and job.done():
            job_failed(projection_jobs(), job, "Computing the UMAP")  # the PCA below stands in
        else:
            pending = key
    if projection is None:  # PCA chosen, or the interim map while the UMAP computes: milliseconds
        projection, on_screen = project_gallery(*points, replace(params, method="pca")), "pca"
except CHTNError as exc:
    st.error(str(exc), icon=":material/error:")
    st.stop()

if pending is not None:
    st.info(
        "Showing **PCA** while UMAP compiles/computes (first use on this server, or of these parameters): the "
        "map switches to UMAP by itself when it is ready, for you and anyone else opening it.",
        icon=":material/hourglass_top:",
    )
    wait_for(pending, lambda _progress: project_gallery(*points, params, default_cache_dir()))
else:
    how = "read from the cache" if projection.from_cache else f"computed in {projection.seconds:.1f} s"
    st.caption(f"Showing **{METHODS[on_screen]}** ({how}).")
note = projection.sampling_note(gallery.labels, names)
(st.warning if projection.sampled else st.caption)(note)
table = points_table(
    projection, data.ids, data.texts, gallery.labels, names, report.i2t.top1_correct, report.t2i.top1_correct
)

ALL = "All categories"
focus = st.selectbox(
    "Category",
    [ALL, *names],
    key="category",
    bind="query-params",  # a link from the Source bias page opens its category (?category=Heels)
    help="Show one category's images and texts (the projection stays the one of the whole split).",
)
if focus != ALL:
    table = table[table.category == focus]

plot_col, gap_col = st.columns([5, 2])  # the map first: its plotly code is the browser's longest fetch
with plot_col:
    colour = (
        st.segmented_control(
            "Colour by",
            list(COLOUR_BY),
            format_func=COLOUR_BY.get,
            default="category",
            key="sp_colour",
            persist_state="session",
        )
        or "category"
    )
    point = table[(table.id == st.query_params.get("point")) & (table.modality == st.query_params.get("modality"))]
    if len(point):  # a link from the Review page: the map centred on that item (zoom out with a double click)
        st.caption(f"Centred on {point.iloc[0].id} ({point.iloc[0].modality}); double-click the map to see all of it.")
    figure = scatter_figure(table, colour, focus=point.iloc[0] if len(point) else None)
    event = st.plotly_chart(figure, width="stretch", on_select="rerun", selection_mode=("lasso", "box"), key="sp_chart")

with gap_col:
    gap = cached_gap(ctx.checkpoint.digest, data.fingerprint())
    st.metric(
        "Image–text centroid distance",
        f"{gap.centroid_distance:.3f}",
        help="Between the centroids of the L2-normalised image and text representations; 0 = no gap.",
    )
    st.metric(
        "Nearest neighbour of the other modality",
        f"{gap.cross_modal_nn:.0%}",
        help="Share of items whose nearest neighbour (cosine) is a text for an image or an image for a text.",
    )
    st.dataframe(
        gap.per_category[["category", "centroid distance", "cross-modal NN"]],
        hide_index=True,
        height=420,
        width="stretch",
        column_config={
            "centroid distance": st.column_config.NumberColumn(
                "gap", format="%.3f", help="Image–text centroid distance in this category"
            ),
            "cross-modal NN": st.column_config.NumberColumn(
                "x-NN", format="%.2f", help="Share whose nearest neighbour is of the other modality"
            ),
        },
    )

selected, reopened = chosen_points(table, event, region.projection_tag(replace(params, method=on_screen)))
st.subheader(f"Selection: {len(selected)} item{'s' if len(selected) != 1 else ''}")
if reopened:
    about, clear = st.columns([5, 1], vertical_alignment="center")
    about.caption(
        "A selection reopened: the region drawn when the link was made, or your last one on this page in this "
        "session. Draw a new one to replace it."
    )
    clear.button("Clear selection", key="sp_clear", on_click=forget_region, width="stretch")
if selected.empty:
    st.caption("Nothing selected yet: drag a lasso or a box over the map.")
else:
    list_col, count_col = st.columns([5, 2])
    shown = selected[["id", "modality", "category", "outcome", "title"]].copy()
    shown.insert(
        0,
        "image",
        thumbnails(
            tuple(
                data.image_paths[r] if m == "image" and i < THUMBNAILS else None
                for i, (r, m) in enumerate(zip(selected.row, selected.modality))
            )
        ),
    )
    list_col.dataframe(
        shown,
        hide_index=True,
        width="stretch",
        height=300,
        column_config={"image": st.column_config.ImageColumn("image", width="small")},
    )
    count_col.dataframe(selection_counts(selected), hide_index=True, width="stretch", height=300)
    choice = st.selectbox(
        "Open one of them",
        range(len(selected)),
        key="sp_open",
        format_func=lambda i: f"{selected.iloc[i].id} · {selected.iloc[i].modality} · {selected.iloc[i].category}",
    )
    item = selected.iloc[choice]
    direction = "i2t" if item.modality == "image" else "t2i"
    as_query = explorer_link(ctx.opened, direction, item.id)
    why = attribution_link(ctx.opened, direction, item.id)
    links = st.columns(2)
    links[0].page_link(
        as_query.page,
        label=f"As a query in the retrieval explorer ({DIRECTION_NAMES[direction]})",
        icon=":material/manage_search:",
        query_params=as_query.params,
    )
    links[1].page_link(why.page, label="Why its top result?", icon=":material/insights:", query_params=why.params)
if pending is not None:  # this run has drawn the interim map: the fragment's next poll starts its UMAP
    st.session_state[_INTERIM] = pending
