"""The session as the GUI sees it: an arrangement of takes laid end to end, ratings, undo, export.

Every mutation goes straight to the `SessionStore` (one committed transaction each) and then emits a
signal; undo records the previous arrangement / rating and writes it back the same way, and redo
reverts an undo. The undo/redo history is kept in the project's database (`app.undo_history`), so
it survives a restart.

When the store cannot write (a full disk, a read-only folder), nothing the user made is dropped: the
edit is applied in memory, a `storage_message` says so, and a timer retries the writes until they
succeed (a take whose audio could not be written gets a temporary negative id until then). A take
whose audio file is missing or unreadable stays in the arrangement as silence of its recorded
length, marked `Take.missing`, and is listed in `startup_notices()`.

Live streams are journalled as they play (`begin_live` / `append_live_chunk`): each chunk is a file
and a row before it is heard, so a killed app gets the stream back at its next start (`SessionStore`).
"""

from __future__ import annotations

import json
import logging
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PySide6.QtCore import QObject, QTimer, Signal

from app.store import SessionStore, StorageError, StoredAudio, Take
from app.undo_history import REDO, UNDO, Entry, UndoHistory

log = logging.getLogger(__name__)

RETRY_MS = 3000  # interval of the write retries after a storage failure
PROMPT_TAG_CHARS = 200  # prompt length kept in the compact tags a WAV INFO chunk can hold


@dataclass(frozen=True)
class Segment:
    """One slot of the arrangement."""

    index: int
    take: Take
    start: int  # first sample in the arrangement
    length: int  # samples

    @property
    def end(self) -> int:
        return self.start + self.length


def take_tags(take: Take) -> dict[str, str]:
    """Flat string metadata for an exported/stored file: prompt, seed, settings, model hash."""
    return {"prompt": take.prompt or "", "seed": str(take.seed), "model_hash": take.model_hash,
            "settings": json.dumps(take.settings, sort_keys=True, default=str), "kind": take.kind,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(take.created))}


def _compact(tags: dict[str, str]) -> dict[str, str]:
    short = {k: v for k, v in tags.items() if k not in ("settings", "segments")}
    short["prompt"] = short.get("prompt", "")[:PROMPT_TAG_CHARS]
    return short


@dataclass
class _Unsaved:
    """A take that exists only in memory until the store can write it."""

    stored: StoredAudio  # pending (no file yet) or written (row still missing)
    kind: str
    settings: dict[str, Any]
    metadata: dict[str, Any]
    model_hash: str
    parent_id: int | None
    live_stream: str | None


def _remapped(ids: list[int], remap: dict[int, int]) -> list[int]:
    return [remap.get(i, i) for i in ids]


