"""The shared-space map as things to look at: the plotly scatter, its colours and its toolbar room."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

OUTCOME_COLOURS = {"mis-retrieved": "#d62728", "top-1 correct": "#c7c7c7"}  # the errors stand out, red on grey
SYMBOLS = {"image": "circle", "text": "diamond"}  # the marker of each modality
MODEBAR_ROOM = 40  # px above the plot for plotly's toolbar, so that it never covers the legend's first entries
WEBGL_ABOVE = 1000  # points: a larger map is drawn with WebGL, a smaller one as SVG (plotly express's own rule)


def category_colours(names: Sequence[str]) -> dict[str, str]:
    """A distinct colour per category, in order (plotly's Dark24 then Light24: 48 before any repeats). Ten colours
    for twenty categories made neighbours such as T-shirts and Sweaters share one."""
    from plotly.colors import qualitative

    palette = qualitative.Dark24 + qualitative.Light24
    return {name: palette[i % len(palette)] for i, name in enumerate(names)}


def scatter_figure(table: pd.DataFrame, colour: str, height: int = 620, focus: pd.Series | None = None):
    """Scatter of `points_table` rows: a colour per value of the `colour` column (one legend entry each, in order
    of first appearance), a shape per modality (● image, ◆ text).

    `customdata` starts with (row, modality), so a selection maps back to items; the rest feeds the hover text.
    `focus` (one row of the table) is ringed and the view centred on it, a tenth of the map's extent around it.
    Built from plotly's graph objects, not plotly express: express spent 0.12 s on the sample's 800 points (0.3-0.5 s
    on a server busy sending a new browser the page's files), on the way to the page's main answer. One trace per
    colour and modality, each with one symbol: plotly checks a list of symbols one point at a time (0.4 s at 20,000).
    """
    import plotly.graph_objects as go
    from plotly.colors import DEFAULT_PLOTLY_COLORS

    values = pd.unique(table[colour])
    colours = {"category": category_colours(sorted(table["category"].unique())), "outcome": OUTCOME_COLOURS}.get(
        colour, {value: DEFAULT_PLOTLY_COLORS[i % len(DEFAULT_PLOTLY_COLORS)] for i, value in enumerate(values)}
    )
    # WebGL above WEBGL_ABOVE points; below, SVG draws at once, where a browser's first WebGL plot costs it more (the
    # sample's 800 points: 1.1-1.3 s from the page's text to the map drawn, against 1.3-1.6 s in WebGL, headless
    # chromium on 2 cores)
    trace = go.Scattergl if len(table) > WEBGL_ABOVE else go.Scatter
    hover = "<b>%{customdata[2]}</b> (%{customdata[1]})<br>%{customdata[3]}<br>%{customdata[4]}<br>%{customdata[5]}"
    traces: list[go.Scattergl | go.Scatter] = []
    for value, group in table.groupby(colour, sort=False):
        for modality, symbol in SYMBOLS.items():
            points = group[group["modality"] == modality]
            if len(points):
                traces.append(
                    trace(
                        x=points["x"].to_numpy(),
                        y=points["y"].to_numpy(),
                        mode="markers",
                        name=str(value),
                        legendgroup=str(value),  # the legend shows and hides a colour's images and texts together
                        showlegend=not traces or traces[-1].legendgroup != str(value),
                        marker=dict(color=colours.get(value), size=6, opacity=0.8, symbol=symbol),
                        customdata=points[["row", "modality", "id", "category", "title", "outcome"]].to_numpy(object),
                        hovertemplate=hover + "<extra></extra>",
                    )
                )
    figure = go.Figure(traces)
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
