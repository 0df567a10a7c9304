"""SQLite session store: takes (every generation), their ratings, the arrangement, preferences.

Layout of the data folder (platformdirs user data dir by default)::

    sessions.sqlite3        WAL journal; every change is its own committed transaction
    sessions.sqlite3.bak    copy taken with SQLite's backup API at every start (before any migration)
    studio.lock             held (OS file lock) while a store is open: one window per project
    drag/                   files dragged out to a DAW (kept while the project exists; `app.exporter`)
    audio/take-<uuid>.flac  one FLAC (24-bit) per take, written atomically before its row exists
    live/<stream>-<n>.f32   chunks of a live stream as they are played (rows in live_chunks); the
                            finished take replaces them; after a crash they become a take at start

The folder is a *project* (`app.projects`): New / Open / Save As switch between such folders; the
per-user data folder is the default project. Schema 2 adds `undo_log` (the persisted undo/redo
history, `app.undo_history`); an older database gets the table at its next start (after the backup).

A take's FLAC also carries its kind/prompt/seed/settings/metadata/model hash as tags
(`take_file_tags`), so audio files stay self-describing. After a crash or `kill -9`, SQLite's WAL
replays committed transactions, and a FLAC without a row (killed between the two writes) is adopted
at the next start (`_reindex`). A damaged database is set aside and rebuilt from the backup plus the
audio files; a deleted one likewise (see `app.store_recovery`). `recovery` lists, in words, what
was done, for the window to show.

*(our choice)* `synchronous=NORMAL`: in WAL mode a committed transaction survives a killed process
(only an OS crash / power loss can lose the last commits), at a fraction of FULL's fsync cost.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import re
import sqlite3
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
from filelock import FileLock, Timeout

from app.store_recovery import (
    BACKUP_SUFFIX,
    backup_database,
    database_problem,
    read_take_file,
    restore_backup,
    set_aside,
)
from melody_core.audio.levels import BLOCK, BlockSource

log = logging.getLogger(__name__)

APP_NAME = "melody-studio"
DB_NAME = "sessions.sqlite3"
AUDIO_DIR = "audio"
LIVE_DIR = "live"  # journal of live streams: live/<stream>-<seq>.f32, one per chunk
LIVE_SUFFIX = ".f32"  # raw float32 mono samples
LOCK_NAME = "studio.lock"
PENDING_FILE = ""  # StoredAudio.file of audio that could not be written yet (kept in memory)
SCHEMA_VERSION = 2  # 2: undo_log
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
CREATE TABLE IF NOT EXISTS live_streams (
    stream TEXT PRIMARY KEY, session_id INTEGER NOT NULL, kind TEXT NOT NULL, settings TEXT NOT NULL,
    model_hash TEXT NOT NULL, parent_id INTEGER, created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS live_chunks (
    stream TEXT NOT NULL REFERENCES live_streams(stream) ON DELETE CASCADE, seq INTEGER NOT NULL,
    file TEXT NOT NULL, samples INTEGER NOT NULL, sample_rate INTEGER NOT NULL,
    PRIMARY KEY (stream, seq));
CREATE TABLE IF NOT EXISTS undo_log (
    id INTEGER PRIMARY KEY, session_id INTEGER NOT NULL, stack TEXT NOT NULL, kind TEXT NOT NULL,
    label TEXT NOT NULL, data TEXT NOT NULL);
"""
_TABLES = frozenset(re.findall(r"CREATE TABLE IF NOT EXISTS (\w+)", _SCHEMA))


def default_data_dir() -> Path:
    """Per-user data folder (e.g. ~/.local/share/melody-studio)."""
    import platformdirs

    return Path(platformdirs.user_data_dir(APP_NAME, appauthor=False))


class StoreLocked(RuntimeError):
    """Another app instance holds the data folder (message is one line, says what to do)."""


class StorageError(Exception):
    """A write the store could not make (disk full, read-only, damaged file); one line."""


@dataclass(frozen=True)
class StoredAudio:
    """A take's audio as written to disk (the samples are the file's, after 24-bit quantisation);
    `file == PENDING_FILE` when it could not be written yet and lives only in memory."""

    file: str  # file name inside the audio folder
    audio: np.ndarray  # (T,) float32
    sample_rate: int
    tags: dict[str, str] = field(default_factory=dict, repr=False)  # for a pending write
    error: str = ""  # why a pending write failed

    @property
    def pending(self) -> bool:
        return self.file == PENDING_FILE


