"""Source bias: per target category, did the image-only source help, hurt, or never cover it?

The transfer gain against a reference trained without the source is the evidence; coverage, capture, domain
discrepancy and the ImageNet prior are indicative. Everything comes from analysis.bias.report, as `chtn bias`.
"""

from functools import partial

import streamlit as st

from analysis import workspace as ws
from analysis.bias.gain import FLAGS, pick_reference
from analysis.bias.render import (
    category_table,
    figures,
    flags_statement,
    gate_statement,
    inputs_statement,
    pending_statement,
    report_html,
    runs_statement,
)
from analysis.bias.report import BiasReport, BiasSettings, bias_report, open_source, report_path
from analysis.explorer import worst_query_per_category
from analysis.jobs import BackgroundJobs, Job, eta_text
from analysis.stats import MIN_EFFECT
from chtn.errors import CHTNError
from chtn.exports import csv_bytes
from views.common import all_rows, as_markdown, context, job_failed, nearby_checkpoints, recipe_runs_checkbox
from views.links import explorer_link, space_link

POLL_SECONDS = 2.0  # how often a page waiting for the source diagnostics reads the job's progress

ctx = context()
checkpoint = ctx.checkpoint
st.title("Source bias")
st.caption(
    "Per target category and direction: what the image-only source did to retrieval (ΔAP against a reference "
    "trained without it, with 95% intervals) and how the source relates to the category."
)
if not checkpoint.meta.get("source"):
    st.info(
        f"**{checkpoint.path.name} was trained without a source domain**, so there is no source bias to diagnose. "
        "Pick a checkpoint trained with a source in the sidebar (the sample's `chtn_fashion_source` or "
        "`chtn_cifar_source`); this one can serve them as the no-source reference."
    )
    st.stop()


@st.cache_data(show_spinner=False, max_entries=8)
def _html(report_json: str, checkpoint_name: str) -> str:
    """The self-contained report (plotly.js inlined, ~5 MB): built once per report, not on every rerun."""
    return report_html(BiasReport.from_json(report_json), f"Source bias of {checkpoint_name}")


AUTO, NONE = "Automatic (a no-source checkpoint of the same data)", "None"
with st.expander("Inputs: reference, training runs, source, statistics", expanded=False):
    cols = st.columns([2, 2, 1, 1])
    choice = cols[0].selectbox(
        "Reference", [AUTO, NONE, "Other file (path)…"], key="bi_reference", persist_state="session"
    )
    reference_path = (
        cols[0].text_input("Reference path", key="bi_reference_path", persist_state="session")
        if choice not in (AUTO, NONE)
        else ""
    )
    source_override = cols[1].text_input(
        "Source images (when not where training recorded them)",
        key="bi_source",
        persist_state="session",
        placeholder=str((checkpoint.meta.get("source") or {}).get("path", "")),
    )
    resamples = cols[2].select_slider(
        "Resamples", [1_000, 2_000, 5_000, 10_000], value=10_000, key="bi_resamples", persist_state="session"
    )
    min_effect = cols[3].number_input(
        "Minimum practical |ΔAP|",
        min_value=0.0,
        max_value=0.5,
        value=MIN_EFFECT,
        step=0.005,
        format="%.3f",
        key="bi_min_effect",
        persist_state="session",
        help="A significant change smaller than this is a 'negligible effect', not 'helped' or 'negative transfer'.",
    )
    use_runs = recipe_runs_checkbox(
        "With 2 or more runs per side the flags compare the recipes across runs; with one per side they compare these "
        "two checkpoints only.",
    )

try:
    if choice == AUTO:
        reference = pick_reference(checkpoint, nearby_checkpoints(checkpoint))
    elif choice == NONE or not reference_path:
        reference = None
    else:
        reference = ws.open_checkpoint(reference_path)
    runs = ws.recipe_runs(checkpoint, nearby_checkpoints(checkpoint)) if use_runs else []
    reference_runs = ws.recipe_runs(reference, nearby_checkpoints(reference)) if use_runs and reference else []
    data = all_rows(ctx)
except CHTNError as exc:
    st.error(as_markdown(f"**Cannot use this reference or dataset.** {exc}"), icon=":material/error:")
    st.stop()
try:
    source = open_source(checkpoint, source_override or None, ctx.data_path)
except CHTNError as exc:
    source = None
    st.warning(str(exc), icon=":material/folder_off:")


@st.cache_resource(show_spinner=False)
def bias_jobs() -> BackgroundJobs[BiasReport]:
    """One registry per server: every session asking for the same report shares its background job, which starts once
    the page has drawn what the embeddings give."""
    return BackgroundJobs(step_aside=True)


