"""Deep links (views/links.py) survive any checkpoint path, query id or category: every value is URL-encoded."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

from hypothesis import given
from hypothesis import strategies as st

from views.links import attribution_link, explorer_link, space_link

TEXT = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), min_size=1, max_size=40)


def _params(link: str) -> tuple[str, dict[str, str]]:
    parts = urlsplit(link)
    return parts.path, {k: v[0] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}


@given(TEXT, TEXT, TEXT)
def test_every_value_comes_back_as_given(checkpoint, query, category):
    assert _params(explorer_link(checkpoint, "t2i", query, search=category)) == (
        "/explorer", {"checkpoint": checkpoint, "direction": "t2i", "query": query, "search": category}
    )  # fmt: skip
    assert _params(attribution_link(checkpoint, "i2t", query)) == (
        "/attribution", {"checkpoint": checkpoint, "direction": "i2t", "query": query}
    )  # fmt: skip
    assert _params(space_link(checkpoint, category)) == ("/space", {"checkpoint": checkpoint, "category": category})


def test_a_path_with_an_ampersand_and_a_hash_stays_one_value():
    link = explorer_link("runs/a&b #2/best.safetensors", "i2t", "13251")
    assert "&b" not in link and "#" not in link and _params(link)[1]["checkpoint"] == "runs/a&b #2/best.safetensors"
