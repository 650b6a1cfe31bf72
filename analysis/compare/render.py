"""A checkpoint comparison as things to read: the headline table, the per-category forest plot, the aligned shared
spaces, and the self-contained report (HTML with plots embedded; JSON laid out like a model card). The page and
`chtn compare` use these."""

from __future__ import annotations

import hashlib
import html
import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.compare.figures import Comparison, Outcome
from analysis.compare.rules import ALPHA, rules_table
from analysis.stats import format_p, interval_label
from chtn.data import PairDataset
from chtn.directions import ARROWS
from chtn.exports import REPORT_TEMPLATE, csv_bytes
from chtn.images import thumbnail_uris
from chtn.metrics import METRICS


def headline_table(figures: pd.DataFrame) -> pd.DataFrame:
    """The overall figures, one row per metric, as the page and the report show them."""
    overall = figures[figures["slice"] == "overall"].set_index("metric").reindex(list(METRICS)).dropna(how="all")
    overall = overall.reset_index()
    return pd.DataFrame(
        {
            "metric": overall["metric"].map(lambda name: METRICS[name].headline()),
            "baseline A": overall["baseline"],
            "candidate B": overall["candidate"],
            "B − A": overall["delta"],
            "95% CI": [_interval(lo, hi) for lo, hi in zip(overall["ci_low"], overall["ci_high"])],
            "relative": overall["relative"],
            "p": [format_p(p) for p in overall["p_value"]],  # randomization, or Welch's t across runs
            "effect size d": ["n/a" if d != d else f"{d:+.2f}" for d in overall["effect_size"].astype(float)],
            "wins / ties / losses": [f"{w} / {t} / {x}" for w, t, x in zip(overall.wins, overall.ties, overall.losses)],
        }
    ).reset_index(drop=True)


def category_table(figures: pd.DataFrame) -> pd.DataFrame:
    """Per category and direction: ΔAP with its CI, Holm-adjusted p, and whether there is enough evidence."""
    rows = figures[figures["slice"].str.startswith("category:") & figures["metric"].str.startswith("map_")]
    return pd.DataFrame(
        {
            "category": rows["slice"].str.removeprefix("category:"),
            "direction": rows["direction"].map(ARROWS),
            "n": rows["n"],
            "AP A": rows["baseline"],
            "AP B": rows["candidate"],
            "ΔAP": rows["delta"],
            "95% CI": [_interval(lo, hi) for lo, hi in zip(rows["ci_low"], rows["ci_high"])],
            "p (Holm)": [format_p(p) for p in rows["p_holm"]],
            "evidence": np.where(rows["insufficient"], "insufficient (n < 20)", ""),
        }
    ).reset_index(drop=True)


def method_note(comparison: Comparison) -> str:
    """How the headline figures' intervals and p-values were computed, under the headline table."""
    if comparison.of_recipes:
        return (
            "B − A over the identical queries, each side's runs averaged per query. 95% CI and p: Welch's t across "
            "the training runs; d: mean difference / its sd over queries. Own-pair recall counts exactly tied items "
            "in random order."
        )
    return (
        "B − A over the identical queries. 95% CI and p: a bootstrap and a sign-flip randomization test that resample "
        "whole categories for the overall figures (exact up to 20) and queries within a category; d: mean difference "
        "/ its sd over queries. Own-pair recall counts exactly tied items in random order."
    )


def _interval(low: float, high: float) -> str:
    return "n/a" if np.isnan(low) else f"[{low:+.3f}, {high:+.3f}]"


