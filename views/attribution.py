"""Why did this query retrieve this result? Heatmap on the image, highlighted words on the text.

Opened from the "Explain" link under any result in the retrieval explorer; the URL carries the pair
(checkpoint, direction, the query: a test item's id, a free text or the key of an image uploaded to this server;
the result's id) and `contrast=true`, so a shared link reopens the same explanation.
"""

import streamlit as st

from analysis.attribution.render import (
    highlighted_html,
    legend_html,
    map_scale,
    overlay,
    png_bytes,
    scale_html,
    top_words,
)
from analysis.attribution.types import BASELINES, IMAGE_METHODS, Item, Settings, explainer_items
from analysis.explorer import FREE_TEXT_MAX_CHARS, pair_score, query_score
from analysis.workspace import stored_upload
from chtn.directions import DIRECTION_NAMES
from chtn.errors import CHTNError
from chtn.images import open_rgb
from views.common import context, from_link, legacy_flag, to_url

ctx = context()
data, gallery, names = ctx.gallery.data, ctx.gallery, ctx.label_names
ids = data.ids
row_of = {item_id: row for row, item_id in enumerate(ids)}


class _AnyText:
    """What a link's free-text query may be: any text the explorer's box holds."""

    def __contains__(self, value: object) -> bool:
        return isinstance(value, str) and bool(value.strip()) and len(value) <= FREE_TEXT_MAX_CHARS


class _KeptUpload:
    """What a link's uploaded-image query may be: the key of an image kept on this server (analysis.workspace)."""

    def __contains__(self, value: object) -> bool:
        return isinstance(value, str) and stored_upload(value) is not None


# The query and the result are ids, shown with their category and text, so no widget's value is the URL's id, and the
# direction travels in the explorer's links (never bound: see views.common): the page writes the three itself. A
# link's pair wins over the session's; a link without a result opens the query's top one, contrastive only if it says.
if (linked_direction := from_link("at", "direction", DIRECTION_NAMES)) is not None:
    st.session_state.at_direction = linked_direction
if (query_link := from_link("at", "query", row_of)) is not None:
    st.session_state.update(at_query=query_link, at_result=None, contrast=False, at_free_text="", at_upload="")
if (text_link := from_link("at", "text", _AnyText())) is not None:  # the explorer's free-text query
    st.session_state.update(at_free_text=text_link, at_direction="t2i", at_result=None, contrast=False, at_upload="")
if (upload_link := from_link("at", "upload", _KeptUpload())) is not None:  # the explorer's uploaded image
    st.session_state.update(at_upload=upload_link, at_direction="i2t", at_result=None, contrast=False, at_free_text="")
free_text = st.session_state.get("at_free_text", "")
uploaded = stored_upload(st.session_state.get("at_upload", ""))
if (result_link := from_link("at", "result", row_of)) is not None:
    st.session_state.at_result = result_link
legacy_flag("contrast")

st.title("Why this result?")
st.caption(
    "Attributions of the similarity of one query–result pair in the common space: on the image with the "
    "text held fixed, and on the text with the image held fixed (Captum)."
)
row = st.columns([2, 3, 3])
if free_text or uploaded:
    st.session_state.at_direction = "t2i" if free_text else "i2t"  # a text searches the images, an image the texts
direction = row[0].radio(
    "Direction",
    list(DIRECTION_NAMES),
    format_func=DIRECTION_NAMES.get,
    key="at_direction",
    persist_state="session",
    disabled=bool(free_text or uploaded),
)


def _describe(item_id: str) -> str:
    i = row_of[item_id]
    return f"{item_id} · {names[gallery.labels[i]]} · {data.texts[i][:60]}"


if free_text:
    from chtn.tower import create_tower

    free_text = row[1].text_input("Query (free text)", key="at_free_text", max_chars=FREE_TEXT_MAX_CHARS)
    row[1].button("Use a test item as the query", on_click=st.session_state.update, kwargs={"at_free_text": ""})
    query_id, q = "free text", None
    query_vector = create_tower(ctx.checkpoint).embed_texts([free_text])[0]
elif uploaded is not None:
    from chtn.tower import create_tower

    row[1].image(open_rgb(uploaded), width=96, caption=f"Query: {uploaded.name}")
    row[1].button("Use a test item as the query", on_click=st.session_state.update, kwargs={"at_upload": ""})
    query_id, q = "uploaded image", None
    query_vector = create_tower(ctx.checkpoint).embed_images([uploaded])[0]
else:
    from chtn.search import query_side

    query_id = row[1].selectbox("Query", ids, key="at_query", format_func=_describe, persist_state="session")
    q = row_of[query_id]
    query_vector = query_side(gallery, direction)[0][q]
