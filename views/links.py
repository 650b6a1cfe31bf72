"""Deep links into the dashboard's pages, one builder per page, every value URL-encoded (a checkpoint path or a
category may hold spaces, '&' or '#'). For `st.page_link`, pass the same parameters as `query_params`."""

from __future__ import annotations

from urllib.parse import urlencode


def _link(page: str, params: dict[str, str]) -> str:
    return f"/{page}?{urlencode({k: v for k, v in params.items() if v is not None})}"


def explorer_link(checkpoint: str, direction: str, query: str, search: str | None = None) -> str:
    """The retrieval explorer on one test query (and, with `search`, its query list filtered to that text)."""
    return _link("explorer", {"checkpoint": checkpoint, "direction": direction, "query": query, "search": search})


def attribution_link(checkpoint: str, direction: str, query: str) -> str:
    """ "Why this result?" on one test query's top result."""
    return _link("attribution", {"checkpoint": checkpoint, "direction": direction, "query": query})


def space_link(checkpoint: str, category: str) -> str:
    """The shared-space map, on one category."""
    return _link("space", {"checkpoint": checkpoint, "category": category})