def pcm_blocks(audio: np.ndarray, block: int = BLOCK) -> BlockSource:
    """A `BlockSource` over mono samples: (block,) views, no copy of the whole."""
    pcm = np.asarray(audio, dtype=np.float32).reshape(-1)
    return lambda: (pcm[i : i + block] for i in range(0, len(pcm), block))


def file_blocks(paths: list[Path], limit: int | None = None) -> BlockSource:
    """A `BlockSource` over raw float32 chunk files (a live journal), read one file at a time;
    `limit`: only the first `limit` samples."""

    def blocks() -> Iterator[np.ndarray]:
        left = limit
        for path in paths:
            if left is not None and left <= 0:
                return
            part = np.fromfile(path, dtype=np.float32)
            yield part if left is None else part[:left]
            if left is not None:
                left -= len(part)

    return blocks


def take_file_tags(kind: str, settings: dict[str, Any], model_hash: str, parent_file: str | None = None,
                   metadata: dict[str, Any] | None = None, live_stream: str | None = None) -> dict[str, str]:
    """The tags a take's FLAC carries: enough to rebuild its row (`store_recovery.read_take_file`)."""
    tags = {"kind": kind, "prompt": str(settings.get("prompt") or ""), "seed": str(settings.get("seed")),
            "model_hash": model_hash, "settings": _jsonable(settings), "created_unix": repr(time.time())}
    if parent_file:
        tags["parent_file"] = parent_file
    if metadata is not None:
        tags["metadata"] = _jsonable(metadata)
    if live_stream:
        tags["live_stream"] = live_stream  # the journal this file supersedes (see _reindex)
    return tags


@dataclass(frozen=True)
class UndoRow:
    """One persisted undo/redo entry."""

    id: int  # row id: the order of the stack
    stack: str  # "undo" | "redo"
    kind: str  # what `data` restores: "arrangement" | "rating"
    label: str  # shown in Edit > Undo <label>
    data: Any  # JSON: the state the entry restores


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
    missing: str = ""  # why the audio file cannot be read ("" = fine); its audio is then silence


def _jsonable(obj: Any) -> str:
    return json.dumps(obj, default=str, sort_keys=True)


