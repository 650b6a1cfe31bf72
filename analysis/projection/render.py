"""The shared-space map as things to look at: the plotly scatter, its colours and its toolbar room."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

OUTCOME_COLOURS = {"mis-retrieved": "#d62728", "top-1 correct": "#c7c7c7"}  # the errors stand out, red on grey
MODEBAR_ROOM = 40  # px above the plot for plotly's toolbar, so that it never covers the legend's first entries


def category_colours(names: Sequence[str]) -> dict[str, str]:
    """A distinct colour per category, in order (plotly's Dark24 then Light24: 48 before any repeats). Ten colours
    for twenty categories made neighbours such as T-shirts and Sweaters share one."""
    from plotly.express.colors import qualitative

    palette = qualitative.Dark24 + qualitative.Light24
    return {name: palette[i % len(palette)] for i, name in enumerate(names)}


def scatter_figure(table: pd.DataFrame, colour: str, height: int = 620, focus: pd.Series | None = None):
    """WebGL scatter of `points_table` rows: colour by a column, shape by modality (● image, ◆ text).

    The legend lists the colours only; `custom_data` carries (row, modality) so a selection maps back to items.
    `focus` (one row of the table) is ringed and the view centred on it, a tenth of the map's extent around it.
    """
    import plotly.express as px

    colours = {"category": category_colours(sorted(table["category"].unique())), "outcome": OUTCOME_COLOURS}
    figure = px.scatter(
        table,
        x="x",
        y="y",
        color=colour,
        color_discrete_map=colours.get(colour, {}),
        render_mode="webgl",
        custom_data=["row", "modality"],
        hover_data={
            "x": False,
            "y": False,
            "id": True,
            "category": True,
            "title": True,
            "modality": True,
            "outcome": True,
        },
    )
    figure.for_each_trace(
        lambda trace: trace.update(
            marker=dict(
                size=6, opacity=0.8, symbol=["circle" if m == "image" else "diamond" for m in trace.customdata[:, 1]]
            )
        )
    )
    figure.update_layout(
        height=height,
        margin=dict(t=MODEBAR_ROOM, b=10, l=10, r=10),
        legend_title_text="",
        dragmode="lasso",
        xaxis=dict(visible=False),
        yaxis=dict(visible=False),
    )
    if focus is not None:
        figure.add_scatter(
            x=[focus["x"]],
            y=[focus["y"]],
            mode="markers+text",
            marker=dict(size=22, color="rgba(0,0,0,0)", line=dict(width=3, color="black")),
            text=[f"{focus['id']} ({focus['modality']})"],
            textposition="top center",
            name="focus",
            showlegend=False,
            hoverinfo="skip",
        )
        span_x, span_y = (table["x"].max() - table["x"].min()) / 10, (table["y"].max() - table["y"].min()) / 10
        figure.update_xaxes(range=[focus["x"] - span_x, focus["x"] + span_x])
        figure.update_yaxes(range=[focus["y"] - span_y, focus["y"] + span_y])
    return figure
