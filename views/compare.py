"""Compare checkpoints: a candidate B (the sidebar's checkpoint) against a baseline A on one dataset, ending in a
go/no-go. Paired figures with intervals, per-category forest plot, queries fixed and broken, both shared spaces
in A's coordinates, the rule file's verdict, and the team's decision recorded (append-only) in the review database.

The URL carries checkpoint (B), baseline (A), the rule file, strict and runs, so a pasted link reopens the same
comparison; `chtn compare` computes exactly these figures and gates on them. The use cases (recording a decision, the
review evidence on B's regressions) are in analysis.compare.workflow; this page draws them, part by part, in the
order of the screen (the end of this file).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st

from analysis import workspace as ws
from analysis.bias.gain import pick_reference
from analysis.compare import render as render
from analysis.compare import workflow as wf
from analysis.compare.decisions import DECISIONS, regression_review
from analysis.compare.figures import Evaluated, Outcome, compare_checkpoints, insufficient_statement
from analysis.compare.margin import find_baseline
from analysis.compare.rules import RuleSet, read_rules, rules_table
from analysis.projection.project import ProjectionParams, cached_project_two
from analysis.review.store import ReviewStore
from analysis.review.workflow import regressions_queue
from analysis.store import StoreError
from chtn.checkpoint import Checkpoint, code_version
from chtn.errors import CHTNError
from chtn.evaluate import EvaluationReport
from chtn.gallery import Gallery
from chtn.images import thumbnail_uris
from views.common import (
    OTHER_PATH,
    Context,
    as_markdown,
    context,
    nearby_checkpoints,
    other_checkpoint,
    recipe_runs_checkbox,
    review_store,
    write_params,
)
from views.links import attribution_link, explorer_link, review_link

Run = tuple[Checkpoint, Gallery, EvaluationReport]
LISTED = 200  # fixed / broken queries listed, with thumbnails, largest AP change first


@dataclass(frozen=True)
class Choices:
    """The sidebar's "Compare with": the baseline (a sample name or a path), the rule file, strict, runs."""

    baseline: str
    rule_path: str
    strict: bool
    use_runs: bool


@dataclass(frozen=True)
class Comparing:
    """What the parts of the page share: the candidate's context, both sides' training runs (the checkpoint in
    question first), the rule file, the comparison's outcome, and the review database."""

    ctx: Context
    choices: Choices
    runs_a: list[Run]
    runs_b: list[Run]
    rules: RuleSet
    outcome: Outcome
    pair: wf.Pair
    store: ReviewStore | None
    store_error: str | None

    @property
    def baseline(self) -> Checkpoint:
        return self.runs_a[0][0]

    @property
    def candidate(self) -> Checkpoint:
        return self.ctx.checkpoint


@st.cache_data(show_spinner="Comparing: ranking both sides and resampling every slice…", max_entries=8)
def outcome_of(digests_a: tuple, digests_b: tuple, fingerprint: str, rule_sha256: str, strict: bool, _rules, _sides):
    return compare_checkpoints(*_sides, _rules, strict=strict)


@st.cache_data(show_spinner="Projecting both checkpoints into A's coordinates…", max_entries=8)
def aligned(digest_a: str, digest_b: str, fingerprint: str, method: str, _a, _b, _names) -> pd.DataFrame:
    points_a, points_b = np.vstack([_a.image, _a.text]), np.vstack([_b.image, _b.text])
    coords_a, coords_b = cached_project_two(points_a, points_b, ProjectionParams(method=method))
    return wf.aligned_points(coords_a, coords_b, _a.data.ids, _a.labels, _names)


@st.cache_data(show_spinner="Building the report…", max_entries=8)
def report_files(content: str, _outcome, _document: dict, _split) -> tuple[bytes, bytes]:
    """The HTML report (plotly.js inlined: megabytes) and the model card, once per content: `content` is the
    document without its build time (render.content_key), and everything the report shows is in the document
    (the split's pictures are those of its fingerprint, which the document holds)."""
    html = render.report_html(_outcome, _document, _split)
    return html.encode("utf-8"), render.document_json(_document).encode("utf-8")


