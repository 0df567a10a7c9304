"""On-disk corpus format shared by the corpus builder, user folders and the trainer.

A corpus is a folder:
  clips/...            audio files (the builder writes 24 kHz mono FLAC; user folders may hold any
                       format `melody_core.audio.load_audio` reads)
  captions.jsonl       one JSON object per clip (fields of `ClipRecord`)
  manifest.json        sources with clip counts, hours and licences, plus build settings

A plain user folder of audio files (optionally with `captions.jsonl` or sidecar `<name>.txt`
captions) is read as a corpus too (`read_corpus`), with captions from the sidecars or empty.
The train/valid split is a deterministic function of the clip id (`split_of`).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3", ".aiff", ".aif")
VALID_FRACTION = 0.05  # share of clips held out for validation (by id hash)


class CorpusError(ValueError):
    """A corpus folder that cannot be read (one-line message)."""


@dataclass
class ClipRecord:
    """One clip of a corpus."""

    id: str  # unique, stable id
    path: str  # audio file, relative to the corpus folder
    seconds: float  # duration
    captions: list[str] = field(default_factory=list)  # free-form text descriptions
    source: str = "user"  # which source produced it (e.g. "music21:bach", "debian:wesnoth-music")
    license: str = "unknown"  # licence of the source material
    attributes: dict[str, Any] = field(default_factory=dict)  # instruments, bpm, key, mode, ...
    split: str = ""  # "train" or "valid" ("" = derive from id)

    def __post_init__(self) -> None:
        if not self.split:
            self.split = split_of(self.id)

    def to_json(self) -> str:
        return json.dumps(asdict(self), ensure_ascii=False, sort_keys=True)


def split_of(clip_id: str, valid_fraction: float = VALID_FRACTION) -> str:
    """Deterministic split from a hash of the id."""
    h = int.from_bytes(hashlib.sha256(clip_id.encode("utf-8")).digest()[:8], "big")
    return "valid" if (h % 10_000) < valid_fraction * 10_000 else "train"


def write_records(path: Path, records: list[ClipRecord]) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        for rec in records:
            fh.write(rec.to_json() + "\n")
    tmp.replace(path)


def read_corpus(folder: str | Path, split: str | None = None) -> list[ClipRecord]:
    """Records of a built corpus or of a plain folder of audio; `split` filters train/valid."""
    root = Path(folder)
    if not root.is_dir():
        raise CorpusError(f"{folder}: not a folder")
    index = root / "captions.jsonl"
    if index.is_file():
        records = _read_jsonl(index, root)
    else:
        records = _scan_folder(root)
    if not records:
        raise CorpusError(f"{folder}: no audio clips found")
    if split is not None:
        records = [r for r in records if r.split == split]
    return records


def _read_jsonl(index: Path, root: Path) -> list[ClipRecord]:
    records = []
    names = set(ClipRecord.__dataclass_fields__)
    with open(index, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                data = json.loads(line)
                if "path" not in data:
                    raise KeyError("path")
                data.setdefault("id", data["path"])
                data.setdefault("seconds", 0.0)
                if isinstance(data.get("caption"), str):  # accept a single "caption" too
                    data.setdefault("captions", [data.pop("caption")])
                rec = ClipRecord(**{k: v for k, v in data.items() if k in names})
            except (json.JSONDecodeError, KeyError, TypeError) as exc:
                raise CorpusError(f"{index}: line {lineno} is not a valid clip record ({exc})") from None
            if not (root / rec.path).resolve().is_relative_to(root.resolve()):
                raise CorpusError(f"{index}: line {lineno} points outside the corpus folder")
            records.append(rec)
    return records


def _scan_folder(root: Path) -> list[ClipRecord]:
    records = []
    for p in sorted(root.rglob("*")):
        if p.suffix.lower() not in AUDIO_EXTENSIONS or not p.is_file():
            continue
        rel = p.relative_to(root).as_posix()
        sidecar = p.with_suffix(".txt")
        captions = []
        if sidecar.is_file():
            captions = [ln.strip() for ln in sidecar.read_text(encoding="utf-8").splitlines() if ln.strip()]
        records.append(ClipRecord(id=rel, path=rel, seconds=0.0, captions=captions))
    return records
