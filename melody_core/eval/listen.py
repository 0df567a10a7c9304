"""The listening sheet of `melody eval listen` (issue 16, "Must show"): 16 prompts across the corpus
genres generated with fixed seeds, written as small 16-bit FLAC files a reader can play, one
spectrogram sheet (`data.summary.spectrogram_grid`, the corpus sheet's drawing) and a README with,
per clip, the tempo asked and heard (`eval.tempo.estimate_bpm`) and the hiss measure
(`eval.hiss.hiss_db`: spectral flatness between the harmonics of sustained notes, dB).

- Prompts: `LISTEN_PROMPTS`, written as a producer types them; 10 name a BPM and 6 a key, so a bundle
  whose LM has explicit controls gets them from the prompt (`models.controls.find_controls`), and
  one without reads them as text.
- Seeds: base seed + i for the i-th prompt (as `eval card` and `eval all`).
- Size: the FLACs must stay under `MAX_FLAC_BYTES` in all (they are committed under docs/). Checked
  before anything is generated against a bound FLAC cannot exceed: 16-bit PCM plus
  `FLAC_OVERHEAD_BYTES` per file (tags, frame headers; FLAC falls back to verbatim frames when it
  cannot compress).
- Reference (`data`): the same hiss measure on the corpus's held-out clips, chosen and cropped as
  `eval all`'s reference set (`eval.suite.sets.load_reference`: evenly spread by id, central crops
  of the same length), so "at the level of the corpus renders" is a number next to the clips.

Nothing here imports torch at module level: the CLI builds its parser from these names.
"""

from __future__ import annotations

import json
import math
import re
import textwrap
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from melody_core import SAMPLE_RATE

LISTEN_PROMPTS: tuple[str, ...] = (
    "lo-fi hip hop beat, dusty drums and mellow electric piano at 80 bpm",
    "dark trap beat with heavy 808 and hi-hat rolls, 140 bpm in F minor",
    "deep house groove with warm chord stabs at 122 bpm",
    "hypnotic techno, driving kick and synth arp, 130 bpm, A minor",
    "rolling liquid drum and bass at 174 bpm",
    "catchy upbeat pop with bright piano and synth lead in C major",
    "energetic rock with distorted guitars and driving drums at 128 bpm",
    "tight funk groove with slap bass and clavinet, 108 bpm",
    "glittering disco with strings and brass stabs",
    "swing jazz trio, walking upright bass and ride cymbal at 160 bpm",
    "breezy bossa nova on nylon-string guitar in D minor",
    "laid-back reggae one drop with skanking guitar at 76 bpm",
    "atmospheric ambient pads, slow and dreamy, no drums",
    "epic cinematic orchestral strings and brass in D minor",
    "retro synthwave with neon analog synths and gated drums at 100 bpm",
    "rustic folk waltz on acoustic guitar and accordion in G major",
)
MAX_FLAC_BYTES = 10_000_000  # all FLACs together (committed under docs/)
FLAC_OVERHEAD_BYTES = 16_384  # per file on top of 16-bit PCM: tags, seek table, frame headers
PCM_BYTES_PER_SECOND = SAMPLE_RATE * 2  # 16-bit mono
MIN_SECONDS = 1.0  # shortest clip (the hiss and tempo measures need a few frames)
SLUG_CHARS = 40  # longest file-name slug
SHEET_DPI = 72  # 4 x 4 panels of 4 x 2.4 inches: 1152 x 691 px (~0.9 MB PNG for 16 noise clips)
TITLE_CHARS = 48  # characters per panel title line
TITLE_SIZE = 8.0  # points
SHEET = "sheet.png"
RESULTS = "listen.json"
Log = Callable[[str], None]


class ListenError(ValueError):
    """Bad options or input of the listening sheet (one-line message)."""


@dataclass(frozen=True)
class ListenOptions:
    """Settings of one listening sheet."""

    seconds: float = 10.0  # length of each clip
    steps: int = 10  # DPD sampling steps (GenerationSettings.steps)
    seed: int = 0  # base seed: prompt i gets seed + i
    count: int = len(LISTEN_PROMPTS)  # the first `count` prompts of LISTEN_PROMPTS
    data: str | None = None  # corpus folder: hiss of its held-out clips as the reference level

    @property
    def prompts(self) -> tuple[str, ...]:
        return LISTEN_PROMPTS[: self.count]


