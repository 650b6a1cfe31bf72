"""One shape for progress reports, used by every long step: ``progress(fraction, message)``, with the fraction done
in [0, 1] and what is being done in words. It is the shape of Streamlit's ``st.progress(value, text=...)``, so a
page hands its bar's update over as is; the CLI shows tqdm bars instead and passes no callback."""

from __future__ import annotations

from collections.abc import Callable

Progress = Callable[[float, str], None]


def of_count(done: int, total: int, what: str) -> tuple[float, str]:
    """(fraction, message) for `done` of `total` items, e.g. (0.25, "Embedding images 250/1,000")."""
    return done / max(total, 1), f"{what} {done:,}/{total:,}"


def within(progress: Progress, start: float, end: float) -> Progress:
    """`progress` for one stage of a longer job: the stage's own fraction mapped into [start, end] of the whole."""
    return lambda fraction, message: progress(start + (end - start) * fraction, message)
