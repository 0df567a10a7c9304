"""Audio file I/O on soundfile (libsndfile) and soxr, no torchaudio.

- `load_audio`: any file libsndfile reads (WAV of any subtype, FLAC, OGG/Vorbis, MP3, AIFF, ...),
  any rate and channel count -> mono float32 (T,) at 24 kHz.
- `audio_info`: header facts (duration, rate, channels, ...) without decoding the samples.
- `save_audio`: WAV or FLAC, written atomically, with a flat ``dict[str, str]`` of metadata that
  `read_metadata` returns unchanged; `save_audio_blocks` the same from audio given in blocks
  (bounded memory for long takes; `save_audio` is it over the array's blocks).
- `resample`: soxr high-quality resampling of (T,) or (B, T) tensors.

Every bad input raises a subclass of `AudioError`; ``str(err)`` is one line that names the file.

*(our choices)*
- Downmix is the mean of the channels; levels are never normalised here (float files beyond +-1
  keep their values); audio beyond full scale saved to an integer subtype is true-peak limited
  (`levels.limit`), never clipped. Loudness normalisation is the caller's (`levels.master`).
- The duration limit is checked from the header before any sample is decoded.
- A decode that yields fewer frames than the header declares is `CorruptAudioError`. libsndfile
  silently shortens a truncated WAV, so for RIFF/WAVE files the 'data' chunk size is compared with
  the bytes actually present. MP3 frame counts come from the Xing/Info header (or an estimate), so
  a small shortfall is tolerated there.
- Metadata: the dict is stored as JSON in the 'comment' tag, with ``ensure_ascii=True`` so that the
  WAV INFO chunk (nominally ASCII) holds only ASCII; a 'prompt' entry is mirrored into 'title' for
  other players. WAV INFO tags hold about 2 KB each, so every write is verified by reading the tags
  back before the file is moved into place; metadata that does not fit raises `MetadataError`
  (FLAC's Vorbis comments have no practical limit).
"""

from __future__ import annotations

import json
import os
import struct
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr
import torch

from melody_core import SAMPLE_RATE

DEFAULT_MAX_SECONDS = 600.0  # load_audio refuses longer files (checked from the header)
SOXR_QUALITY = "HQ"  # soxr's high-quality preset (steep filter, ~140 dB stopband)
DECODE_BLOCK_FRAMES = 1 << 16  # frames decoded per block while downmixing (bounds peak memory)
MP3_SHORTFALL_FRACTION = 0.02  # MP3 frame counts can be estimates: this fraction may be missing ...
MP3_SHORTFALL_SAMPLES = 2 * 1152  # ... plus two MPEG-1 Layer III frames (1152 samples each)
SAVE_FORMATS = {".wav": "WAV", ".flac": "FLAC"}  # extension -> libsndfile major format
FLOAT_SUBTYPES = frozenset({"FLOAT", "DOUBLE"})
SOFTWARE_TAG = "MeLoDy Studio"
FULL_SCALE_GUARD_DBTP = -0.1  # integer files: audio beyond full scale is limited to this, never clipped

# sndfile.h error codes reported by soundfile.LibsndfileError.code
_SF_ERR_UNRECOGNISED_FORMAT = 1
_SF_ERR_SYSTEM = 2
_SF_ERR_MALFORMED_FILE = 3
_SF_ERR_UNSUPPORTED_ENCODING = 4

_LOG_UNEXPECTED_END = "ended unexpectedly"  # libsndfile's header log when a stream is cut short
_RIFF_UNKNOWN_SIZES = (0, 0xFFFFFFFF)  # data sizes streaming writers leave when length is unknown
_RIFF_MAX_CHUNKS = 64  # chunks scanned before 'data' (LIST, fact, bext, ...) before giving up


class AudioError(Exception):
    """Base of all audio I/O errors: ``str(err)`` is '<file name>: <reason>' on one line."""

    def __init__(self, path: str | os.PathLike, reason: str) -> None:
        self.path = Path(path)
        self.reason = " ".join(str(reason).split())
        super().__init__(" ".join(f"{self.path.name}: {self.reason}".split()))