def flac_bound(count: int, seconds: float) -> int:
    """Bytes `count` mono 16-bit FLACs of `seconds` can take at most (module docstring: Size)."""
    return count * (math.ceil(seconds * SAMPLE_RATE) * 2 + FLAC_OVERHEAD_BYTES)


def max_seconds(count: int) -> float:
    """Longest clip length whose `count` FLACs stay within MAX_FLAC_BYTES."""
    return math.floor((MAX_FLAC_BYTES / count - FLAC_OVERHEAD_BYTES) / PCM_BYTES_PER_SECOND * 10) / 10


def check_options(opts: ListenOptions) -> None:
    """ListenError (one line) for options that cannot give a sheet within the limits."""
    if not 1 <= opts.count <= len(LISTEN_PROMPTS):
        raise ListenError(f"--count must be 1..{len(LISTEN_PROMPTS)}, got {opts.count}")
    if not (math.isfinite(opts.seconds) and opts.seconds >= MIN_SECONDS):
        raise ListenError(f"--seconds must be at least {MIN_SECONDS:g}, got {opts.seconds}")
    if flac_bound(opts.count, opts.seconds) > MAX_FLAC_BYTES:
        raise ListenError(
            f"{opts.count} clips of {opts.seconds:g} s can take up to "
            f"{flac_bound(opts.count, opts.seconds) / 1e6:.1f} MB of FLAC, over the "
            f"{MAX_FLAC_BYTES / 1e6:g} MB limit: use --seconds {max_seconds(opts.count):g} or less")


def slug(text: str) -> str:
    """"Dark trap beat, 140 bpm" -> "dark-trap-beat-140-bpm" (at most SLUG_CHARS, whole words)."""
    words = re.sub(r"[^a-z0-9]+", " ", text.lower()).split()
    out = ""
    for w in words:
        if len(out) + len(w) + (1 if out else 0) > SLUG_CHARS:
            break
        out = f"{out}-{w}" if out else w
    return out or "clip"


def clip_name(i: int, prompt: str) -> str:
    return f"{i + 1:02d}-{slug(prompt)}.flac"


def _round(x: float | None, digits: int) -> float | None:
    return None if x is None or not math.isfinite(x) else round(float(x), digits)


def measure_clip(wav: Any, asked_bpm: float | None) -> dict[str, Any]:
    """Estimated BPM (None when the clip has no beat or is too short), tempo accuracy against the
    asked BPM (when there is one) and the hiss measure of one (T,) clip."""
    import numpy as np
    import torch

    from melody_core.eval.hiss import hiss_db
    from melody_core.eval.tempo import estimate_bpm, tempo_error

    x = torch.from_numpy(np.ascontiguousarray(wav, dtype=np.float32))
    try:
        bpm = estimate_bpm(x, SAMPLE_RATE)
    except ValueError:
        bpm = math.nan
    h = hiss_db(x, SAMPLE_RATE)
    out: dict[str, Any] = {"estimated_bpm": _round(bpm, 1), "hiss_db": _round(h.db, 2),
                           "hiss_frames": h.frames, "frames": h.total_frames}
    if asked_bpm is not None:
        err = tempo_error(bpm, asked_bpm)
        out.update(tempo_within_4pct=bool(err["accuracy1"]), tempo_octave_ok=bool(err["accuracy2"]))
    return out