def forest_figure(figures: pd.DataFrame):
    """ΔAP per category and direction with its 95% CI (Holm-adjusted p on hover), zero marked. Categories are sorted
    by their ΔAP averaged over both directions, largest loss on top; a filled marker is significant after Holm
    (p < ALPHA), an open one is not."""
    import plotly.graph_objects as go

    rows = figures[figures["slice"].str.startswith("category:") & figures["metric"].str.startswith("map_")]
    names = rows["slice"].str.removeprefix("category:")
    order = rows.groupby(names)["delta"].mean().sort_values(kind="stable").index.tolist()
    figure = go.Figure()
    for direction, colour in (("i2t", "#1565c0"), ("t2i", "#ef6c00")):
        part = rows[rows["direction"] == direction]
        significant = part["p_holm"].lt(ALPHA) & ~part["insufficient"].astype(bool)
        figure.add_scatter(
            x=part["delta"],
            y=part["slice"].str.removeprefix("category:"),
            mode="markers",
            name=ARROWS[direction],
            marker=dict(color=colour, size=8, symbol=np.where(significant, "circle", "circle-open")),
            error_x=dict(
                type="data",
                symmetric=False,
                array=(part["ci_high"] - part["delta"]).to_numpy(),
                arrayminus=(part["delta"] - part["ci_low"]).to_numpy(),
            ),
            customdata=np.stack([part["n"], [format_p(p) for p in part["p_holm"]]], axis=1),
            hovertemplate="%{y}: ΔAP %{x:+.3f}<br>n %{customdata[0]} · Holm p %{customdata[1]}<extra>"
            + ARROWS[direction]
            + "</extra>",
        )
    figure.add_vline(x=0, line=dict(color="#555", dash="dot"))
    figure.update_layout(
        height=max(320, 24 * rows["slice"].nunique()),
        margin=dict(t=30, b=10, l=10, r=10),
        xaxis_title=f"ΔAP (B − A), {interval_label(rows['unit'])}<br>filled: Holm p < {ALPHA:g}; open: not",
        yaxis=dict(categoryorder="array", categoryarray=order, autorange="reversed", automargin=True),
        legend=dict(orientation="h", x=0, y=1, yanchor="bottom"),
    )
    return figure


@dataclass(frozen=True)
class ReportContext:
    """What a comparison report is about, written into it so that it stands on its own."""

    baseline_name: str
    baseline: str  # content hash
    candidate_name: str
    candidate: str
    dataset_path: str
    dataset: str  # fingerprint
    strict: bool
    generated_at: str  # ISO-8601 UTC
    code_version: str

    @property
    def file_stem(self) -> str:
        """`compare_<baseline>_vs_<candidate>`, in characters safe in any file system: the downloads of two
        comparisons never overwrite each other."""
        return re.sub(r"[^A-Za-z0-9._-]+", "-", f"compare_{self.baseline_name}_vs_{self.candidate_name}")


def changed_queries(queries: pd.DataFrame, change: str) -> pd.DataFrame:
    """The queries B fixed or broke (or made better / worse), largest AP change first."""
    rows = queries[queries["change"] == change]
    rows = rows.sort_values("ap_change", ascending=change in ("broken", "worse"), kind="stable")
    return rows[["query_id", "direction", "category", "ap_a", "ap_b", "ap_change", "own_rank_a", "own_rank_b"]]


def side_by_side(query: pd.Series) -> pd.DataFrame:
    """One changed query as A and B see it: AP, own-pair rank and the top-1 result (id, category, score, and whether
    it is relevant: same category), one column per checkpoint, for the regression card."""
    sides = {}
    for side, name in (("a", "A (baseline)"), ("b", "B (candidate)")):
        sides[name] = {
            "AP": f"{query[f'ap_{side}']:.3f}",
            "own-pair rank": str(int(query[f"own_rank_{side}"])),
            "top-1": str(query[f"top1_id_{side}"]),
            "top-1 category": str(query[f"top1_category_{side}"])
            + (" (relevant)" if query[f"top1_category_{side}"] == query["category"] else " (not relevant)"),
            "top-1 score": f"{query[f'top1_score_{side}']:.4f}",
        }
    return pd.DataFrame(sides)


