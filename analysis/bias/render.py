"""The source-bias report as things to read: one row per category, plotly figures, plain statements, and a
self-contained HTML file (plots and plotly.js embedded: it opens offline). The page and the CLI use these."""

from __future__ import annotations

import html
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from analysis.bias.gain import FDR, HELPED, HURT, INSUFFICIENT, NEGLIGIBLE, NO_EFFECT
from analysis.bias.report import BiasReport
from analysis.stats import format_p, interval_label
from chtn.directions import ARROWS, DIRECTIONS, Direction
from chtn.exports import REPORT_TEMPLATE, write_csv

if TYPE_CHECKING:  # plotly is imported where a figure is drawn: importing this module stays cheap
    import plotly.graph_objects as go

FLAG_COLOURS = {
    HELPED: "#2e7d32",
    HURT: "#c62828",
    NEGLIGIBLE: "#78909c",
    NO_EFFECT: "#9e9e9e",
    INSUFFICIENT: "#f9a825",
}


def gate_statement(report: BiasReport) -> tuple[str, str]:
    """(level, sentence) about the training's domain gate: "warning" when it switched the source off or down."""
    gate = report.gate
    if not gate:
        return "info", "The checkpoint records no domain gate (trained without a source, or by an older version)."
    relevance, auc = float(gate.get("relevance", 1.0)), float(gate.get("auc", float("nan")))
    if relevance <= 0.0:
        return "warning", (
            f"Training switched the source off: a domain classifier told source from target images with AUC "
            f"{auc:.2f}, so the source terms were scaled by {relevance:.2f}. The gain column measures a model that "
            "transferred nothing (differences are those of two training runs), not a harmless transfer."
        )
    if relevance < 1.0:
        return "warning", (
            f"Training scaled the source down to {relevance:.2f} of its weight (domain classifier AUC {auc:.2f}): "
            "the gain shows what the reduced transfer did."
        )
    return "info", (
        f"The source looked like the target to the domain gate (AUC {auc:.2f}); its terms were trained at full weight."
    )


def inputs_statement(report: BiasReport, images_pending: bool = False) -> str:
    """What every number was computed from, for a caption and the report's header; `images_pending`: the report
    holds the embeddings' tables only, and the rest is being computed (the source is not yet described)."""
    s = report.settings
    source = report.source
    test = (
        "Welch's t 95% CI and p across training runs"
        if report.runs and report.reference_runs
        else f"paired bootstrap 95% CI and sign-flip randomization test, {s.resamples:,} resamples, seed {s.seed}"
    )
    parts = [
        f"checkpoint {report.checkpoint}",
        f"reference {report.reference}" if report.reference else "no reference",
        f"other runs of the checkpoint's recipe: {', '.join(report.runs) or 'none'}",
        f"other runs of the reference's recipe: {', '.join(report.reference_runs) or 'none'}",
        f"test split {report.dataset}",
        f"source {source['path']} ({source['images']} images, {source['classes']} classes)"
        if source
        else ("source: being read" if images_pending else "no source"),
        f"gain: {test}, Benjamini-Hochberg q = {FDR} over categories x directions, fewer than {s.min_queries} "
        f"queries = insufficient evidence, a significant |ΔAP| below {s.min_effect:g} = negligible effect",
        f"MMD: CHTN's Gaussian kernel rule, {s.permutations} permutations, up to {s.max_source_images} source "
        "images per category; trunk = frozen image trunk, fc6/fc7 = the checkpoint's image stream",
    ]
    return "; ".join(parts) + "."


def pending_statement(has_reference: bool, has_source: bool) -> str:
    """What the page shows while the diagnostics that need images compute: which figures are final, which follow."""
    ready = "The transfer gain, confusions and modality gap" if has_reference else "The confusions and modality gap"
    images = "The ImageNet prior of the test images" + (
        " and the source's coverage, capture and domain discrepancy" if has_source else ""
    )
    return (
        f"{ready} below are complete. {images} need image features: they compute in the background (shared by "
        "everyone who opens this report) and appear here by themselves."
    )


def flags_statement(report: BiasReport) -> str:
    """How a flag is decided, how it differs from the CI beside it and from Compare's wording, and what one run per
    side can and cannot say."""
    s = report.settings
    return (
        f"A flag needs a Benjamini-Hochberg-adjusted q ≤ {FDR:g} across all categories × directions and "
        f"|ΔAP| ≥ {s.min_effect:g} (a significant smaller change is a negligible effect); the CI beside it is the "
        "slice's own unadjusted 95% interval, so a CI that excludes 0 can still be 'no detectable effect'. Compare "
        "checkpoints is stricter because it can block a release: a per-category loss counts there when its "
        "Holm-adjusted p < 0.05, and it warns only beyond the rule file's tolerance (−0.05 AP by default)."
    )


