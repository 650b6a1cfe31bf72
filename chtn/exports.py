"""CSV exports that a spreadsheet opens as data: one writer for the CLI's and the dashboard's CSV files.

A text cell starting with `=`, `+`, `-`, `@`, a tab or a carriage return is run as a formula by spreadsheet
programs (CSV injection). Following OWASP's rule, such cells get a leading single quote, so the spreadsheet
shows the text as it is and runs nothing. Numbers are left alone (a negative rank stays a number).
"""

from __future__ import annotations

import csv
from pathlib import Path

import pandas as pd

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
# Every text cell in quotes: pandas leaves a cell holding a bare carriage return unquoted, which a spreadsheet
# reads as the end of the row.
QUOTING = csv.QUOTE_NONNUMERIC


# The plotly template of the HTML reports, named, whatever the process's default is: a Streamlit server replaces
# plotly's default template, and a report a page downloads must be the one the CLI writes.
REPORT_TEMPLATE = "plotly_white"


def spreadsheet_safe(value: object) -> object:
    """`value`, with a leading single quote when it is text a spreadsheet would run as a formula."""
    return "'" + value if isinstance(value, str) and value.startswith(FORMULA_STARTS) else value


def safe_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """A copy of `frame` whose text cells (and column names) are spreadsheet-safe."""
    safe = frame.copy()
    for column in safe.columns:
        if safe[column].dtype == object or pd.api.types.is_string_dtype(safe[column]):
            safe[column] = safe[column].map(spreadsheet_safe)
    safe.columns = [spreadsheet_safe(c) for c in safe.columns]
    return safe


def csv_bytes(frame: pd.DataFrame) -> bytes:
    """UTF-8 CSV of `frame` (no index), safe to open in a spreadsheet: what download buttons serve."""
    return safe_frame(frame).to_csv(index=False, quoting=QUOTING).encode("utf-8")


def write_csv(frame: pd.DataFrame, path: str | Path) -> Path:
    """Write `frame` as a spreadsheet-safe UTF-8 CSV (no index) to `path`."""
    path = Path(path)
    safe_frame(frame).to_csv(path, index=False, quoting=QUOTING)
    return path