if st.session_state.get("at_result") not in ids:  # default: the query's top-1 result
    from chtn.search import retrieve

    top = retrieve(gallery, direction, query_vector, 1, names)
    st.session_state.at_result = ids[int(top.table.row[0])]
result_id = row[2].selectbox("Result", ids, key="at_result", format_func=_describe, persist_state="session")
r = row_of[result_id]
wrong = q is not None and gallery.labels[r] != gallery.labels[q]  # a free query has no category to be wrong about

with st.expander("Method and parameters", expanded=False):
    cols = st.columns(5)
    method = cols[0].selectbox(
        "Image method",
        list(IMAGE_METHODS),
        format_func=IMAGE_METHODS.get,
        key="at_method",
        persist_state="session",
    )
    baseline = cols[1].selectbox(
        "Baseline (IG, occlusion)",
        list(BASELINES),
        format_func=BASELINES.get,
        key="at_baseline",
        persist_state="session",
    )
    steps = cols[2].select_slider(
        "IG steps",
        [16, 32, 64, 128],
        value=32,
        key="at_steps",
        persist_state="session",
        help="Text attributions always use Layer IG with these steps.",
    )
    refine = cols[3].toggle(
        "Refine IG (up to 3× steps)",
        value=True,
        key="at_refine",
        persist_state="session",
        help="Halve the path segments whose own completeness gap is largest, within 3× the "
        "steps. Off: exactly the steps above, faster, larger gaps.",
    )
    contrast = cols[4].toggle(
        "Contrastive (wrong − correct)",
        key="contrast",
        bind="query-params",
        disabled=not wrong,
        help="For a mis-retrieval: attribute sim(query, this result) − sim(query, its own "
        "pair), i.e. what pulled the wrong item ahead.",
    )
if free_text:
    query_param = {"text": free_text}
elif uploaded is not None:
    query_param = {"upload": st.session_state.at_upload}
else:
    query_param = {"query": query_id}
for other in {"query", "text", "upload"} - set(query_param):  # the other kinds of query's parameters
    st.query_params.pop(other, None)
to_url("at", direction=direction, result=result_id, **query_param)
settings = Settings(method=method, baseline=baseline, n_steps=steps, refine=refine)
result_image, result_text = explainer_items(ids, data.texts, data.image_paths, r)
if uploaded is not None:  # an uploaded image against the result text, no own pair to compare with
    query_image, query_text = Item("image", str(uploaded), "uploaded image"), None
elif q is None:  # a free-text query: its words against the result image, no own pair to compare with
    query_image, query_text = None, Item("text", free_text, "free text")
else:
    query_image, query_text = explainer_items(ids, data.texts, data.image_paths, q)
if direction == "i2t":
    image_side, image_other, text_side, text_other = query_image, result_text, result_text, query_image
    image_contrast, text_contrast = (query_text if contrast and wrong else None), None
else:
    text_side, text_other, image_side, image_other = query_text, result_image, result_image, query_text
    text_contrast, image_contrast = (query_image if contrast and wrong else None), None


def _numbers(result, label: str) -> None:
    parts = [f"f = {result.value:.4f}"]
    if result.baseline_value is not None:
        parts.append(f"f(baseline) = {result.baseline_value:.4f}")
    if result.delta is not None:
        parts.append(f"convergence delta = {result.delta:.4f} ({result.n_steps} gradient evaluations)")
    st.caption(f"{label}: " + " · ".join(parts) + f" · {result.seconds:.2f} s")
    if result.baseline_value is not None and abs(result.value - result.baseline_value) < 0.1:
        st.info(
            f"The baseline alone already scores f = {result.baseline_value:.4f}: the attributions only explain "
            "the small difference to it. Try the other baseline.",
            icon=":material/info:",
        )
    elif result.delta_is_large():
        st.warning(
            f"IG's completeness gap ({result.delta:+.4f}) is over 5% of f(x) − f(baseline): the attributions "
            "do not add up to the change in similarity. Raise the number of steps.",
            icon=":material/warning:",
        )


def image_panel(result, picture_scale: float, heading: str, plain: str) -> None:
    """One image attribution: the map over the image, what it explains (contrastive or plain), its download and
    its numbers."""
    st.markdown(f"**{heading}**")
    picture = overlay(result, scale=picture_scale)
    original, mapped = st.columns(2)
    original.image(result.image, width="stretch", caption="In colour, as the model saw it")
    mapped.image(picture, width="stretch", caption=IMAGE_METHODS[result.method])
    st.caption(plain)
    st.download_button(
        "Download PNG",
        png_bytes(picture),
        file_name=f"attribution_{heading.split()[0].lower()}_{result.method}.png",
        mime="image/png",
        icon=":material/download:",
        key=f"at_png_{heading}",
    )
    _numbers(result, "image")


