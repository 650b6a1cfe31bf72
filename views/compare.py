"""Compare checkpoints: a candidate B (the sidebar's checkpoint) against a baseline A on one dataset, ending in a
go/no-go. Paired figures with intervals, per-category forest plot, queries fixed and broken, both shared spaces
in A's coordinates, the rule file's verdict, and the team's decision recorded (append-only) in the review database.

The URL carries checkpoint (B), baseline (A) and the rule file, so a pasted link reopens the same comparison;
`chtn compare` computes exactly these figures and gates on them.
"""

from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import streamlit as st

from analysis import workspace as ws
from analysis.compare import render as render
from analysis.compare.decisions import DECISIONS, RepeatedDecision, regression_review, save_decision
from analysis.compare.figures import Evaluated, compare_checkpoints, insufficient_statement
from analysis.compare.rules import read_rules, rules_table
from analysis.projection.project import ProjectionParams, cached_project_two
from analysis.review.workflow import regressions_queue
from analysis.store import StoreError
from chtn.checkpoint import code_version
from chtn.errors import CHTNError
from views.common import (
    OTHER_PATH,
    context,
    keep,
    nearby_checkpoints,
    other_checkpoint,
    recipe_runs_checkbox,
    remember,
    review_store,
)
from views.links import attribution_link, explorer_link

ctx = context()
store, store_error = review_store()
with st.sidebar:
    st.subheader("Compare with")
    url = st.query_params.get("baseline", "chtn_no_source")
    keep("cp_baseline", url if url in ws.SAMPLE_CHECKPOINTS else OTHER_PATH)
    keep("cp_baseline_path", "" if url in ws.SAMPLE_CHECKPOINTS else url)
    choice = st.selectbox(
        "Baseline A (in production)",
        [*ws.SAMPLE_CHECKPOINTS, OTHER_PATH],
        key="cp_baseline",
        on_change=remember,
        args=("cp_baseline",),
        help="The sidebar's checkpoint above is the candidate B.",
    )
    baseline_ref = choice if choice != OTHER_PATH else st.text_input("Baseline path", key="cp_baseline_path")
    keep("cp_rule", st.query_params.get("rule", ""))
    rule_path = st.text_input(
        "Rule file (TOML)",
        key="cp_rule",
        on_change=remember,
        args=("cp_rule",),
        placeholder="default rule",
        help="A go/no-go rule file in the format of docs/conventions.md; empty: the rule shipped with CHTN.",
    )
    keep("cp_strict")
    strict = st.checkbox(
        "Strict (a warning is a NO-GO)",
        key="cp_strict",
        on_change=remember,
        args=("cp_strict",),
        help="As `chtn compare --strict`: any warning blocks; insufficient evidence never does.",
    )
    use_runs = recipe_runs_checkbox(
        "cp_runs",
        "With 3 or more runs per side the block rule decides between the recipes; with one checkpoint per side the "
        "page compares these two checkpoints only.",
    )
    remember("cp_baseline", "cp_baseline_path", "cp_rule", "cp_strict", "cp_runs")

st.title("Compare checkpoints")
if not baseline_ref:
    st.info("Give the baseline checkpoint's path in the sidebar.")
    st.stop()
try:
    rules = read_rules(ws.confine(rule_path, ws.allowed_dirs()) if rule_path.strip() else None)
    baseline, gallery_a, report_a = other_checkpoint(baseline_ref, ctx)
    runs_a, runs_b = [(baseline, gallery_a, report_a)], [(ctx.checkpoint, ctx.gallery, ctx.report)]
    for runs in (runs_a, runs_b) if use_runs else ():
        runs += [
            other_checkpoint(str(run.path), ctx) for run in ws.recipe_runs(runs[0][0], nearby_checkpoints(runs[0][0]))
        ]
except CHTNError as exc:
    st.error(f"**Cannot compare.** {exc}".replace("\n", "  \n"), icon=":material/error:")
    st.stop()
st.query_params.update(
    baseline=baseline_ref, runs="1" if use_runs else "0", **({"rule": rule_path} if rule_path.strip() else {})
)
candidate, dataset = ctx.checkpoint, ctx.gallery.data.fingerprint()


@st.cache_data(show_spinner="Comparing: ranking both sides and resampling every slice…", max_entries=8)
def outcome_of(digests_a: tuple, digests_b: tuple, fingerprint: str, rule_sha256: str, strict: bool, _rules, _sides):
    return compare_checkpoints(*_sides, _rules, strict=strict)


try:
    outcome = outcome_of(
        tuple(run[0].digest for run in runs_a),
        tuple(run[0].digest for run in runs_b),
        dataset,
        rules.sha256,
        strict,
        rules,
        tuple([Evaluated(c.path.stem, g, r) for c, g, r in runs] for runs in (runs_a, runs_b)),
    )
except CHTNError as exc:  # e.g. different label sets, or query sets
    st.error(f"**Cannot compare.** {exc}", icon=":material/error:")
    st.stop()