class AudioNotFoundError(AudioError):
    """The path does not exist or is a directory."""


class EmptyAudioError(AudioError):
    """A 0-byte file or a file with 0 audio frames."""


class NotAudioError(AudioError):
    """Not a format (or encoding) libsndfile can read, e.g. a text file named .wav."""


class CorruptAudioError(AudioError):
    """A recognised format whose header or data is damaged or truncated."""


class InvalidSampleRateError(AudioError):
    """The header declares a sample rate of 0 (or below)."""


class NonFiniteAudioError(AudioError):
    """NaN or Inf samples (float files)."""


class AudioTooLongError(AudioError):
    """Longer than the allowed duration."""


class UnsupportedFormatError(AudioError):
    """save_audio: an extension or subtype that cannot be written."""


class MetadataError(AudioError):
    """save_audio: metadata that the container cannot store faithfully."""


@dataclass(frozen=True)
class AudioInfo:
    """Header facts of an audio file (no samples decoded)."""

    duration_s: float  # frames / sample_rate
    sample_rate: int  # Hz
    channels: int
    frames: int  # samples per channel
    format: str  # libsndfile major format, e.g. 'WAV', 'FLAC', 'OGG', 'MP3'
    subtype: str  # e.g. 'PCM_16', 'FLOAT', 'VORBIS', 'MPEG_LAYER_III'


@dataclass(frozen=True)
class _RiffHeader:
    sample_rate: int
    channels: int
    block_align: int  # bytes per frame (PCM/float) or per codec block
    declared_bytes: int  # size field of the 'data' chunk
    available_bytes: int  # bytes of the file after the 'data' chunk header


def _check_path(path: str | os.PathLike) -> Path:
    p = Path(path)
    if not p.exists():
        raise AudioNotFoundError(p, "file not found")
    if p.is_dir():
        raise AudioNotFoundError(p, "is a directory, not an audio file")
    if p.stat().st_size == 0:
        raise EmptyAudioError(p, "file is empty (0 bytes)")
    return p


def _read_riff_header(p: Path) -> _RiffHeader | None:
    """Walk the chunks of a RIFF/WAVE file up to 'data'; None if not RIFF/WAVE or incomplete."""
    with p.open("rb") as fh:
        head = fh.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return None
        fmt: tuple[int, int, int] | None = None  # (channels, sample_rate, block_align)
        for _ in range(_RIFF_MAX_CHUNKS):
            chunk = fh.read(8)
            if len(chunk) < 8:
                return None
            cid, size = chunk[:4], struct.unpack("<I", chunk[4:])[0]
            if cid == b"fmt ":
                body = fh.read(size)
                if len(body) < 16:
                    return None
                _tag, channels, rate, _byte_rate, align = struct.unpack("<HHIIH", body[:14])
                fmt = (channels, rate, align)
                fh.seek(size & 1, os.SEEK_CUR)  # chunks are word-aligned
            elif cid == b"data":
                if fmt is None:
                    return None
                available = p.stat().st_size - fh.tell()
                return _RiffHeader(fmt[1], fmt[0], fmt[2], size, available)
            else:
                fh.seek(size + (size & 1), os.SEEK_CUR)
    return None


def _detail(err: sf.SoundFileError) -> str:
    """libsndfile's message without its 'Error : ' prefix and final full stop."""
    text = getattr(err, "error_string", str(err)).strip().rstrip(".")
    return text.removeprefix("Error :").strip()


def _open_error(p: Path, err: sf.SoundFileError) -> AudioError:
    code = getattr(err, "code", None)
    detail = _detail(err)
    if code == _SF_ERR_UNRECOGNISED_FORMAT:
        return NotAudioError(p, "not a recognised audio file")
    if code == _SF_ERR_UNSUPPORTED_ENCODING:
        return NotAudioError(p, "audio encoding is not supported")
    if code == _SF_ERR_MALFORMED_FILE:
        return CorruptAudioError(p, "audio file is malformed or truncated")
    if code == _SF_ERR_SYSTEM:
        return AudioError(p, "cannot open the file (system error)")
    return CorruptAudioError(p, f"cannot open the audio file ({detail})")


