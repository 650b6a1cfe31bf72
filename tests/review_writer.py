"""A child process for tests/test_review_store.py: saves verdicts as fast as it can, one confirmation per save.

`python -m tests.review_writer LOCATION PREFIX COUNT` saves COUNT verdicts (COUNT 0: until killed) with query ids
and notes derived from PREFIX and prints `saved <id>` (flushed) only after save_verdict returned, i.e. after the
COMMIT: every printed id is a verdict the UI would have confirmed.
"""

from __future__ import annotations

import itertools
import sys

from analysis.review.store import ReviewStore


def note(prefix: str, i: int) -> str:
    """A note the parent can check exactly: its own text, repeated to a few KB so writes are not trivial."""
    return f"{prefix} verdict {i}: " + "ünïcode ✓ " * 300


def main(location: str, prefix: str, count: int) -> None:
    store = ReviewStore(location)
    for i in itertools.count() if count == 0 else range(count):
        verdict = store.save_verdict(
            dataset="ds",
            checkpoint=f"ckpt-{prefix}",
            checkpoint_name=prefix,
            query_id=f"{prefix}-{i}",
            direction="i2t",
            verdict="model error",
            note=note(prefix, i),
            reviewer=prefix,
        )
        print(f"saved {verdict.id} {i}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
