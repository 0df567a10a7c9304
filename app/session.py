"""The session as the GUI sees it: an arrangement of takes laid end to end, ratings, undo, export.

Every mutation goes straight to the `SessionStore` (one committed transaction each) and then emits a
signal; undo records the previous arrangement / rating and writes it back the same way.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PySide6.QtCore import QObject, Signal

from app.store import SessionStore, StoredAudio, Take

UNDO_LIMIT = 200
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


class SessionModel(QObject):
    arrangement_changed = Signal()
    takes_changed = Signal()  # a take was added or re-rated (history view)
    rating_changed = Signal(int, int)  # take id, rating (no audio changed: playback goes on)
    undo_changed = Signal(bool)

    def __init__(self, store: SessionStore, session_id: int | None = None) -> None:
        super().__init__()
        self.store = store
        self.session_id = store.current_session() if session_id is None else session_id
        self._takes: dict[int, Take] = {}
        self._ids: list[int] = [t for t in store.arrangement(self.session_id) if self._load(t) is not None]
        self._undo: list[tuple[str, Any]] = []
        self._concat: np.ndarray | None = None

    def _load(self, take_id: int) -> Take | None:
        if take_id not in self._takes:
            try:
                take = self.store.take(take_id)
                self.store.load_audio(take)
            except (KeyError, OSError, RuntimeError):  # missing row or unreadable FLAC: skip, keep the rest
                return None
            self._takes[take_id] = take
        return self._takes[take_id]

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

    def segment_at(self, sample: int) -> Segment | None:
        for seg in self.segments():
            if seg.start <= sample < seg.end:
                return seg
        return None

    def arrangement_audio(self) -> np.ndarray:
        if self._concat is None:
            parts = [self.audio(t) for t in self._ids]
            self._concat = np.concatenate(parts) if parts else np.zeros(0, np.float32)
        return self._concat

    def history(self, min_rating: int = 0) -> list[Take]:
        return self.store.takes(None, min_rating)

    # ------------------------------------------------------------------ takes and ratings
    def add_take(self, stored: StoredAudio, kind: str, settings: dict[str, Any], metadata: dict[str, Any],
                 model_hash: str, parent_id: int | None = None) -> Take:
        take = self.store.add_take(self.session_id, stored, kind, settings, metadata, model_hash, parent_id)
        self._takes[take.id] = take
        self.takes_changed.emit()
        return take

    def rate(self, take_id: int, rating: int, undoable: bool = True) -> None:
        take = self.take(take_id)
        if take.rating == rating:
            return
        if undoable:
            self._push(("rating", (take_id, take.rating)))
        self.store.set_rating(take_id, rating)
        take.rating = rating
        self.takes_changed.emit()
        self.rating_changed.emit(take_id, rating)

    # ------------------------------------------------------------------ arrangement edits
    def _set(self, ids: list[int], undoable: bool = True) -> None:
        if undoable:
            self._push(("arrangement", list(self._ids)))
        self.store.set_arrangement(self.session_id, ids)
        self._ids = list(ids)
        self._concat = None
        self.arrangement_changed.emit()

    def append(self, take_id: int) -> None:
        self._set([*self._ids, take_id])

    def insert(self, index: int, take_id: int) -> None:
        ids = list(self._ids)
        ids.insert(index, take_id)
        self._set(ids)

    def replace(self, index: int, take_id: int) -> None:
        ids = list(self._ids)
        ids[index] = take_id
        self._set(ids)

    def remove(self, index: int) -> None:
        ids = list(self._ids)
        del ids[index]
        self._set(ids)

    def move(self, index: int, new_index: int) -> None:
        ids = list(self._ids)
        ids.insert(new_index, ids.pop(index))
        self._set(ids)

    # ------------------------------------------------------------------ undo
    def _push(self, entry: tuple[str, Any]) -> None:
        self._undo.append(entry)
        del self._undo[:-UNDO_LIMIT]
        self.undo_changed.emit(True)

    @property
    def can_undo(self) -> bool:
        return bool(self._undo)

    def undo(self) -> bool:
        if not self._undo:
            return False
        kind, data = self._undo.pop()
        if kind == "arrangement":
            self._set(data, undoable=False)
        else:
            take_id, rating = data
            self.rate(take_id, rating, undoable=False)
        self.undo_changed.emit(bool(self._undo))
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