def runs_statement(report: BiasReport) -> str:
    """What the flags compare, said beside them: two checkpoints, or two recipes across their training runs."""
    mine, theirs = 1 + len(report.runs), 1 + len(report.reference_runs)
    if min(mine, theirs) >= 2:
        return (
            f"The flags compare the two recipes: {mine} training runs with the source against {theirs} without it, "
            "each category tested across runs (Welch's t), so training-seed variance is counted."
        )
    return (
        f"The flags compare these two checkpoints ({mine} run{'s' if mine > 1 else ''} with the source, {theirs} "
        "without), not the recipes: the intervals resample test queries only, and retraining either side with "
        "another seed moves many flags. Give 2 or more runs per side (3 for a decision) to compare the recipes."
    )


def category_table(report: BiasReport) -> pd.DataFrame:
    """One row per target category with the headline figure of every diagnostic the report holds."""
    tables = report.tables
    frames = []
    if "gain" in tables:
        gain = tables["gain"]
        for direction, arrow in ARROWS.items():
            part = gain[gain["direction"] == direction].set_index("category")
            frames.append(
                pd.DataFrame(
                    {
                        f"ΔAP {arrow}": part["ΔAP"],
                        f"CI {arrow}": [f"[{lo:+.3f}, {hi:+.3f}]" for lo, hi in zip(part["ci_low"], part["ci_high"])],
                        f"q {arrow}": [format_p(q) for q in part["p_adjusted"]],
                        f"flag {arrow}": part["flag"],
                        f"n {arrow}": part["n"],
                    }
                )
            )
    if "coverage" in tables:
        best = tables["coverage"].query("rank == 1").set_index("category")
        frames.append(
            best[["source class", "match", "similarity", "source images"]].rename(
                columns={"source class": "covering source class", "similarity": "coverage"}
            )
        )
    if "capture_summary" in tables:
        frames.append(tables["capture_summary"].set_index("category"))
    if "discrepancy" in tables:
        columns = ["MMD² trunk", "MMD p trunk", "MMD² fc7", "MMD p fc7", "A-distance", "gate P(target)"]
        frames.append(tables["discrepancy"].set_index("category")[columns])
    if "prior" in tables:
        frames.append(tables["prior"].set_index("category"))
    if "gap" in tables:
        frames.append(
            tables["gap"].set_index("category")[["centroid distance"]].rename(columns=lambda c: "image-text gap")
        )
    table = pd.concat(frames, axis=1) if frames else pd.DataFrame()
    return table.rename_axis("category").reset_index()


