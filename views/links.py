"""Deep links into the dashboard's pages: one builder per page that is linked to, so a page's URL parameters are
spelled in one place. A `Link` serves both ways of linking: `st.page_link(link.page, query_params=link.params)`
(Streamlit URL-encodes them) and `link.url`, the address itself with every value URL-encoded (a checkpoint path or
a category may hold spaces, '&', '#' or any other character), for link columns and pasted links.

The parameter names are those the pages read: the values a page writes itself (`checkpoint`, `data` and `skip`
(what the sidebar opened: `Opened`), `direction`, `query`,
`text` (a free-text query), `result`, `baseline`, `queue`, `item` and a meeting queue's spec, `point`, `modality`)
and bound widgets (`k`, `search`, `contrast`, `category`, `rule`, `strict`, `runs`: Streamlit's query-parameter
binding, whose flags read true/false). A flag at its default is left out, as the binding leaves it out of the
address bar; a link that opens a query opens it with the defaults of what it leaves out (views/explorer.py,
views/attribution.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode

from analysis.review.queue import QueueSpec


@dataclass(frozen=True)
class Link:
    """A page of the dashboard and the query parameters that open it in a given state."""

    page: str  # the page script, as st.page_link and st.switch_page name it
    params: dict[str, str]

    @property
    def url(self) -> str:
        """The link as an address relative to the server root, every value URL-encoded."""
        return f"/{Path(self.page).stem}?{urlencode(self.params)}"


def _flag(value: bool, default: bool) -> str | None:
    """A bound checkbox or toggle in a link: true/false as the binding reads them, nothing at the default."""
    return None if value == default else str(value).lower()


@dataclass(frozen=True)
class Opened:
    """What the sidebar has open, as every link carries it: the checkpoint (a sample name or a path), the dataset
    file (None: the sample) and whether invalid rows are skipped. A link opened in a new tab or by someone else
    starts a new session, whose sidebar opens these (views/common.py) instead of the sample."""

    checkpoint: str
    data: str | None = None
    skip_invalid: bool = False

    @property
    def params(self) -> dict[str, str]:
        named = {"checkpoint": self.checkpoint, "data": self.data, "skip": _flag(self.skip_invalid, False)}
        return {key: value for key, value in named.items() if value is not None}


def _link(page: str, opened: str | Opened, **params: str | None) -> Link:
    """A link to `page` on what is `opened` (or on a checkpoint alone, with the sample dataset), with `params`."""
    where = opened.params if isinstance(opened, Opened) else {"checkpoint": opened}
    return Link(f"views/{page}.py", {**where, **{key: value for key, value in params.items() if value is not None}})


def explorer_link(
    opened: str | Opened, direction: str, query: str, search: str | None = None, k: int | None = None
) -> Link:
    """The retrieval explorer on one test query (with `search`, its query list filtered to that text; with `k`, that
    many results)."""
    return _link(
        "explorer",
        opened,
        direction=direction,
        query=query,
        search=search,
        k=None if k is None else str(k),
    )


def attribution_link(
    opened: str | Opened, direction: str, query: str, result: str | None = None, contrast: bool = False
) -> Link:
    """ "Why this result?" on one query and one of its results (without `result`: its top result); `contrast`
    attributes what pulled a wrong result ahead of the query's own pair."""
    return _link(
        "attribution",
        opened,
        direction=direction,
        query=query,
        result=result,
        contrast=_flag(contrast, False),
    )


def free_text_attribution_link(opened: str | Opened, text: str, result: str) -> Link:
    """ "Why this result?" on a free-text query (the explorer's) and one test image it retrieved."""
    return _link("attribution", opened, direction="t2i", text=text, result=result)


def upload_attribution_link(opened: str | Opened, upload: str, result: str) -> Link:
    """ "Why this result?" on an uploaded image query (the explorer's, kept on the server under the key
    :func:`analysis.workspace.upload_key`) and one test text it retrieved."""
    return _link("attribution", opened, direction="i2t", upload=upload, result=result)


def space_link(
    opened: str | Opened, category: str | None = None, point: str | None = None, modality: str | None = None
) -> Link:
    """The shared-space map, on one category, or centred on one item (`point`, an id, of `modality` image/text)."""
    return _link("space", opened, category=category, point=point, modality=modality)


def review_link(
    opened: str | Opened, queue: str | None = None, item: int | None = None, spec: QueueSpec | None = None
) -> Link:
    """The Review page: all mis-retrieved queries, or the meeting queue `queue`, at item `item`. A queue recorded in
    the review database opens by its id; one not recorded yet needs its `spec` (whoever opens the link first
    records it)."""
    return _link(
        "review",
        opened,
        queue=queue,
        item=None if item is None else str(item),
        **(spec.to_params() if spec else {}),
    )


def compare_link(
    opened: str | Opened, baseline: str, rule: str | None = None, runs: bool = True, strict: bool = False
) -> Link:
    """Compare checkpoints: the candidate (`opened`'s checkpoint) against `baseline`, with a rule file (None: the
    default rule), the other training runs of each recipe or not, strict or not."""
    return _link(
        "compare",
        opened,
        baseline=baseline,
        rule=rule or None,
        runs=_flag(runs, True),
        strict=_flag(strict, False),
    )


def bias_link(opened: str | Opened, runs: bool = True) -> Link:
    """Source bias of `opened`'s checkpoint, with the other training runs of each recipe or not."""
    return _link("bias", opened, runs=_flag(runs, True))
