"""Deep links (views/links.py): one builder per linked page, and every value survives any checkpoint path, query id,
category or rule path (URL-encoded); flags read as the pages' bound widgets read them; every link names a page of
dashboard.py at its address."""

from __future__ import annotations

import re
from urllib.parse import parse_qs, urlsplit

from hypothesis import given
from hypothesis import strategies as st

from analysis.review.queue import QueueSpec
from tests.conftest import ROOT
from views.links import (
    Link,
    Opened,
    attribution_link,
    bias_link,
    compare_link,
    explorer_link,
    review_link,
    space_link,
)

TEXT = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), min_size=1, max_size=40)


def _params(link: Link) -> tuple[str, dict[str, str]]:
    """The link's address and values as a browser would read them back."""
    parts = urlsplit(link.url)
    values = {k: v[0] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
    assert values == link.params  # the address and st.page_link's parameters say the same
    return parts.path, values


@given(TEXT, TEXT, TEXT, TEXT)
def test_every_value_comes_back_as_given(checkpoint, query, category, other):
    assert _params(explorer_link(checkpoint, "t2i", query, search=category, k=7)) == (
        "/explorer", {"checkpoint": checkpoint, "direction": "t2i", "query": query, "search": category, "k": "7"}
    )  # fmt: skip
    assert _params(attribution_link(checkpoint, "i2t", query, other)) == (
        "/attribution", {"checkpoint": checkpoint, "direction": "i2t", "query": query, "result": other}
    )  # fmt: skip
    assert _params(space_link(checkpoint, category)) == ("/space", {"checkpoint": checkpoint, "category": category})
    assert _params(space_link(checkpoint, point=query, modality="text")) == (
        "/space", {"checkpoint": checkpoint, "point": query, "modality": "text"}
    )  # fmt: skip
    assert _params(review_link(checkpoint, queue=query, item=3)) == (
        "/review", {"checkpoint": checkpoint, "queue": query, "item": "3"}
    )  # fmt: skip
    assert _params(compare_link(checkpoint, other, rule=category)) == (
        "/compare", {"checkpoint": checkpoint, "baseline": other, "rule": category}
    )  # fmt: skip
    assert _params(bias_link(checkpoint)) == ("/bias", {"checkpoint": checkpoint})


def test_a_path_with_an_ampersand_and_a_hash_stays_one_value():
    link = explorer_link("runs/a&b #2/best.safetensors", "i2t", "13251")
    assert "&b" not in link.url and "#" not in link.url
    assert _params(link)[1]["checkpoint"] == "runs/a&b #2/best.safetensors"


def test_flags_read_true_or_false_and_are_left_out_at_their_default():
    assert attribution_link("c", "i2t", "q", "r", contrast=True).params["contrast"] == "true"
    assert "contrast" not in attribution_link("c", "i2t", "q", "r").params
    assert compare_link("c", "b", runs=False, strict=True).params == {
        "checkpoint": "c", "baseline": "b", "runs": "false", "strict": "true"
    }  # fmt: skip
    assert compare_link("c", "b", rule="").params == {"checkpoint": "c", "baseline": "b"}  # empty: the default rule
    assert bias_link("c", runs=False).params == {"checkpoint": "c", "runs": "false"}


def test_a_meeting_link_carries_the_spec_the_review_page_reads_back():
    spec = QueueSpec(size=6, seed=2, strata=("category", "kind"), categories=("Heels & Flats",))
    link = review_link("chtn_fashion_source", queue="0123456789ab", item=1, spec=spec)
    _, values = _params(link)
    assert QueueSpec.from_params(values) == spec and values["queue"] == "0123456789ab"


def test_every_link_opens_a_page_of_the_app_at_its_address():
    """The page script and the address of each builder are those dashboard.py's st.navigation registers."""
    pages = dict(re.findall(r'st\.Page\("(views/\w+\.py)".*?url_path="(\w+)"', (ROOT / "dashboard.py").read_text()))
    links = [
        explorer_link("c", "i2t", "q"),
        attribution_link("c", "i2t", "q"),
        space_link("c"),
        review_link("c"),
        compare_link("c", "b"),
        bias_link("c"),
    ]
    for link in links:
        assert link.page in pages and link.url.startswith(f"/{pages[link.page]}?"), link


@given(TEXT, TEXT, TEXT)
def test_a_link_carries_the_dataset_and_skip_that_are_open(checkpoint, data, query):
    """What the sidebar opened travels with every link: the dataset file (left out for the sample) and the skip flag
    (left out when off), so a new tab or a colleague opens the same rows."""
    opened = Opened(checkpoint, data, skip_invalid=True)
    assert _params(attribution_link(opened, "i2t", query)) == (
        "/attribution", {"checkpoint": checkpoint, "data": data, "skip": "true", "direction": "i2t", "query": query}
    )  # fmt: skip
    assert _params(review_link(Opened(checkpoint), queue=query))[1] == {"checkpoint": checkpoint, "queue": query}
