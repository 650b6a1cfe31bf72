"""The shared-space selection as a URL value (analysis.projection.region): what is drawn comes back as the same
points, and no link can break the page."""

from __future__ import annotations

import json

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from analysis.projection import region


def test_a_box_and_a_lasso_round_trip_through_the_url_and_select_the_same_points():
    rng = np.random.default_rng(0)
    x, y = rng.uniform(-5, 5, 2000), rng.uniform(-5, 5, 2000)
    box = region.from_selection({"box": [{"x": [-1.23456, 2.5], "y": [3.0, -0.5]}], "lasso": [], "points": []})
    again = region.parse(box.param())
    assert again == box and again.kind == "box"
    assert np.array_equal(again.contains(x, y), (x >= -1.235) & (x <= 2.5) & (y >= -0.5) & (y <= 3.0))
    angles = np.linspace(0, 2 * np.pi, 400, endpoint=False)  # a hand-drawn circle of radius 2: many corners
    lasso = region.from_selection({"lasso": [{"x": list(2 * np.cos(angles)), "y": list(2 * np.sin(angles))}]})
    assert lasso.kind == "lasso" and len(lasso.xs) == region.MAX_VERTICES and len(lasso.param()) < 2000
    inside = region.parse(lasso.param()).contains(x, y)
    radius = np.hypot(x, y)
    assert inside[radius < 1.95].all() and not inside[radius > 2.05].any()  # thinned, still the same circle


def test_a_click_or_a_cleared_selection_is_no_region():
    assert region.from_selection({"points": [{"x": 1, "y": 2}], "box": [], "lasso": []}) is None
    assert region.from_selection({}) is None


@settings(max_examples=200, deadline=None)
@given(
    st.one_of(
        st.text(max_size=60),
        st.recursive(
            st.none() | st.booleans() | st.floats(allow_nan=True) | st.integers() | st.text(max_size=5),
            lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.sampled_from(["box", "lasso", "x"]), inner),
            max_leaves=12,
        ).map(json.dumps),
    )
)
def test_any_url_value_is_a_region_or_nothing(text):
    parsed = region.parse(text)
    if parsed is not None:
        mask = parsed.contains(np.array([0.0, 1.0]), np.array([0.0, 1.0]))
        assert mask.dtype == bool and mask.shape == (2,)
