"""Verdicts being typed and saved on the Review page, kept in the session until the review database has them.

Why this exists: Streamlit ends a script run at its next element as soon as a newer event (a J press) arrives, and
a button's "clicked" is true for one run only, so a save written as `if st.button(...): save()` is dropped when the
reviewer moves on before that run reaches it. Here nothing depends on that one run: every change to the verdict or
the note is copied into a per-item draft by the widget's callback, and the Save button's callback (callbacks always
run, before the script) appends the typed verdict to a queue of pending saves. Every run first works through that
queue; a save leaves it only together with its outcome (the stored row's id, or why it was refused), with no
Streamlit call in between, so an interrupted run leaves it queued for the next one. A draft is dropped only once
the store has exactly that text; until then, coming back to the item shows it.

Two runs of one session can overlap: when a key press arrives while a run is blocked in the database (a save
waiting for a lock), Streamlit may start the next run before the blocked one has stopped. Both then work on the
same queue, so every change to the drafts and the queue is made under one re-entrant lock kept with them; a save
holds it while it writes, and the other run waits for it and then finds that save done.

No Streamlit here: `VerdictDesk` works on any mutable mapping (the page passes `st.session_state`), under keys that
start with the page's prefix.
"""

from __future__ import annotations

import threading
from collections.abc import MutableMapping
from dataclasses import dataclass

import pandas as pd

from analysis import outcomes as oc
from analysis.review.store import ReviewStore
from analysis.store import StoreError

NO_NAME = "type your name in the sidebar first (it is remembered for this browser session)"


@dataclass(frozen=True)
class Draft:
    """What the reviewer typed on one item: the verdict chosen (None: none yet) and the note."""

    verdict: str | None
    note: str


@dataclass(frozen=True)
class PendingVerdict:
    """A verdict whose Save was pressed, with everything needed to store it whatever item is on screen by then."""

    query_id: str
    direction: str
    label: str  # how messages name the item: "#3 · query 1234 (i2t)"
    draft: Draft
    reviewer: str
    queue_id: str | None


@dataclass(frozen=True)
class SaveTarget:
    """Where and about what verdicts are saved: the checkpoint and dataset on screen, and the outcomes snapshot the
    store keeps alongside (so later checkpoints can say what changed)."""

    dataset: str
    checkpoint: str
    checkpoint_name: str
    outcomes: pd.DataFrame  # outcomes.query_outcomes


@dataclass(frozen=True)
class SaveResult:
    """How one pending save ended: the stored row's id, or the reason it was not stored (the draft is kept)."""

    pending: PendingVerdict
    row_id: int | None = None
    error: str | None = None


