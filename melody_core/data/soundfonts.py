"""The General MIDI soundfonts a build renders through, their licences, and a one-time sf3 -> sf2
conversion.

*(our choice, measured)* FluidSynth decodes every Ogg Vorbis sample of an .sf3 file when it loads
it: MuseScore_General_Full.sf3 takes 21.9 s to load per `fluidsynth -F` call against 0.7 s for
FluidR3_GM.sf2 (a 16-bar MIDI file, this machine). The sf3 is converted once into an uncompressed
.sf2 in the user cache (`convert_sf3`, ~30 s) and reused: the command-line renderer loads it per
clip, and the in-process one (`synth.py`) once per worker, 1 s instead of 21.9 s each time. No
maintained Python library writes SoundFont files, so the conversion is written here: SoundFont 3 is
SoundFont 2 whose sample headers point at Ogg Vorbis streams (start/end are byte offsets into the
sample chunk, loop points are relative to the decoded sample, sample type bit 0x10); the converter
decodes each stream with libsndfile (soundfile) and rewrites the sample chunk and headers as 16-bit
PCM, the rest of the file byte for byte.
"""

from __future__ import annotations

import hashlib
import io
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np


class SoundfontError(RuntimeError):
    """A missing, unreadable or corrupt soundfont (one-line message)."""


@dataclass(frozen=True)
class Soundfont:
    """A soundfont the builder may render through."""

    name: str  # short id recorded per clip
    path: str  # file as installed
    license: str  # licence of the samples
    package: str  # Debian package that installs it


KNOWN_SOUNDFONTS: tuple[Soundfont, ...] = (
    Soundfont("FluidR3_GM", "/usr/share/sounds/sf2/FluidR3_GM.sf2", "MIT", "fluid-soundfont-gm"),
    Soundfont("MuseScore_General", "/usr/share/sounds/sf3/MuseScore_General_Full.sf3",
              "MIT (parts public domain / CC0)", "musescore-general-soundfont"),
)  # fmt: skip
SHDR_SIZE = 46  # bytes per sample header
SAMPLE_PAD = 46  # zero samples after each sample (SoundFont 2.01, section 6.1)
VORBIS_FLAG = 0x10  # sample-type bit of a compressed (SoundFont 3) sample


def installed_soundfonts() -> list[Soundfont]:
    return [s for s in KNOWN_SOUNDFONTS if os.path.isfile(s.path)]


def _chunks(data: bytes, start: int, end: int):
    """(id, payload start, payload size) of the RIFF chunks in data[start:end]."""
    pos = start
    while pos + 8 <= end:
        cid, size = data[pos : pos + 4], struct.unpack("<I", data[pos + 4 : pos + 8])[0]
        if pos + 8 + size > end:
            raise SoundfontError("truncated RIFF chunk")
        yield cid, pos + 8, size
        pos += 8 + size + (size & 1)


def check_soundfont(path: str | Path) -> None:
    """Raise SoundfontError unless `path` is a readable RIFF sfbk file with sample and preset data."""
    p = Path(path)
    if not p.is_file():
        raise SoundfontError(f"{path}: soundfont not found")
    try:
        with open(p, "rb") as fh:
            head = fh.read(12)
        size = p.stat().st_size
    except OSError as exc:
        raise SoundfontError(f"{path}: cannot read the soundfont ({exc.strerror})") from None
    if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"sfbk":
        raise SoundfontError(f"{path}: not a SoundFont file (no RIFF sfbk header)")
    if struct.unpack("<I", head[4:8])[0] + 8 > size:
        raise SoundfontError(f"{path}: corrupt soundfont (file is shorter than its header says)")


def _lists(data: bytes) -> dict[bytes, tuple[int, int]]:
    """LIST type -> (payload start, end) of the top-level lists of an sfbk file."""
    out = {}
    for cid, start, size in _chunks(data, 12, len(data)):
        if cid == b"LIST":
            out[data[start : start + 4]] = (start + 4, start + size)
    return out


