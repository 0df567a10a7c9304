"""Undo / redo of the arrangement edits and ratings, persisted in the project's database.

*(our choice)* Memento entries, not QUndoStack commands or an event log. Every edit the app makes is
either a new arrangement (add / delete / move / regenerate / extend / inpaint / keep a variation all
end in `SessionStore.set_arrangement` with a list of take ids) or a rating. An entry stores the *state
to go back to* -- the previous take-id list, or (take id, previous rating) -- so undoing it is one
write of that state, and the entry that redoes it is the state just replaced. That is exact whatever
happened in between, tiny (a few ints per entry), and stored as JSON rows of `undo_log` with no Qt
object to serialise: QUndoStack keeps Python command objects in memory only, and an event log would
have to be replayed against takes whose audio may since have gone missing.

Each change is written at once (one transaction: `SessionStore.write_undo`), so the history survives a
restart or a crash. An entry that names a take not written yet (negative id, a full disk) stays in
memory and the whole history is rewritten by `flush()` once the takes are saved (`SessionModel.flush`).
Entries naming a take that no longer has a row are dropped when the history is loaded.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from app.store import SessionStore

log = logging.getLogger(__name__)

LIMIT = 200  # entries kept per stack (the oldest are dropped)
UNDO, REDO = "undo", "redo"


@dataclass(frozen=True)
class Entry:
    """One undoable change: applying `data` restores the state before it."""

    kind: str  # "arrangement" (data: list of take ids) | "rating" (data: [take id, rating])
    label: str  # "Delete segment", shown as Edit > Undo Delete segment
    data: Any
    row: int = 0  # its `undo_log` row (0: not written)

    def take_ids(self) -> list[int]:
        return list(self.data) if self.kind == "arrangement" else [int(self.data[0])]


class UndoHistory:
    """The undo and redo stacks of one session of a project."""

    def __init__(self, store: SessionStore, session_id: int, exists: Callable[[int], bool]) -> None:
        self.store, self.session_id = store, session_id
        self.dirty = False  # the database lags behind memory (rewritten by flush)
        self._stacks: dict[str, list[Entry]] = {UNDO: [], REDO: []}
        try:
            rows = store.undo_rows(session_id)
        except sqlite3.Error as exc:  # a history is a convenience: start empty, say why in the log
            log.warning("cannot read the undo history: %s", exc)
            rows = []
        dropped, known = [], {}  # known: take id -> has a row (asked once per id)
        for r in rows:
            entry = Entry(r.kind, r.label, r.data, r.id)
            try:
                ids = [int(t) for t in entry.take_ids()]
            except (TypeError, ValueError, IndexError, KeyError):  # a row that makes no sense
                dropped.append(r.id)
                continue
            for t in ids:
                if t not in known:
                    known[t] = exists(t)
            if r.stack in self._stacks and all(known[t] for t in ids):
                self._stacks[r.stack].append(entry)
            else:
                dropped.append(r.id)
        if dropped:
            log.warning("undo history: dropped %d entries naming takes that are gone", len(dropped))
            self._write(delete=dropped)

    # ------------------------------------------------------------------ reading
    @property
    def can_undo(self) -> bool:
        return bool(self._stacks[UNDO])

    @property
    def can_redo(self) -> bool:
        return bool(self._stacks[REDO])

    def label(self, stack: str) -> str:
        """Label of the entry `undo()`/`redo()` would apply ("" when none)."""
        return self._stacks[stack][-1].label if self._stacks[stack] else ""

    def entries(self, stack: str) -> list[Entry]:
        return list(self._stacks[stack])

    # ------------------------------------------------------------------ changes
    def record(self, kind: str, label: str, data: Any) -> None:
        """A new edit: its undo entry is pushed and the redo stack is emptied."""
        self._push(UNDO, Entry(kind, label, data), clear=bool(self._stacks[REDO]))

    def pop(self, stack: str) -> Entry | None:
        """Take the top of `stack` (undo or redo) to apply it; `push_inverse` must follow."""
        return self._stacks[stack].pop() if self._stacks[stack] else None

    def push_inverse(self, popped: Entry, stack: str, inverse: Entry) -> None:
        """After applying `popped`: store the entry that reverts it on `stack` (one transaction)."""
        self._push(stack, inverse, delete=[popped.row] if popped.row else [])

    def _push(self, stack: str, entry: Entry, clear: bool = False, delete: list[int] | None = None) -> None:
        delete = list(delete or [])
        if clear:
            delete += [e.row for e in self._stacks[REDO] if e.row]
            self._stacks[REDO] = []
        items = self._stacks[stack]
        items.append(entry)
        while len(items) > LIMIT:
            old = items.pop(0)
            if old.row:
                delete.append(old.row)
        if any(t < 0 for t in entry.take_ids()):  # a take not written yet: saved by flush()
            self.dirty = True
            self._write(delete=delete)
            return
        rows = self._write(add=[(stack, entry.kind, entry.label, entry.data)], delete=delete)
        if rows:
            items[-1] = Entry(entry.kind, entry.label, entry.data, rows[0])

    def _write(self, add: list[tuple[str, str, str, Any]] | None = None,
               delete: list[int] | None = None) -> list[int]:
        if self.dirty and add:  # behind already: write everything at the next flush
            return []
        try:
            return self.store.write_undo(self.session_id, add or [], delete or [])
        except sqlite3.Error as exc:
            log.warning("cannot save the undo history: %s", exc)
            self.dirty = True
            return []

    def remap(self, remap: dict[int, int]) -> None:
        """Temporary take ids became real ones (`SessionModel._save_unsaved`)."""
        for stack, items in self._stacks.items():
            self._stacks[stack] = [_remapped(e, remap) for e in items]
        self.dirty = True

    def flush(self) -> None:
        """Rewrite the whole history when the database lags behind (after a failed write)."""
        if not self.dirty or any(t < 0 for s in self._stacks.values() for e in s for t in e.take_ids()):
            return
        add = [(stack, e.kind, e.label, e.data) for stack in (UNDO, REDO) for e in self._stacks[stack]]
        rows = self.store.write_undo(self.session_id, add, clear=(UNDO, REDO))  # raises: flush retries
        it = iter(rows)
        for stack in (UNDO, REDO):
            self._stacks[stack] = [Entry(e.kind, e.label, e.data, next(it)) for e in self._stacks[stack]]
        self.dirty = False


def _remapped(entry: Entry, remap: dict[int, int]) -> Entry:
    if entry.kind == "arrangement":
        data: Any = [remap.get(i, i) for i in entry.data]
    else:
        data = [remap.get(entry.data[0], entry.data[0]), entry.data[1]]
    return Entry(entry.kind, entry.label, data, entry.row)
