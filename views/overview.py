"""Overview: the model card, MAP in both directions, AP per category, and every query's result."""
import plotly.express as px
import streamlit as st

from analysis.workspace import model_card
from views.common import context

ctx = context()
st.title("Overview")
st.caption(f"{len(ctx.gallery)} test pairs · query set = gallery · cosine · MAP over the full ranking "
           "(ties broken by gallery order)")

summary = ctx.report.summary()
col_i2t, col_t2i, col_mean = st.columns(3)
col_i2t.metric("MAP Image → Text", f"{summary['map_i2t']:.3f}")
col_t2i.metric("MAP Text → Image", f"{summary['map_t2i']:.3f}")
col_mean.metric("MAP average", f"{summary['map_mean']:.3f}")

with st.expander("Model card", expanded=True):
    card = model_card(ctx.checkpoint)
    st.table({"field": list(card), "value": [str(v) for v in card.values()]})

st.subheader("Average precision per category")
per_category = ctx.report.per_category().melt(id_vars=["category", "n"], value_vars=["ap_i2t", "ap_t2i"],
                                              var_name="direction", value_name="AP")
per_category["direction"] = per_category.direction.map({"ap_i2t": "Image → Text", "ap_t2i": "Text → Image"})
figure = px.bar(per_category, x="category", y="AP", color="direction", barmode="group", hover_data=["n"],
                range_y=[0, 1])
figure.update_layout(height=380, margin=dict(t=10, b=10), legend_title_text="")
st.plotly_chart(figure, width="stretch")

st.subheader("Every query")
per_query = ctx.report.per_query(ctx.gallery.data.ids, ctx.gallery.data.texts)
st.dataframe(per_query, width="stretch", hide_index=True, height=360,
             column_config={"ap": st.column_config.ProgressColumn("AP", min_value=0.0, max_value=1.0, format="%.3f"),
                            "paired_rank": st.column_config.NumberColumn("paired item rank")})
st.download_button("Download per-query CSV", per_query.to_csv(index=False).encode(), "per_query.csv", "text/csv")