def report_document(
    outcome: Outcome, context: ReportContext, decisions: list[dict], notes: list[dict], verdict_counts: dict
) -> dict:
    """The comparison as a JSON document laid out like a model card: details, quantitative analysis (every figure
    with its interval), the gate, considerations (reviewers' notes on B's regressions) and the decision log."""
    comparison, rules = outcome.comparison, outcome.rules
    metrics = []
    for row in comparison.figures.to_dict("records"):
        metrics.append(
            {
                "type": row["metric"],
                "slice": row["slice"],
                "value": row["candidate"],
                "baseline_value": row["baseline"],
                "change": row["delta"],
                "relative_change": row["relative"],
                "confidence_interval": {"lower_bound": row["ci_low"], "upper_bound": row["ci_high"], "level": 0.95},
                "p_value": row["p_value"],
                "p_holm": row["p_holm"],
                "effect_size": row["effect_size"],
                "wins": row["wins"],
                "ties": row["ties"],
                "losses": row["losses"],
                "n": row["n"],
                "insufficient_evidence": row["insufficient"],
                "unit": row["unit"],
            }
        )
    counts = comparison.queries["change"].value_counts()
    return {
        "schema": "chtn.comparison/1",
        "model_details": {
            "candidate": {"name": context.candidate_name, "content_hash": context.candidate},
            "baseline": {"name": context.baseline_name, "content_hash": context.baseline},
            "dataset": {
                "path": context.dataset_path,
                "fingerprint": context.dataset,
                "test_queries": comparison.n_queries,
            },
            "code_version": context.code_version,
            "generated_at": context.generated_at,
        },
        "quantitative_analysis": {
            "statistics": {
                "compares": comparison.statement(),
                "training_runs": {"baseline": comparison.runs[0], "candidate": comparison.runs[1]},
                "unit": "training runs (Welch's t on each run's mean)"
                if comparison.of_recipes
                else "per-query difference candidate - baseline on the identical query set; overall figures "
                "resampled by category cluster, per-category ones by query",
                "interval": "Welch t 95% CI" if comparison.of_recipes else "percentile bootstrap 95% CI",
                "test": "Welch's t across runs"
                if comparison.of_recipes
                else "two-sided paired randomization (sign-flip) by category cluster overall, by query per "
                "category; exact up to 20 units",
                "multiplicity": "Holm across categories x directions",
                "resamples": comparison.resamples,
                "seed": comparison.seed,
            },
            "performance_metrics": metrics,
            "queries": {name: int(counts.get(name, 0)) for name in ("fixed", "broken", "better", "worse", "same")},
        },
        "gate": {
            "rule_file": rules.source,
            "rule_sha256": rules.sha256,
            "rule_text": rules.text,
            "strict": context.strict,
            "verdict": outcome.decision.verdict,
            "exit_code": outcome.decision.exit_code,
            "summary": outcome.decision.summary,
            "rules": rules_table(outcome.results).to_dict("records"),
        },
        "considerations": {
            "review_of_regressions": {"verdict_counts": verdict_counts, "notes": notes},
            "limitations": [
                "Relevance is category-level: an item is relevant to a query when it has the query's category.",
                "Figures describe this test split only.",
                comparison.statement(),
            ],
        },
        "decision_log": decisions,
    }


def _as_percent(frame: pd.DataFrame, column: str) -> pd.DataFrame:
    """`column` as the page shows it: a signed percentage ("+4.1%"), "n/a" where undefined."""
    return frame.assign(**{column: ["n/a" if v != v else f"{v:+.1%}" for v in frame[column].astype(float)]})


def _pictured(rows: pd.DataFrame, queries: pd.DataFrame, split: PairDataset | None) -> str:
    """Changed queries as an HTML table, each led by its item's thumbnail (embedded) and title when the test
    `split` is given; every cell escaped but the thumbnail, a data URI this code made."""
    shown = rows.assign(**{c: rows[c].map(lambda v: f"{v:.4f}") for c in ("ap_a", "ap_b", "ap_change")})
    if split is not None:
        at = queries.loc[rows.index, "row"].astype(int).tolist()
        shown.insert(1, "title", [split.texts[r][:120] for r in at])
    shown = shown.map(lambda v: html.escape(str(v)))
    if split is not None:
        thumbs = thumbnail_uris([split.image_paths[r] for r in at], size=48)
        shown.insert(0, "item", [f"<img src='{t}' width='48' alt=''>" if t else "" for t in thumbs])
    return shown.to_html(index=False, border=0, escape=False)