def default_baseline(ctx: Context) -> str:
    """Baseline A when the link names none: the sample's no-source run for a checkpoint of the sample's dataset; for
    one trained on another dataset, a checkpoint of that dataset found beside it (its no-source CHTN run, else its
    built-in baseline), so that both sides are scored on the data they were trained for."""
    nearby = nearby_checkpoints(ctx.checkpoint)
    sample = next(c for c in nearby if c.path == ws.SAMPLE_CHECKPOINTS["chtn_no_source"])
    if not wf.trained_on_other_data(sample, ctx.checkpoint):
        return "chtn_no_source"
    same_data = pick_reference(ctx.checkpoint, nearby) or find_baseline(ctx.checkpoint, nearby)
    return str(same_data.path) if same_data else "chtn_no_source"


def sidebar(ctx: Context) -> Choices:
    """ "Compare with": baseline A, the rule file, strict, and the other training runs of each recipe. The rule
    file, strict and runs are bound to the URL (`?rule=`, `?strict=true`, `?runs=false`); the baseline is written
    by `compare` (a sample name or a path: not one widget's value)."""
    with st.sidebar:
        st.subheader("Compare with")
        url = st.query_params.get("baseline") or default_baseline(ctx)
        options = [*ws.SAMPLE_CHECKPOINTS, OTHER_PATH]
        choice = st.selectbox(
            "Baseline A (in production)",
            options,
            index=options.index(url if url in ws.SAMPLE_CHECKPOINTS else OTHER_PATH),
            key="cp_baseline",
            persist_state="session",
            help="The sidebar's checkpoint above is the candidate B.",
        )
        baseline = (
            choice
            if choice != OTHER_PATH
            else st.text_input(
                "Baseline path",
                value="" if url in ws.SAMPLE_CHECKPOINTS else url,
                key="cp_baseline_path",
                persist_state="session",
            )
        )
        rule_path = st.text_input(
            "Rule file (TOML)",
            key="rule",
            bind="query-params",
            placeholder="default rule",
            help="A go/no-go rule file in the format of docs/conventions.md; empty: the rule shipped with CHTN.",
        )
        strict = st.checkbox(
            "Strict (a warning is a NO-GO)",
            key="strict",
            bind="query-params",
            help="As `chtn compare --strict`: any warning blocks; insufficient evidence never does.",
        )
        use_runs = recipe_runs_checkbox(
            "With 3 or more runs per side the block rule decides between the recipes; with one checkpoint per side "
            "the page compares these two checkpoints only.",
        )
    return Choices(baseline, rule_path, strict, use_runs)


def compare(ctx: Context, choices: Choices, store: ReviewStore | None, store_error: str | None) -> Comparing:
    """Both sides opened and compared under the rule file; a clear error, and the page stops, when they cannot be
    (a missing file, a bad rule file, other labels or queries), or a warning when no slice holds evidence."""
    if not choices.baseline:
        st.info("Give the baseline checkpoint's path in the sidebar.")
        st.stop()
    try:
        rule_file = ws.confine(choices.rule_path, ws.allowed_dirs()) if choices.rule_path.strip() else None
        rules = read_rules(rule_file)
        runs_a, runs_b = [other_checkpoint(choices.baseline, ctx)], [(ctx.checkpoint, ctx.gallery, ctx.report)]
        for runs in (runs_a, runs_b) if choices.use_runs else ():
            nearby = nearby_checkpoints(runs[0][0])
            runs += [other_checkpoint(str(run.path), ctx) for run in ws.recipe_runs(runs[0][0], nearby)]
    except CHTNError as exc:
        st.error(as_markdown(f"**Cannot compare.** {exc}"), icon=":material/error:")
        st.stop()
    write_params({"baseline": choices.baseline})  # see sidebar: not one widget's value
    baseline, candidate = runs_a[0][0], ctx.checkpoint
    dataset = ctx.gallery.data.fingerprint()
    pair = wf.Pair(dataset, baseline.digest, candidate.digest, baseline.path.stem, candidate.path.stem)
    try:
        outcome = outcome_of(
            tuple(run[0].digest for run in runs_a),
            tuple(run[0].digest for run in runs_b),
            dataset,
            rules.sha256,
            choices.strict,
            rules,
            tuple([Evaluated(c.path.stem, g, r) for c, g, r in runs] for runs in (runs_a, runs_b)),
        )
    except CHTNError as exc:  # e.g. different label sets, or query sets
        st.error(f"**Cannot compare.** {exc}", icon=":material/error:")
        st.stop()
    if outcome.comparison.figures["insufficient"].all():  # no slice holds evidence: neither GO nor NO-GO
        st.warning(insufficient_statement(outcome.comparison), icon=":material/gavel:")
        st.stop()
    return Comparing(ctx, choices, runs_a, runs_b, rules, outcome, pair, store, store_error)


