"""Export (and drag-out) of arrangement audio as files a DAW reads.

`export_audio` takes segments (all by default) or a sample range of the arrangement, levels them
(`melody_core.audio.levels.master`: loudness target + true-peak limiter, unless switched off),
resamples to the chosen rate (soxr), writes WAV 16/24-bit or FLAC, mono or dual-mono stereo, with
tags DAWs read (`save_audio`: ID3 + BWF bext + ACID for WAV, Vorbis comments for FLAC) carrying the
prompt, seed, steps, guidance, BPM/key when set, the model name and hash. A loop export gets a WAV
`smpl` loop over the whole file and a crossfaded loop point (`melody_core.audio.loops`: the rule is
stated there once; a selection keeps its exact length, so bars stay bars), levelled and resampled
as a periodic signal so that the wrap has no step. Only public names of the session are used.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from app.session import SessionModel
from melody_core import SAMPLE_RATE
from melody_core.audio.levels import OFF, LevelSettings, master
from melody_core.audio.loops import fade_samples, periodic, seamless_loop

FORMATS = {"wav": ".wav", "flac": ".flac"}  # format name -> extension
SUBTYPES = {16: "PCM_16", 24: "PCM_24"}  # bit depth -> libsndfile subtype
RATES = (SAMPLE_RATE, 44_100, 48_000)  # the model's rate, then the DAW rates
OTHER_AUDIO = (".mp3", ".ogg", ".aif", ".aiff", ".m4a", ".opus", ".wma")  # kept, so save_audio refuses them
PROMPT_TAG_CHARS = 200  # prompt length kept when WAV INFO tags overflow


@dataclass(frozen=True)
class ExportOptions:
    """What file to write."""

    format: str = "wav"  # wav | flac (used when the path has no extension)
    bits: int = 24  # 16 | 24
    sample_rate: int = 48_000  # one of RATES
    channels: int = 2  # 1 = mono, 2 = dual-mono stereo
    levels: LevelSettings = LevelSettings()  # loudness + true-peak limiter (OFF: as generated)
    loop: bool = False  # seamless loop: crossfaded loop point + WAV smpl loop
    bpm: float | None = None  # tempo tag / ACID chunk
    key: str | None = None  # key tag (e.g. "A minor")
    model_name: str | None = None  # model name tag (the bundle's name)


def with_extension(path: str | Path, options: ExportOptions) -> Path:
    """`path` with the chosen format's extension when it has no (known) audio extension."""
    p = Path(path)
    if p.suffix.lower() in (*FORMATS.values(), *OTHER_AUDIO):
        return p
    return p.with_name(p.name + FORMATS[options.format])


def _tags(session: SessionModel, indices: list[int], options: ExportOptions) -> dict[str, str]:
    tags = dict(session.tags_for(indices))
    takes = [session.take(session.take_ids[i]) for i in indices]
    settings = dict(takes[0].settings) if len(takes) == 1 else {}
    if len(takes) > 1:  # steps / guidance only when every segment agrees
        for name in ("steps", "guidance"):
            values = {t.settings.get(name) for t in takes}
            if len(values) == 1:
                settings[name] = values.pop()
    if options.bpm:
        settings["bpm"] = round(options.bpm, 2)
    if options.key:
        settings["key"] = options.key
    tags["settings"] = json.dumps(settings, sort_keys=True, default=str)
    if options.model_name:
        tags["model_name"] = options.model_name
    return tags


def _compact(tags: dict[str, str]) -> dict[str, str]:
    """Tags that fit a WAV INFO chunk: no per-segment list, the prompt shortened."""
    short = {k: v for k, v in tags.items() if k != "segments"}
    short["prompt"] = short.get("prompt", "")[:PROMPT_TAG_CHARS]
    return short