def report_html(outcome: Outcome, document: dict, split: PairDataset | None = None) -> str:
    """One self-contained page: verdict, headline figures, rules, the forest plot (plotly.js inlined), fixed and
    broken queries (each with its thumbnail and title when the test `split` is given), the reviewers' notes and the
    decision log. The page's download and `chtn compare` write the same. Every user text is escaped."""
    esc = html.escape
    details, gate = document["model_details"], document["gate"]
    table = lambda frame: frame.to_html(index=False, border=0, float_format=lambda v: f"{v:.4f}")  # noqa: E731
    colour = {"GO": "#2e7d32", "NO-GO": "#c62828"}.get(gate["verdict"], "#f9a825")
    parts = [
        f"<h1>{esc(details['candidate']['name'])} vs {esc(details['baseline']['name'])}</h1>",
        f"<p class='meta'>candidate {esc(details['candidate']['content_hash'])} · baseline "
        f"{esc(details['baseline']['content_hash'])} · dataset {esc(details['dataset']['path'])} (fingerprint "
        f"{esc(details['dataset']['fingerprint'])}, {details['dataset']['test_queries']} test queries) · "
        f"{esc(details['generated_at'])} · code {esc(details['code_version'])}</p>",
        f"<p class='verdict' style='border-color:{colour}'><b style='color:{colour}'>Rules say {gate['verdict']}</b>"
        f"{' (strict)' if gate['strict'] else ''}: {esc(gate['summary'])}</p>",
        f"<p>{esc(outcome.comparison.statement())}</p>",
        "<h2>Headline figures</h2>",
        table(_as_percent(headline_table(outcome.comparison.figures), "relative")),
        "<h2>Rules</h2>",
        f"<p class='meta'>{esc(gate['rule_file'])} (sha256 {esc(gate['rule_sha256'][:16])}…)</p>",
        table(rules_table(outcome.results)),
        "<h2>Per category: ΔAP with 95% CI</h2>",
        forest_figure(outcome.comparison.figures)
        .update_layout(template=REPORT_TEMPLATE)
        .to_html(full_html=False, include_plotlyjs="inline"),
        table(category_table(outcome.comparison.figures)),
    ]
    for change in ("broken", "fixed"):
        rows = changed_queries(outcome.comparison.queries, change)
        parts += [
            f"<h2>Queries {change} by the candidate ({len(rows)})</h2>",
            _pictured(rows.head(50), outcome.comparison.queries, split),
        ]
    review = document["considerations"]["review_of_regressions"]
    parts.append("<h2>Review of the regressions</h2>")
    parts.append(f"<p>{esc(', '.join(f'{k}: {v}' for k, v in review['verdict_counts'].items()) or 'none')}</p>")
    parts += [
        f"<h3>{esc(n['query_id'])} · {esc(n['direction'])} · {esc(n['verdict'])} · {esc(n['reviewer'])}</h3>"
        f"<pre>{esc(n['note'])}</pre>"
        for n in review["notes"]
    ]
    parts.append("<h2>Decision log</h2>")
    if not document["decision_log"]:
        parts.append("<p>No decision recorded yet.</p>")
    for record in document["decision_log"]:
        parts.append(
            f"<p><b>{esc(record['decision'])}</b> by {esc(record['deciders'])} at {esc(str(record['created_at']))}"
            f"{' (superseded)' if record.get('superseded_by') else ''}</p><pre>{esc(record['rationale'])}"
            f"{chr(10) + 'Override: ' + esc(record['override_reason']) if record.get('override_reason') else ''}</pre>"
        )
    style = (
        "body{font-family:sans-serif;margin:2em;max-width:1300px}table{border-collapse:collapse;font-size:12px}"
        "td,th{padding:2px 6px;border-bottom:1px solid #ddd;text-align:left}.meta{color:#555;font-size:12px}"
        ".verdict{border-left:6px solid;padding:.5em 1em;background:#fafafa}pre{white-space:pre-wrap;"
        "background:#f6f6f6;padding:.5em}"
    )
    title = esc(f"{details['candidate']['name']} vs {details['baseline']['name']}")
    return (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{title}</title><style>{style}</style></head>"
        f"<body>{''.join(parts)}</body></html>"
    )