def verdict(page: Comparing) -> None:
    """Which checkpoints, the rules' GO or NO-GO, and what is compared (two checkpoints, or two recipes' runs)."""
    comparison, decision = page.outcome.comparison, page.outcome.decision
    candidate, baseline = page.candidate, page.baseline
    st.markdown(
        f"**B** `{candidate.path.stem}` ({candidate.digest[:8]}) against **A** `{baseline.path.stem}` "
        f"({baseline.digest[:8]}) on {comparison.n_queries:,} test queries · {comparison.resamples:,} resamples, seed "
        f"{comparison.seed} · same ranking code and query set for both"
    )
    (st.success if decision.verdict == "GO" else st.warning)(  # an error box is for what broke, not a NO-GO
        f"**The rules say {decision.verdict}.** {decision.summary}", icon=":material/gavel:"
    )
    st.markdown(f"**What is compared.** {comparison.statement()}")
    if note := wf.training_data_note(baseline, candidate, page.ctx.data_path):
        st.info(note, icon=":material/dataset:")
    if comparison.runs != (1, 1):
        names = [ws.run_names([c for c, _, _ in runs]) for runs in (page.runs_a, page.runs_b)]
        st.caption(f"Runs of A: {names[0]}. Runs of B: {names[1]}.")


def headline_figures(page: Comparing) -> None:
    comparison = page.outcome.comparison
    st.subheader("Headline figures")
    st.dataframe(
        render.headline_table(comparison.figures),
        hide_index=True,
        width="stretch",
        column_config={c: st.column_config.NumberColumn(format="%.4f") for c in ("baseline A", "candidate B", "B − A")}
        | {"relative": st.column_config.NumberColumn(format="percent")},
    )
    st.caption(render.method_note(comparison))


def gate_rules(page: Comparing) -> None:
    st.subheader("Go / no-go rules")
    st.dataframe(rules_table(page.outcome.results), hide_index=True, width="stretch")
    with st.expander(f"The rule file: {page.rules.source} (sha256 {page.rules.sha256[:12]}…)"):
        st.code(page.rules.text, language="toml")


def per_category(page: Comparing) -> None:
    figures = page.outcome.comparison.figures
    st.subheader("Per category")
    st.caption(
        "A per-category loss counts here when its Holm-adjusted p is below 0.05, and it warns only beyond the rule "
        "file's tolerance; Source bias flags exploratory changes at Benjamini-Hochberg q ≤ 0.10 instead. Both need "
        f"|ΔAP| ≥ {page.rules.stats.min_effect:g} before they name a change."
    )
    st.plotly_chart(render.forest_figure(figures), width="stretch")
    # the full width below the plot: beside it, the interval and p columns fell off-screen
    st.dataframe(render.category_table(figures), hide_index=True, width="stretch", height=420)


@st.cache_data(show_spinner=False, max_entries=32)
def thumbnails(paths: tuple[str, ...]) -> list[str | None]:
    return thumbnail_uris([Path(p) for p in paths])