def gain_figure(report: BiasReport):
    """ΔAP per category with its 95% CI, one panel per direction, coloured by flag (a forest plot). Categories are
    sorted by their ΔAP averaged over both directions, largest loss on top; a filled marker is significant after
    BH (q <= FDR), an open one is not."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    gain = report.tables["gain"]
    order = gain.groupby("category")["ΔAP"].mean().sort_values(kind="stable").index.tolist()
    figure = make_subplots(rows=1, cols=2, shared_yaxes=True, subplot_titles=[f"ΔAP {a}" for a in ARROWS.values()])
    in_legend: set[str] = set()
    for col, direction in enumerate(ARROWS, start=1):
        part = gain[gain["direction"] == direction]
        for flag, colour in FLAG_COLOURS.items():
            rows = part[part["flag"] == flag]
            if rows.empty:
                continue
            significant = rows["p_adjusted"].le(FDR) & (flag != INSUFFICIENT)
            figure.add_trace(
                go.Scatter(
                    x=rows["ΔAP"],
                    y=rows["category"],
                    mode="markers",
                    marker=dict(color=colour, size=9, symbol=np.where(significant, "circle", "circle-open")),
                    error_x=dict(
                        type="data",
                        symmetric=False,
                        array=rows["ci_high"] - rows["ΔAP"],
                        arrayminus=rows["ΔAP"] - rows["ci_low"],
                    ),
                    name=flag,
                    legendgroup=flag,
                    showlegend=flag not in in_legend,
                    customdata=np.stack([rows["n"], [format_p(q) for q in rows["p_adjusted"]]], axis=1),
                    hovertemplate="%{y}: ΔAP %{x:+.3f} (n %{customdata[0]}, q %{customdata[1]})<extra></extra>",
                ),
                row=1,
                col=col,
            )
            in_legend.add(flag)
        figure.add_vline(x=0, line=dict(color="#555", width=1), row=1, col=col)
    figure.update_yaxes(categoryorder="array", categoryarray=order, autorange="reversed")
    figure.update_layout(
        height=max(360, 22 * gain["category"].nunique() + 120),
        margin=dict(l=10, r=10, t=40, b=70),
        annotations=[
            *figure.layout.annotations,
            dict(
                text=f"filled: BH q ≤ {FDR:g}; open: not; bars: {interval_label(gain['unit'])} (unadjusted)",
                xref="paper",
                yref="paper",
                x=0,
                y=0,
                yshift=-36,  # pixels below the tick labels, whatever the figure's height
                yanchor="top",
                showarrow=False,
                font=dict(size=11, color="#555"),
            ),
        ],
    )
    return figure


def gain_vs_figure(table: pd.DataFrame, proxy: str):
    """Mean ΔAP over both directions against a transferability proxy (coverage, MMD, A-distance), per category."""
    import plotly.express as px

    frame = table.assign(**{"mean ΔAP": table[[f"ΔAP {a}" for a in ARROWS.values()]].mean(axis=1)})
    return px.scatter(frame, x=proxy, y="mean ΔAP", hover_name="category", title=f"Gain vs {proxy} (indicative)")


def heatmap_figure(matrix: pd.DataFrame, title: str, x_title: str):
    """A category x class share matrix (capture, confusions) as a heatmap with percentages on hover."""
    import plotly.express as px

    figure = px.imshow(
        matrix,
        color_continuous_scale="Blues",
        zmin=0,
        zmax=1,
        aspect="auto",
        labels=dict(x=x_title, y="target category", color="share"),
        title=title,
    )
    figure.update_layout(height=max(360, 22 * len(matrix) + 140), margin=dict(l=10, r=10, t=50, b=10))
    return figure


def confusion_matrix(report: BiasReport, direction: Direction, column: str = "rank-1 share") -> pd.DataFrame:
    table = report.tables["confusions"]
    part = table[table["direction"] == ARROWS[direction]]
    return part.pivot(index="query category", columns="retrieved category", values=column)


def figures(report: BiasReport) -> dict[str, go.Figure]:
    """Every figure the report can show, by title (those whose inputs it lacks are left out)."""
    table = category_table(report)
    shown: dict[str, go.Figure] = {}
    if "gain" in report.tables:
        shown["Transfer gain per category (95% CI)"] = gain_figure(report)
        for proxy in ("coverage", "MMD² trunk", "A-distance"):
            if proxy in table:
                shown[f"Gain vs {proxy}"] = gain_vs_figure(table, proxy)
    if "capture" in report.tables:
        shown["Source capture"] = heatmap_figure(
            report.tables["capture"], "Source classes the checkpoint's source classifier assigns", "source class"
        )
    for direction in DIRECTIONS:
        arrow = ARROWS[direction]
        shown[f"Confusions {arrow} (rank 1)"] = heatmap_figure(
            confusion_matrix(report, direction), f"Where {arrow} queries land at rank 1", "retrieved category"
        )
    return shown


def report_html(report: BiasReport, title: str) -> str:
    """A self-contained page: statements, the category table and every figure, plotly.js inlined once."""
    level, gate = gate_statement(report)
    parts = [
        f"<h1>{html.escape(title)}</h1>",
        f"<p class='{level}'><b>Domain gate.</b> {html.escape(gate)}</p>",
        *[f"<p class='warning'>{html.escape(note)}</p>" for note in report.notes],
        f"<p class='inputs'>{html.escape(inputs_statement(report))}</p>",
        "<p>ΔAP (checkpoint minus a reference trained without the source) is the direct evidence; coverage, capture, "
        "MMD, A-distance and the ImageNet prior are indicative transferability proxies.</p>",
        f"<p><b>{html.escape(runs_statement(report))}</b> {html.escape(flags_statement(report))}</p>"
        if "gain" in report.tables
        else "",
        category_table(report).to_html(index=False, float_format=lambda v: f"{v:.3f}", border=0),
    ]
    for number, (name, figure) in enumerate(figures(report).items()):
        parts.append(f"<h2>{html.escape(name)}</h2>")
        figure.update_layout(template=REPORT_TEMPLATE)
        parts.append(figure.to_html(full_html=False, include_plotlyjs="inline" if number == 0 else False))
    style = (
        "body{font-family:sans-serif;margin:2em;max-width:1400px}table{border-collapse:collapse;font-size:12px}"
        "td,th{padding:2px 6px;border-bottom:1px solid #ddd}.warning{background:#fff3e0;padding:.5em}"
        ".inputs{color:#555;font-size:12px}"
    )
    return (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{style}</style></head><body>{''.join(parts)}</body></html>"
    )


def write_report(report: BiasReport, out: Path, title: str) -> list[Path]:
    """CSV per table, the category table, report.json and report.html under `out`; returns the files written."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, table in {"categories": category_table(report), **report.tables}.items():
        path = out / f"{name}.csv"
        write_csv(table.rename_axis("category").reset_index() if name == "capture" else table, path)
        written.append(path)
    for name, text in (("report.json", report.to_json()), ("report.html", report_html(report, title))):
        (out / name).write_text(text, encoding="utf-8")
        written.append(out / name)
    return written