comparison, decision = outcome.comparison, outcome.decision
if comparison.figures["insufficient"].all():  # no slice holds evidence: the rules can say neither GO nor NO-GO
    st.warning(insufficient_statement(comparison), icon=":material/gavel:")
    st.stop()

st.markdown(
    f"**B** `{candidate.path.stem}` ({candidate.digest[:8]}) against **A** `{baseline.path.stem}` "
    f"({baseline.digest[:8]}) on {comparison.n_queries} test queries · {comparison.resamples:,} resamples, seed "
    f"{comparison.seed} · same ranking code and query set for both"
)
(st.success if decision.verdict == "GO" else st.warning)(  # an error box is for what broke, not a NO-GO
    f"**The rules say {decision.verdict}.** {decision.summary}", icon=":material/gavel:"
)
st.markdown(f"**What is compared.** {comparison.statement()}")
if comparison.runs != (1, 1):
    names = [", ".join(f"`{c.path.stem}`" for c, _, _ in runs) for runs in (runs_a, runs_b)]
    st.caption(f"Runs of A: {names[0]}. Runs of B: {names[1]}.")

st.subheader("Headline figures")
st.dataframe(
    render.headline_table(comparison.figures),
    hide_index=True,
    width="stretch",
    column_config={c: st.column_config.NumberColumn(format="%.4f") for c in ("baseline A", "candidate B", "B − A")}
    | {"relative": st.column_config.NumberColumn(format="percent")},
)
st.caption(
    "B − A over the identical queries. 95% CI and p: a bootstrap and a sign-flip randomization test that resample "
    "whole categories for the overall figures (exact up to 20) and queries within a category; d: mean difference / "
    "its sd over queries. Own-pair recall counts exactly tied items in random order."
    if not comparison.of_recipes
    else "B − A over the identical queries, each side's runs averaged per query. 95% CI and p: Welch's t across the "
    "training runs; d: mean difference / its sd over queries. Own-pair recall counts exactly tied items in random "
    "order."
)

st.subheader("Go / no-go rules")
st.dataframe(rules_table(outcome.results), hide_index=True, width="stretch")
with st.expander(f"The rule file: {rules.source} (sha256 {rules.sha256[:12]}…)"):
    st.code(rules.text, language="toml")

st.subheader("Per category")
st.caption(
    "A per-category loss counts here when its Holm-adjusted p is below 0.05, and it warns only beyond the rule "
    "file's tolerance; Source bias flags exploratory changes at Benjamini-Hochberg q ≤ 0.10 instead. Both need "
    f"|ΔAP| ≥ {rules.stats.min_effect:g} before they name a change."
)
left, right = st.columns([3, 2])
left.plotly_chart(render.forest_figure(comparison.figures), width="stretch")
right.dataframe(render.category_table(comparison.figures), hide_index=True, width="stretch", height=520)

st.subheader("Queries fixed and broken by B")
counts = comparison.queries["change"].value_counts()
cols = st.columns(5)
for column, name in zip(cols, ("fixed", "broken", "better", "worse", "same")):
    column.metric(name, int(counts.get(name, 0)))
which = st.segmented_control("Show", ["broken", "fixed", "worse", "better"], default="broken", key="cp_show")
shown = render.changed_queries(comparison.queries, which or "broken")
concerns = baseline_ref if which in ("fixed", "better") else ctx.checkpoint_ref  # the checkpoint that mis-retrieves
shown = shown.assign(
    explorer=[explorer_link(concerns, d, q) for q, d in zip(shown.query_id, shown.direction)],
    why=[attribution_link(concerns, d, q) for q, d in zip(shown.query_id, shown.direction)],
)
st.dataframe(
    shown,
    hide_index=True,
    width="stretch",
    height=320,
    column_config={
        "explorer": st.column_config.LinkColumn("explorer", display_text="open"),
        "why": st.column_config.LinkColumn("why?", display_text="explain top result"),
    },
)
if store and int(counts.get("broken", 0)):
    if st.button("Send B's regressions to the review queue", icon=":material/rate_review:"):
        try:
            queue_id = regressions_queue(store, comparison.queries, dataset, baseline.digest, candidate.digest)
            st.session_state["cp_queue"] = queue_id
        except StoreError as exc:
            st.error(str(exc))
    if "cp_queue" in st.session_state:
        st.page_link(
            "views/review.py",
            label="Open the meeting queue “regressions of B”",
            icon=":material/groups:",
            query_params={"checkpoint": ctx.checkpoint_ref, "queue": st.session_state["cp_queue"]},
        )

st.subheader("Shared spaces, aligned")
method = st.segmented_control("Projection", ["pca", "umap"], default="pca", key="cp_method") or "pca"