def render(session: SessionModel, indices: list[int] | None = None,
           sample_range: tuple[int, int] | None = None) -> tuple[np.ndarray, list[int], int]:
    """(audio, segment indices it covers, sample rate) of segments or an arrangement range."""
    ids = session.take_ids
    if not ids:
        raise ValueError("the arrangement is empty: nothing to export")
    if sample_range is not None:
        a, b = sample_range
        audio = session.arrangement_audio()[max(0, a):b]
        indices = [s.index for s in session.segments() if s.start < b and s.end > a]
    else:
        indices = list(range(len(ids))) if indices is None else indices
        audio = np.concatenate([session.audio(ids[i]) for i in indices]) if indices else np.zeros(0)
    if len(audio) == 0 or not indices:
        raise ValueError("the selection is empty: nothing to export")
    return np.asarray(audio, np.float32), indices, session.take(ids[indices[0]]).sample_rate


def loop_audio(session: SessionModel, audio: np.ndarray, sample_range: tuple[int, int] | None,
               sample_rate: int) -> np.ndarray:
    """The seamless loop of a rendered selection: a range of the arrangement is crossfaded with the
    arrangement audio around it (its length kept); anything else with itself."""
    fade = fade_samples(sample_rate)
    if sample_range is None:
        return seamless_loop(audio, 0, len(audio), fade)
    whole = session.arrangement_audio()
    a = max(0, sample_range[0])
    return seamless_loop(whole, a, a + len(audio), fade)


def export_audio(session: SessionModel, path: str | Path, options: ExportOptions = ExportOptions(),
                 indices: list[int] | None = None, sample_range: tuple[int, int] | None = None) -> Path:
    """Write the audio; returns the path written (extension added when missing). Raises AudioError /
    ValueError / OSError with a one-line message."""
    import torch

    from melody_core.audio import MetadataError, resample, save_audio

    if options.bits not in SUBTYPES or options.sample_rate not in RATES or options.channels not in (1, 2):
        raise ValueError(f"unsupported export: {options.bits}-bit {options.sample_rate} Hz "
                         f"{options.channels} channels")
    audio, indices, rate = render(session, indices, sample_range)

    def process(x: np.ndarray) -> np.ndarray:  # resample, then level (mono: dual mono is a copy of it)
        if options.sample_rate != rate:
            x = resample(torch.from_numpy(x), rate, options.sample_rate).numpy()
        return master(x, options.sample_rate, options.levels)

    if options.loop:
        audio = loop_audio(session, audio, sample_range, rate)
        audio = periodic(process, audio, ratio=options.sample_rate / rate)
    else:
        audio = process(audio)
    out = with_extension(path, options)
    tags = _tags(session, indices, options)
    loop = (0, len(audio)) if options.loop else None
    wav = torch.from_numpy(np.ascontiguousarray(audio))
    kwargs = {"subtype": SUBTYPES[options.bits], "channels": options.channels, "loop": loop}
    try:
        return save_audio(out, wav, options.sample_rate, metadata=tags, **kwargs)
    except MetadataError:  # WAV INFO tags are small: keep the essentials
        return save_audio(out, wav, options.sample_rate, metadata=_compact(tags), **kwargs)


def drag_path(folder: Path, session: SessionModel, indices: list[int] | None,
              sample_range: tuple[int, int] | None, options: ExportOptions) -> Path:
    """A stable file name in the project's drag folder: the same audio and options give the same
    file (reused), different audio never overwrites a file a DAW may already use."""
    ids = session.take_ids
    chosen = list(range(len(ids))) if indices is None else indices
    first = session.take(ids[chosen[0]]) if chosen else None
    stem = re.sub(r"[^A-Za-z0-9]+", "-", (first.prompt or "melody") if first else "melody").strip("-")[:40]
    key = json.dumps([[ids[i] for i in chosen], sample_range, repr(replace(options, levels=options.levels))])
    digest = hashlib.sha1(key.encode()).hexdigest()[:10]
    seed = first.seed if first else 0
    kind = "selection" if sample_range else ("arrangement" if indices is None else f"seg{chosen[0] + 1}")
    return folder / f"{stem or 'melody'}-{seed}-{kind}-{digest}{FORMATS[options.format]}"


__all__ = ["OFF", "ExportOptions", "drag_path", "export_audio", "loop_audio", "render", "with_extension"]