def audio_info(path: str | os.PathLike) -> AudioInfo:
    """Read the header of an audio file. Raises the `AudioError` subclasses `load_audio` raises
    (except those only decoding can find: NaN samples, corrupt compressed data)."""
    p = _check_path(path)
    riff = _read_riff_header(p)
    if riff is not None and riff.sample_rate <= 0:
        raise InvalidSampleRateError(p, f"header declares a sample rate of {riff.sample_rate} Hz")
    if riff is not None and riff.channels <= 0:
        raise CorruptAudioError(p, "header declares 0 channels")
    try:
        sfi = sf.info(str(p))
    except sf.SoundFileError as err:
        raise _open_error(p, err) from err
    if sfi.samplerate <= 0:
        raise InvalidSampleRateError(p, f"header declares a sample rate of {sfi.samplerate} Hz")
    if sfi.channels <= 0:
        raise CorruptAudioError(p, "header declares 0 channels")
    if (
        riff is not None
        and riff.declared_bytes not in _RIFF_UNKNOWN_SIZES
        and riff.declared_bytes - riff.available_bytes >= max(riff.block_align, 1)
    ):
        missing = 1.0 - riff.available_bytes / riff.declared_bytes
        raise CorruptAudioError(p, f"file is truncated ({missing:.0%} of the audio data is missing)")
    if sfi.frames <= 0 and _LOG_UNEXPECTED_END in sfi.extra_info:  # e.g. Ogg cut before its last page
        raise CorruptAudioError(p, "file is truncated (the stream ends unexpectedly)")
    if sfi.frames <= 0:
        raise EmptyAudioError(p, "file contains no audio frames")
    return AudioInfo(
        duration_s=sfi.frames / sfi.samplerate,
        sample_rate=int(sfi.samplerate),
        channels=int(sfi.channels),
        frames=int(sfi.frames),
        format=sfi.format,
        subtype=sfi.subtype,
    )


def _decode_mono(p: Path, info: AudioInfo) -> np.ndarray:
    """Decode block by block, averaging channels; returns (n,) float32 with n <= info.frames."""
    out = np.empty(info.frames, dtype=np.float32)
    n = 0
    try:
        with sf.SoundFile(str(p)) as f:
            while n < info.frames:
                block = f.read(min(DECODE_BLOCK_FRAMES, info.frames - n), dtype="float32", always_2d=True)
                if len(block) == 0:  # block: (frames, channels)
                    break
                out[n : n + len(block)] = block[:, 0] if block.shape[1] == 1 else block.mean(axis=1)
                n += len(block)
    except sf.SoundFileError as err:
        raise CorruptAudioError(p, f"audio data is corrupt ({_detail(err)})") from err
    return out[:n]


def load_audio(
    path: str | os.PathLike, sample_rate: int = SAMPLE_RATE, max_seconds: float = DEFAULT_MAX_SECONDS
) -> torch.Tensor:
    """Load any audio file as mono float32 (T,) at `sample_rate` (channel mean, soxr HQ, no
    normalisation). Raises an `AudioError` subclass for missing, empty, non-audio, corrupt,
    truncated, rate-0, NaN/Inf-containing or too-long (> `max_seconds`) files."""
    info = audio_info(path)
    p = Path(path)
    if info.duration_s > max_seconds:
        raise AudioTooLongError(p, f"{info.duration_s:.1f} s is longer than the {max_seconds:g} s limit")
    mono = _decode_mono(p, info)
    allowed = MP3_SHORTFALL_FRACTION * info.frames + MP3_SHORTFALL_SAMPLES if info.format == "MP3" else 0
    if len(mono) < info.frames - allowed:
        raise CorruptAudioError(
            p, f"file is truncated or corrupt (decoded {len(mono)} of {info.frames} frames)"
        )
    if not np.isfinite(mono).all():
        raise NonFiniteAudioError(p, "file contains NaN or infinite samples")
    wav = resample(torch.from_numpy(mono), info.sample_rate, sample_rate)
    if wav.numel() == 0:
        raise EmptyAudioError(p, f"too short to resample to {sample_rate} Hz")
    return wav