def generate_clips(pipe: Any, out: Path, opts: ListenOptions, log: Log) -> tuple[list[dict], list]:
    """Generate and write every prompt's FLAC; (records, [(wav, sheet title)])."""
    import torch

    from melody_core.audio import save_audio
    from melody_core.audio.tags import file_metadata
    from melody_core.generation.types import GenerationSettings
    from melody_core.models.controls import find_controls

    records, panels = [], []
    for i, prompt in enumerate(opts.prompts):
        asked = find_controls(prompt)
        t0 = time.perf_counter()
        result = pipe.generate(GenerationSettings(prompt=prompt, seed=opts.seed + i, seconds=opts.seconds,
                                                  steps=opts.steps))
        wall = time.perf_counter() - t0
        name = clip_name(i, prompt)
        path = save_audio(out / name, torch.from_numpy(result.audio), result.sample_rate,
                          metadata=file_metadata(result.metadata), subtype="PCM_16")
        rec = {"index": i + 1, "prompt": prompt, "file": name, "seed": opts.seed + i,
               "asked_bpm": asked.bpm, "asked_key": asked.key_name,
               "lm_controls": result.metadata.get("controls"), "bytes": path.stat().st_size,
               "generation_s": round(wall, 2), **measure_clip(result.audio, asked.bpm)}  # fmt: skip
        records.append(rec)
        panels.append((result.audio, "\n".join(textwrap.wrap(f"{i + 1}. {prompt}", TITLE_CHARS))))
        log(f"{i + 1}/{len(opts.prompts)} {name}: {wall:.1f} s, BPM asked {_txt(asked.bpm)} "
            f"heard {_txt(rec['estimated_bpm'])}, hiss {_txt(rec['hiss_db'])} dB")
    return records, panels


def measure_reference(data: str, seconds: float, count: int, log: Log) -> dict[str, Any]:
    """The hiss measure of `count` held-out corpus clips (module docstring: Reference)."""
    from melody_core.eval.hiss import hiss_db
    from melody_core.eval.suite.sets import load_reference

    clips, info = load_reference(Path(data), count, seconds, log=log)
    rows = []
    for c in clips:
        h = hiss_db(c.wav, SAMPLE_RATE)
        genre = c.attributes.get("genre") or c.attributes.get("instrument_family")
        rows.append({"id": c.id, "genre": genre if isinstance(genre, str) else None,
                     "hiss_db": _round(h.db, 2), "hiss_frames": h.frames})
    return {"folder": str(data), "valid_clips": info["valid_clips"], "clips": rows,
            "median_hiss_db": _median([r["hiss_db"] for r in rows])}


def _median(xs: list[float | None]) -> float | None:
    import numpy as np

    vals = [x for x in xs if x is not None]
    return round(float(np.median(vals)), 2) if vals else None


def _txt(x: Any, fmt: str = "g") -> str:
    return "n/a" if x is None else format(x, fmt)


def run_listen(pipe: Any, out: str | Path, opts: ListenOptions, log: Log, command: str) -> dict[str, Any]:
    """Write the FLACs, sheet.png, listen.json and README.md into `out`; returns listen.json's data."""
    from melody_core.data.summary import spectrogram_grid

    check_options(opts)
    reference = measure_reference(opts.data, opts.seconds, len(LISTEN_PROMPTS), log) if opts.data else None
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    records, panels = generate_clips(pipe, out, opts, log)
    spectrogram_grid(panels, out / SHEET, dpi=SHEET_DPI, title_size=TITLE_SIZE)
    asked = [r for r in records if r["asked_bpm"] is not None]
    results = {
        "command": command, "model_hash": pipe.model_hash, "lm_controls": list(pipe.controls),
        "seconds": opts.seconds, "steps": opts.steps, "seed": opts.seed, "prompts": len(records),
        "flac_bytes": sum(r["bytes"] for r in records), "clips": records,
        "median_hiss_db": _median([r["hiss_db"] for r in records]),
        "tempo_within_4pct": sum(r["tempo_within_4pct"] for r in asked), "tempo_asked": len(asked),
        "reference": reference,
    }  # fmt: skip
    from melody_core.train.state import atomic_write

    atomic_write(out / RESULTS, lambda f: f.write(json.dumps(results, indent=2).encode("utf-8")))
    atomic_write(out / "README.md", lambda f: f.write(format_readme(results).encode("utf-8")))
    return results


HISS_TEXT = (
    "**Hiss measure** (`melody_core/eval/hiss.py`; higher = hissier): spectral flatness between the "
    "harmonics of sustained notes. Power spectrum with a {n_fft}-sample Hann window (hop {hop}) over "
    "{lo:g} Hz - {hi:g} kHz; frames within {erange:g} dB of the clip's loudest whose spectral flux (its "
    "maximum over +-{spread} frames, the span of a window) is at or below the median (the steadier half: "
    "away from drum hits and note onsets); peaks = bins that are the maximum of +-{pw} bins and {prom:g} dB "
    "above the frame's median; between-harmonic bins = farther than {guard} bins from every peak. Per "
    "frame: 10 log10(geometric mean of the between-harmonic power / arithmetic mean of the band's power); "
    "per clip: the median over frames. White noise reads about -2.5 dB, a clean harmonic tone about "
    "-90 dB, a tone with noise N dB below it about -N dB. Drum-heavy genres keep some hats in their "
    "steadier half: compare with the corpus level, not with zero."
)


