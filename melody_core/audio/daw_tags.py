"""Tags a DAW reads, added to a WAV/FLAC after libsndfile has written it.

- WAV: an ID3 chunk (`id3 `, written by mutagen: title, BPM, key, TXXX frames), a BWF `bext` chunk
  (description, originator, date/time), an ACID chunk (tempo, beats, root note) when a BPM is set,
  and a `smpl` chunk with one forward loop over the whole file for loops.
- FLAC: Vorbis comments (mutagen): TITLE, DESCRIPTION, BPM, KEY, and one comment per field.

*(our choice)* mutagen writes ID3 and Vorbis comments, but no Python library we know of writes the
`bext`, `acid` and `smpl` chunks (libsndfile can, but python-soundfile does not expose its
SFC_SET_BROADCAST_INFO / SFC_SET_INSTRUMENT commands), so those three are packed here with `struct`
following the EBU Tech 3285 (bext), Sony ACID and Microsoft RIFF (smpl) layouts; `riff_chunks`
reads them back for the tests.
"""

from __future__ import annotations

import json
import os
import struct
import time
from pathlib import Path

ORIGINATOR = "MeLoDy Studio"
# fields written as tags, in order, with their names as shown to the user
FIELDS = ("prompt", "seed", "steps", "guidance", "bpm", "key", "model", "model_hash")
BEXT_DESCRIPTION_BYTES = 256
_NOTES = {"C": 0, "C#": 1, "DB": 1, "D": 2, "D#": 3, "EB": 3, "E": 4, "F": 5, "F#": 6, "GB": 6,
          "G": 7, "G#": 8, "AB": 8, "A": 9, "A#": 10, "BB": 10, "B": 11}
MIDI_C4 = 60
ACID_ONE_SHOT, ACID_ROOT_SET, ACID_STRETCH = 0x01, 0x02, 0x04


def daw_fields(metadata: dict[str, str]) -> dict[str, str]:
    """The user-facing fields (`FIELDS`) found in a metadata dict: direct keys, or inside its
    'settings' JSON (steps, guidance, bpm, key); 'model_name' is shown as 'model'."""
    settings: dict[str, object] = {}
    try:
        loaded = json.loads(metadata.get("settings", "") or "{}")
        settings = loaded if isinstance(loaded, dict) else {}
    except json.JSONDecodeError:
        pass
    out: dict[str, str] = {}
    for name in FIELDS:
        value = metadata.get("model_name" if name == "model" else name, settings.get(name))
        if value not in (None, "", "None"):
            out[name] = str(value)
    return out


def bpm_of(fields: dict[str, str]) -> float | None:
    try:
        bpm = float(fields["bpm"])
    except (KeyError, ValueError):
        return None
    return bpm if 0 < bpm < 1000 else None


def root_note(key: str | None) -> int | None:
    """'A minor' / 'F#m' / 'Eb' -> MIDI note of the root in octave 4, or None."""
    if not key:
        return None
    k = key.strip().upper().replace("♯", "#").replace("♭", "B")
    for length in (2, 1):
        if k[:length] in _NOTES:
            return MIDI_C4 + _NOTES[k[:length]]
    return None


# ---------------------------------------------------------------------------------------- chunks
def _fixed(text: str, size: int) -> bytes:
    return text.encode("ascii", "replace")[:size].ljust(size, b"\0")


def bext_chunk(description: str, created: float | None = None) -> bytes:
    """BWF `bext` version 1 body (EBU Tech 3285): 602 bytes, no coding history."""
    t = time.localtime(created if created is not None else time.time())
    body = (_fixed(description, BEXT_DESCRIPTION_BYTES) + _fixed(ORIGINATOR, 32) + _fixed("", 32)
            + _fixed(time.strftime("%Y-%m-%d", t), 10) + _fixed(time.strftime("%H:%M:%S", t), 8)
            + struct.pack("<IIH", 0, 0, 1) + b"\0" * 64 + b"\0" * 10 + b"\0" * 180)
    assert len(body) == 602
    return body


def acid_chunk(bpm: float, frames: int, sample_rate: int, key: str | None, loop: bool) -> bytes:
    """ACID chunk: flags, root note, 2 unknown fields, beats, meter (4/4), tempo."""
    root = root_note(key)
    flags = (ACID_STRETCH if loop else ACID_ONE_SHOT) | (ACID_ROOT_SET if root is not None else 0)
    beats = max(1, round(frames / sample_rate * bpm / 60.0))
    return struct.pack("<IHHfIHHf", flags, root if root is not None else MIDI_C4, 0x8000, 0.0, beats, 4, 4,
                       float(bpm))


def smpl_chunk(frames: int, sample_rate: int, key: str | None, loop: tuple[int, int] | None) -> bytes:
    """`smpl` chunk with one forward loop [start, end) (end stored inclusive, as the format wants)."""
    root = root_note(key)
    loops = [loop] if loop is not None and loop[1] > loop[0] else []
    head = struct.pack("<9I", 0, 0, round(1e9 / sample_rate), root if root is not None else MIDI_C4,
                       0, 0, 0, len(loops), 0)
    return head + b"".join(struct.pack("<6I", 0, 0, a, b - 1, 0, 0) for a, b in loops)