class VerdictDesk:
    """One reviewer's drafts, pending saves and save outcomes, kept in `state` under keys starting with `prefix`."""

    def __init__(self, state: MutableMapping, prefix: str = "rv") -> None:
        self.state, self.prefix = state, prefix
        for name in ("drafts", "errors", "stored", "written"):
            state.setdefault(f"{prefix}_{name}", {})
        state.setdefault(f"{prefix}_pending", [])
        state.setdefault(f"{prefix}_lock", threading.RLock())
        self._lock: threading.RLock = state[f"{prefix}_lock"]
        self._drafts: dict[tuple[str, str], Draft] = state[f"{prefix}_drafts"]
        self._pending: list[PendingVerdict] = state[f"{prefix}_pending"]
        self._errors: dict[tuple[str, str], str] = state[f"{prefix}_errors"]
        self._stored: dict[tuple[str, str], Draft] = state[f"{prefix}_stored"]  # what the database holds, as known
        self._written: dict[tuple[str, str], tuple] = state[f"{prefix}_written"]  # item -> (what, row) last written

    def widget_keys(self, query_id: str, direction: str) -> tuple[str, str]:
        """Session keys of the item's verdict radio and note area."""
        base = f"{self.prefix}_{query_id}_{direction}"
        return f"{base}_verdict", f"{base}_note"

    def prefill(self, query_id: str, direction: str, stored: Draft | None) -> None:
        """Before the item's widgets are drawn: give them the unsaved draft, else the reviewer's stored verdict
        (`stored`), unless they already hold a value in this session."""
        keys = self.widget_keys(query_id, direction)
        if stored is not None:
            self._stored.setdefault((query_id, direction), stored)
        if keys[0] in self.state:
            return
        draft = self._drafts.get((query_id, direction)) or stored
        if draft is not None:
            self.state[keys[0]], self.state[keys[1]] = draft.verdict, draft.note

    def keep_draft(self, query_id: str, direction: str) -> None:
        """The widgets' callback: copy what they hold into the item's draft."""
        verdict_key, note_key = self.widget_keys(query_id, direction)
        with self._lock:
            self._drafts[(query_id, direction)] = Draft(self.state.get(verdict_key), self.state.get(note_key) or "")

    def request_save(self, query_id: str, direction: str, label: str, queue_id: str | None) -> None:
        """The Save button's callback: keep the draft and queue it for saving (the next run saves it), by the
        reviewer named in the `<prefix>_reviewer` entry at this moment."""
        with self._lock:
            self.keep_draft(query_id, direction)
            self._errors.pop((query_id, direction), None)
            draft, reviewer = self._drafts[(query_id, direction)], str(self.state.get(f"{self.prefix}_reviewer") or "")
            pending = PendingVerdict(query_id, direction, label, draft, reviewer.strip(), queue_id)
            if pending in self._pending:
                return  # the same press delivered twice (a shortcut during a rerun): one save
            if draft == self._stored.get((query_id, direction)) and reviewer.strip():
                del self._drafts[(query_id, direction)]  # exactly what the database holds already: nothing to add
                return
            self._pending.append(pending)

    def save_on_leave(self, query_id: str, direction: str, label: str, queue_id: str | None) -> None:
        """Navigation's callback (J / K / U, the buttons, the item picker): queue the item's draft for saving when it
        holds a verdict and is not queued already. Moving on is how a room says "done with this one", and a Save
        pressed just before may not have reached the server: a chosen verdict is never left behind unsaved. A draft
        without a verdict (a note alone) stays a draft."""
        key = (query_id, direction)
        with self._lock:
            self.keep_draft(query_id, direction)
            draft = self._drafts[key]
            queued = any((p.query_id, p.direction, p.draft) == (*key, draft) for p in self._pending)
            if draft in (Draft(None, ""), self._stored.get(key)):
                del self._drafts[key]  # nothing typed, or just what the database already holds: nothing to save
            elif draft.verdict is not None and not queued:
                self.request_save(query_id, direction, label, queue_id)

    def pending(self) -> list[PendingVerdict]:
        """The saves not done yet, oldest first (waits for a save in progress in an overlapping run)."""
        with self._lock:
            return list(self._pending)

    def draft(self, query_id: str, direction: str) -> Draft | None:
        """The item's unsaved draft, if any."""
        return self._drafts.get((query_id, direction))

    def unsaved(self) -> list[tuple[str, str]]:
        """Items with a draft not saved yet (query_id, direction), in the order they were first typed."""
        return list(self._drafts)

    def error(self, query_id: str, direction: str) -> str | None:
        """Why the item's last save was refused (None if it was not)."""
        return self._errors.get((query_id, direction))

    def errors(self) -> dict[tuple[str, str], str]:
        """Every item whose last save was refused, with the reason."""
        return dict(self._errors)

    def last_saved(self) -> SaveResult | None:
        """The latest save this session completed: a run that saves may be cut short by the next key press, so the
        runs after it still say "saved #id"."""
        return self.state.get(f"{self.prefix}_last_saved")

    def saved_id(self, query_id: str, direction: str) -> int | None:
        """The row id this session last stored for the item."""
        return self._written.get((query_id, direction), (None, None))[1]

    def save_next(self, store: ReviewStore | None, store_error: str, target: SaveTarget) -> SaveResult | None:
        """Store the oldest pending verdict (None when none is left, e.g. an overlapping run saved it); it leaves the
        queue with its outcome recorded (nothing in between can be interrupted). Refusals (no store, no name, no
        verdict, a database error) keep the draft."""
        with self._lock:
            return self._save_first(store, store_error, target) if self._pending else None

    def _save_first(self, store: ReviewStore | None, store_error: str, target: SaveTarget) -> SaveResult:
        pending = self._pending[0]
        key = (pending.query_id, pending.direction)
        error, row_id = None, None
        if self._written.get(key, (None,))[0] == _content(pending):
            row_id = self._written[key][1]  # the item's latest row holds exactly this (one verdict queued twice by
            # overlapping runs, a Save and a move-on): the database gets one row
        elif store is None:
            error = f"Not saved: {store_error} Your note is still in the form."
        elif not pending.reviewer:
            error = f"Not saved: {NO_NAME}."
        elif pending.draft.verdict is None:
            error = "Not saved: choose a verdict."
        else:
            try:
                store.save_outcomes(
                    dataset=target.dataset,
                    checkpoint=target.checkpoint,
                    checkpoint_name=target.checkpoint_name,
                    outcomes=oc.snapshot(target.outcomes),
                )
                row_id = store.save_verdict(
                    dataset=target.dataset,
                    checkpoint=target.checkpoint,
                    checkpoint_name=target.checkpoint_name,
                    query_id=pending.query_id,
                    direction=pending.direction,
                    verdict=pending.draft.verdict,
                    note=pending.draft.note,
                    reviewer=pending.reviewer,
                    queue_id=pending.queue_id,
                ).id
            except StoreError as exc:
                error = f"**Not saved.** {exc} Your note is still in the form: save again when this is fixed."
        if error is not None:
            result = SaveResult(pending, error=error)
            self._errors[key] = error
        else:
            self._written[key] = (_content(pending), row_id)
            self._stored[key] = pending.draft
            self.state[f"{self.prefix}_last_saved"] = result = SaveResult(pending, row_id=row_id)
            if self._drafts.get(key) == pending.draft:  # typed on since pressing Save: that newer text stays a draft
                del self._drafts[key]
        self._pending.pop(0)  # last: the save leaves the queue with its outcome recorded
        return result


def _content(pending: PendingVerdict) -> tuple:
    """What a save writes, without how messages name the item."""
    return pending.draft, pending.reviewer, pending.queue_id