class SessionModel(QObject):
    arrangement_changed = Signal()
    takes_changed = Signal()  # a take was added or re-rated (history view)
    rating_changed = Signal(int, int)  # take id, rating (no audio changed: playback goes on)
    undo_changed = Signal(bool)  # can undo
    edits_changed = Signal()  # the undo or redo stack changed (menu texts, redo)
    storage_message = Signal(str, str)  # level (warning | info), text: unsaved work and its saving

    def __init__(self, store: SessionStore, session_id: int | None = None) -> None:
        super().__init__()
        self.store = store
        self.session_id = store.current_session() if session_id is None else session_id
        self._takes: dict[int, Take] = {}
        self._ids: list[int] = [t for t in store.arrangement(self.session_id) if self._load(t) is not None]
        self.edits = UndoHistory(store, self.session_id, self._take_exists)
        self._concat: np.ndarray | None = None
        self._unsaved: dict[int, _Unsaved] = {}  # temporary id (< 0) -> take waiting for the disk
        self._dirty_arrangement = False
        self._dirty_ratings: dict[int, int] = {}
        self._live_failed = False
        self._retry = QTimer(self)
        self._retry.setInterval(RETRY_MS)
        self._retry.timeout.connect(self.flush)

    def _load(self, take_id: int) -> Take | None:
        if take_id not in self._takes:
            try:
                take = self.store.take(take_id)
            except KeyError:  # no row (cannot happen with the foreign keys): nothing to show
                log.warning("arrangement refers to take %s, which has no row", take_id)
                return None
            try:
                self.store.load_audio(take)
            except (OSError, RuntimeError, ValueError) as exc:  # missing or damaged FLAC: keep its place
                path = self.store.audio_path(take)
                take.missing = "file missing" if not path.exists() else "file unreadable"
                log.warning("take %s: %s (%s): %s", take_id, take.missing, path.name, exc)
                take.audio = np.zeros(round(take.seconds * take.sample_rate), np.float32)
            self._takes[take_id] = take
        return self._takes[take_id]

    def _take_exists(self, take_id: int) -> bool:
        try:
            self.store.take(take_id)
        except KeyError:
            return False
        return True

    def startup_notices(self) -> list[str]:
        """What the user must be told at start: recovered data, takes whose audio is missing."""
        notes = list(self.store.recovery)
        missing = [(i, self._takes[t]) for i, t in enumerate(self._ids) if self._takes[t].missing]
        if missing:
            where = ", ".join(f"#{i + 1} ({t.missing}: {t.audio_file})" for i, t in missing[:5])
            more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
            notes.append(f"{len(missing)} segment(s) have no audio and play as silence: {where}{more}. "
                         f"Put the files back into {self.store.audio_dir} and restart to hear them.")
        return notes

    # ------------------------------------------------------------------ reading
    def take(self, take_id: int) -> Take:
        take = self._load(take_id)
        if take is None:
            raise KeyError(f"take {take_id} is not available")
        return take

    def audio(self, take_id: int) -> np.ndarray:
        return self.store.load_audio(self.take(take_id))

    @property
    def take_ids(self) -> list[int]:
        return list(self._ids)

    def segments(self) -> list[Segment]:
        out, start = [], 0
        for i, tid in enumerate(self._ids):
            take = self.take(tid)
            n = len(self.audio(tid))
            out.append(Segment(i, take, start, n))
            start += n
        return out

    def arrangement_audio(self) -> np.ndarray:
        if self._concat is None:
            parts = [self.audio(t) for t in self._ids]
            self._concat = np.concatenate(parts) if parts else np.zeros(0, np.float32)
        return self._concat

    def history(self, min_rating: int = 0) -> list[Take]:
        return self.store.takes(None, min_rating)

    # ------------------------------------------------------------------ takes and ratings
    def add_take(self, stored: StoredAudio, kind: str, settings: dict[str, Any], metadata: dict[str, Any],
                 model_hash: str, parent_id: int | None = None, live_stream: str | None = None) -> Take:
        """Store a finished take (closing its live journal); kept in memory when the disk refuses."""
        if not stored.pending:
            try:
                take = self.store.add_take(self.session_id, stored, kind, settings, metadata, model_hash,
                                           parent_id, live_stream=live_stream)
            except sqlite3.Error as exc:
                self._storage_failed(f"the take could not be recorded ({exc})")
            else:
                self._takes[take.id] = take
                self.takes_changed.emit()
                return take
        else:
            self._storage_failed(stored.error)
        tid = min([0, *self._takes]) - 1
        take = Take(id=tid, session_id=self.session_id, kind=kind, parent_id=parent_id,
                    prompt=settings.get("prompt"), seed=settings.get("seed"), settings=settings,
                    metadata=metadata, model_hash=model_hash, audio_file=stored.file,
                    sample_rate=stored.sample_rate, seconds=len(stored.audio) / stored.sample_rate,
                    rating=0, created=time.time(), audio=stored.audio)
        self._unsaved[tid] = _Unsaved(stored, kind, settings, metadata, model_hash, parent_id, live_stream)
        self._takes[tid] = take
        secs = sum(len(u.stored.audio) for u in self._unsaved.values()) / stored.sample_rate
        self.storage_message.emit("warning", f"Not saved yet: {secs:.1f} s of new audio are kept in memory "
                                             "and will be saved as soon as the disk allows it (retrying).")
        return take

    def rate(self, take_id: int, rating: int, undoable: bool = True) -> None:
        take = self.take(take_id)
        if take.rating == rating:
            return
        if undoable:
            self._push("rating", "Rate", [take_id, take.rating])
        take.rating = rating
        if take_id > 0:  # an unsaved take (id < 0) gets its rating written with it
            try:
                self.store.set_rating(take_id, rating)
            except sqlite3.Error as exc:
                self._dirty_ratings[take_id] = rating
                self._storage_failed(f"the rating could not be saved ({exc})")
        self.takes_changed.emit()
        self.rating_changed.emit(take_id, rating)

    # ------------------------------------------------------------------ storage failures
    @property
    def unsaved(self) -> bool:
        """True while some edit or take exists only in memory."""
        return bool(self._unsaved or self._dirty_arrangement or self._dirty_ratings)

    def _storage_failed(self, reason: str) -> None:
        log.warning("storage: %s", reason)
        if not self._retry.isActive():
            self.storage_message.emit("warning", f"Cannot save: {reason}. Your work is kept in memory and "
                                                 "saved automatically when the disk allows it.")
            self._retry.start()

    def flush(self) -> bool:
        """Write everything kept in memory; True when nothing is left unsaved."""
        had_work = self.unsaved  # takes, arrangement, ratings (not just the undo history)
        try:
            for tid in sorted(self._unsaved, reverse=True):  # oldest first (-1, -2, ...)
                self._save_unsaved(tid)
            if self._dirty_arrangement:
                self.store.set_arrangement(self.session_id, self._ids)
                self._dirty_arrangement = False
            for take_id, rating in list(self._dirty_ratings.items()):
                self.store.set_rating(take_id, rating)
                del self._dirty_ratings[take_id]
            self.edits.flush()
        except (sqlite3.Error, StorageError) as exc:
            log.info("storage retry failed: %s", exc)
            return False
        if self._retry.isActive():
            self._retry.stop()
            if had_work:
                self.storage_message.emit("info", "Saved: everything kept in memory is now on disk.")
        return True

    def _save_unsaved(self, tid: int) -> None:
        u = self._unsaved[tid]
        if u.stored.pending:
            u.stored = self.store.write_audio(u.stored.audio, u.stored.sample_rate, u.stored.tags)
        take = self.store.add_take(self.session_id, u.stored, u.kind, u.settings, u.metadata, u.model_hash,
                                   u.parent_id, live_stream=u.live_stream)
        old = self._takes.pop(tid)
        if old.rating:
            self.store.set_rating(take.id, old.rating)
            take.rating = old.rating
        del self._unsaved[tid]
        self._takes[take.id] = take
        remap = {tid: take.id}
        self._ids = _remapped(self._ids, remap)
        self.edits.remap(remap)
        self._dirty_arrangement = True
        self.takes_changed.emit()
        self.arrangement_changed.emit()

    # ------------------------------------------------------------------ live journal
    def begin_live(self, kind: str, settings: dict[str, Any], model_hash: str,
                   parent_id: int | None = None) -> str | None:
        """Open the journal of a live stream; None when it cannot be written (disk full: said once)."""
        try:
            return self.store.begin_live(self.session_id, kind, settings, model_hash, parent_id)
        except (sqlite3.Error, StorageError) as exc:
            self._live_journal_failed(exc)
            return None

    def append_live_chunk(self, stream: str | None, pcm: np.ndarray, sample_rate: int) -> bool:
        """Journal one chunk (a file and a row) before it is played; False when it is not journalled."""
        if stream is None:
            return False
        try:
            self.store.append_live_chunk(stream, pcm, sample_rate)
        except (sqlite3.Error, StorageError) as exc:
            self._live_journal_failed(exc)
            return False
        return True

    def read_live(self, stream: str) -> list[np.ndarray]:
        """The journalled chunks of a live stream, in order."""
        return self.store.read_live(stream)

    def discard_live(self, stream: str | None) -> None:
        """The user cancelled the stream: drop its journal."""
        if stream is not None:
            try:
                self.store.discard_live(stream)
            except sqlite3.Error as exc:
                log.warning("cannot discard live journal %s: %s", stream, exc)

    def _live_journal_failed(self, exc: Exception) -> None:
        log.warning("live journal: %s", exc)
        if not self._live_failed:
            self._live_failed = True
            self.storage_message.emit("warning", f"The live stream cannot be saved while it plays ({exc}); "
                                                 "it is kept in memory until it ends.")

    # ------------------------------------------------------------------ arrangement edits
    def _set(self, ids: list[int], undoable: bool = True, label: str = "Edit arrangement") -> None:
        if undoable:
            self._push("arrangement", label, list(self._ids))
        if any(i < 0 for i in ids) or self._unsaved:
            self._dirty_arrangement = True  # refers to takes not written yet: saved with them
        else:
            try:
                self.store.set_arrangement(self.session_id, ids)
                self._dirty_arrangement = False
            except sqlite3.Error as exc:
                self._dirty_arrangement = True
                self._storage_failed(f"the arrangement could not be saved ({exc})")
        self._ids = list(ids)
        self._concat = None
        self.arrangement_changed.emit()

    def append(self, take_id: int, label: str = "Add segment") -> None:
        self._set([*self._ids, take_id], label=label)

    def insert(self, index: int, take_id: int, label: str = "Insert segment") -> None:
        ids = list(self._ids)
        ids.insert(index, take_id)
        self._set(ids, label=label)

    def replace(self, index: int, take_id: int, label: str = "Replace segment") -> None:
        ids = list(self._ids)
        ids[index] = take_id
        self._set(ids, label=label)

    def remove(self, index: int) -> None:
        ids = list(self._ids)
        del ids[index]
        self._set(ids, label="Delete segment")

    def move(self, index: int, new_index: int) -> None:
        ids = list(self._ids)
        ids.insert(new_index, ids.pop(index))
        self._set(ids, label="Move segment")

    # ------------------------------------------------------------------ undo
    def _push(self, kind: str, label: str, data: Any) -> None:
        self.edits.record(kind, label, data)
        self._retry_history()
        self.undo_changed.emit(True)
        self.edits_changed.emit()

    def _retry_history(self) -> None:
        """The undo history could not be written: the retry timer rewrites it (silently: it is no
        audio, and the edit itself was saved or is reported on its own)."""
        if self.edits.dirty and not self._retry.isActive():
            self._retry.start()

    @property
    def can_undo(self) -> bool:
        return self.edits.can_undo

    @property
    def can_redo(self) -> bool:
        return self.edits.can_redo

    def undo(self) -> bool:
        """Revert the last edit (also one made before a restart); False when there is none."""
        return self._step(UNDO, REDO)

    def redo(self) -> bool:
        """Apply the last undone edit again; False when there is none (a new edit empties redo)."""
        return self._step(REDO, UNDO)

    def _step(self, source: str, target: str) -> bool:
        entry = self.edits.pop(source)
        if entry is None:
            return False
        if entry.kind == "arrangement":
            inverse = Entry(entry.kind, entry.label, list(self._ids))
            self._set([i for i in entry.data if self._load(i) is not None], undoable=False)
        else:
            take_id, rating = int(entry.data[0]), int(entry.data[1])
            inverse = Entry(entry.kind, entry.label, [take_id, self.take(take_id).rating])
            self.rate(take_id, rating, undoable=False)
        self.edits.push_inverse(entry, target, inverse)
        self._retry_history()
        self.undo_changed.emit(self.edits.can_undo)
        self.edits_changed.emit()
        return True

    # ------------------------------------------------------------------ export
    def tags_for(self, indices: list[int]) -> dict[str, str]:
        takes = [self.take(self._ids[i]) for i in indices]
        if len(takes) == 1:
            return take_tags(takes[0])
        return {"prompt": " | ".join(dict.fromkeys(t.prompt or "" for t in takes)),
                "model_hash": ",".join(dict.fromkeys(t.model_hash for t in takes)),
                "seed": ",".join(str(t.seed) for t in takes),
                "segments": json.dumps([take_tags(t) for t in takes], default=str)}

    def export(self, path: str | Path, indices: list[int] | None = None,
               sample_range: tuple[int, int] | None = None) -> Path:
        """Write segments (all by default), or a sample range of the arrangement, as WAV/FLAC with
        prompt, seed, settings and model hash in the tags. Raises AudioError / ValueError."""
        import torch

        from melody_core.audio import MetadataError, save_audio

        if not self._ids:
            raise ValueError("the arrangement is empty: nothing to export")
        if sample_range is not None:
            a, b = sample_range
            audio = self.arrangement_audio()[max(0, a):b]
            segs = self.segments()
            indices = [s.index for s in segs if s.start < b and s.end > a]
        else:
            indices = list(range(len(self._ids))) if indices is None else indices
            audio = np.concatenate([self.audio(self._ids[i]) for i in indices])
        if len(audio) == 0 or not indices:
            raise ValueError("the selection is empty: nothing to export")
        sample_rate = self.take(self._ids[indices[0]]).sample_rate
        tags = self.tags_for(indices)
        wav = torch.from_numpy(np.ascontiguousarray(audio))
        try:
            return save_audio(path, wav, sample_rate, metadata=tags)
        except MetadataError:  # WAV INFO tags are small: keep the essentials
            return save_audio(path, wav, sample_rate, metadata=_compact(tags))
