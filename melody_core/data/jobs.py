"""Worker jobs of the corpus build: one music21 work (all its variations) or one recorded file.

Jobs are plain picklable dataclasses run by `run_job` in a worker process. A job never raises for
bad input: it returns the clips it made and one line per thing it skipped.

Splits are decided per work / per source file, not per clip (*(our choice)*): all clips and
variations of one work share a split, so validation clips are never renders of training works.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from melody_core import SAMPLE_RATE
from melody_core.audio import AudioError, CorruptAudioError, audio_info, load_audio, resample, save_audio
from melody_core.data.captions import symbolic_captions, tempo_words
from melody_core.data.catalog import COLLECTION_BY_NAME, WorkRef
from melody_core.data.clips import PEAK_DBFS, ClipSpec, cut_clips, normalize_peak
from melody_core.data.corpus import ClipRecord, split_of
from melody_core.data.midi import end_seconds
from melody_core.data.render import Renderer, RenderError, render_tracks
from melody_core.data.symbolic import ScoreFacts, extract_facts, load_score
from melody_core.data.variations import (
    ENSEMBLE_BY_NAME,
    PROGRAM_NAMES,
    Variation,
    plan_variation,
    variation_tracks,
)

MAX_RECORDED_S = 2 * 3600.0  # longest recorded file loaded at once
SHORT_DECODE_FRACTION = 0.001  # a recorded file may decode this share of frames short (Opus)
CLIP_EXT = ".flac"
TMP_DIR = ".tmp"
SCORE_SOUNDFONT_LICENSES = {"FluidR3_GM": "MIT"}  # licence of the score renders' default soundfont


@dataclass(frozen=True)
class SymbolicJob:
    """Render `variations` variations of one work into `out`."""

    work: WorkRef
    variations: int
    out: str  # corpus folder
    seed: int
    max_seconds: float  # longest excerpt per variation
    spec: ClipSpec
    renderer: Renderer
    num_captions: int


@dataclass(frozen=True)
class RecordedJob:
    """Cut one audio file of a recorded source into clips."""

    file: str  # absolute path of the audio file
    file_id: str  # stable id of the file within its source
    source: str  # e.g. "recorded:my_folder", "debian:wesnoth-1.16-music"
    license: str
    out: str
    spec: ClipSpec
    captions: tuple[str, ...] = ()  # captions of the file (sidecar / captions.jsonl / known facts)
    attributes: tuple[tuple[str, str], ...] = ()  # extra attributes (title, package, ...)


@dataclass
class JobResult:
    key: str  # work id or file id
    source: str
    records: list[ClipRecord] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    @property
    def seconds(self) -> float:
        return sum(r.seconds for r in self.records)


def safe_name(text: str) -> str:
    """A file-name-safe version of an id."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "clip"


def symbolic_attributes(work: WorkRef, facts: ScoreFacts, var: Variation) -> dict:
    coll = COLLECTION_BY_NAME[work.collection]
    ens = ENSEMBLE_BY_NAME[var.ensemble]
    names = list(dict.fromkeys(PROGRAM_NAMES[p] for p in var.programs))
    return {
        "kind": "symbolic",
        "collection": coll.name,
        "work": work.id,
        "title": work.title,
        "composer": coll.composer,
        "era": coll.era,
        "style": coll.style,
        "ensemble": ens.name,
        "ensemble_label": ens.label,
        "instrument_family": ens.family,
        "instruments": names,
        "programs": list(var.programs),
        "num_parts": len(facts.parts),
        "bpm": var.bpm,
        "qpm": var.qpm,
        "tempo": tempo_words(var.bpm)[0],
        "time_signature": facts.time_signature,
        "tonic": var.tonic,
        "mode": var.mode,
        "key": f"{var.tonic} {var.mode}",
        "transpose": var.transpose,
        "dynamics": var.dynamics,
        "reverb": var.reverb,
        "variation": var.index,
    }