def with_bar(read_images: bool) -> BiasReport:
    """The report in this script run, with a progress bar: from the disk cache, or computed (without the images:
    seconds, the test embeddings are at hand)."""
    bar = st.progress(0.0, text="Transfer gain per category (once per checkpoint, reference, data and settings)…")
    try:
        return bias_report(
            checkpoint,
            data,
            reference,
            source,
            settings,
            progress=lambda fraction, step: bar.progress(min(fraction, 1.0), text=step),
            runs=runs,
            reference_runs=reference_runs,
            read_images=read_images,
        )
    finally:
        bar.empty()


@st.fragment(run_every=POLL_SECONDS)
def wait_for(job: Job[BiasReport]) -> None:
    """The background job's count and ETA, the same for every session; once it is done, the page reruns to show
    the complete report."""
    if job.done():
        st.rerun(scope="app")
    fraction, _, _ = job.progress.snapshot()
    st.progress(fraction, text=f"Image diagnostics in the background: {eta_text(job)}")


settings = BiasSettings(resamples=resamples, min_effect=float(min_effect))
job: Job[BiasReport] | None = None  # the image diagnostics' background job, until it has succeeded
try:
    complete = report_path(checkpoint, data, reference, source, settings, None, runs, reference_runs)
    if complete.exists():
        report = with_bar(True)
    else:  # answer first: what the test embeddings give now, what needs images (minutes at scale) in the background
        report = with_bar(False)  # before the job starts: on 2 cores its imports would slow this answer down
        compute = partial(bias_report, checkpoint, data, reference, source, settings, None)  # + the job's progress
        job = bias_jobs().submit(str(complete), partial(compute, runs=runs, reference_runs=reference_runs))
        if job.done() and job.error() is None:
            report, job = job.result(), None
except CHTNError as exc:
    st.error(f"**Cannot compute the report.** {exc}", icon=":material/error:")
    st.stop()
pending = job if job is not None and not job.done() else None
if job is not None and job.done():
    job_failed(bias_jobs(), job, "Computing the image diagnostics")
if pending is not None:
    st.info(pending_statement(reference is not None, source is not None), icon=":material/hourglass_top:")
    wait_for(pending)

level, gate = gate_statement(report)
(st.warning if level == "warning" else st.info)(f"**Domain gate.** {gate}", icon=":material/filter_alt:")
for note in report.notes:
    st.warning(note, icon=":material/info:")
if reference is not None:
    st.markdown(f"**What is compared.** {runs_statement(report)}")
    sides = ([checkpoint, *runs], [reference, *reference_runs])
    named = [ws.run_names(side) for side in sides]
    st.caption(f"Runs with the source: {named[0]}. Reference runs, without it: {named[1]}.")
st.caption(inputs_statement(report, images_pending=pending is not None))

full_table = category_table(report)
table = full_table.copy()  # the page adds link columns; the CSV download keeps the report's own
flags = list(FLAGS)
if "gain" in report.tables:
    counts = report.tables["gain"]["flag"].value_counts()
    cols = st.columns(len(flags))
    for col, flag in zip(cols, flags):
        col.metric(flag, int(counts.get(flag, 0)), help="categories x directions")
shown = st.multiselect("Show categories flagged", flags, default=flags, key="bi_flags")
if "flag I->T" in table:
    table = table[table["flag I->T"].isin(shown) | table["flag T->I"].isin(shown)]
worst = {
    name: ctx.gallery.data.ids[int(row)]
    for name, row in worst_query_per_category(ctx.report, "i2t", ctx.label_names).items()
}
table.insert(
    1,
    "explore",
    [explorer_link(ctx.opened, "i2t", worst.get(c, ""), search=c).url for c in table["category"]],
)
table.insert(2, "map", [space_link(ctx.opened, category=c).url for c in table["category"]])
st.dataframe(
    table,
    hide_index=True,
    width="stretch",
    column_config={
        "explore": st.column_config.LinkColumn(
            "explore", display_text="its queries", help="The explorer on this category's queries, at its worst I->T one"
        ),
        "map": st.column_config.LinkColumn("map", display_text="map", help="The shared space, this category"),
        **{f"ΔAP {a}": st.column_config.NumberColumn(format="%+.3f") for a in ("I->T", "T->I")},
        **{f"q {a}": st.column_config.TextColumn(help="Benjamini-Hochberg-adjusted p") for a in ("I->T", "T->I")},
    },
)
st.caption(
    "ΔAP: the direct evidence (its interval is across training runs when each side has two or more, else across "
    "test queries only). Coverage, capture, MMD, A-distance and the ImageNet prior are indicative transferability "
    "proxies."
)
if "gain" in report.tables:
    st.caption(flags_statement(report))
for title, figure in figures(report).items():
    st.subheader(title)
    st.plotly_chart(figure, width="stretch")

name = checkpoint.path.stem
cols = st.columns(3)
cols[0].download_button("HTML report", _html(report.to_json(), checkpoint.path.name), f"bias_{name}.html", "text/html")
cols[1].download_button("JSON", report.to_json(), f"bias_{name}.json", "application/json")
cols[2].download_button("Category table (CSV)", csv_bytes(full_table), f"bias_{name}.csv", "text/csv")