def fixed_and_broken(page: Comparing) -> None:
    """The queries B fixed, broke, made better or worse, each linked to the explorer and the attribution of the
    checkpoint that mis-retrieves it; B's regressions can be sent to the review queue."""
    queries = page.outcome.comparison.queries
    st.subheader("Queries fixed and broken by B")
    counts = queries["change"].value_counts()
    for column, name in zip(st.columns(5), ("fixed", "broken", "better", "worse", "same")):
        column.metric(name, int(counts.get(name, 0)))
    which = st.segmented_control("Show", ["broken", "fixed", "worse", "better"], default="broken", key="cp_show")
    shown = render.changed_queries(queries, which or "broken")
    if len(shown) > LISTED:
        st.caption(f"The {LISTED} largest AP changes of {len(shown)}; the report's CSV lists every one.")
        shown = shown.head(LISTED)
    concerned = wf.concerned_checkpoint(which or "broken", page.choices.baseline, page.ctx.checkpoint_ref)
    concerns = dataclasses.replace(page.ctx.opened, checkpoint=concerned)  # on the same dataset
    data = page.ctx.gallery.data
    row_of = {item: row for row, item in enumerate(data.ids)}
    rows = [row_of[q] for q in shown.query_id]
    shown = shown.assign(
        image=thumbnails(tuple(str(data.image_paths[r]) for r in rows)),
        title=[data.texts[r] for r in rows],
        explorer=[explorer_link(concerns, d, q).url for q, d in zip(shown.query_id, shown.direction)],
        why=[attribution_link(concerns, d, q).url for q, d in zip(shown.query_id, shown.direction)],
    )
    picked = st.dataframe(
        shown[["image", "query_id", "title", *[c for c in shown.columns if c not in ("image", "query_id", "title")]]],
        hide_index=True,
        width="stretch",
        height=360,
        row_height=48,
        column_config={
            "image": st.column_config.ImageColumn("item", help="The query's item: its image and its title"),
            "explorer": st.column_config.LinkColumn("explorer", display_text="open"),
            "why": st.column_config.LinkColumn("why?", display_text="explain top result"),
        },
        on_select="rerun",
        selection_mode="single-row",
        key=f"cp_rows_{which}",
    )
    if len(shown):
        chosen = picked.selection.rows[0] if picked.selection.rows else 0
        change_card(page, queries.loc[shown.index[chosen]])
    if page.store and int(counts.get("broken", 0)):
        send_regressions(page, page.store)


def change_card(page: Comparing, query: pd.Series) -> None:
    """One changed query (the row picked in the list, else its first) with A's result beside B's: the query, then
    per checkpoint its AP, own-pair rank and top-1 result, the top-1's picture and title."""
    data = page.ctx.gallery.data
    row = int(query["row"])
    with st.container(border=True):
        st.markdown(
            f"**{query['query_id']}** · {query['direction']} · *{query['category']}* · {query['change']} by B "
            f"(AP {query['ap_change']:+.3f}) · pick another row above to see it here"
        )
        cells = st.columns([1, 2, 2, 2])
        cells[0].image(str(data.image_paths[row]), width=120, caption="the query's item")
        cells[0].caption(data.texts[row][:160])
        cells[1].dataframe(render.side_by_side(query), width="stretch")
        for cell, side, name in ((cells[2], "a", "A"), (cells[3], "b", "B")):
            top = int(query[f"top1_row_{side}"])
            cell.image(str(data.image_paths[top]), width=120, caption=f"{name}'s top-1: {query[f'top1_id_{side}']}")
            cell.caption(data.texts[top][:160])


def send_regressions(page: Comparing, store: ReviewStore) -> None:
    """B's regressions as a meeting queue of B, "regressions of B", and the link that opens it."""
    if st.button("Send B's regressions to the review queue", icon=":material/rate_review:"):
        pair = page.pair
        try:
            st.session_state["cp_queue"] = regressions_queue(
                store, page.outcome.comparison.queries, pair.dataset, pair.baseline, pair.candidate
            )
        except StoreError as exc:
            st.error(str(exc))
    if "cp_queue" in st.session_state:
        meeting = review_link(page.ctx.opened, queue=st.session_state["cp_queue"])
        st.page_link(
            meeting.page,
            label="Open the meeting queue “regressions of B”",
            icon=":material/groups:",
            query_params=meeting.params,
        )


