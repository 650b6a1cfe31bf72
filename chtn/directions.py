"""The two retrieval directions, named once for the whole project: i2t (an image queries the texts) and t2i (a text
queries the images)."""

from __future__ import annotations

from typing import Literal, get_args

Direction = Literal["i2t", "t2i"]
DIRECTIONS: tuple[Direction, ...] = get_args(Direction)
ARROWS: dict[str, str] = {"i2t": "I->T", "t2i": "T->I"}  # compact: tables, CLI output, plots, reports
DIRECTION_NAMES: dict[str, str] = {"i2t": "Image → Text", "t2i": "Text → Image"}  # the dashboard's pickers and headings