def text_panel(result, heading: str, plain: str) -> None:
    """One text attribution: highlighted words, what it explains, the strongest words and its numbers."""
    st.markdown(f"**{heading}**")
    st.html(highlighted_html(result.words, result.text))
    st.caption(plain)
    st.caption("Strongest words: " + ", ".join(f"{w} ({s:+.3f})" for w, s in top_words(result.words, 3)))
    _numbers(result, "text (Layer IG)")


@st.fragment
def explanation() -> None:
    """The pair's attributions; for a mis-retrieval, the query's own pair's beside them, so the room sees what
    differs. What the embeddings say (the pair, its verdict, both similarities) comes first, at once; then Grad-CAM
    and the text's Layer IG (about a second once the encoders are loaded); IG and the others on request (Method)."""
    if uploaded is not None:
        said, verdict = f"uploaded image “{uploaded.name}”", "no category, so no relevance"
    elif q is None:
        query_words = free_text if len(free_text) <= 80 else free_text[:77] + "…"
        said, verdict = f"free-text query “{query_words}”", "no category, so no relevance"
    else:
        said = f"query `{query_id}` ({names[gallery.labels[q]]})"
        verdict = ":red[not relevant — a mis-retrieval]" if wrong else ":green[relevant]"
    st.markdown(
        f"**{DIRECTION_NAMES[direction]}** · {said} → result `{result_id}` ({names[gallery.labels[r]]}) · {verdict}"
    )
    figures = st.columns(3)
    score = query_score(query_vector, gallery, direction, r)
    figures[0].metric("Similarity of the pair (cosine, common space)", f"{score:.4f}")
    if q is not None:
        figures[1].metric("Similarity of the query's own pair", f"{pair_score(gallery, direction, q, q):.4f}")
    try:
        with st.spinner("Loading the checkpoint's encoders…"):  # once per process: the tower is shared
            # Here, not at the top: it imports PyTorch (seconds on a new server), which the numbers above need not
            # wait for.
            from analysis.attribution.explainer import PairExplainer

            explain = PairExplainer(ctx.checkpoint)
        with st.spinner("Attributing the image…"):
            image_result = explain.explain(image_side, image_other, settings, image_contrast)
        with st.spinner("Attributing the text…"):
            text_result = explain.explain(text_side, text_other, settings, text_contrast)
        own = None
        if q is not None and r != q:
            with st.spinner("Attributing the query's own pair…"):
                own = (
                    explain.explain(query_image, query_text, settings),
                    explain.explain(query_text, query_image, settings),
                )
    except CHTNError as exc:
        st.error(str(exc), icon=":material/error:")
        return
    if image_result.target == "logits":
        figures[2].caption(
            "Grad-CAM follows the same similarity taken between the pre-softmax scores (fc10): for a "
            "confident pair the softmax is saturated and its gradient would leave the map blank."
        )
    plain = "Plain: what raises or lowers cos(query, result)."
    contrastive = "Contrastive: cos(query, this result) − cos(query, its own pair): what pulled the wrong item ahead."
    own_note = "Plain: what raises or lowers the similarity of the query's own image and text."
    image_what = "query" if direction == "i2t" else "result"
    st.subheader(f"Image ({image_what})" + (": the result is the query's own pair" if r == q else ""))
    scale = map_scale(image_result, *(own[:1] if own else ()))
    cols = st.columns(2)
    with cols[0]:
        image_panel(image_result, scale, f"Against the result {result_id}", contrastive if image_contrast else plain)
    if own:
        with cols[1]:
            image_panel(own[0], scale, f"Own pair: {query_id}'s image against its text", own_note)
    st.html(scale_html(method, scale))
    text_what, text_against = ("result", "the query image") if direction == "i2t" else ("query", "the result image")
    text_note = contrastive if text_contrast else plain
    if wrong and direction == "i2t":  # the contrast is on the query's side: the image
        text_note += " Not contrastive: another text has other words; the query's own text is beside it."
    st.subheader(f"Text ({text_what})")
    cols = st.columns(2)
    with cols[0]:
        text_panel(text_result, f"{text_what.capitalize()} text against {text_against}", text_note)
    if own:
        with cols[1]:
            text_panel(own[1], f"Own pair: {query_id}'s text against its image", own_note)
    st.html(legend_html())


explanation()