def resample(wav: torch.Tensor, orig_sr: int, target_sr: int) -> torch.Tensor:
    """(T,) or (B, T) -> float32 (T',) or (B, T') at `target_sr`, T' ~= T * target_sr / orig_sr
    (soxr 'HQ'). Returns the input unchanged (as float32) when the rates match."""
    if orig_sr <= 0 or target_sr <= 0:
        raise ValueError(f"sample rates must be positive, got {orig_sr} -> {target_sr}")
    if wav.dim() not in (1, 2):
        raise ValueError(f"expected (T,) or (B, T), got shape {tuple(wav.shape)}")
    wav = wav.to(torch.float32)
    if orig_sr == target_sr:
        return wav
    x = wav.detach().cpu().numpy()
    y = soxr.resample(x.T, orig_sr, target_sr, quality=SOXR_QUALITY)  # soxr wants (T, B): y is (T', B)
    return torch.from_numpy(np.ascontiguousarray(y.T)).to(wav.device)  # (B, T') or (T',)


def _metadata_tags(metadata: dict[str, str]) -> dict[str, str]:
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
        raise TypeError("metadata must be a flat dict[str, str]")
    tags = {"comment": json.dumps(metadata, ensure_ascii=True), "software": SOFTWARE_TAG}
    if "prompt" in metadata:
        tags["title"] = metadata["prompt"]
    return tags


def save_audio(
    path: str | os.PathLike,
    wav: torch.Tensor,
    sample_rate: int = SAMPLE_RATE,
    metadata: dict[str, str] | None = None,
    subtype: str = "PCM_16",
    channels: int = 1,
    loop: tuple[int, int] | None = None,
) -> Path:
    """Write mono `wav` (T,) or (1, T) to .wav or .flac (by extension), atomically (temp file in the
    same folder + os.replace), creating parent folders. `subtype`: 'PCM_16' (default), 'PCM_24',
    'PCM_32', 'FLOAT' (WAV only), ... `channels`: 1, or 2 (dual mono). With `metadata`, DAW tags are
    added (`daw_tags`: ID3 + BWF bext + ACID when it has a BPM for WAV, Vorbis comments for FLAC);
    `loop` [start, end) adds a WAV `smpl` loop. Integer subtypes never clip: audio beyond full scale
    goes through the true-peak limiter (`levels.limit`, ceiling `FULL_SCALE_GUARD_DBTP`) first.
    Returns the path. (`save_audio_blocks` over the array's blocks: one implementation.)"""
    if wav.dim() == 2 and wav.shape[0] == 1:
        wav = wav[0]  # (1, T) -> (T,)
    if wav.dim() != 1:
        raise ValueError(f"save_audio expects mono (T,) or (1, T), got shape {tuple(wav.shape)}")
    x = wav.detach().cpu().to(torch.float32).numpy()
    from melody_core.audio.levels import BLOCK

    return save_audio_blocks(path, lambda: (x[i : i + BLOCK] for i in range(0, len(x), BLOCK)), sample_rate,
                             metadata, subtype, channels, loop)


