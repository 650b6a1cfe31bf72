"""User-facing errors: one exception type whose message names the problem and what to do.

The CLI and the dashboard catch `CHTNError` and print/show its message instead of a traceback.
"""

from __future__ import annotations


class CHTNError(Exception):
    """A problem with the user's input (data, checkpoint, configuration) explained in plain words."""


class DataValidationError(CHTNError):
    """A dataset failed validation; `report` holds the counts and first offenders."""

    def __init__(self, message: str, report: object) -> None:
        super().__init__(message)
        self.report = report


class CheckpointError(CHTNError):
    """A checkpoint file is missing, corrupt, foreign or does not fit the chosen data."""
