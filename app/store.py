"""SQLite session store: takes (every generation), their ratings, the arrangement, preferences.

Layout of the data folder (platformdirs user data dir by default)::

    sessions.sqlite3        WAL journal; every change is its own committed transaction
    audio/take-<uuid>.flac  one FLAC (24-bit) per take, written atomically before its row exists

A take's FLAC also carries its prompt/seed/settings/model hash as tags, so audio files stay
self-describing. After a crash or `kill -9`, SQLite's WAL replays committed transactions, and a
FLAC without a row (killed between the two writes) is just an orphan file: nothing is half-written.

*(our choice)* `synchronous=NORMAL`: in WAL mode a committed transaction survives a killed process
(only an OS crash / power loss can lose the last commits), at a fraction of FULL's fsync cost.
"""

from __future__ import annotations

import json
import sqlite3
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

APP_NAME = "melody-studio"
DB_NAME = "sessions.sqlite3"
AUDIO_DIR = "audio"
SCHEMA_VERSION = 1
FLAC_SUBTYPE = "PCM_24"
MAX_RATING = 5

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS sessions (
    id INTEGER PRIMARY KEY, name TEXT NOT NULL, created REAL NOT NULL, updated REAL NOT NULL);
CREATE TABLE IF NOT EXISTS takes (
    id INTEGER PRIMARY KEY, session_id INTEGER NOT NULL REFERENCES sessions(id),
    kind TEXT NOT NULL, parent_id INTEGER, prompt TEXT, seed INTEGER,
    settings TEXT NOT NULL, metadata TEXT NOT NULL, model_hash TEXT NOT NULL,
    audio_file TEXT NOT NULL, sample_rate INTEGER NOT NULL, seconds REAL NOT NULL,
    rating INTEGER NOT NULL DEFAULT 0, created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS arrangement (
    session_id INTEGER NOT NULL REFERENCES sessions(id), position INTEGER NOT NULL,
    take_id INTEGER NOT NULL REFERENCES takes(id), PRIMARY KEY (session_id, position));
"""


def default_data_dir() -> Path:
    """Per-user data folder (e.g. ~/.local/share/melody-studio)."""
    import platformdirs

    return Path(platformdirs.user_data_dir(APP_NAME, appauthor=False))


@dataclass(frozen=True)
class StoredAudio:
    """A take's audio as written to disk (the samples are the file's, after 24-bit quantisation)."""

    file: str  # file name inside the audio folder
    audio: np.ndarray  # (T,) float32
    sample_rate: int


@dataclass
class Take:
    """One generation: settings in, audio out, plus the user's rating."""

    id: int
    session_id: int
    kind: str  # generate | regenerate | extend | inpaint | stream
    parent_id: int | None  # the take this one was derived from
    prompt: str | None
    seed: int | None
    settings: dict[str, Any]  # GenerationSettings.to_dict()
    metadata: dict[str, Any]  # the pipeline's result metadata
    model_hash: str
    audio_file: str
    sample_rate: int
    seconds: float
    rating: int
    created: float  # unix time
    audio: np.ndarray | None = field(default=None, repr=False)  # loaded on demand


def _jsonable(obj: Any) -> str:
    return json.dumps(obj, default=str, sort_keys=True)