class SessionStore:
    """All persistence of the app. Use from one thread (the GUI thread), except `write_audio`."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self.audio_dir = self.folder / AUDIO_DIR
        self.audio_dir.mkdir(parents=True, exist_ok=True)
        self.recovery: list[str] = []  # what start-up recovered, in words (shown to the user)
        self._lock = FileLock(str(self.folder / LOCK_NAME))
        try:
            self._lock.acquire(timeout=0)
        except Timeout:
            raise StoreLocked(f"the project {self.folder} is open in another MeLoDy Studio window; switch "
                              "to that window, or open another project (File > Open Project, or "
                              "melody-studio --project FOLDER)") from None
        try:
            self._open()
        except BaseException:
            self._lock.release()
            raise

    def _open(self) -> None:
        db_path = self.folder / DB_NAME
        backup = Path(f"{db_path}{BACKUP_SUFFIX}")
        rebuilt = False
        if db_path.exists():
            problem = database_problem(db_path)
            if problem is not None:
                aside = set_aside(db_path)
                log.warning("session database damaged (%s): set aside as %s", problem, aside.name)
                self.recovery.append(f"The session database was damaged ({problem}); it was kept as "
                                     f"{aside.name} and rebuilt.")
                rebuilt = True
        else:
            set_aside(db_path)  # a stale -wal/-shm of a deleted database must not be replayed
            if any(self.audio_dir.glob("take-*.flac")):
                self.recovery.append("The session database was missing; it was rebuilt.")
                rebuilt = True
        if rebuilt and restore_backup(backup, db_path):
            when = time.strftime("%Y-%m-%d %H:%M", time.localtime(backup.stat().st_mtime))
            self.recovery.append(f"Arrangement and ratings restored from the backup of {when}.")
        self._db = sqlite3.connect(str(db_path), isolation_level=None)
        self._db.row_factory = sqlite3.Row
        # EXCLUSIVE: the file lock makes this the only connection, and the WAL index then lives in
        # memory instead of a -shm file -- so a full disk can still open the database.
        self._db.execute("PRAGMA locking_mode=EXCLUSIVE")
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
        except sqlite3.OperationalError as exc:
            raise StorageError(f"cannot open the session database in {self.folder} "
                               f"({_reason(exc, self.folder)})") from None
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA foreign_keys=ON")
        if not rebuilt and db_path.stat().st_size > 0:
            try:  # at every start, before any migration: the copy recovery falls back on
                backup_database(self._db, backup)
            except (sqlite3.Error, OSError) as exc:  # e.g. a full disk: start anyway, say why
                log.warning("cannot back up the session database: %s", exc)
        try:
            if not _TABLES <= self._tables():  # creating tables is a write: skipped when not needed
                self._db.executescript(_SCHEMA)
                self._db.execute("INSERT OR REPLACE INTO meta VALUES ('schema_version', ?)",
                                 (str(SCHEMA_VERSION),))
        except sqlite3.OperationalError as exc:  # full disk on first start: nothing can be stored
            raise StorageError(f"cannot create the session database in {self.folder} "
                               f"({_reason(exc, self.folder)})") from None
        self._reindex(into_arrangement=rebuilt)
        self._recover_live()

    def _tables(self) -> set[str]:
        return {r[0] for r in self._db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}

    def _reindex(self, into_arrangement: bool) -> None:
        """Adopt take files that have no row (a crash between file and row, or a lost database).
        After a rebuild they are appended to the current arrangement; otherwise listed in History."""
        known = {r["audio_file"] for r in self._db.execute("SELECT audio_file FROM takes")}
        found = [t for p in sorted(self.audio_dir.glob("take-*.flac")) if p.name not in known
                 if (t := read_take_file(p)) is not None]
        if not found:
            return
        found.sort(key=lambda t: t.created)
        try:
            session_id = self.current_session()
            rows = self._db.execute("SELECT id, audio_file FROM takes")
            ids_by_file = {r["audio_file"]: int(r["id"]) for r in rows}
            new_ids: list[int] = []
            chunk_files: list[Path] = []
            with self._db:
                self._db.execute("BEGIN")
                for t in found:
                    parent = ids_by_file.get(t.parent_file or "")
                    cur = self._db.execute(
                        "INSERT INTO takes (session_id, kind, parent_id, prompt, seed, settings, metadata,"
                        " model_hash, audio_file, sample_rate, seconds, rating, created)"
                        " VALUES (?,?,?,?,?,?,?,?,?,?,?,0,?)",
                        (session_id, t.kind, parent, t.prompt, t.seed, _jsonable(t.settings),
                         _jsonable(t.metadata), t.model_hash, t.file, t.sample_rate, t.seconds, t.created))
                    ids_by_file[t.file] = int(cur.lastrowid or 0)
                    new_ids.append(ids_by_file[t.file])
                    if t.live_stream:  # the finished take of a journalled stream: the chunks are redundant
                        chunk_files += self._close_live(t.live_stream)
                if into_arrangement:
                    start = self._db.execute("SELECT COUNT(*) FROM arrangement WHERE session_id = ?",
                                             (session_id,)).fetchone()[0]
                    self._db.executemany("INSERT INTO arrangement VALUES (?, ?, ?)",
                                         [(session_id, start + i, t) for i, t in enumerate(new_ids)])
        except sqlite3.OperationalError as exc:  # full disk: the files stay; adopted at a later start
            log.warning("cannot re-index %d take file(s): %s", len(found), exc)
            return
        self._remove_files(chunk_files)
        seconds = sum(t.seconds for t in found)
        where = "appended to the arrangement" if into_arrangement else "listed in History"
        self.recovery.append(f"Recovered {len(found)} take(s) ({seconds:.1f} s) from their audio files; "
                             f"{where}.")
        log.warning("re-indexed %d take file(s)", len(found))

    def close(self) -> None:
        try:
            self._db.close()
        finally:
            self._lock.release()

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

    def _touch(self, session_id: int) -> None:
        self._db.execute("UPDATE sessions SET updated = ? WHERE id = ?", (time.time(), session_id))

    # ------------------------------------------------------------ audio files
    def write_audio(self, audio: np.ndarray | BlockSource, sample_rate: int,
                    tags: dict[str, str] | None = None) -> StoredAudio:
        """Write a FLAC (atomically) and read it back; safe to call from a worker thread. `audio`:
        the samples, or a `BlockSource` (a callable yielding them again in blocks: a long take is
        checked, limited and written block by block, `save_audio_blocks`, in bounded memory).
        Raises StorageError when the file cannot be written (nothing is left behind)."""
        from melody_core.audio import AudioError, save_audio_blocks  # imported lazily

        name = f"take-{uuid.uuid4().hex}.flac"
        path = self.audio_dir / name
        source = audio if callable(audio) else pcm_blocks(audio)
        try:
            save_audio_blocks(path, source, sample_rate, metadata=tags, subtype=FLAC_SUBTYPE)
            return StoredAudio(name, self._read(path), sample_rate)
        except (AudioError, OSError, RuntimeError) as exc:  # sf.LibsndfileError is a RuntimeError
            path.unlink(missing_ok=True)
            raise StorageError(f"cannot write the take ({_reason(exc, self.folder)})") from None

    def write_audio_or_keep(self, audio: np.ndarray | BlockSource, sample_rate: int,
                            tags: dict[str, str] | None = None) -> StoredAudio:
        """`write_audio`, or -- when the disk refuses it -- the samples kept in memory
        (`StoredAudio.pending`) for `SessionModel` to write later. Never raises for a full disk."""
        try:
            return self.write_audio(audio, sample_rate, tags)
        except StorageError as exc:
            blocks = audio() if callable(audio) else [audio]
            pcm = np.concatenate([np.asarray(b, np.float32).reshape(-1) for b in blocks])  # (T,)
            return StoredAudio(PENDING_FILE, pcm, sample_rate, dict(tags or {}), str(exc))

    @staticmethod
    def _read(path: Path) -> np.ndarray:
        data, _ = sf.read(str(path), dtype="float32", always_2d=False)
        return np.ascontiguousarray(data.reshape(-1))

    def load_audio(self, take: Take) -> np.ndarray:
        """The take's samples (cached on the Take). Raises OSError/RuntimeError when unreadable."""
        if take.audio is None:
            take.audio = self._read(self.audio_dir / take.audio_file)
        return take.audio

    def audio_path(self, take: Take) -> Path:
        return self.audio_dir / take.audio_file

    # ------------------------------------------------------------ takes
    def add_take(self, session_id: int, stored: StoredAudio, kind: str, settings: dict[str, Any],
                 metadata: dict[str, Any], model_hash: str, parent_id: int | None = None,
                 live_stream: str | None = None) -> Take:
        """Record a written take; its live journal (if any) is closed in the same transaction."""
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
            chunk_files = self._close_live(live_stream) if live_stream else []
        self._remove_files(chunk_files)
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
        """Preferences are best effort: a failed write (full disk) is logged, never raised."""
        try:
            with self._db:
                self._db.execute("BEGIN")
                self._db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)",
                                 (f"pref.{key}", _jsonable(value)))
        except sqlite3.Error as exc:
            log.warning("cannot save preference %s: %s", key, exc)

    # ------------------------------------------------------------ undo / redo history
    def undo_rows(self, session_id: int) -> list[UndoRow]:
        """The session's undo and redo entries, oldest first (`app.undo_history` owns their meaning)."""
        rows = self._db.execute("SELECT * FROM undo_log WHERE session_id = ? ORDER BY id",
                                (session_id,)).fetchall()
        return [UndoRow(int(r["id"]), r["stack"], r["kind"], r["label"], json.loads(r["data"])) for r in rows]

    def write_undo(self, session_id: int, add: Iterable[tuple[str, str, str, Any]] = (),
                   delete: Iterable[int] = (), clear: Iterable[str] = ()) -> list[int]:
        """One transaction: empty the stacks in `clear`, delete rows `delete`, append `add`
        ((stack, kind, label, data) each); returns the new rows' ids. Raises sqlite3.Error."""
        ids = []
        with self._db:
            self._db.execute("BEGIN")
            for stack in clear:
                self._db.execute("DELETE FROM undo_log WHERE session_id = ? AND stack = ?",
                                 (session_id, stack))
            self._db.executemany("DELETE FROM undo_log WHERE id = ?", [(i,) for i in delete])
            for stack, kind, label, data in add:
                cur = self._db.execute("INSERT INTO undo_log (session_id, stack, kind, label, data) "
                                       "VALUES (?, ?, ?, ?, ?)",
                                       (session_id, stack, kind, label, _jsonable(data)))
                ids.append(int(cur.lastrowid or 0))
        return ids

    # ------------------------------------------------------------ copies (Save As)
    def copy_to(self, dest: str | Path) -> Path:
        """Copy the project into the new folder `dest` (absent or empty): the database through SQLite's
        online backup API (consistent while open), then the take and drag-out files. Written into a
        hidden sibling folder first and renamed at the end: a failed copy leaves nothing behind."""
        import shutil

        dest = Path(dest)
        tmp = dest.with_name(f".{dest.name}.partial")
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            (tmp / AUDIO_DIR).mkdir(parents=True)
            backup_database(self._db, tmp / DB_NAME)
            for sub in (AUDIO_DIR, "drag"):
                src = self.folder / sub
                if src.is_dir():
                    (tmp / sub).mkdir(exist_ok=True)
                    for f in src.iterdir():
                        if f.is_file() and not f.name.startswith("."):
                            shutil.copy2(f, tmp / sub / f.name)
            os.replace(tmp, dest)  # onto an empty folder too (POSIX rename)
        except (OSError, sqlite3.Error) as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            raise StorageError(f"cannot copy the project to {dest} ({_reason(exc, dest.parent)})") from None
        return dest

    # ------------------------------------------------------------ live journal
    @property
    def live_dir(self) -> Path:
        return self.folder / LIVE_DIR

    def begin_live(self, session_id: int, kind: str, settings: dict[str, Any], model_hash: str,
                   parent_id: int | None = None) -> str:
        """Open the journal of a live stream; returns its id."""
        stream = uuid.uuid4().hex
        self.live_dir.mkdir(exist_ok=True)
        with self._db:
            self._db.execute("BEGIN")
            self._db.execute("INSERT INTO live_streams VALUES (?, ?, ?, ?, ?, ?, ?)",
                             (stream, session_id, kind, _jsonable(settings), model_hash, parent_id,
                              time.time()))
        return stream

    def append_live_chunk(self, stream: str, pcm: np.ndarray, sample_rate: int) -> None:
        """Write one chunk (raw float32, atomically) and then its row: a crash leaves at most an orphan
        file. *(our choice)* raw samples, not FLAC: 0.3 ms instead of 23 ms per 2 s chunk on the GUI
        thread (measured here); the files live only until the stream's take is written."""
        seq = int(self._db.execute("SELECT COALESCE(MAX(seq), -1) + 1 FROM live_chunks WHERE stream = ?",
                                   (stream,)).fetchone()[0])
        name = f"{stream}-{seq:06d}{LIVE_SUFFIX}"
        samples = np.ascontiguousarray(np.asarray(pcm, dtype=np.float32).reshape(-1))
        path = self.live_dir / name
        tmp = path.with_name(f".{name}.tmp")
        try:
            samples.tofile(tmp)
            os.replace(tmp, path)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise StorageError(f"cannot write live audio ({_reason(exc, self.folder)})") from None
        with self._db:
            self._db.execute("BEGIN")
            self._db.execute("INSERT INTO live_chunks VALUES (?, ?, ?, ?, ?)",
                             (stream, seq, name, len(samples), sample_rate))

    def read_live(self, stream: str) -> list[np.ndarray]:
        """The journalled chunks of a live stream, in order (read back from their files)."""
        rows = self._db.execute("SELECT file, samples FROM live_chunks WHERE stream = ? ORDER BY seq",
                                (stream,)).fetchall()
        parts = []
        for r in rows:
            part = np.fromfile(self.live_dir / r["file"], dtype=np.float32)
            if len(part) != r["samples"]:
                raise StorageError(f"live chunk {r['file']} holds {len(part)} of {r['samples']} samples")
            parts.append(part)
        return parts

    def discard_live(self, stream: str) -> None:
        with self._db:
            self._db.execute("BEGIN")
            files = self._close_live(stream)
        self._remove_files(files)

    def _close_live(self, stream: str) -> list[Path]:
        """Delete a stream's journal rows (inside the caller's transaction); its files to remove."""
        rows = self._db.execute("SELECT file FROM live_chunks WHERE stream = ?", (stream,)).fetchall()
        self._db.execute("DELETE FROM live_chunks WHERE stream = ?", (stream,))
        self._db.execute("DELETE FROM live_streams WHERE stream = ?", (stream,))
        return [self.live_dir / r["file"] for r in rows]

    @staticmethod
    def _remove_files(paths: list[Path]) -> None:
        for p in paths:
            try:
                p.unlink(missing_ok=True)
            except OSError as exc:
                log.warning("cannot remove %s: %s", p, exc)

    def _recover_live(self) -> None:
        """Turn the journal of streams a crash interrupted into takes at the end of the arrangement."""
        try:
            streams = self._db.execute("SELECT * FROM live_streams ORDER BY created").fetchall()
        except sqlite3.Error:
            return
        for st in streams:
            rows = self._db.execute("SELECT * FROM live_chunks WHERE stream = ? ORDER BY seq",
                                    (st["stream"],)).fetchall()
            files, rate = [], 0
            for r in rows:  # readable chunks only (each checked from its size); read back block-wise below
                path = self.live_dir / r["file"]
                try:
                    size = path.stat().st_size
                    if size != 4 * r["samples"]:
                        raise OSError(f"{size // 4} of {r['samples']} samples")
                    files.append(path)
                    rate = int(r["sample_rate"])
                except (OSError, ValueError) as exc:
                    log.warning("live chunk %s unreadable: %s", r["file"], exc)
            if not files:
                with self._db:
                    self._db.execute("BEGIN")
                    files = self._close_live(st["stream"])
                self._remove_files(files)
                continue
            settings = json.loads(st["settings"])
            try:
                stored = self.write_audio(file_blocks(files), rate,  # a long stream: in bounded memory
                                          take_file_tags(st["kind"], settings, st["model_hash"]))
                take = self.add_take(st["session_id"], stored, st["kind"], settings, {"recovered": "live"},
                                     st["model_hash"], st["parent_id"], live_stream=st["stream"])
                with self._db:
                    self._db.execute("BEGIN")
                    before = self.arrangement(st["session_id"])
                    self._db.execute("INSERT INTO arrangement VALUES (?, ?, ?)",
                                     (st["session_id"], len(before), take.id))
                    # an edit like any other: Edit > Undo takes the recovered take out again
                    self._db.execute("DELETE FROM undo_log WHERE session_id = ? AND stack = 'redo'",
                                     (st["session_id"],))
                    self._db.execute("INSERT INTO undo_log (session_id, stack, kind, label, data) VALUES "
                                     "(?, 'undo', 'arrangement', 'Recover interrupted take', ?)",
                                     (st["session_id"], _jsonable(before)))
            except (StorageError, sqlite3.Error) as exc:  # full disk: the journal stays for a later start
                log.warning("cannot recover live stream %s: %s", st["stream"], exc)
                continue
            self.recovery.append(f"Recovered {take.seconds:.1f} s of an interrupted live stream "
                                 f"({st['kind']}, \"{(settings.get('prompt') or '')[:40]}\"); appended to "
                                 "the arrangement.")
        # chunk files without a row (killed between the file and its row) are never needed
        known = {r["file"] for r in self._db.execute("SELECT file FROM live_chunks")}
        if self.live_dir.is_dir():
            self._remove_files([p for p in self.live_dir.iterdir() if p.name not in known])


def _reason(exc: BaseException, folder: Path) -> str:
    """One line for a failed write; a full disk is named as such."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    if getattr(exc, "errno", None) == errno.ENOSPC or "No space left" in text or _disk_full(folder):
        return f"the disk holding {folder} is full"
    return text


def _disk_full(folder: Path, margin: int = 1 << 20) -> bool:
    try:
        st = os.statvfs(folder)
    except OSError:
        return False
    return st.f_bavail * st.f_frsize < margin