def _render_variation(job: SymbolicJob, facts: ScoreFacts, index: int, result: JobResult) -> None:
    work, out = job.work, Path(job.out)
    coll = COLLECTION_BY_NAME[work.collection]
    var = plan_variation(facts, coll.base_bpm, job.seed, work.id, index, job.max_seconds)
    tracks = variation_tracks(facts, var, job.seed, work.id)
    expected = end_seconds(tracks, var.qpm)
    if expected < job.spec.min_s:
        result.skipped.append(f"{work.id} v{index}: only {expected:.1f} s of music")
        return
    stem = f"{safe_name(work.id)}-v{index}"
    try:
        audio = render_tracks(job.renderer, tracks, var.qpm, out / TMP_DIR / stem, expected)
    except RenderError as exc:
        result.skipped.append(f"{work.id} v{index}: {exc}")
        return
    audio = normalize_peak(audio, PEAK_DBFS[var.dynamics])
    attrs = symbolic_attributes(work, facts, var)
    clips = cut_clips(audio, job.spec)
    if not clips:
        result.skipped.append(f"{work.id} v{index}: no clip above the silence threshold")
    for j, clip in clips:
        clip_id = f"{work.id}/v{index}/c{j}"
        rel = f"clips/{coll.name}/{stem}-c{j}{CLIP_EXT}"
        save_audio(out / rel, clip)
        seconds = clip.numel() / job.renderer.sample_rate
        font = Path(job.renderer.soundfont).stem
        font_license = SCORE_SOUNDFONT_LICENSES.get(font, "")
        clip_attrs = dict(attrs, clip=j, soundfont=font, soundfont_license=font_license)
        result.records.append(
            ClipRecord(
                id=clip_id,
                path=rel,
                seconds=round(seconds, 3),
                captions=symbolic_captions(clip_attrs, f"{job.seed}:{clip_id}", job.num_captions),
                source=coll.source,
                license=coll.license,
                attributes=clip_attrs,
                split=split_of(work.id),
            )
        )


def run_symbolic(job: SymbolicJob) -> JobResult:
    result = JobResult(job.work.id, COLLECTION_BY_NAME[job.work.collection].source)
    try:
        facts = extract_facts(load_score(job.work))
    except Exception as exc:  # noqa: BLE001 - any music21 parse failure skips the work
        msg = str(exc).splitlines()[0][:120] if str(exc) else ""
        result.skipped.append(f"{job.work.id}: cannot parse ({type(exc).__name__}: {msg})")
        return result
    if not facts.parts:
        result.skipped.append(f"{job.work.id}: no pitched notes")
        return result
    for index in range(job.variations):
        _render_variation(job, facts, index, result)
    return result


def _load_short_decode(path: str) -> torch.Tensor | None:
    """Decode what libsndfile gives; accept it when at most SHORT_DECODE_FRACTION of the frames the
    header declares are missing (`load_audio` refuses any shortfall outside MP3)."""
    try:
        info = audio_info(path)
        if info.duration_s > MAX_RECORDED_S:
            return None
        data, rate = sf.read(path, dtype="float32", always_2d=True)  # (frames, channels)
    except (AudioError, sf.SoundFileError, RuntimeError):
        return None
    if len(data) < (1.0 - SHORT_DECODE_FRACTION) * info.frames or not np.isfinite(data).all():
        return None
    return resample(torch.from_numpy(data.mean(axis=1)), rate, SAMPLE_RATE)


def run_recorded(job: RecordedJob) -> JobResult:
    result = JobResult(job.file_id, job.source)
    try:
        audio = load_audio(job.file, max_seconds=MAX_RECORDED_S)
    except CorruptAudioError as exc:
        audio = _load_short_decode(job.file)  # e.g. Opus files that decode a few frames short
        if audio is None:
            result.skipped.append(f"{job.file_id}: {exc.reason}")
            return result
    except AudioError as exc:
        result.skipped.append(f"{job.file_id}: {exc.reason}")
        return result
    clips = cut_clips(audio, job.spec)
    if not clips:
        result.skipped.append(f"{job.file_id}: shorter than {job.spec.min_s:g} s or near-silent")
    folder = safe_name(job.source.replace(":", "-"))
    stem = safe_name(job.file_id.rsplit(".", 1)[0])
    for j, clip in clips:
        rel = f"clips/{folder}/{stem}-c{j}{CLIP_EXT}"
        save_audio(Path(job.out) / rel, clip)
        result.records.append(
            ClipRecord(
                id=f"{job.source}/{job.file_id}/c{j}",
                path=rel,
                seconds=round(clip.numel() / SAMPLE_RATE, 3),
                captions=list(job.captions),
                source=job.source,
                license=job.license,
                attributes=dict(job.attributes, kind="recorded", file=job.file_id, clip=j),
                split=split_of(f"{job.source}/{job.file_id}"),
            )
        )
    return result