class SessionStore:
    """All persistence of the app. Use from one thread (the GUI thread), except `write_audio`."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self.audio_dir = self.folder / AUDIO_DIR
        self.audio_dir.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(self.folder / DB_NAME), isolation_level=None)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._db.executescript(_SCHEMA)
        self._db.execute("INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))

    def close(self) -> None:
        self._db.close()

    # ------------------------------------------------------------ sessions
    def current_session(self) -> int:
        """The most recently used session (a new one on first start)."""
        row = self._db.execute("SELECT id FROM sessions ORDER BY updated DESC, id DESC LIMIT 1").fetchone()
        return int(row["id"]) if row else self.new_session("Session 1")

    def new_session(self, name: str) -> int:
        now = time.time()
        with self._db:
            self._db.execute("BEGIN")
            cur = self._db.execute("INSERT INTO sessions (name, created, updated) VALUES (?, ?, ?)",
                                   (name, now, now))
        return int(cur.lastrowid or 0)

    def session_count(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM sessions").fetchone()[0])

    def _touch(self, session_id: int) -> None:
        self._db.execute("UPDATE sessions SET updated = ? WHERE id = ?", (time.time(), session_id))

    # ------------------------------------------------------------ audio files
    def write_audio(self, audio: np.ndarray, sample_rate: int,
                    tags: dict[str, str] | None = None) -> StoredAudio:
        """Write a FLAC (atomically) and read it back; safe to call from a worker thread."""
        import torch

        from melody_core.audio import save_audio  # torch-backed; imported lazily

        name = f"take-{uuid.uuid4().hex}.flac"
        path = self.audio_dir / name
        pcm = np.ascontiguousarray(np.asarray(audio, dtype=np.float32).reshape(-1))
        save_audio(path, torch.from_numpy(pcm), sample_rate, metadata=tags, subtype=FLAC_SUBTYPE)
        return StoredAudio(name, self._read(path), sample_rate)

    @staticmethod
    def _read(path: Path) -> np.ndarray:
        data, _ = sf.read(str(path), dtype="float32", always_2d=False)
        return np.ascontiguousarray(data.reshape(-1))

    def load_audio(self, take: Take) -> np.ndarray:
        """The take's samples (cached on the Take)."""
        if take.audio is None:
            take.audio = self._read(self.audio_dir / take.audio_file)
        return take.audio

    # ------------------------------------------------------------ takes
    def add_take(self, session_id: int, stored: StoredAudio, kind: str, settings: dict[str, Any],
                 metadata: dict[str, Any], model_hash: str, parent_id: int | None = None) -> Take:
        now = time.time()
        seconds = len(stored.audio) / stored.sample_rate
        prompt, seed = settings.get("prompt"), settings.get("seed")
        with self._db:
            self._db.execute("BEGIN")
            cur = self._db.execute(
                "INSERT INTO takes (session_id, kind, parent_id, prompt, seed, settings, metadata,"
                " model_hash, audio_file, sample_rate, seconds, rating, created)"
                " VALUES (?,?,?,?,?,?,?,?,?,?,?,0,?)",
                (session_id, kind, parent_id, prompt, seed, _jsonable(settings), _jsonable(metadata),
                 model_hash, stored.file, stored.sample_rate, seconds, now))
            self._touch(session_id)
        take = self.take(int(cur.lastrowid or 0))
        take.audio = stored.audio
        return take

    def _row_to_take(self, row: sqlite3.Row) -> Take:
        return Take(id=row["id"], session_id=row["session_id"], kind=row["kind"], parent_id=row["parent_id"],
                    prompt=row["prompt"], seed=row["seed"], settings=json.loads(row["settings"]),
                    metadata=json.loads(row["metadata"]), model_hash=row["model_hash"],
                    audio_file=row["audio_file"], sample_rate=row["sample_rate"], seconds=row["seconds"],
                    rating=row["rating"], created=row["created"])

    def take(self, take_id: int) -> Take:
        row = self._db.execute("SELECT * FROM takes WHERE id = ?", (take_id,)).fetchone()
        if row is None:
            raise KeyError(f"no take {take_id}")
        return self._row_to_take(row)

    def takes(self, session_id: int | None = None, min_rating: int = 0) -> list[Take]:
        """Every take, newest first (of one session when given), rated at least `min_rating`."""
        sql, args = "SELECT * FROM takes WHERE rating >= ?", [min_rating]
        if session_id is not None:
            sql += " AND session_id = ?"
            args.append(session_id)
        rows = self._db.execute(sql + " ORDER BY created DESC, id DESC", args).fetchall()
        return [self._row_to_take(r) for r in rows]

    def set_rating(self, take_id: int, rating: int) -> None:
        if not 0 <= rating <= MAX_RATING:
            raise ValueError(f"rating must be 0-{MAX_RATING}, got {rating}")
        with self._db:
            self._db.execute("BEGIN")
            self._db.execute("UPDATE takes SET rating = ? WHERE id = ?", (rating, take_id))

    # ------------------------------------------------------------ arrangement
    def arrangement(self, session_id: int) -> list[int]:
        rows = self._db.execute("SELECT take_id FROM arrangement WHERE session_id = ? ORDER BY position",
                                (session_id,)).fetchall()
        return [int(r["take_id"]) for r in rows]

    def set_arrangement(self, session_id: int, take_ids: Iterable[int]) -> None:
        """Replace the session's arrangement in one transaction."""
        ids = list(take_ids)
        with self._db:
            self._db.execute("BEGIN")
            self._db.execute("DELETE FROM arrangement WHERE session_id = ?", (session_id,))
            self._db.executemany("INSERT INTO arrangement VALUES (?, ?, ?)",
                                 [(session_id, i, t) for i, t in enumerate(ids)])
            self._touch(session_id)

    # ------------------------------------------------------------ preferences
    def pref(self, key: str, default: Any = None) -> Any:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (f"pref.{key}",)).fetchone()
        return default if row is None else json.loads(row["value"])

    def set_pref(self, key: str, value: Any) -> None:
        with self._db:
            self._db.execute("BEGIN")
            self._db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (f"pref.{key}", _jsonable(value)))
