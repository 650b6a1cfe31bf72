"""Checkpoint A/B figures on the real sample: the gain of the fashion source shows with its interval, a checkpoint
against itself is exactly zero, mismatched inputs are refused, and fixed / broken queries are what they say."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from analysis import outcomes as oc
from analysis.compare import figures as compare
from analysis.stats import median_difference_ci
from chtn.errors import CHTNError


def _open(name: str):
    from analysis import workspace as ws
    from chtn import gallery as gal

    checkpoint = ws.open_checkpoint(name)
    data, _ = ws.open_dataset(ws.SAMPLE_DATASET, checkpoint)
    gallery = gal.embed_split(checkpoint, data, "test")
    report = gal.evaluate_gallery(gallery, checkpoint.label_names)
    return data, gallery, report, oc.query_outcomes(gallery, report, checkpoint.label_names)


@pytest.fixture(scope="module")
def pair():
    return _open("chtn_no_source"), _open("chtn_fashion_source")


def test_the_fashion_source_gain_shows_with_its_interval(pair):
    (data_a, _, a, _), (data_b, _, b, _) = pair
    table = compare.figures([a], [b], data_a.ids, data_b.ids, resamples=2000)
    overall = table[table["slice"] == "overall"].set_index("metric")
    assert {"map", "map_i2t", "map_t2i", "pair_recall@1", "pair_recall@10_t2i", "pair_median_rank_i2t"} <= set(
        overall.index
    )
    gain = overall.loc["map"]
    assert gain["delta"] == pytest.approx(b.mean_map - a.mean_map, abs=1e-12)
    assert 0 < gain["ci_low"] < gain["delta"] < gain["ci_high"] and gain["p_value"] < 0.01
    assert gain["unit"] == "clusters" and (gain["runs_a"], gain["runs_b"]) == (1, 1)  # one run: categories resampled
    assert gain["wins"] + gain["ties"] + gain["losses"] == len(data_a.ids)
    assert overall.loc["pair_recall@1_i2t", "candidate"] == pytest.approx(b.i2t.own_pair_recall(1))
    assert overall.loc["pair_median_rank_t2i", "candidate"] == np.median(b.t2i.own_pair_expected_rank())
    categories = table[table["slice"].str.startswith("category:")]
    assert set(categories["metric"]) == {
        f"{m}_{d}" for m in ("map", "pair_recall@1", "pair_recall@10") for d in "i2t t2i".split()
    }
    assert len(categories) == 6 * len(a.label_names) and (categories["p_holm"] >= categories["p_value"]).all()


def test_a_checkpoint_against_itself_is_exactly_zero(pair):
    (data, _, report, _), _ = pair
    table = compare.figures([report], [report], data.ids, data.ids, resamples=500)
    assert (table["delta"] == 0).all() and (table["ci_low"] == 0).all() and (table["ci_high"] == 0).all()
    means = table[~table["metric"].str.startswith("pair_median_rank")]
    assert (means["p_value"] == 1).all() and (means["wins"] == 0).all() and (means["losses"] == 0).all()


def test_mismatched_inputs_are_refused_with_the_reason(pair):
    (data_a, _, a, _), (data_b, _, b, _) = pair
    with pytest.raises(CHTNError, match="same ids"):
        compare.figures([a], [b], data_a.ids, list(reversed(data_b.ids)))
    renamed = dataclasses.replace(b, label_names=[*b.label_names[:-1], "Kaftans"])
    with pytest.raises(CHTNError, match="different label sets.*Kaftans"):
        compare.figures([a], [renamed], data_a.ids, data_b.ids)


def test_fixed_and_broken_queries(pair):
    (_, _, _, outcomes_a), (_, _, _, outcomes_b) = pair
    changes = compare.query_changes(outcomes_a, outcomes_b)
    assert len(changes) == len(outcomes_a)
    fixed, broken = changes[changes["change"] == "fixed"], changes[changes["change"] == "broken"]
    assert len(fixed) and len(broken) and len(fixed) > len(broken)  # the source helps more than it hurts
    assert fixed["mis_retrieved_a"].all() and not fixed["mis_retrieved_b"].any()
    assert broken["mis_retrieved_b"].all() and not broken["mis_retrieved_a"].any()
    np.testing.assert_allclose(changes["ap_change"], changes["ap_b"] - changes["ap_a"])


def test_median_difference_interval_holds_the_point_and_is_exact_for_constants():
    rng = np.random.default_rng(0)
    a = rng.integers(1, 40, 300).astype(float)
    b = a + 3
    low, high = median_difference_ci(a, b, 1000, 0)
    assert low == high == 3.0
    b = a + rng.normal(2, 5, 300)
    low, high = median_difference_ci(a, b, 1000, 0)
    assert low < np.median(b) - np.median(a) < high


def test_aligned_projection_is_cached_on_disk_by_content(pair, tmp_path):
    from analysis.projection.project import ProjectionParams, cached_project_two, project_two

    (_, gallery_a, _, _), (_, gallery_b, _, _) = pair
    a, b = np.vstack([gallery_a.image, gallery_a.text]), np.vstack([gallery_b.image, gallery_b.text])
    params = ProjectionParams(method="pca")
    first = cached_project_two(a, b, params, tmp_path)
    assert len(list((tmp_path / "projections").glob("aligned-*.npz"))) == 1
    again = cached_project_two(a, b, params, tmp_path)
    direct = project_two(a, b, params)
    for got, want in zip((*first, *again), (*direct, *direct)):
        np.testing.assert_array_equal(got, want)
    cached_project_two(b, a, params, tmp_path)  # other content, another entry
    assert len(list((tmp_path / "projections").glob("aligned-*.npz"))) == 2


def test_the_sample_comparison_names_its_significant_loss_within_tolerance(pair):
    """Fashion source (B) against no source (A): "GO … 0 warnings" once hid Formal Shoes T->I, a significant loss that
    the per-category tolerance let pass. With a -0.10 tolerance it passes again, and the verdict names it, with its
    interval and Holm p; under the default -0.05 it is a warning."""
    from analysis.compare.rules import load_rules

    (_, gallery_a, a, _), (_, gallery_b, b, _) = pair
    baseline, candidate = compare.Evaluated("no source", gallery_a, a), compare.Evaluated("fashion", gallery_b, b)
    rule = load_rules(
        '[[rule]]\nmetric = "map"\nslice = "category:*"\nseverity = "warn"\n'
        'change = { direction = "higher_is_better", absolute = -0.10 }\n'
    )
    decision = compare.compare_checkpoints([baseline], [candidate], rule).decision
    assert decision.verdict == "GO" and decision.tolerated and not decision.warnings
    for result in decision.tolerated:
        assert result.status == "pass" and result.figures["p_adj"] < 0.05 and result.figures["delta"] <= -0.01
        assert result.figures["delta"] >= -0.10  # within the rule's tolerance, else it would warn
    assert "significant loss" in decision.summary and "within tolerance" in decision.summary
    assert "MAP T->I on Formal Shoes" in decision.summary and "(tolerance -0.1)" in decision.summary


def test_the_forest_plot_is_sorted_by_effect_and_marks_significant_rows(pair):
    from analysis.compare.render import category_table, forest_figure

    (data_a, _, a, _), (data_b, _, b, _) = pair
    table = compare.figures([a], [b], data_a.ids, data_b.ids, resamples=1000)
    figure = forest_figure(table)
    rows = table[table["slice"].str.startswith("category:") & table["metric"].str.startswith("map_")]
    mean_delta = rows.groupby(rows["slice"].str.removeprefix("category:"))["delta"].mean()
    order = list(figure.layout.yaxis.categoryarray)
    assert sorted(order) == sorted(mean_delta.index)
    assert list(mean_delta[order]) == sorted(mean_delta)  # largest loss first (drawn on top)
    for trace in figure.data:
        part = rows[rows["direction"] == ("i2t" if trace.name == "I->T" else "t2i")]
        significant = (part["p_holm"] < 0.05).to_numpy()
        assert list(trace.marker.symbol) == ["circle" if s else "circle-open" for s in significant]
    assert significant.any() and not significant.all()
    shown = category_table(table)["p (Holm)"]
    assert "0.000" not in set(shown) and (shown == "< 0.001").any()