def save_audio_blocks(
    path: str | os.PathLike,
    source: Callable[[], Iterable[np.ndarray]],
    sample_rate: int = SAMPLE_RATE,
    metadata: dict[str, str] | None = None,
    subtype: str = "PCM_16",
    channels: int = 1,
    loop: tuple[int, int] | None = None,
) -> Path:
    """`save_audio` for audio too long to hold twice: `source()` yields the mono samples again in
    (n,) blocks each time it is called (e.g. a live journal's chunk files read one at a time). Peak
    memory is a few blocks: the NaN/Inf check, the full-scale check, the true-peak limiter
    (`levels.plan_limit` + `levels.limited_blocks`, which read the source again per pass) and the
    write all go block by block."""
    from melody_core.audio.levels import LevelSettings, limited_blocks, plan_limit

    p = Path(path)
    fmt = SAVE_FORMATS.get(p.suffix.lower())
    if fmt is None:
        raise UnsupportedFormatError(p, f"can only save {' or '.join(SAVE_FORMATS)} files")
    if not sf.check_format(fmt, subtype):
        raise UnsupportedFormatError(p, f"{fmt} cannot store subtype {subtype}")
    if sample_rate <= 0:
        raise InvalidSampleRateError(p, f"cannot save at a sample rate of {sample_rate} Hz")
    if channels not in (1, 2):
        raise ValueError(f"save_audio writes 1 or 2 channels, got {channels}")

    def mono() -> Iterator[np.ndarray]:
        for b in source():
            b = np.asarray(b, dtype=np.float32)
            if b.ndim != 1:
                raise ValueError(f"save_audio expects mono blocks (n,), got shape {b.shape}")
            yield b

    frames, peak = 0, 0.0
    for b in mono():  # first pass: every sample finite? beyond full scale?
        if not np.isfinite(b).all():
            raise NonFiniteAudioError(p, "refusing to save NaN or infinite samples")
        frames += len(b)
        peak = max(peak, float(np.abs(b).max()) if b.size else 0.0)
    blocks: Callable[[], Iterable[np.ndarray]] = mono
    if subtype not in FLOAT_SUBTYPES and peak > 1.0:  # no hard clipping, ever
        guard = LevelSettings(ceiling_dbtp=FULL_SCALE_GUARD_DBTP)
        plan = plan_limit(mono, sample_rate, guard)

        def blocks() -> Iterator[np.ndarray]:
            return (b[0] for b in limited_blocks(mono(), sample_rate, plan, guard))  # (1, n) -> (n,)
    tags = _metadata_tags(metadata) if metadata is not None else {}

    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(f".{p.name}.{uuid.uuid4().hex[:12]}.tmp")
    try:
        with sf.SoundFile(str(tmp), "w", sample_rate, channels, subtype=subtype, format=fmt) as f:
            for key, value in tags.items():  # before any data: FLAC only takes tags up front
                setattr(f, key, value)
            for b in blocks():
                f.write(np.repeat(b[:, None], channels, axis=1) if channels > 1 else b)  # (n,) or (n, C)
        if metadata is not None and read_metadata(tmp) != metadata:
            raise MetadataError(p, f"metadata too long for {fmt} tags; shorten it or save as .flac")
        if metadata is not None:
            _add_daw_tags(tmp, fmt, metadata, frames, sample_rate, loop)
        os.replace(tmp, p)
    finally:
        tmp.unlink(missing_ok=True)
    return p


def _add_daw_tags(tmp: Path, fmt: str, metadata: dict[str, str], frames: int, sample_rate: int,
                  loop: tuple[int, int] | None) -> None:
    from melody_core.audio.daw_tags import daw_fields, write_flac_tags, write_wav_tags

    fields = daw_fields(metadata)
    if fmt == "WAV":
        write_wav_tags(tmp, fields, frames, sample_rate, loop)
    else:
        write_flac_tags(tmp, fields)


def read_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The metadata dict `save_audio` stored; for other files, the raw string tags
    ({'title': ..., 'artist': ..., 'comment': ...}, possibly empty)."""
    p = _check_path(path)
    try:
        with sf.SoundFile(str(p)) as f:
            tags = f.copy_metadata()
    except sf.SoundFileError as err:
        raise _open_error(p, err) from err
    try:
        stored = json.loads(tags.get("comment", ""))
    except json.JSONDecodeError:
        return tags
    if isinstance(stored, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in stored.items()):
        return stored
    return tags