@dataclass(frozen=True)
class ArrangementJob:
    """Arrange, mix and render arrangement `index` of the build seeded with `seed`."""

    seed: int
    index: int
    out: str  # corpus folder
    spec: ClipSpec
    target_s: float  # arrangement length before cutting
    soundfonts: tuple[tuple[str, str, str], ...]  # (name, file FluidSynth loads, licence)
    binary: str = "fluidsynth"
    num_captions: int = 4


ARRANGER_SOURCE = "arranger"


def arranger_license(soundfont_name: str, soundfont_license: str) -> str:
    return f"generated by melody (MIT); samples: {soundfont_name} soundfont ({soundfont_license})"


def _clip_sections(sections: list, start_s: float, end_s: float) -> tuple[str, list[str]]:
    """(section covering most of [start_s, end_s), all sections overlapping it in order)."""
    overlap = [(min(e, end_s) - max(s, start_s), name) for name, s, e in sections]
    overlap = [(o, name) for o, name in overlap if o > 0]
    names = list(dict.fromkeys(name for _, name in overlap))
    return (max(overlap)[1] if overlap else ""), names


def run_arrangement(job: ArrangementJob) -> JobResult:
    import random

    from melody_core.data.arranger import ArrangementError, arrange
    from melody_core.data.captions import arrangement_captions
    from melody_core.data.mix import apply_mix, draw_mix, normalise_loudness, tilt_eq

    result = JobResult(f"arr:{job.index}", ARRANGER_SOURCE)
    try:
        arr = arrange(job.seed, job.index, job.target_s)
    except ArrangementError as exc:
        result.skipped.append(str(exc))
        return result
    plan = arr.plan
    roles = [t.name for t in arr.tracks]
    mix = draw_mix(random.Random(f"mix:{job.seed}:{job.index}"), roles, len(job.soundfonts))
    apply_mix(arr.tracks, mix)
    sf_name, sf_file, sf_license = job.soundfonts[mix.soundfont]
    renderer = Renderer(binary=job.binary, soundfont=sf_file, options=mix.options())
    expected = end_seconds(arr.tracks, plan.qpm)
    out = Path(job.out)
    try:
        audio = render_tracks(renderer, arr.tracks, plan.qpm, out / TMP_DIR / plan.id, expected)
    except RenderError as exc:
        result.skipped.append(f"{plan.id}: {exc}")
        return result
    audio_np = tilt_eq(audio.numpy(), mix.tilt_db, SAMPLE_RATE)
    clips = cut_clips(torch.from_numpy(audio_np), job.spec)
    if not clips:
        result.skipped.append(f"{plan.id}: no clip above the silence threshold")
    n_cut = max(1, round(audio_np.size / (job.spec.target_s * SAMPLE_RATE)))  # as in cut_clips
    bounds = np.linspace(0, audio_np.size, n_cut + 1)
    base = dict(arr.attributes, soundfont=sf_name, soundfont_license=sf_license, **mix.as_labels())
    for j, clip in clips:
        wav_np, lufs = normalise_loudness(clip.numpy(), mix.lufs, SAMPLE_RATE)
        start_s, end_s = float(bounds[j]) / SAMPLE_RATE, float(bounds[j + 1]) / SAMPLE_RATE
        section, sections = _clip_sections(arr.sections, start_s, end_s)
        clip_id = f"{plan.id}/c{j}"
        rel = f"clips/{ARRANGER_SOURCE}/{plan.genre.name}/{plan.id}-c{j}{CLIP_EXT}"
        save_audio(out / rel, torch.from_numpy(wav_np))
        attrs = dict(base, clip=j, clip_start_s=round(start_s, 3), section=section, clip_sections=sections,
                     loudness_lufs=round(lufs, 2))  # fmt: skip
        result.records.append(
            ClipRecord(
                id=clip_id,
                path=rel,
                seconds=round(wav_np.size / SAMPLE_RATE, 3),
                captions=arrangement_captions(attrs, f"{job.seed}:{clip_id}", job.num_captions),
                source=ARRANGER_SOURCE,
                license=arranger_license(sf_name, sf_license),
                attributes=attrs,
                split=split_of(plan.id),
            )
        )
    return result


def run_job(job: SymbolicJob | RecordedJob | ArrangementJob) -> JobResult:
    """Entry point of the worker processes."""
    if isinstance(job, SymbolicJob):
        return run_symbolic(job)
    if isinstance(job, ArrangementJob):
        return run_arrangement(job)
    return run_recorded(job)