def riff_chunks(path: str | os.PathLike) -> list[tuple[bytes, bytes]]:
    """[(chunk id, body)] of a RIFF/WAVE file, in file order ([] for other files)."""
    data = Path(path).read_bytes()
    if data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        return []
    out, pos = [], 12
    while pos + 8 <= len(data):
        cid, size = data[pos:pos + 4], struct.unpack("<I", data[pos + 4:pos + 8])[0]
        out.append((cid, data[pos + 8:pos + 8 + size]))
        pos += 8 + size + (size & 1)
    return out


def read_acid_tempo(path: str | os.PathLike) -> float | None:
    for cid, body in riff_chunks(path):
        if cid == b"acid" and len(body) >= 24:
            return struct.unpack("<f", body[20:24])[0]
    return None


def read_smpl_loops(path: str | os.PathLike) -> list[tuple[int, int]]:
    """Loops of the `smpl` chunk as [start, end) sample ranges."""
    for cid, body in riff_chunks(path):
        if cid == b"smpl" and len(body) >= 36:
            n = struct.unpack("<I", body[28:32])[0]
            return [(a, b + 1) for _, _, a, b, _, _ in
                    (struct.unpack("<6I", body[36 + 24 * i:60 + 24 * i]) for i in range(n))]
    return []


def _chunk(cid: bytes, payload: bytes) -> bytes:
    """One RIFF chunk, padded to an even length (chunks are word-aligned)."""
    return cid + struct.pack("<I", len(payload)) + payload + (b"\0" if len(payload) & 1 else b"")


def _insert_chunks(path: Path, chunks: list[tuple[bytes, bytes]]) -> None:
    """Rewrite a RIFF/WAVE file with `chunks` placed just before 'data' (BWF wants bext early)."""
    existing = riff_chunks(path)
    new_ids = {cid for cid, _ in chunks}
    body = bytearray(b"WAVE")
    for cid, payload in existing:
        if cid in new_ids:
            continue  # replaced
        if cid == b"data":
            for ncid, npayload in chunks:
                body += _chunk(ncid, npayload)
        body += _chunk(cid, payload)
    path.write_bytes(b"RIFF" + struct.pack("<I", len(body)) + bytes(body))


# ---------------------------------------------------------------------------------------- writers
def description(fields: dict[str, str]) -> str:
    """One line for the BWF description / comment: "prompt | seed 1 | 10 steps | ..."."""
    parts = [fields.get("prompt", "")]
    labels = {"seed": "seed {}", "steps": "{} steps", "guidance": "guidance {}", "bpm": "{} BPM",
              "key": "key {}", "model": "model {}", "model_hash": "hash {}"}
    parts += [label.format(fields[k]) for k, label in labels.items() if k in fields]
    return " | ".join(p for p in parts if p)


def write_wav_tags(path: Path, fields: dict[str, str], frames: int, sample_rate: int,
                   loop: tuple[int, int] | None = None, created: float | None = None) -> None:
    """bext (+ acid when a BPM is set, + smpl when `loop`) before 'data', then mutagen's ID3 chunk."""
    from mutagen import id3
    from mutagen.wave import WAVE

    chunks = [(b"bext", bext_chunk(description(fields), created))]
    bpm = bpm_of(fields)
    if bpm is not None:
        chunks.append((b"acid", acid_chunk(bpm, frames, sample_rate, fields.get("key"), loop is not None)))
    if loop is not None:
        chunks.append((b"smpl", smpl_chunk(frames, sample_rate, fields.get("key"), loop)))
    _insert_chunks(path, chunks)
    audio = WAVE(str(path))
    if audio.tags is None:
        audio.add_tags()
    tags = audio.tags
    tags.add(id3.TIT2(encoding=3, text=fields.get("prompt", "")))
    tags.add(id3.TSSE(encoding=3, text=ORIGINATOR))
    tags.add(id3.COMM(encoding=3, lang="eng", desc="", text=description(fields)))
    if bpm is not None:
        tags.add(id3.TBPM(encoding=3, text=str(round(bpm))))
    if "key" in fields:
        tags.add(id3.TKEY(encoding=3, text=fields["key"]))
    for name, value in fields.items():
        tags.add(id3.TXXX(encoding=3, desc=name, text=value))
    audio.save()


def write_flac_tags(path: Path, fields: dict[str, str]) -> None:
    """Vorbis comments: TITLE, DESCRIPTION, BPM, KEY, ENCODER and one MELODY_<FIELD> per field."""
    from mutagen.flac import FLAC

    audio = FLAC(str(path))
    audio["TITLE"] = fields.get("prompt", "")
    audio["DESCRIPTION"] = description(fields)
    audio["ENCODER"] = ORIGINATOR
    if bpm_of(fields) is not None:
        audio["BPM"] = str(round(bpm_of(fields) or 0))
    if "key" in fields:
        audio["KEY"] = fields["key"]
    for name, value in fields.items():
        audio[f"MELODY_{name.upper()}"] = value
    audio.save()