def write_outputs(outcome: Outcome, document: dict, out: Path, split: PairDataset | None = None) -> list[Path]:
    """comparison.json, report.html, figures.csv, queries.csv, rules.csv and the marker for pipelines: BLESSED
    when the gate says GO, NOT_BLESSED otherwise (the other marker is removed)."""
    out.mkdir(parents=True, exist_ok=True)
    files = {
        "comparison.json": document_json(document),
        "report.html": report_html(outcome, document, split),
        "figures.csv": csv_bytes(outcome.comparison.figures).decode("utf-8"),
        "queries.csv": csv_bytes(outcome.comparison.queries).decode("utf-8"),
        "rules.csv": csv_bytes(rules_table(outcome.results)).decode("utf-8"),
    }
    blessed = outcome.decision.verdict == "GO"
    marker, other = ("BLESSED", "NOT_BLESSED") if blessed else ("NOT_BLESSED", "BLESSED")
    files[marker] = f"{outcome.decision.summary}\n"
    (out / other).unlink(missing_ok=True)
    for name, text in files.items():
        (out / name).write_text(text, encoding="utf-8")
    return [out / name for name in files]


def content_key(document: dict) -> str:
    """What a report document says, without when it was built: equal keys, equal reports (a cache key)."""
    details = {k: v for k, v in document["model_details"].items() if k != "generated_at"}
    return hashlib.sha256(document_json({**document, "model_details": details}).encode("utf-8")).hexdigest()


def document_json(document: dict) -> str:
    """The report document as strict JSON (NaN and infinities as null)."""
    return json.dumps(_finite(document), indent=2, ensure_ascii=False, default=_plain)


def _finite(value: object) -> object:
    """The document with NaN and infinities as null (JSON has no NaN; strict parsers refuse it)."""
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    if isinstance(value, float | np.floating) and not np.isfinite(value):
        return None
    return value


def _plain(value: object) -> object:
    """numpy scalars as JSON values; anything else as text (timestamps)."""
    return value.item() if hasattr(value, "item") else str(value)


def aligned_figure(points: pd.DataFrame, follow: int | None = None, height: int = 520):
    """A's and B's shared spaces side by side in A's coordinates (`projection.project_two`): one row per item with
    x_a, y_a, x_b, y_b, id, modality, category. Hover says how far the item moved; the followed row is ringed in
    both panels, and B's panel draws an arrow from where A put it."""
    import plotly.express as px
    from plotly.subplots import make_subplots

    moved = np.hypot(points["x_b"] - points["x_a"], points["y_b"] - points["y_a"])
    figure = make_subplots(
        rows=1,
        cols=2,
        shared_xaxes=True,
        shared_yaxes=True,
        subplot_titles=("Baseline A", "Candidate B (in A's coordinates)"),
    )
    colours = dict(zip(sorted(points["category"].unique()), px.colors.qualitative.Dark24 * 4))
    symbols = {"image": "circle", "text": "diamond"}
    for column, (x, y) in enumerate((("x_a", "y_a"), ("x_b", "y_b")), start=1):
        # one trace per category and modality, so each has one symbol: plotly validates a per-point symbol array
        # point by point (seconds at 40,000 points)
        for (category, modality), part in points.groupby(["category", "modality"], sort=True):
            figure.add_scattergl(
                x=part[x],
                y=part[y],
                mode="markers",
                name=category,
                legendgroup=category,
                showlegend=column == 1 and modality == "image",
                marker=dict(size=5, color=colours[category], opacity=0.75, symbol=symbols[modality]),
                customdata=np.stack([part["id"], part["modality"], moved[part.index]], axis=1),
                hovertemplate="%{customdata[0]} (%{customdata[1]})<br>moved %{customdata[2]:.2f}<extra>"
                + category
                + "</extra>",
                row=1,
                col=column,
            )
    if follow is not None:
        item = points.loc[follow]
        for column, (x, y) in enumerate((("x_a", "y_a"), ("x_b", "y_b")), start=1):
            figure.add_scatter(
                x=[item[x]],
                y=[item[y]],
                mode="markers",
                showlegend=False,
                hoverinfo="skip",
                marker=dict(size=20, color="rgba(0,0,0,0)", line=dict(width=3, color="black")),
                row=1,
                col=column,
            )
        figure.add_annotation(
            x=item["x_b"],
            y=item["y_b"],
            ax=item["x_a"],
            ay=item["y_a"],
            xref="x2",
            yref="y2",
            axref="x2",
            ayref="y2",
            showarrow=True,
            arrowhead=3,
            arrowwidth=2,
            text="",
        )
    figure.update_layout(height=height, margin=dict(t=30, b=10, l=10, r=10), legend=dict(font=dict(size=10)))
    figure.update_xaxes(visible=False)
    figure.update_yaxes(visible=False)
    return figure
