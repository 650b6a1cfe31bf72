"""Why did this query retrieve this result? Heatmap on the image, highlighted words on the text.

Opened from the "Explain" link under any result in the retrieval explorer; the URL carries the pair
(checkpoint, direction, query id, result id) and `contrast=true`, so a shared link reopens the same explanation.
"""

import streamlit as st

from analysis.attribution.explainer import PairExplainer, explainer_items
from analysis.attribution.render import highlighted_html, legend_html, overlay, png_bytes, top_words
from analysis.attribution.types import BASELINES, IMAGE_METHODS, Settings
from analysis.explorer import pair_score
from chtn.directions import DIRECTION_NAMES
from chtn.errors import CHTNError
from views.common import context, from_link, legacy_flag, to_url

ctx = context()
data, gallery, names = ctx.gallery.data, ctx.gallery, ctx.label_names
ids = data.ids
row_of = {item_id: row for row, item_id in enumerate(ids)}


# The query and the result are ids, shown with their category and text, so no widget's value is the URL's id, and the
# direction travels in the explorer's links (never bound: see views.common): the page writes the three itself. A
# link's pair wins over the session's; a link without a result opens the query's top one, contrastive only if it says.
if (linked_direction := from_link("at", "direction", DIRECTION_NAMES)) is not None:
    st.session_state.at_direction = linked_direction
if (query_link := from_link("at", "query", row_of)) is not None:
    st.session_state.at_query, st.session_state.at_result, st.session_state.contrast = query_link, None, False
if (result_link := from_link("at", "result", row_of)) is not None:
    st.session_state.at_result = result_link
legacy_flag("contrast")

st.title("Why this result?")
st.caption(
    "Attributions of the similarity of one query–result pair in the common space: on the image with the "
    "text held fixed, and on the text with the image held fixed (Captum)."
)
row = st.columns([2, 3, 3])
direction = row[0].radio(
    "Direction", list(DIRECTION_NAMES), format_func=DIRECTION_NAMES.get, key="at_direction", persist_state="session"
)


def _describe(item_id: str) -> str:
    i = row_of[item_id]
    return f"{item_id} · {names[gallery.labels[i]]} · {data.texts[i][:60]}"


query_id = row[1].selectbox("Query", ids, key="at_query", format_func=_describe, persist_state="session")
q = row_of[query_id]
if st.session_state.get("at_result") not in ids:  # default: the query's top-1 result
    from chtn.search import query_side, retrieve

    top = retrieve(gallery, direction, query_side(gallery, direction)[0][q], 1, names)
    st.session_state.at_result = ids[int(top.table.row[0])]
result_id = row[2].selectbox("Result", ids, key="at_result", format_func=_describe, persist_state="session")
r = row_of[result_id]
wrong = gallery.labels[r] != gallery.labels[q]

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
to_url("at", direction=direction, query=query_id, result=result_id)
settings = Settings(method=method, baseline=baseline, n_steps=steps, refine=refine)
query_image, query_text = explainer_items(ids, data.texts, data.image_paths, q)
result_image, result_text = explainer_items(ids, data.texts, data.image_paths, r)
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


@st.fragment
def explanation() -> None:
    with st.spinner("Loading the checkpoint's encoders…"):  # once per process: the tower is shared
        explain = PairExplainer(ctx.checkpoint)
    verdict = ":red[not relevant — a mis-retrieval]" if wrong else ":green[relevant]"
    st.markdown(
        f"**{DIRECTION_NAMES[direction]}** · query `{query_id}` ({names[gallery.labels[q]]}) → result "
        f"`{result_id}` ({names[gallery.labels[r]]}) · {verdict}"
    )
    try:
        with st.spinner("Attributing the image…"):
            image_result = explain.explain(image_side, image_other, settings, image_contrast)
        with st.spinner("Attributing the text…"):
            text_result = explain.explain(text_side, text_other, settings, text_contrast)
    except CHTNError as exc:
        st.error(str(exc), icon=":material/error:")
        return
    st.metric("Similarity of the pair (cosine, common space)", f"{pair_score(gallery, direction, q, r):.4f}")
    left, right = st.columns(2)
    with left:
        st.subheader(f"Image ({'query' if direction == 'i2t' else 'result'})")
        picture = overlay(image_result)
        st.image(
            picture, caption=f"{IMAGE_METHODS[method]}" + (" · contrastive" if image_contrast else ""), width="stretch"
        )
        st.download_button(
            "Download PNG",
            png_bytes(picture),
            file_name=f"attribution_{image_side.name}_{method}.png",
            mime="image/png",
            icon=":material/download:",
        )
        _numbers(image_result, "image")
        if image_result.target == "logits":
            st.caption(
                "Grad-CAM follows the same similarity taken between the pre-softmax scores (fc10): for a "
                "confident pair the softmax is saturated and its gradient would leave the map blank."
            )
    with right:
        st.subheader(f"Text ({'result' if direction == 'i2t' else 'query'})")
        st.html(highlighted_html(text_result.words, text_result.text))
        st.html(legend_html())
        st.caption("Strongest words: " + ", ".join(f"{w} ({s:+.3f})" for w, s in top_words(text_result.words, 3)))
        _numbers(text_result, "text (Layer IG)" + (" · contrastive" if text_contrast else ""))


explanation()