def convert_sf3(src: str | Path, dst: str | Path) -> Path:
    """Write an uncompressed .sf2 of the .sf3 `src` to `dst` (atomically)."""
    import soundfile as sf

    check_soundfont(src)
    data = Path(src).read_bytes()
    lists = _lists(data)
    if b"sdta" not in lists or b"pdta" not in lists:
        raise SoundfontError(f"{src}: corrupt soundfont (no sample or preset data)")
    smpl = next(((s, n) for c, s, n in _chunks(data, *lists[b"sdta"]) if c == b"smpl"), None)
    pdta = {c: (s, n) for c, s, n in _chunks(data, *lists[b"pdta"])}
    if smpl is None or b"shdr" not in pdta:
        raise SoundfontError(f"{src}: corrupt soundfont (no smpl or shdr chunk)")
    raw = data[smpl[0] : smpl[0] + smpl[1]]
    shdr_start, shdr_size = pdta[b"shdr"]
    headers = [
        bytearray(data[shdr_start + i : shdr_start + i + SHDR_SIZE]) for i in range(0, shdr_size, SHDR_SIZE)
    ]
    pcm, pos = [], 0
    for h in headers[:-1]:  # the last header is the terminal "EOS" record
        start, end, loop_start, loop_end = struct.unpack("<4I", h[20:36])
        stype = struct.unpack("<H", h[44:46])[0]
        if stype & VORBIS_FLAG:
            try:
                audio, _ = sf.read(io.BytesIO(raw[start:end]), dtype="int16")
            except (sf.SoundFileError, RuntimeError) as exc:
                raise SoundfontError(f"{src}: cannot decode a compressed sample ({exc})") from None
            audio = audio if audio.ndim == 1 else audio[:, 0]
            loop_start, loop_end = pos + loop_start, pos + loop_end
        else:
            audio = np.frombuffer(raw[2 * start : 2 * end], dtype="<i2")
            loop_start, loop_end = pos + (loop_start - start), pos + (loop_end - start)
        n = len(audio)
        struct.pack_into("<4I", h, 20, pos, pos + n, loop_start, loop_end)
        struct.pack_into("<H", h, 44, stype & ~VORBIS_FLAG)
        pcm += [audio.astype("<i2").tobytes(), bytes(2 * SAMPLE_PAD)]
        pos += n + SAMPLE_PAD
    smpl_size = sum(len(b) for b in pcm)
    info = data[lists[b"INFO"][0] - 12 : lists[b"INFO"][1]] if b"INFO" in lists else b""
    info = info.replace(b"ifil\x04\x00\x00\x00\x03\x00", b"ifil\x04\x00\x00\x00\x02\x00", 1)
    sdta_head = b"sdta" + b"smpl" + struct.pack("<I", smpl_size)
    pd = bytearray(data[lists[b"pdta"][0] - 12 : lists[b"pdta"][1]])
    rel = shdr_start - (lists[b"pdta"][0] - 12)
    pd[rel : rel + shdr_size] = b"".join(headers)
    body_size = 4 + len(info) + 8 + len(sdta_head) + smpl_size + len(pd)
    out = Path(dst)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    with open(tmp, "wb") as fh:  # written piece by piece: the decoded samples are ~0.5 GB
        fh.write(b"RIFF" + struct.pack("<I", body_size) + b"sfbk" + info)
        fh.write(b"LIST" + struct.pack("<I", len(sdta_head) + smpl_size) + sdta_head)
        for piece in pcm:
            fh.write(piece)
        fh.write(bytes(pd))
    tmp.replace(out)
    return out


def cache_dir() -> Path:
    import platformdirs

    return Path(platformdirs.user_cache_dir("melody-studio")) / "soundfonts"


def renderable(sf: Soundfont, cache: Path | None = None) -> str:
    """The file FluidSynth should load for `sf`: the .sf2 itself, or the cached conversion of an
    .sf3 (made on first use; keyed by the source's size and modification time)."""
    check_soundfont(sf.path)
    if not sf.path.endswith(".sf3"):
        return sf.path
    st = os.stat(sf.path)
    tag = hashlib.sha256(f"{sf.path}:{st.st_size}:{st.st_mtime_ns}".encode()).hexdigest()[:12]
    dst = (cache or cache_dir()) / f"{sf.name}-{tag}.sf2"
    if not dst.is_file():
        convert_sf3(sf.path, dst)
    return str(dst)