def aligned_spaces(page: Comparing) -> None:
    """Both checkpoints' shared spaces in A's coordinates, one item followed across them."""
    st.subheader("Shared spaces, aligned")
    method = st.segmented_control("Projection", ["pca", "umap"], default="pca", key="cp_method") or "pca"
    gallery_a, gallery_b = page.runs_a[0][1], page.ctx.gallery
    pair = page.pair
    points = aligned(pair.baseline, pair.candidate, pair.dataset, method, gallery_a, gallery_b, page.ctx.label_names)
    labels = dict(zip(points.index, points["id"].astype(str) + " · " + points["modality"] + " · " + points["category"]))
    follow = st.selectbox(
        "Follow an item (ringed in both; the arrow shows where B moved it)",
        [None, *points.index],
        format_func=lambda i: "none" if i is None else labels[i],
    )
    st.plotly_chart(render.aligned_figure(points, follow), width="stretch")
    st.caption(
        "A is fitted; B's points are placed where A's map puts them (fit on A, transform B): items whose embedding "
        "did not change keep their place. Hover a point for how far it moved."
    )


def decision(page: Comparing) -> tuple[list[dict], list[dict], dict[str, int]]:
    """The review evidence, the decision form and the comparison's decision log; returns the log, the reviewers'
    notes on the regressions and their verdict counts (the report carries them)."""
    pair = page.pair
    st.subheader("Decision")
    decisions, notes, review_counts = regression_review(
        page.store, page.outcome.comparison.queries, pair.dataset, pair.baseline, pair.candidate
    )
    st.caption(wf.review_evidence(review_counts))
    with st.form("cp_decision"):
        form = wf.DecisionForm(
            st.radio("Decision", DECISIONS, horizontal=True, index=None, key="cp_verdict"),
            st.text_input("Override reason (required for GO with override)", key="cp_override"),
            st.text_input("Deciders", key="cp_deciders", placeholder="names of everyone deciding"),
            st.text_area("Rationale", key="cp_rationale"),
        )
        record = st.form_submit_button("Record the decision", type="primary", icon=":material/gavel:")
    if record:
        recorded = wf.record_decision(page.store, page.store_error, pair, form, page.outcome, review_counts)
        if recorded.outcome == "recorded":
            st.toast(recorded.message, icon=":material/check:")
            st.rerun()
        elif recorded.outcome == "repeated":
            st.warning(recorded.message, icon=":material/content_copy:")
        else:
            st.error(recorded.message)
    if decisions:
        st.markdown("**Decisions on this comparison** (newest first; a later one supersedes, none is edited)")
        st.dataframe(wf.decision_log(decisions), hide_index=True, width="stretch")
    return decisions, notes, review_counts


def downloads(page: Comparing, decisions: list[dict], notes: list[dict], review_counts: dict[str, int]) -> None:
    """The HTML report (opens offline) and the model card (JSON), named after both sides."""
    pair = page.pair
    report_context = render.ReportContext(
        pair.baseline_name,
        pair.baseline,
        pair.candidate_name,
        pair.candidate,
        page.ctx.data_path,
        pair.dataset,
        page.choices.strict,
        datetime.now(UTC).isoformat(timespec="seconds"),
        code_version(),
    )
    document = render.report_document(page.outcome, report_context, decisions, notes, review_counts)
    # Built with the page (cached per content), not when clicked: a file's address is a hash of its content, so a
    # click never reruns the page, and a second click at once still finds its file (a deferred download's generator
    # is forgotten by the rerun the first click caused, so a quick second click found nothing).
    report, card = report_files(render.content_key(document), page.outcome, document, page.ctx.gallery.data)
    columns = st.columns(2)
    columns[0].download_button(
        "Report (HTML, opens offline)",
        report,
        f"{report_context.file_stem}.html",
        "text/html",
        icon=":material/download:",
        on_click="ignore",
    )
    columns[1].download_button(
        "Model card (JSON)",
        card,
        f"{report_context.file_stem}.json",
        "application/json",
        icon=":material/download:",
        on_click="ignore",
    )


ctx = context()
store, store_error = review_store()
choices = sidebar(ctx)
st.title("Compare checkpoints")
page = compare(ctx, choices, store, store_error)
verdict(page)
headline_figures(page)
gate_rules(page)
per_category(page)
fixed_and_broken(page)
aligned_spaces(page)
decisions, notes, review_counts = decision(page)
downloads(page, decisions, notes, review_counts)
