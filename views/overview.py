"""Overview: the model card, MAP and own-pair figures in both directions, AP per category, and every query's result.

Ranks and tie groups come from chtn.evaluate, which ranks with chtn.ranking like the explorer.
"""

import pandas as pd
import plotly.express as px
import streamlit as st

from analysis.compare.margin import baseline_command, baseline_margin, compare_command, find_baseline, margin_text
from analysis.workspace import category_ap, model_card
from chtn.directions import DIRECTION_NAMES, DIRECTIONS
from chtn.errors import CHTNError
from chtn.evaluate import EvaluationReport
from chtn.exports import csv_bytes
from chtn.metrics import METRICS, RECALL_AT
from chtn.ranking import TIE_TOLERANCE
from views.common import context, nearby_checkpoints, other_checkpoint

MARGIN_MAX_ITEMS = 5_000  # the card evaluates the baseline itself up to this split size (seconds on a CPU)
DIRECTION_COLOURS = ["#4C78A8", "#72B7B2"]  # two calm blues: no red for a figure that is not a warning


@st.cache_data(show_spinner="Bootstrapping each category's interval…", max_entries=8)
def category_intervals(checkpoint_digest: str, fingerprint: str, _report: EvaluationReport) -> pd.DataFrame:
    """Per-category AP with intervals, once per (checkpoint, test split): every session shares it."""
    return category_ap(_report)


ctx = context()
st.title("Overview")
st.caption(
    f"{len(ctx.gallery):,} test pairs · query set = gallery · cosine · MAP over the full ranking "
    "(ties broken by gallery order)"
)

summary = ctx.report.summary()
columns = st.columns(3)
for column, d in zip(columns, DIRECTIONS):
    column.metric(METRICS[f"map_{d}"].label(DIRECTION_NAMES), f"{summary[f'map_{d}']:.3f}")
columns[2].metric(METRICS["map"].headline(), f"{summary['map_mean']:.3f}")

TIE_RULE = (
    "Exactly tied items (equal scores) count in a random order: a pair tied with t others across the k-th place "
    "counts as the chance it lands in the top k (tie-aware expected values). The table's paired rank breaks ties "
    "by gallery order instead."
)
st.caption(
    "MAP asks whether a query's results are of its category; own-pair recall asks whether its one paired item (the "
    "image's own text, the text's own image) comes first among many items of that category, so it is far lower. "
    "Exact ties count in random order (McSherry & Najork 2008)."
)
for d in DIRECTIONS:
    col_r1, col_r10, col_median = st.columns(3)
    for column, k in zip((col_r1, col_r10), RECALL_AT):
        column.metric(
            METRICS[f"pair_recall@{k}_{d}"].label(DIRECTION_NAMES),
            f"{summary[f'pair_recall@{k}_{d}']:.3f}",
            help=TIE_RULE,
        )
    col_median.metric(
        METRICS[f"pair_median_rank_{d}"].label(DIRECTION_NAMES),
        f"{summary[f'pair_median_rank_{d}']:g}",
        help="Median over queries of the expected rank with exact ties in random order (lower is better); with "
        f"the table's gallery-order tie-break: {summary[f'pair_median_stable_rank_{d}']:g}.",
    )

with st.expander("Model card", expanded=True):
    card = model_card(ctx.checkpoint)
    st.table({"field": list(card), "value": [str(v) for v in card.values()]})
    margin_line = st.empty()  # filled at the end of the page: the baseline's evaluation must not hold up the rest

st.subheader("Average precision per category")
st.caption(
    "Lowest first. Bars: mean AP of the category's queries; whiskers: percentile bootstrap 95% interval over "
    "those queries (10,000 resamples, seed 0)."
)
per_category = category_intervals(ctx.checkpoint.digest, ctx.gallery.data.fingerprint(), ctx.report)
figure = px.bar(
    per_category,
    x="category",
    y="AP",
    color="direction",
    barmode="group",
    error_y=per_category["high"] - per_category["AP"],
    error_y_minus=per_category["AP"] - per_category["low"],
    hover_data={"n": True, "low": ":.3f", "high": ":.3f", "AP": ":.3f"},
    range_y=[0, 1.05],
    color_discrete_sequence=DIRECTION_COLOURS,
)
figure.update_layout(height=400, margin=dict(t=10, b=10), legend_title_text="")
st.plotly_chart(figure, width="stretch")

st.subheader("Every query")
st.caption(
    f"“tied with”: other items with the paired item's score to four decimals (rounded to the same multiple of "
    f"{TIE_TOLERANCE:g}); together they span the tie ranks, and their order there is not one the model made."
)
per_query = ctx.report.per_query(ctx.gallery.data.ids, ctx.gallery.data.texts)
number = st.column_config.NumberColumn
st.dataframe(
    per_query,
    width="stretch",
    hide_index=True,
    height=360,
    column_config={
        "ap": st.column_config.ProgressColumn("AP", min_value=0.0, max_value=1.0, format="%.3f", color="blue"),
        "paired_rank": number("paired item rank"),
        "paired_tied_with": number("tied with"),
        "paired_tie_first": number("tie ranks from"),
        "paired_tie_last": number("tie ranks to"),
        "paired_expected_rank": number(
            "rank, exact ties averaged",
            help="The middle of the ranks the pair shares with items scoring exactly as it does (the rule of the "
            "recall and median figures above); the tie ranks beside it span the items that agree with it to four "
            "decimals, a wider group.",
        ),
    },
)
st.download_button("Download per-query CSV", csv_bytes(per_query), "per_query.csv", "text/csv")


@st.cache_data(show_spinner=False, max_entries=16)
def margin(checkpoint_digest: str, baseline_digest: str, fingerprint: str, _ours, _theirs, _baseline) -> str:
    """The model card's line on the margin over the built-in baseline, once per (checkpoint, baseline, split)."""
    return margin_text(baseline_margin(_ours, _theirs), _baseline)


baseline = find_baseline(ctx.checkpoint, nearby_checkpoints(ctx.checkpoint))
if baseline is None:
    if ctx.checkpoint.config.model.architecture == "chtn":
        command = baseline_command(ctx.checkpoint, ctx.data_path, ctx.skip_invalid)
        margin_line.caption(
            f"No built-in baseline of this dataset beside the checkpoint: `{command}` fits one on this dataset's "
            "training pairs, and this card then shows CHTN's margin over it."
        )
elif len(ctx.gallery) > MARGIN_MAX_ITEMS:  # its evaluation would be a second full ranking of a large split
    command = compare_command(baseline, ctx.checkpoint, ctx.data_path, ctx.skip_invalid)
    margin_line.caption(
        f"The built-in baseline {baseline.path.name} is beside this checkpoint; on a split this large the margin "
        f"over it comes from `{command}`."
    )
else:  # last: while the baseline's split is evaluated for the first time, only this line waits (and says so)
    try:
        _, _, baseline_report = other_checkpoint(str(baseline.path), ctx)
    except CHTNError as exc:
        margin_line.caption(f"The built-in baseline {baseline.path.name} beside this checkpoint cannot be used: {exc}")
    else:
        line = margin(
            ctx.checkpoint.digest,
            baseline.digest,
            ctx.gallery.data.fingerprint(),
            ctx.report,
            baseline_report,
            baseline,
        )
        margin_line.markdown(f"**Margin over the built-in baseline:** {line}")