def format_readme(r: dict[str, Any]) -> str:
    """README.md of a listening sheet from listen.json's data."""
    from melody_core.data.summary import SHEET_DB_RANGE, SHEET_HOP, SHEET_N_FFT
    from melody_core.eval import hiss

    text = HISS_TEXT.format(n_fft=hiss.N_FFT, hop=hiss.HOP, lo=hiss.BAND_HZ[0], hi=hiss.BAND_HZ[1] / 1000,
                            erange=hiss.ENERGY_RANGE_DB, spread=hiss.ONSET_SPREAD, pw=hiss.PEAK_HALF_WIDTH,
                            prom=hiss.PEAK_PROMINENCE_DB, guard=hiss.GUARD_BINS)  # fmt: skip
    controls = ", ".join(r["lm_controls"]) or "none (BPM and key reach it as prompt text)"
    lines = [
        "# Listening sheet", "",
        f"{r['prompts']} prompts across the corpus genres, {r['seconds']:g} s each, {r['steps']} DPD steps, "
        f"seeds {r['seed']}..{r['seed'] + r['prompts'] - 1} (base seed + i), bundle `{r['model_hash'][:12]}` "
        f"(LM controls: {controls}). 16-bit FLAC, {r['flac_bytes'] / 1e6:.2f} MB in all.", "",
        "Made with:", "", "```", r["command"], "```", "",
        f"![spectrograms]({SHEET})", "",
        f"Spectrograms: dB STFT magnitude (Hann {SHEET_N_FFT}, hop {SHEET_HOP}, {SHEET_DB_RANGE:g} dB "
        "range), drawn as the corpus sheet (`melody data info --sheet`), so the two compare side by side.",
        "",
        "| # | prompt | clip | asked BPM | estimated BPM | within 4 % | asked key | hiss (dB) |",
        "|---:|---|---|---:|---:|:---:|---|---:|",
    ]  # fmt: skip
    for c in r["clips"]:
        ok = "" if c["asked_bpm"] is None else ("yes" if c["tempo_within_4pct"] else "no")
        cells = [str(c["index"]), c["prompt"], f"[{c['file']}]({c['file']})", _txt(c["asked_bpm"]),
                 _txt(c["estimated_bpm"], ".1f"), ok, c["asked_key"] or "", _txt(c["hiss_db"], ".1f")]
        lines.append(f"| {' | '.join(cells)} |")
    lines += [
        "", f"Tempo: {r['tempo_within_4pct']} of {r['tempo_asked']} prompts that name a BPM are within 4 % "
        "(`melody_core/eval/tempo.py`; \"n/a\": no beat found). "
        f"Median hiss of the generated clips: {_txt(r['median_hiss_db'], '.1f')} dB.", "",
    ]  # fmt: skip
    ref = r.get("reference")
    if ref:
        lines += [
            f"Reference: the same measure on {len(ref['clips'])} held-out clips of `{ref['folder']}` "
            f"(of {ref['valid_clips']}; central crops of {r['seconds']:g} s, as `melody eval all`'s "
            f"reference set): median {_txt(ref['median_hiss_db'], '.1f')} dB.", "",
            "| clip | genre (or lead family) | hiss (dB) |", "|---|---|---:|",
        ]  # fmt: skip
        lines += [f"| {c['id']} | {c['genre'] or ''} | {_txt(c['hiss_db'], '.1f')} |" for c in ref["clips"]]
        lines.append("")
    else:
        lines += ["No corpus reference level in this run (`--data CORPUS` adds one).", ""]
    lines += [text, ""]
    return "\n".join(lines)


__all__ = ["LISTEN_PROMPTS", "ListenError", "ListenOptions", "check_options", "format_readme", "run_listen"]