@st.cache_data(show_spinner="Projecting both checkpoints into A's coordinates…", max_entries=8)
def aligned(digest_a: str, digest_b: str, fingerprint: str, method: str, _a, _b) -> pd.DataFrame:
    import numpy as np

    points_a, points_b = np.vstack([_a.image, _a.text]), np.vstack([_b.image, _b.text])
    coords_a, coords_b = cached_project_two(points_a, points_b, ProjectionParams(method=method))
    n, data = len(_a), _a.data
    return pd.DataFrame(
        {
            "x_a": coords_a[:, 0],
            "y_a": coords_a[:, 1],
            "x_b": coords_b[:, 0],
            "y_b": coords_b[:, 1],
            "id": list(data.ids) * 2,
            "modality": ["image"] * n + ["text"] * n,
            "category": [ctx.label_names[label] for label in _a.labels] * 2,
        }
    )


points = aligned(baseline.digest, candidate.digest, dataset, method, gallery_a, ctx.gallery)
follow = st.selectbox(
    "Follow an item (ringed in both; the arrow shows where B moved it)",
    [None, *points.index],
    format_func=lambda i: "none" if i is None else f"{points.id[i]} · {points.modality[i]} · {points.category[i]}",
)
st.plotly_chart(render.aligned_figure(points, follow), width="stretch")
st.caption(
    "A is fitted; B's points are placed where A's map puts them (fit on A, transform B): items whose embedding "
    "did not change keep their place. Hover a point for how far it moved."
)

st.subheader("Decision")
decisions, notes, review_counts = regression_review(
    store, comparison.queries, dataset, baseline.digest, candidate.digest
)
st.caption(
    "Verdicts of the review queue on B's regressions: "
    + (", ".join(f"{k} {v}" for k, v in review_counts.items()) or "none yet")
)
with st.form("cp_decision"):
    verdict = st.radio("Decision", DECISIONS, horizontal=True, index=None, key="cp_verdict")
    override = st.text_input("Override reason (required for GO with override)", key="cp_override")
    deciders = st.text_input("Deciders", key="cp_deciders", placeholder="names of everyone deciding")
    rationale = st.text_area("Rationale", key="cp_rationale")
    record = st.form_submit_button("Record the decision", type="primary", icon=":material/gavel:")
if record:
    if store is None:
        st.error(f"Not recorded: {store_error} Your text is still in the form.")
    elif verdict is None:
        st.error("Not recorded: choose a decision.")
    else:
        try:
            save_decision(
                store,
                dataset=dataset,
                baseline=baseline.digest,
                candidate=candidate.digest,
                baseline_name=baseline.path.stem,
                candidate_name=candidate.path.stem,
                decision=verdict,
                override_reason=override,
                deciders=deciders,
                rationale=rationale,
                rule_source=rules.source,
                rule_text=rules.text,
                rule_sha256=rules.sha256,
                resamples=comparison.resamples,
                seed=comparison.seed,
                gate=decision.summary,
                rules=rules_table(outcome.results).to_dict("records"),
                review_counts=review_counts,
                code_version=code_version(),
            )
            st.toast("Decision recorded", icon=":material/check:")
            st.rerun()
        except RepeatedDecision as exc:  # refused, not failed: the record the room wanted is there
            st.warning(f"**Not recorded again.** {exc}", icon=":material/content_copy:")
        except StoreError as exc:
            st.error(f"**Not recorded.** {exc} Your text is still in the form.")
if decisions:
    st.markdown("**Decisions on this comparison** (newest first; a later one supersedes, none is edited)")
    log = pd.DataFrame(decisions)[
        ["id", "decision", "deciders", "rationale", "override_reason", "gate", "created_at", "superseded_by"]
    ]
    st.dataframe(log, hide_index=True, width="stretch")


@st.cache_data(show_spinner="Building the report…", max_entries=8)
def report_files(content: str, _outcome, _document: dict) -> tuple[bytes, bytes]:
    """The HTML report (plotly.js inlined: megabytes) and the model card, once per content: `content` is the
    document without its build time (render.content_key), and everything the report shows is in the document."""
    return render.report_html(_outcome, _document).encode("utf-8"), render.document_json(_document).encode("utf-8")


context_ = render.ReportContext(
    baseline.path.stem,
    baseline.digest,
    candidate.path.stem,
    candidate.digest,
    ctx.data_path,
    dataset,
    strict,
    datetime.now(UTC).isoformat(timespec="seconds"),
    code_version(),
)
document = render.report_document(outcome, context_, decisions, notes, review_counts)
# Built with the page (cached per content), not when clicked: a file's address is a hash of its content, so a click
# never reruns the page, and a second click at once still finds its file (a deferred download's generator is
# forgotten by the rerun the first click caused, so a quick second click found nothing).
report, card = report_files(render.content_key(document), outcome, document)
downloads = st.columns(2)
downloads[0].download_button(
    "Report (HTML, opens offline)",
    report,
    f"compare_{Path(candidate.path).stem}.html",
    "text/html",
    icon=":material/download:",
    on_click="ignore",
)
downloads[1].download_button(
    "Model card (JSON)", card, "comparison.json", "application/json", icon=":material/download:", on_click="ignore"
)
