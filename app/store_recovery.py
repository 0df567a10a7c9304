"""Keeping the session database recoverable: health check, SQLite backups, re-indexing take files.

Every take's FLAC carries its kind, prompt, seed, settings, pipeline metadata and model hash as tags
(`take_file_tags`), so the audio folder alone is enough to rebuild the list of takes. What the files
cannot hold -- the arrangement and the ratings -- comes from `sessions.sqlite3.bak`, a copy taken with
SQLite's online backup API at every start (before any schema change), so a damaged database loses at
most the arrangement/rating edits made since the app was last started; never a take.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import soundfile as sf

log = logging.getLogger(__name__)

BACKUP_SUFFIX = ".bak"  # sessions.sqlite3 -> sessions.sqlite3.bak
DAMAGED_SUFFIX = ".damaged"  # a damaged database is kept as sessions.sqlite3.damaged-<time>
REQUIRED_TABLES = frozenset({"meta", "sessions", "takes", "arrangement"})  # of every schema version


DAMAGE_MARKERS = ("malformed", "not a database", "encrypted")  # sqlite3 errors that mean a damaged file


def database_problem(path: Path) -> str | None:
    """A one-line reason when `path` is damaged (not a database, malformed, tables missing); None when
    it is fine or cannot be judged now (e.g. a full disk: "disk I/O error" is not damage)."""
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            rows = db.execute("PRAGMA quick_check").fetchall()
            tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        finally:
            db.close()
    except sqlite3.DatabaseError as exc:  # "file is not a database", "database disk image is malformed"
        if any(m in str(exc) for m in DAMAGE_MARKERS):
            return str(exc)
        log.warning("cannot check %s now: %s", path.name, exc)
        return None
    if rows != [("ok",)]:
        return "; ".join(str(r[0]) for r in rows[:3])
    if not REQUIRED_TABLES <= tables:
        return f"tables missing: {', '.join(sorted(REQUIRED_TABLES - tables))}"
    return None


def backup_database(db: sqlite3.Connection, dest: Path) -> None:
    """Consistent copy of the open database (SQLite online backup API), written atomically."""
    tmp = dest.with_name(f".{dest.name}.tmp")
    tmp.unlink(missing_ok=True)
    out = sqlite3.connect(str(tmp))
    try:
        db.backup(out)
    finally:
        out.close()
    os.replace(tmp, dest)


def restore_backup(backup: Path, dest: Path) -> bool:
    """Copy a healthy backup to `dest` (absent); False when there is no usable backup."""
    if not backup.is_file() or database_problem(backup) is not None:
        return False
    src = sqlite3.connect(f"file:{backup}?mode=ro", uri=True)
    out = sqlite3.connect(str(dest))
    try:
        src.backup(out)
    finally:
        out.close()
        src.close()
    return True


def set_aside(path: Path) -> Path:
    """Rename a damaged database (and its -wal/-shm) out of the way; returns the new name."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    aside = path.with_name(f"{path.name}{DAMAGED_SUFFIX}-{stamp}")
    for ext in ("", "-wal", "-shm"):
        p = Path(f"{path}{ext}")
        if p.exists():
            os.replace(p, Path(f"{aside}{ext}"))
    return aside


@dataclass(frozen=True)
class FileTake:
    """A take as its FLAC describes it (for re-indexing)."""

    file: str
    kind: str
    prompt: str | None
    seed: int | None
    settings: dict[str, Any]
    metadata: dict[str, Any]
    model_hash: str
    parent_file: str | None
    live_stream: str | None  # the live journal this file is the finished take of
    sample_rate: int
    seconds: float
    created: float


def _json(text: str | None, default: Any) -> Any:
    try:
        return json.loads(text) if text else default
    except ValueError:
        return default


def read_take_file(path: Path) -> FileTake | None:
    """The take a FLAC describes, or None when the file is unreadable (logged)."""
    from melody_core.audio import AudioError, read_metadata

    try:
        info = sf.info(str(path))
        tags = read_metadata(path)
    except (AudioError, RuntimeError, OSError) as exc:
        log.warning("cannot re-index %s: %s", path.name, exc)
        return None
    if info.frames <= 0 or info.samplerate <= 0:
        return None
    seed = tags.get("seed")
    settings = _json(tags.get("settings"), {})
    prompt = tags.get("prompt")
    settings.setdefault("prompt", prompt)
    try:
        seed_value: int | None = int(seed) if seed not in (None, "", "None") else None
    except ValueError:
        seed_value = None
    settings.setdefault("seed", seed_value)
    return FileTake(file=path.name, kind=tags.get("kind") or "generate", prompt=prompt, seed=seed_value,
                    settings=settings, metadata=_json(tags.get("metadata"), {}),
                    model_hash=tags.get("model_hash", ""), parent_file=tags.get("parent_file") or None,
                    live_stream=tags.get("live_stream") or None,
                    sample_rate=int(info.samplerate), seconds=info.frames / info.samplerate,
                    created=float(_json(tags.get("created_unix"), path.stat().st_mtime)))
